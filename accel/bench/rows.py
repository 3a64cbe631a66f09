"""Bench rows: how each configuration is attached to and detached from a pipeline.

A row is a name like ``plain``, ``uniform:3``, ``schedule:FILE`` or ``fbcache:0.3``; each kind is a
registered ``RowKind`` so new methods add rows without touching the driver.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import accel
from ..guidance.spec import call_scale, guidance_from_spec
from ..solvers.named import split_steps, with_guidance


@dataclass
class Row:
    name: str
    label: str
    attach: Callable[[object, object], None]  # (pipe, BenchConfig)
    detach: Callable[[object], None]
    before_call: Callable[[object], None] = lambda pipe: None
    peer: bool = False
    config: dict | None = None
    call_kwargs: dict = field(default_factory=dict)  # per-row pipeline call arguments (e.g. guidance_scale)
    full_size: bool = True  # meaningful on a random-weight full-size model (not for trained students)
    latency_stand_in: str | None = None  # a row of the same cost to time where this one's files do not fit
    # decides to skip from the values it sees: under context parallelism each rank sees its own shard and the
    # ranks could decide differently (their collectives would then no longer match)
    per_rank_decisions: bool = False


ROW_KINDS: dict[str, Callable[[str, str], Row]] = {}


def row_kind(prefix: str):
    def deco(fn):
        ROW_KINDS[prefix] = fn
        return fn
    return deco


def make_row(spec: str) -> Row:
    kind, _, arg = spec.partition(":")
    if kind not in ROW_KINDS:
        raise ValueError(f"unknown bench method {spec!r}; known kinds: {', '.join(sorted(ROW_KINDS))}")
    return ROW_KINDS[kind](spec, arg)


@row_kind("plain")
def _plain(spec: str, arg: str) -> Row:
    """The pipeline as it is: ``plain``."""
    return Row(spec, "plain pipeline", lambda pipe, cfg: None, lambda pipe: None, config={"kind": "plain"})


def calibration_set(pipe, cfg, n: int) -> list[str]:
    """``n`` prompts a row calibrates on: the bench's calibration prompts (split from ``--prompts``, never the ones it
    scores), else the pipeline's default calibration prompts."""
    from ..pipelines.calls import default_prompts, repeat_to

    return repeat_to(cfg.calibration_prompts or default_prompts(pipe, n, seed=cfg.seed + 1, calibration=True), n)


def _check_reuse(spec: str, reuse: str) -> None:
    try:
        accel.schedule.check_reuse(reuse)
    except ValueError as e:
        raise ValueError(f"bench method {spec!r}: {e}") from None


@row_kind("uniform")
def _uniform(spec: str, arg: str) -> Row:
    """accel's uniform schedule (compute every K-th step): ``uniform:K``, or ``uniform:K:taylor`` to forecast
    reused outputs (``CacheSchedule.reuse``)."""
    k_arg, _, reuse = (arg or "2").partition(":")
    k, reuse = int(k_arg), reuse or "hold"
    _check_reuse(spec, reuse)
    return Row(spec, f"accel uniform every {k}" + (f" ({reuse})" if reuse != "hold" else ""),
               lambda pipe, cfg: accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, cfg.steps, k, reuse=reuse)),
               accel.remove, config={"kind": "uniform", "interval": k, "reuse": reuse})


@row_kind("schedule")
def _schedule(spec: str, arg: str) -> Row:
    """A schedule file (BAC, ECAD, ...): ``schedule:FILE``."""
    path = Path(arg)
    if not path.exists():
        raise FileNotFoundError(f"schedule file {arg!r} not found")
    sched = accel.CacheSchedule.load(path)
    reuse = f", {sched.reuse}" if sched.reuse != "hold" else ""
    return Row(spec, f"accel {sched.method} ({path.name}{reuse})", lambda pipe, cfg: accel.apply(pipe, cache=sched),
               accel.remove, config={"kind": "schedule", "path": str(path), "method": sched.method})


