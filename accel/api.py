"""The public entry points: ``apply``, ``remove``, ``stats``.

Every acceleration attaches per instance through diffusers' ``HookRegistry``; ``remove`` takes it
all away again and leaves the pipeline as it was. What each argument accepts is a registry of
handlers (``register_cache_handler``, ``register_solver_handler``, ``register_guidance_handler``),
so a new method registers itself instead of editing this file.
"""
from __future__ import annotations

import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers.hooks import HookRegistry

from .cache.hooks import COMPONENT_HOOK, STEP_HOOK, ComponentCacheHook, DenoiserStepHook, ResidualCacheHook
from .cache.policy import CachePolicy, SchedulePolicy
from .cache.state import RunState
from .cache.token_refresh import TokenRefresh
from .parallel import check_composes, context_parallel_of, rank_report
from .pipelines.families import (FamilyLayout, UNetLevels, experts_blocks, experts_layout, find_denoiser, find_experts,
                                 find_layout, layout_of, timestep_arg)
from .schedule import CacheSchedule
from .stats import ComponentStats, Stats, count_macs

_CACHE_HANDLERS: dict[type, Callable[[Any, Any, torch.nn.Module], CachePolicy]] = {}
_SOLVER_HANDLERS: list[tuple[Callable[[Any], bool], Callable[[Any, Any], Any]]] = []
_GUIDANCE_HANDLERS: dict[type, Callable[[Any, Any], Any]] = {}


def register_cache_handler(kind: type):
    """Register ``fn(pipe, obj, denoiser) -> CachePolicy`` for ``accel.apply(pipe, cache=obj)`` with obj of ``kind``."""
    def deco(fn):
        _CACHE_HANDLERS[kind] = fn
        return fn
    return deco


def register_solver_handler(match: Callable[[Any], bool]):
    """Register ``fn(pipe, obj) -> scheduler`` for ``accel.apply(pipe, solver=obj)`` when ``match(obj)``."""
    def deco(fn):
        _SOLVER_HANDLERS.append((match, fn))
        return fn
    return deco


def register_guidance_handler(kind: type):
    """Register ``fn(handle, obj)`` attaching a guidance method of type ``kind``."""
    def deco(fn):
        _GUIDANCE_HANDLERS[kind] = fn
        return fn
    return deco


@register_cache_handler(CacheSchedule)
def _schedule_policy(pipe, schedule: CacheSchedule, denoiser) -> CachePolicy:
    schedule.check_compatible(pipe)
    return SchedulePolicy(schedule)


@register_cache_handler(str)
@register_cache_handler(Path)
def _schedule_file(pipe, path, denoiser) -> CachePolicy:
    return _schedule_policy(pipe, CacheSchedule.load(path), denoiser)


@register_cache_handler(TokenRefresh)
def _token_refresh(pipe, policy: TokenRefresh, denoiser) -> CachePolicy:
    layout = layout_of(denoiser)
    if any(not attr for g in layout.groups for _, attr in g.components):
        raise ValueError(f"TokenRefresh recomputes tokens of attention and feed-forward components; the {layout.name} "
                         "layout caches whole blocks (no family layout of its own), so it would skip nothing: use a "
                         "CacheSchedule")
    if isinstance(layout, UNetLevels):
        raise ValueError("TokenRefresh recomputes tokens of attention and feed-forward components; the UNet's "
                         "cached components are whole depth levels, so it would skip nothing: use a CacheSchedule")
    return TokenRefresh(policy.interval, policy.ratio)  # a fresh instance per pipeline


def _is_scheduler(obj) -> bool:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    return isinstance(obj, SchedulerMixin) or (isinstance(obj, type) and issubclass(obj, SchedulerMixin))


@register_solver_handler(_is_scheduler)
def _scheduler_solver(pipe, obj):
    if isinstance(obj, type):
        from .solvers.named import scheduler_for_class

        sched = scheduler_for_class(pipe, obj)
    else:
        sched = obj
    if hasattr(sched, "check_model"):  # statistics or ratio files made for one model
        sched.check_model(find_denoiser(pipe)[1])
    return sched


@register_solver_handler(lambda obj: isinstance(obj, str))
def _named_solver(pipe, name: str):
    from .solvers.named import solver_from_name

    return _scheduler_solver(pipe, solver_from_name(pipe, name))


@dataclass
class AccelHandle:
    """What accel attached to one pipeline, and what ``remove`` must undo."""

    denoiser: torch.nn.Module
    layout: FamilyLayout | None  # None: a denoiser with no block layout (solvers, guidance and timing only)
    state: RunState
    hooked: list[tuple[torch.nn.Module, str, bool]] = field(default_factory=list)  # module, hook, made registry
    old_scheduler: Any = None
    old_defaults: tuple | None = None  # (the pipeline's accel_defaults before, or _MISSING,) when accel changed them
    config: dict[str, Any] = field(default_factory=dict)
    macs: dict[tuple, tuple[int, list[int]]] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    invariant: dict[str, Any] = field(default_factory=dict)  # denoiser submodule name -> its CallInvariantHook
    attention: str | None = None  # the backend of accel's attention processors, when installed
    experts: list[torch.nn.Module] = field(default_factory=list)  # every denoiser the pipeline calls, ``denoiser`` first
    expert_names: list[str] = field(default_factory=list)  # their attributes on the pipeline
    slot_expert: list[int] = field(default_factory=list)  # per cache slot, the expert that holds its module

    def add_hook(self, module: torch.nn.Module, hook, name: str) -> None:
        made = not hasattr(module, "_diffusers_hook")
        had_forward = "forward" in module.__dict__
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
        self.hooked.append((module, name, made and not had_forward))


_HANDLES: "weakref.WeakKeyDictionary[Any, AccelHandle]" = weakref.WeakKeyDictionary()


def _dispatch(table: dict[type, Callable], obj, what: str):
    for klass in type(obj).__mro__:
        if klass in table:
            return table[klass]
    names = ", ".join(sorted(k.__name__ for k in table)) or "none yet"
    raise TypeError(f"accel cannot apply {what}={obj!r}: accepted types are {names}")