def transformers(pipe) -> list:
    """The pipeline's transformers: ``transformer``, and ``transformer_2`` where it has a second expert (Wan 2.2)."""
    from ..pipelines.families import find_experts

    return [m for _, m in find_experts(pipe)]


def _peer_hook_row(spec: str, label: str, apply_fn: Callable[[object, object, object], None], names: tuple[str, ...],
                   config: dict, per_rank_decisions: bool = False) -> Row:
    """A diffusers cache hook, applied to every transformer of the pipeline (``apply_fn(pipe, cfg, transformer)``;
    each of Wan 2.2's experts gets its own, as diffusers' ``enable_cache`` would per model). PixArt/DiT pipelines
    set no cache context and the hooks keep state across calls, so the bench sets a context and resets the hooks
    before every call (as a user must)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    def attach(pipe, cfg):
        if not hasattr(pipe, "transformer"):
            raise ValueError(f"{label} hooks transformer blocks; {type(pipe).__name__} denoises with a UNet")
        for den in transformers(pipe):
            apply_fn(pipe, cfg, den)
            # the blocks' new registries must be seen by the cache context the pipeline (or before()) sets
            HookRegistry.check_if_exists_or_initialize(den).invalidate_child_registries_cache()

    def before(pipe):
        for den in transformers(pipe):
            reg = HookRegistry.check_if_exists_or_initialize(den)
            reg.reset_stateful_hooks()
            _set_cache_context(den, CacheContext("cond"))

    def detach(pipe):
        for den in transformers(pipe):
            reg = HookRegistry.check_if_exists_or_initialize(den)
            for n in names:
                reg.remove_hook(n, recurse=True)
            reg.invalidate_child_registries_cache()

    return Row(spec, label, attach, detach, before, peer=True, config=config, per_rank_decisions=per_rank_decisions)


@row_kind("fbcache")
def _fbcache(spec: str, arg: str) -> Row:
    """diffusers FirstBlockCache: ``fbcache:THRESHOLD``."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
    from diffusers.hooks import first_block_cache as fbc

    thr = float(arg or 0.05)
    names = (fbc._FBC_LEADER_BLOCK_HOOK, fbc._FBC_BLOCK_HOOK)
    return _peer_hook_row(spec, f"diffusers FirstBlockCache {thr}",
                          lambda pipe, cfg, den: apply_first_block_cache(den, FirstBlockCacheConfig(threshold=thr)), names,
                          {"kind": "peer", "peer": "diffusers.FirstBlockCache", "threshold": thr}, per_rank_decisions=True)


@row_kind("taylorseer")
def _taylorseer(spec: str, arg: str) -> Row:
    """diffusers TaylorSeer: ``taylorseer:INTERVAL`` (its defaults: interval 5, warm-up 3 steps, order 1)."""
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks import taylorseer_cache as ts

    interval = int(arg or 5)

    def apply(pipe, cfg, den):
        from ..pipelines.families import find_layout

        # TaylorSeer's default identifiers ("^transformer_blocks.*attn", matched with re.fullmatch) hook nothing
        # on PixArt (attn1/attn2): give it the same modules accel caches (whole blocks on a generic layout), so the
        # comparison is fair; a denoiser with no layout keeps TaylorSeer's defaults.
        layout = find_layout(den)[0]
        ids = None if layout is None else [rf"{g.path}\.\d+" + (rf"\.{attr}" if attr else "")
                                           for g in layout.groups for _, attr in g.components]
        conf = TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=3, max_order=1,
                                     taylor_factors_dtype=den.dtype,
                                     **({"cache_identifiers": ids} if ids else {}))
        apply_taylorseer_cache(den, conf)

    return _peer_hook_row(spec, f"diffusers TaylorSeer every {interval}", apply, (ts._TAYLORSEER_CACHE_HOOK,),
                          {"kind": "peer", "peer": "diffusers.TaylorSeer", "cache_interval": interval,
                           "disable_cache_before_step": 3, "max_order": 1})