def apply(pipe, *, cache=None, guidance=None, solver=None, attention: str | None = None, config=None):
    """Attach accelerations to a diffusers pipeline, in place; returns the pipeline.

    Args:
        pipe: a diffusers pipeline (or a bare denoiser module) of a supported family.
        cache: a ``CacheSchedule`` or the path of a schedule JSON (or any registered cache policy).
        guidance: a registered guidance method (APG, frequency-aware CFG).
        solver: a diffusers scheduler instance or class, or a solver name (``"dpm++"``, ``"unipc"``,
            ``"v3:EMS_FILE"``, ``"dc:RATIO_FILE:GUIDANCE"``; see ``accel.solvers.named``).
        attention: ``"auto"`` (Triton kernels on CUDA with triton, torch SDPA elsewhere), ``"torch"`` or
            ``"triton"`` to install accel's attention processors (text keys/values reused across steps);
            None leaves the model's processors alone.
        config: a whole stack instead of ``cache`` / ``guidance`` / ``solver``: an ``accel.stack.Stack`` or the
            path of its JSON file. Its step count and guidance scale go into ``pipe.accel_defaults`` (pass
            ``**pipe.accel_defaults`` to the call).

    With no argument, accel only counts (``accel.stats``) and the outputs are unchanged.
    Applying again replaces what was applied before.

    Example:
        >>> import accel
        >>> pipe = accel.pipelines.reference.load_reference("pixart-eps")  # doctest: +SKIP
        >>> accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 20, interval=2))  # doctest: +SKIP
        >>> images = pipe(["a photo of a sneaker"], num_inference_steps=20, **pipe.accel_defaults).images  # doctest: +SKIP
        >>> print(accel.stats(pipe)); accel.remove(pipe)  # doctest: +SKIP
    """
    call_defaults = None
    if config is not None:
        if cache is not None or guidance is not None or solver is not None:
            raise ValueError("accel.apply takes config= or cache= / guidance= / solver=, not both")
        cache, guidance, solver, call_defaults = _expand_stack(pipe, config)
    # validate everything before touching the pipeline: a bad argument loses nothing applied before; what
    # replaces an earlier apply is built from the pipeline as it was before accel (its scheduler and defaults)
    with _before_accel(pipe):
        attr, denoiser = find_denoiser(pipe)
        expert_names, experts = map(list, zip(*find_experts(pipe)))
        for other, h in list(_HANDLES.items()):
            if other is not pipe and any(e is m for e in h.experts for m in experts):
                raise ValueError(f"this {type(denoiser).__name__} is already accelerated through another pipeline "
                                 f"({type(other).__name__}) sharing it; a pipeline built from the same components "
                                 "runs as plain: accel.remove(that pipeline) first to accelerate this one")
        layout, no_layout = find_layout(denoiser)
        if layout is not None and len(experts) > 1 and (cache is not None or attention is not None):
            layout = experts_layout(pipe)  # the experts must share it
        if layout is None and (cache is not None or attention is not None):
            raise NotImplementedError(f"{'caching' if cache is not None else 'accel attention'} needs the denoiser's "
                                      f"block layout: {no_layout}")
        if attention is not None:
            from .kernels.select import Backend

            Backend(attention)
        policy = _dispatch(_CACHE_HANDLERS, cache, "cache")(pipe, cache, denoiser) if cache is not None else None
        if isinstance(policy, SchedulePolicy) and policy.schedule.family != layout.name:
            layout = experts_layout(pipe, policy.schedule.family)  # a schedule made on the generic layout
        blocks = experts_blocks(pipe, layout) if layout is not None else []
        new_scheduler = None
        if solver is not None:
            for match, fn in _SOLVER_HANDLERS:
                if match(solver):
                    new_scheduler = fn(pipe, solver)
                    break
            else:
                raise TypeError(f"accel cannot apply solver={solver!r}: give a diffusers scheduler (instance or "
                                "class) or a solver name")
        guidance_fn = _dispatch(_GUIDANCE_HANDLERS, guidance, "guidance") if guidance is not None else None
        if guidance is not None and hasattr(guidance, "validate"):
            guidance.validate(pipe)
        keeps_inputs = policy is not None and policy.keeps_inputs
        for den in experts:
            check_composes(den, keeps_inputs, "auto" if keeps_inputs and attention is None else attention)
        extra_defaults = {**(getattr(new_scheduler, "accel_call_defaults", None) or {}),  # e.g. one-step presets
                          **(call_defaults or {})} or None
        one_step = _is_one_step(pipe, extra_defaults)
    if one_step and (policy is not None or guidance_fn is not None):
        what = " and ".join(n for n, v in (("caching", policy), ("guidance", guidance_fn)) if v is not None)
        warnings.warn(f"{what} on a one-step pipeline is pointless (one denoiser call, no CFG batch): accel leaves "
                      "it out and attaches nothing to the denoiser", stacklevel=2)
        policy = guidance_fn = None
    if pipe in _HANDLES:
        remove(pipe)

    refs = [r for blk in blocks for r in blk]
    slots = [(r.block, r.component, r.name) for r in refs]
    state = RunState(pipe if attr else None, slots, policy, [r.module for r in refs])
    handle = AccelHandle(denoiser, layout, state, config={"cache": cache, "guidance": guidance, "solver": solver},
                         experts=experts, expert_names=expert_names, slot_expert=[r.expert for r in refs])
    if policy is not None:
        policy.bind(len(blocks), len(layout.component_names))
    if policy is not None and policy.keeps_inputs and attention is None:
        attention = "auto"  # token refresh recomputes attention rows through accel's processor
    handle.attention = attention
    state.call_listeners.append(lambda: _under_context_parallel(handle))
    if getattr(new_scheduler, "learned_steps", None) is not None:
        state.call_listeners.append(_step_guidance_check(new_scheduler.learned_steps))
    if not one_step:  # a one-step pipeline gets no hooks at all: nothing to reuse, nothing to slow down
        for i, r in enumerate(refs):
            hook = ResidualCacheHook(state, i, r.io) if r.io is not None else ComponentCacheHook(state, i)
            handle.add_hook(r.module, hook, COMPONENT_HOOK)
        for e, den in enumerate(experts):
            handle.add_hook(den, DenoiserStepHook(state, timestep_arg(den), e), STEP_HOOK)
        if policy is not None and policy.fast_path:
            _add_block_fast_paths(handle, refs)
        if policy is not None or attention is not None:  # (attention reuses text keys of an unchanged projection)
            _add_call_invariant(handle)
    if new_scheduler is not None:
        handle.old_scheduler = pipe.scheduler
        pipe.scheduler = new_scheduler
    if extra_defaults:
        old = pipe.__dict__.get("accel_defaults", _MISSING)
        pipe.accel_defaults = {**(old if old is not _MISSING else {}), **extra_defaults}
        handle.old_defaults = (old,)
        handle.cleanups.append(lambda: _restore_defaults(pipe, old))
    _HANDLES[pipe] = handle
    try:
        if attention is not None:
            _install_attention(handle, attention)
        if guidance_fn is not None:
            guidance_fn(handle, guidance)
    except Exception:
        remove(pipe)  # never leave a half-applied pipeline
        raise
    return pipe