@row_kind("magcache")
def _magcache(spec: str, arg: str) -> Row:
    """diffusers MagCache: ``magcache:THRESHOLD``; its magnitude ratios are calibrated first, as its docs say,
    with one ``calibrate=True`` call on calibration prompts (disjoint from the bench prompts; on the full-size
    latency model, which has no text encoder, on its own random inputs)."""
    import contextlib
    import io
    import re as _re

    import torch
    from diffusers.hooks import HookRegistry, MagCacheConfig, apply_mag_cache
    from diffusers.hooks import mag_cache as mc
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    thr = float(arg or 0.06)
    names = (mc._MAG_CACHE_LEADER_BLOCK_HOOK, mc._MAG_CACHE_BLOCK_HOOK)

    memo: dict = {}

    def apply(pipe, cfg, den):
        if len(transformers(pipe)) > 1:
            raise ValueError("MagCache's ratios and step count belong to one model's calls; with two experts each "
                             "sees only its own steps, so it does not apply to this pipeline")
        if id(pipe) in memo:  # attached again to this pipeline (interleaved timing rounds): its calibrated ratios
            apply_mag_cache(pipe.transformer, MagCacheConfig(threshold=thr, num_inference_steps=cfg.steps,
                                                             mag_ratios=memo[id(pipe)]))
            return
        apply_mag_cache(pipe.transformer, MagCacheConfig(calibrate=True, num_inference_steps=cfg.steps))
        reg = HookRegistry.check_if_exists_or_initialize(pipe.transformer)
        reg.reset_stateful_hooks()
        _set_cache_context(pipe.transformer, CacheContext("cond"))
        if getattr(pipe, "text_encoder", None) is None:  # the full-size latency model: calibrate on its own inputs
            from .shapes import pixart_alpha_shaped_inputs

            call = pixart_alpha_shaped_inputs(steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed + 999,
                                              device=pipe.transformer.device)
        else:
            from ..pipelines.calls import call_kwargs

            call = call_kwargs(pipe, calibration_set(pipe, cfg, min(cfg.batch, 8)), cfg.steps, cfg.guidance,
                               **cfg.size(), generator=torch.Generator().manual_seed(cfg.seed + 999), output_type="pt")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            pipe(**call)
        ratios = [float(x) for x in _re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?|\d+", buf.getvalue().split("mag_ratios=...):")[-1])]
        for n in names:
            reg.remove_hook(n, recurse=True)
        reg.invalidate_child_registries_cache()
        memo[id(pipe)] = torch.tensor(ratios[: cfg.steps])
        apply_mag_cache(pipe.transformer, MagCacheConfig(threshold=thr, num_inference_steps=cfg.steps,
                                                         mag_ratios=memo[id(pipe)]))

    # its ratios are calibrated from the magnitudes each rank sees
    return _peer_hook_row(spec, f"diffusers MagCache {thr}", apply, names,
                          {"kind": "peer", "peer": "diffusers.MagCache", "threshold": thr, "max_skip_steps": 3,
                           "retention_ratio": 0.2, "mag_ratios": "calibrated on 8 calibration prompts"},
                          per_rank_decisions=True)


def _timestep_callback(pipe, peer: str) -> Callable[[], float]:
    """What diffusers' timestep-gated caches (FasterCache, PAB) read: the pipeline's ``current_timestep``."""
    if not hasattr(type(pipe), "current_timestep"):
        raise ValueError(f"{peer} skips by the pipeline's current timestep, and {type(pipe).__name__} does not expose "
                         "one (current_timestep)")
    return lambda: pipe.current_timestep