_MISSING = object()


def _expand_stack(pipe, config) -> tuple:
    """(cache, guidance, solver, call defaults) of a ``Stack`` or stack file, checked against ``pipe``."""
    from .stack import Stack

    stack = config if isinstance(config, Stack) else Stack.load(config)
    with _before_accel(pipe):
        steps = stack.steps or getattr(pipe, "accel_defaults", {}).get("num_inference_steps")
    if stack.cache is not None and stack.cache.interval is not None and steps is None:
        raise ValueError("this stack's uniform cache is laid over its steps: give the stack a step count")
    defaults = stack.call_defaults()
    kw = stack.apply_kwargs(pipe, steps, defaults.get("guidance_scale"))
    return kw.get("cache"), kw.get("guidance"), kw.get("solver"), defaults


def _add_block_fast_paths(handle: AccelHandle, refs: list) -> None:
    """A ``BlockSkipHook`` on every block of a family with an exact fast path (see ``accel.cache.block_skip``)."""
    from .cache.block_skip import BLOCK_HOOK, FAST_PATHS, BlockSkipHook

    path = FAST_PATHS.get(handle.layout.name) if handle.layout is not None else None
    if path is None:
        return
    slot_of = {(r.expert, r.name): i for i, r in enumerate(refs)}
    state = handle.state
    for expert, parent in dict.fromkeys((r.expert, r.name.rsplit(".", 1)[0]) for r in refs):
        slots = [slot_of.get((expert, f"{parent}.{c}")) for c in path.components]
        block = handle.experts[expert].get_submodule(parent)
        if None not in slots and path.applies(block):
            handle.add_hook(block, BlockSkipHook(state, slots, path), BLOCK_HOOK)
            state.fast_block_ids.append(refs[slots[0]].block)
    if state.fast_block_ids:
        state.reporters["block_fast_path"] = lambda: {"blocks": len(state.fast_block_ids),
                                                      "served": state.record.fast_blocks}


def _add_call_invariant(handle: AccelHandle) -> None:
    """A ``CallInvariantHook`` on the family's modules that see the same input at every step of a call
    (see ``accel.cache.call_invariant``)."""
    from .cache.call_invariant import CALL_INVARIANT, INVARIANT_HOOK, CallInvariantHook

    for name in CALL_INVARIANT.get(handle.layout.name if handle.layout is not None else "", ()):
        module = getattr(handle.denoiser, name, None)
        if isinstance(module, torch.nn.Module):
            handle.invariant[name] = CallInvariantHook(handle.state)
            handle.add_hook(module, handle.invariant[name], INVARIANT_HOOK)
    hooks = list(handle.invariant.values())
    if hooks:
        handle.state.call_listeners.append(lambda: [h.reset() for h in hooks])
        handle.state.reporters["call_invariant_reuses"] = lambda: sum(h.hits for h in hooks)