def _faster_cache_format(pipe, guidance: float) -> str | None:
    """The latent layout FasterCache approximates the unconditional branch on (``"BCFHW"``, or ``"BFCHW"`` for
    CogVideoX's frames-first latents), or None where it cannot: its hook splits every denoiser batch into an
    unconditional and a conditional half, so the pipeline must run CFG (``guidance`` > 1) as one batched call
    (diffusers' ``"cond_uncond"`` cache context) on unpacked latents."""
    import inspect

    batched = '"cond_uncond"' in inspect.getsource(type(pipe).__call__)
    if guidance <= 1 or not batched or hasattr(type(pipe), "_pack_latents"):
        return None
    return "BFCHW" if type(pipe.transformer).__name__.startswith("CogVideoX") else "BCFHW"


@row_kind("fastercache")
def _fastercache(spec: str, arg: str) -> Row:
    """diffusers FasterCache: ``fastercache[:SKIP]``: attention outputs reused, recomputed every SKIP-th step (default
    2) below t = 681 (its defaults, attention weight 0.5); the unconditional branch approximated from the conditional
    one where the pipeline batches CFG in one call on unpacked latents (CogVideoX), else attention reuse only."""
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache
    from diffusers.hooks import faster_cache as fc

    skip = int(arg or 2)
    info = {"kind": "peer", "peer": "diffusers.FasterCache", "spatial_attention_block_skip_range": skip}

    def apply(pipe, cfg, den):
        fmt = _faster_cache_format(pipe, cfg.guidance)
        info["unconditional_branch_skipped"] = fmt is not None
        apply_faster_cache(den, FasterCacheConfig(
            spatial_attention_block_skip_range=skip, current_timestep_callback=_timestep_callback(pipe, "FasterCache"),
            attention_weight_callback=lambda _: 0.5, tensor_format=fmt or "BCFHW", is_guidance_distilled=fmt is None))

    return _peer_hook_row(spec, f"diffusers FasterCache every {skip}", apply,
                          (fc._FASTER_CACHE_DENOISER_HOOK, fc._FASTER_CACHE_BLOCK_HOOK), info)


@row_kind("pab")
def _pab(spec: str, arg: str) -> Row:
    """diffusers Pyramid Attention Broadcast: ``pab[:SKIP]``: self-attention outputs broadcast, recomputed every
    SKIP-th step (default 2) while 100 < t < 800 (the setting of diffusers' docs)."""
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast
    from diffusers.hooks import pyramid_attention_broadcast as pab

    skip = int(arg or 2)

    def apply(pipe, cfg, den):
        apply_pyramid_attention_broadcast(den, PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=skip, spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=_timestep_callback(pipe, "Pyramid Attention Broadcast")))

    return _peer_hook_row(spec, f"diffusers PAB every {skip}", apply, (pab._PYRAMID_ATTENTION_BROADCAST_HOOK,),
                          {"kind": "peer", "peer": "diffusers.PyramidAttentionBroadcast",
                           "spatial_attention_block_skip_range": skip, "spatial_attention_timestep_skip_range": [100, 800]})


@row_kind("dbcache")
def _dbcache(spec: str, arg: str) -> Row:
    """cache-dit DBCache ``dbcache:THRESHOLD[:Fn:Bn:WARMUP]`` (optional extra accel[peers]).

    Defaults for small block counts: F1B0 (cache-dit's own default Fn=8 asserts on models with fewer
    blocks), its default warm-up of 8 steps. cache-dit patches the pipeline class while enabled, so the
    bench detaches it right after its row.
    """
    try:
        import cache_dit
    except ImportError as e:
        raise ValueError("the dbcache row needs cache-dit: pip install 'accel[peers]'") from e
    parts = (arg or "0.08").split(":")
    thr = float(parts[0])
    fn, bn, warm = (int(x) for x in (parts[1:] + ["1", "0", "8"][len(parts) - 1 :])[:3])

    def attach(pipe, cfg):
        cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(
            Fn_compute_blocks=fn, Bn_compute_blocks=bn, residual_diff_threshold=thr, max_warmup_steps=warm,
            num_inference_steps=cfg.steps))

    return Row(spec, f"cache-dit DBCache F{fn}B{bn} {thr}", attach, cache_dit.disable_cache, peer=True,
               config={"kind": "peer", "peer": "cache-dit.DBCache", "Fn_compute_blocks": fn, "Bn_compute_blocks": bn,
                       "residual_diff_threshold": thr, "max_warmup_steps": warm}, per_rank_decisions=True)