@contextmanager
def _before_accel(pipe):
    """Within: the pipeline with the scheduler and call defaults it had before accel; put back on exit."""
    handle = _HANDLES.get(pipe)
    if handle is None or (handle.old_scheduler is None and handle.old_defaults is None):
        yield
        return
    scheduler, defaults = pipe.__dict__.get("scheduler", _MISSING), pipe.__dict__.get("accel_defaults", _MISSING)
    if handle.old_scheduler is not None:
        pipe.scheduler = handle.old_scheduler
    if handle.old_defaults is not None:
        _restore_defaults(pipe, handle.old_defaults[0])
    try:
        yield
    finally:
        if scheduler is not _MISSING:
            pipe.scheduler = scheduler
        _restore_defaults(pipe, defaults)


def _is_one_step(pipe, extra_defaults: dict | None) -> bool:
    defaults = {**getattr(pipe, "accel_defaults", {}), **(extra_defaults or {})}
    return defaults.get("num_inference_steps") == 1


def _restore_defaults(pipe, old) -> None:
    if old is _MISSING:
        pipe.__dict__.pop("accel_defaults", None)
    else:
        pipe.accel_defaults = old


def _install_attention(handle: AccelHandle, backend: str) -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    from .attention import AccelAttnProcessor
    from .kernels.select import Backend

    Backend(backend)  # a clear error for an unknown name
    counters: dict = {}
    procs = []
    for mod in (m for den in handle.experts for m in den.modules()):
        if isinstance(mod, Attention) and isinstance(mod.processor, (AttnProcessor, AttnProcessor2_0)):
            old = mod.processor
            proc = AccelAttnProcessor(old, backend, counters)
            proc.keep_core = handle.state.policy is not None and handle.state.policy.keeps_inputs
            mod.set_processor(proc)
            procs.append(proc)
            handle.cleanups.append(lambda m=mod, o=old: m.set_processor(o))
    if not procs:
        found = sorted({type(m.processor).__name__ for den in handle.experts for m in den.modules()
                        if hasattr(m, "set_processor") and getattr(m, "processor", None) is not None})
        joint = any("Joint" in n or "Flux" in n or "Double" in n or "SingleStream" in n or "Qwen" in n or "Chroma" in n
                    or "HunyuanImage" in n for n in found)
        kind = "joint text-image attention" if joint else "an attention of its own"
        raise ValueError(f"accel's attention processor replaces diffusers' AttnProcessor / AttnProcessor2_0 "
                         f"(PixArt, DiT, SD / SDXL); this {handle.layout.name} denoiser uses {', '.join(found) or 'none'} "
                         f"({kind}), which it does not implement yet (TokenRefresh needs it): leave attention=None")
    handle.state.call_listeners.append(lambda: [p.reset() for p in procs])
    handle.state.reporters["attention"] = lambda: {"backend_requested": backend, "processors": len(procs), **counters}


def remove(pipe):
    """Detach everything accel attached; the pipeline then behaves exactly as before ``apply``."""
    handle = _HANDLES.pop(pipe, None)
    if handle is None:
        return pipe
    for fn in reversed(handle.cleanups):
        fn()
    for module, name, made in reversed(handle.hooked):
        registry = module._diffusers_hook
        registry.remove_hook(name, recurse=False)
        if made and not registry.hooks:
            del module._diffusers_hook
            module.__dict__.pop("forward", None)
    if handle.old_scheduler is not None:
        pipe.scheduler = handle.old_scheduler
    return pipe


def is_applied(pipe) -> bool:
    return pipe in _HANDLES


def handle_of(pipe) -> AccelHandle:
    if pipe not in _HANDLES:
        raise ValueError("accel is not applied to this pipeline: call accel.apply(pipe, ...) first")
    return _HANDLES[pipe]


def _under_context_parallel(handle: AccelHandle) -> None:
    """At the start of every call: refuse what does not compose with the denoiser's context parallelism (it may
    have been enabled after ``apply``) and count MACs while every rank is in the same call (the counting forward
    exchanges shards between ranks, so ``accel.stats`` on one rank alone could not run it)."""
    if context_parallel_of(handle.denoiser) is None:
        return
    policy = handle.state.policy
    check_composes(handle.denoiser, policy is not None and policy.keeps_inputs, handle.attention, STEP_HOOK)
    _macs_of_last_inputs(handle)