@row_kind("cfg")
def _cfg(spec: str, arg: str) -> Row:
    """Plain CFG at another scale: ``cfg:W``."""
    w = float(arg)
    return Row(spec, f"CFG {w:g}", lambda pipe, cfg: None, lambda pipe: None, config={"kind": "cfg", "scale": w},
               call_kwargs={"guidance_scale": w})


@row_kind("apg")
def _apg(spec: str, arg: str) -> Row:
    """APG: ``apg:W[:ETA:MOMENTUM:R]`` (accel.APG's defaults for what is left out; R = 0: no norm threshold)."""
    g = guidance_from_spec(spec)
    r = g.norm_threshold or 0.0
    return Row(spec, f"APG {g.scale:g} (eta {g.eta:g}, beta {g.momentum:g}, r {r:g})",
               lambda pipe, cfg: accel.apply(pipe, guidance=g), accel.remove,
               config={"kind": "apg", "scale": g.scale, "eta": g.eta, "momentum": g.momentum, "norm_threshold": r,
                       "method": g}, call_kwargs={"guidance_scale": call_scale(g)})


@row_kind("facfg")
def _facfg(spec: str, arg: str) -> Row:
    """Frequency-aware CFG: ``facfg:W_LOW:W_HIGH[:CUTOFF]``."""
    g = guidance_from_spec(spec)
    return Row(spec, f"FA-CFG low {g.scale_low:g} high {g.scale_high:g}", lambda pipe, cfg: accel.apply(pipe, guidance=g),
               accel.remove, config={"kind": "facfg", "scale_low": g.scale_low, "scale_high": g.scale_high,
                                     "cutoff": g.cutoff, "method": g}, call_kwargs={"guidance_scale": call_scale(g)})