def _step_guidance_check(steps) -> Callable[[], None]:
    """A call listener warning (once per scale) when a call's CFG scale is not the one its learned steps were
    learned at."""
    from .cache.state import calling_argument
    from .solvers.learned_steps import warn_guidance

    seen: set = set()

    def check() -> None:
        g = calling_argument("guidance_scale")
        if g is not None and g not in seen:
            seen.add(g)
            warn_guidance(steps, g)

    return check


def _shape_key(args: tuple, kwargs: dict) -> tuple:
    return tuple((tuple(a.shape), a.dtype) for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor))


def _macs_of_last_inputs(h: AccelHandle) -> tuple[list[int], list[int]]:
    """MACs of one forward of each expert (the denoiser, for most pipelines) at the last call's input shapes, and of
    each slot and invariant module in them (counted once per shape; experts share a class, so the call's first
    inputs serve them all)."""
    args, kwargs = h.state.last_inputs
    key = _shape_key(args, kwargs)
    if key not in h.macs:
        h.state.measuring = True
        try:
            totals, per = [], [0] * (len(h.state.slots) + len(h.invariant))
            invariant = list(range(len(h.state.slots), len(per)))  # the first expert's invariant modules
            for e, den in enumerate(h.experts or [h.denoiser]):
                mine = [i for i, x in enumerate(h.slot_expert) if x == e] + (invariant if e == 0 else [])
                names = [h.state.slots[i][2] if i < len(h.state.slots) else list(h.invariant)[i - len(h.state.slots)]
                         for i in mine]
                total, counts = count_macs(den, args, kwargs, names)
                totals.append(total)
                for i, c in zip(mine, counts):
                    per[i] = c
            h.macs[key] = (totals, per)
        finally:
            h.state.measuring = False
    return h.macs[key]


def stats(pipe, count_macs_now: bool = True) -> Stats:
    """Report of the last call: steps, computed/reused per block and component, MACs, denoising time.

    MACs are counted once per input shape with ``torch.utils.flop_counter`` (one extra denoiser
    forward, nothing cached is touched) and multiplied by what was computed. Under diffusers' context
    parallelism that forward runs inside every call with a new input shape, at its first step, on every rank
    together (whether or not ``stats`` is called; ``count_macs_now`` has no effect), and the figures are this
    rank's (``extra["context_parallel"]``; see ``accel.parallel``).
    """
    h = handle_of(pipe)
    rec = h.state.record
    totals, per = [0] * len(h.experts or [h.denoiser]), [0] * len(h.state.slots)
    cp = rank_report(h.denoiser)
    if count_macs_now and h.state.last_inputs is not None and cp is None:
        totals, per = _macs_of_last_inputs(h)
    elif cp is not None and h.state.last_inputs is not None:  # counted in the call, on every rank together
        totals, per = h.macs.get(_shape_key(*h.state.last_inputs), (totals, per))
    n_slots = len(h.state.slots)
    per, per_invariant = per[:n_slots], per[n_slots:]
    cnames = h.layout.component_names if h.layout is not None else ()
    prefix = [f"{n}." if len(h.experts) > 1 else "" for n in h.expert_names]  # Wan 2.2: whose block it is
    comps = [
        ComponentStats(b, cnames[c], prefix[h.slot_expert[i]] + name if prefix else name, rec.computed[i],
                       rec.reused[i], per[i], rec.partial[i], rec.refreshed[i])
        for i, (b, c, name) in enumerate(h.state.slots)
    ]
    calls = rec.expert_calls or [rec.denoiser_calls]
    full = sum(t * c for t, c in zip(totals, calls))
    saved = sum((c.reused + c.partial - c.refreshed) * c.macs for c in comps)
    saved += sum(m * hook.hits for m, hook in zip(per_invariant, h.invariant.values()))  # projections reused
    seconds = rec.span.seconds
    extra = {k: fn() for k, fn in h.state.reporters.items()}
    if cp is not None:
        extra["context_parallel"] = {**cp, "macs": "this rank's"}
    family = h.layout.name if h.layout is not None else type(h.denoiser).__name__
    return Stats(family, rec.steps, rec.denoiser_calls, comps, full, full - saved, seconds, extra)