@row_kind("bac")
def _bac(spec: str, arg: str) -> Row:
    """BAC calibrated on the spot: ``bac:SPEEDUP[:TOP_K[:METRIC[:ALLOCATION[:WARMUP[:REUSE[:MAX_GAP]]]]]]``, or
    ``bac:m0.5`` for a MACs fraction instead of a speed-up; ALLOCATION ``uniform`` (the paper's one M) or ``greedy``
    (per-component counts), WARMUP first steps always computed (default 0), REUSE ``hold`` (the paper) or ``taylor``
    (forecast), MAX_GAP the most consecutive steps a component reuses (default: no bound).
    Calibrated on two batches of calibration prompts (disjoint from
    the bench prompts) at the bench's steps, guidance and batch size; calibration time is not part of the latency."""
    from ..calibrate.bac import calibrate_bac, prompt_batches
    from ..pipelines.calls import size_kwargs

    parts = (arg or "2.0").split(":")
    # "m0.5": a MACs-fraction budget instead of a speed-up (no timed latency model: deterministic)
    macs = float(parts[0][1:]) if parts[0].startswith("m") else None
    target = None if macs is not None else float(parts[0])
    top_k = int(parts[1]) if len(parts) > 1 else 3
    metric = parts[2] if len(parts) > 2 else "cosine"
    alloc = parts[3] if len(parts) > 3 else "uniform"
    warmup = int(parts[4]) if len(parts) > 4 and parts[4] else 0
    reuse = parts[5] if len(parts) > 5 and parts[5] else "hold"
    max_gap = int(parts[6]) if len(parts) > 6 and parts[6] else None
    if alloc not in ("uniform", "greedy"):
        raise ValueError(f"bench method {spec!r}: allocation is 'uniform' or 'greedy'")
    _check_reuse(spec, reuse)
    info: dict = {"kind": "bac", "target_speedup": target, "target_macs_fraction": macs, "top_k": top_k,
                  "metric": metric, "allocation": alloc, "warmup": warmup, "reuse": reuse, "max_gap": max_gap}

    memo: dict = {}

    def attach(pipe, cfg):
        if id(pipe) in memo:  # attached again (interleaved timing rounds): the same schedule, not a new calibration
            accel.apply(pipe, cache=memo[id(pipe)])
            return
        # calibration batches of the bench's batch size: the latency model's fixed share depends on it
        prompts = calibration_set(pipe, cfg, 2 * cfg.batch)
        sched = calibrate_bac(pipe, prompt_batches(prompts, cfg.batch, pipe, cfg.guidance), steps=cfg.steps,
                              guidance=cfg.guidance, speedup=target, macs_fraction=macs, top_k=top_k, metric=metric, seed=cfg.seed,
                              allocation=alloc, warmup=warmup, reuse=reuse, max_gap=max_gap,
                              call_kwargs=size_kwargs(pipe, **cfg.size()))
        info.update(updates_per_component=sched.metadata["updates_per_component"],
                    predicted_speedup=sched.metadata["predicted_speedup"],
                    component_macs_fraction=sched.metadata["component_macs_fraction"])
        memo[id(pipe)] = sched
        accel.apply(pipe, cache=sched)

    label = ", ".join([metric] + ([f"top-{top_k}"] if top_k != 3 else []) + ([alloc] if alloc != "uniform" else [])
                      + ([f"warm-up {warmup}"] if warmup else [])
                      + ([reuse] if reuse != "hold" else []) + ([f"gap <= {max_gap}"] if max_gap is not None else []))
    budget = f"{macs:.0%} of the MACs" if macs is not None else f"target {target:g}x"
    # calibrated from the statistics (and, for a speed-up target, the timings) each rank sees on its own shard
    return Row(spec, f"accel BAC {budget} ({label})", attach, accel.remove, config=info, per_rank_decisions=True)


@row_kind("toca")
def _toca(spec: str, arg: str) -> Row:
    """Token refresh (ToCa-like): ``toca:INTERVAL:RATIO`` (full compute every INTERVAL steps, RATIO of tokens between)."""
    parts = (arg or "3:0.25").split(":")
    interval, ratio = int(parts[0]), float(parts[1]) if len(parts) > 1 else 0.25
    pol = accel.TokenRefresh(interval, ratio)
    return Row(spec, f"accel token refresh every {interval}, {ratio:.0%} tokens",
               lambda pipe, cfg: accel.apply(pipe, cache=pol), accel.remove,
               config={"kind": "token_refresh", "interval": interval, "ratio": ratio})


@row_kind("solver")
def _solver(spec: str, arg: str) -> Row:
    """A solver at its own step count: ``solver:NFE:NAME`` with NAME as in ``accel.solvers.named``
    (``dpm++``, ``unipc``, ``v3[:EMS_FILE]``, ``dc[:RATIO_FILE][:GUIDANCE]``; files default to the ones shipped
    for the reference pipelines, DC's guidance to the bench's)."""
    nfe_s, _, name = arg.partition(":")
    if not nfe_s.isdigit() or not name:
        raise ValueError(f"bench method {spec!r}: write solver:NFE:NAME, e.g. solver:6:unipc")
    nfe = int(nfe_s)

    def attach(pipe, cfg):
        accel.apply(pipe, solver=with_guidance(name, cfg.guidance))

    learned = " learned" if split_steps(name)[1] else ""
    return Row(spec, f"{name.split(':')[0]} solver, {nfe}{learned} steps", attach, accel.remove,
               config={"kind": "solver", "solver": name, "nfe": nfe}, call_kwargs={"num_inference_steps": nfe},
               latency_stand_in=_dc_stand_in(spec))


def _dc_stand_in(spec: str) -> str | None:
    """DC-Solver costs what UniPC costs (its compensation is a few tensor operations per step) and DPM-Solver-v3
    what any second-order multistep solver costs (its integrals are computed before the loop), so where their files
    are for another model (the full-size latency model), UniPC at the same NFE is timed."""
    import re

    new = re.sub(r"solver:(\d+):dc[^+]*", r"solver:\1:unipc", spec)
    new = re.sub(r"solver:(\d+):v3[^+]*", r"solver:\1:unipc", new)  # not dpm++: '+' separates stack parts
    return new if new != spec else None


@row_kind("onestep")
def _onestep(spec: str, arg: str) -> Row:
    """A one-step student in place of the pipeline's transformer: ``onestep[:DIR]`` (default: the shipped
    ``pixart-onestep`` weights); 1 step, no CFG."""
    from ..pipelines.components import WEIGHTS_DIR

    path = Path(arg) if arg else WEIGHTS_DIR / "pixart-onestep"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no one-step student in {path}; make one with `accel distill --transformer-only`")
    saved: dict = {}

    def attach(pipe, cfg):
        student = type(pipe.transformer).from_pretrained(path, torch_dtype=pipe.transformer.dtype)
        saved["transformer"] = pipe.transformer
        pipe.transformer = student.eval()

    def detach(pipe):
        pipe.transformer = saved.pop("transformer")

    return Row(spec, f"one-step student ({path.name}), 1 step", attach, detach,
               config={"kind": "onestep", "path": str(path)}, full_size=False,
               call_kwargs={"num_inference_steps": 1, "guidance_scale": 1.0})


@row_kind("stack")
def _stack(spec: str, arg: str) -> Row:
    """Solver, cache and guidance together: ``stack:PART+PART...`` with parts ``solver:NFE:NAME``,
    ``uniform:K[:REUSE]`` or ``schedule:FILE``, and ``apg:W[...]``, ``facfg:WL:WH[:CUT]`` or ``cfg:W`` (one of each kind at
    most), e.g. ``stack:solver:8:dpm+++uniform:2+apg:4.5``; the shorthand of an ``accel.stack.Stack``, whose
    cache is laid over the solver's step count."""
    from ..stack import Stack, split_shorthand

    try:
        stack = Stack.from_shorthand(arg)
    except ValueError as e:
        raise ValueError(f"bench method {spec!r}: {e}") from None
    subrows = [make_row(p) for p in split_shorthand(arg)]  # their labels and configs (and a missing schedule file's error)
    return _stack_row(spec, stack, "stack: " + " + ".join(r.label for r in subrows),
                      {"kind": "stack", "parts": [r.config for r in subrows]})


@row_kind("config")
def _config(spec: str, arg: str) -> Row:
    """A stack config file (``accel.stack.Stack``, e.g. written by ``accel tune``): ``config:FILE``."""
    from ..stack import Stack

    stack = Stack.load(arg)
    name = Path(arg).name if Path(arg).name != "config.json" else f"{Path(arg).parent.name}/config.json"
    return _stack_row(spec, stack, f"accel config {name}", {"kind": "config", "path": arg,
                                                                       "stack": stack.to_dict()})


def _stack_row(spec: str, stack, label: str, config: dict) -> Row:
    defaults = stack.call_defaults()

    def attach(pipe, cfg):
        # the scale the row's calls run at (the stack's own, else the bench's): DC's ratios are chosen for it
        accel.apply(pipe, **stack.apply_kwargs(pipe, stack.steps or cfg.steps,
                                               defaults.get("guidance_scale", cfg.guidance)))

    shorthand = "stack:" + stack.shorthand() if stack.steps or stack.solver is None else spec
    return Row(spec, label, attach, accel.remove, call_kwargs=defaults, config=config,
               latency_stand_in=_dc_stand_in(shorthand))
