"""Per-pipeline run state shared by accel's hooks: where the denoising loop is, cached outputs, counters."""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ..solvers.noise_schedule import current_timestep
from ..timing import Span, device_of
from .policy import COMPUTE, REUSE, CachePolicy, Row


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    for a in kwargs.values():
        if isinstance(a, torch.Tensor):
            return a
    return None


def _extrapolate(last, prev, w: float):
    """``last + w (last - prev)`` for a tensor or a tuple of tensors (other members are returned as in ``last``)."""
    if isinstance(last, torch.Tensor):
        return torch.lerp(prev, last, 1.0 + w) if last.is_floating_point() else last
    if isinstance(last, tuple):
        return tuple(_extrapolate(a, b, w) for a, b in zip(last, prev))
    return last


@dataclass
class Entry:
    """A computed component output held for reuse, with the shape of the input it was computed for."""

    shape: torch.Size | None
    output: Any


@dataclass
class ForecastEntry(Entry):
    """``taylor`` reuse: the last computed output and the one before it, with their steps; a reuse returns the
    first-order forecast to the current step."""

    step: int = 0
    prev_output: Any = None
    prev_step: int | None = None


@dataclass
class TokenEntry(Entry):
    """Token refresh: the output, the input it was computed from and attention's pre-projection buffer (both
    updated in place as tokens are refreshed)."""

    inputs: torch.Tensor | None = None
    core: torch.Tensor | None = None


@dataclass
class Refresh:
    """Lookup answer of token-refresh policies: recompute ``fraction`` of the tokens of the stored entry."""

    fraction: float
    entry: TokenEntry


@dataclass
class CallRecord:
    """What the last pipeline call did (the raw material of ``accel.stats``)."""

    steps: int = 0
    denoiser_calls: int = 0
    num_steps_planned: int = 0
    computed: list[int] = field(default_factory=list)  # per slot
    reused: list[int] = field(default_factory=list)
    refreshed: list[float] = field(default_factory=list)  # per slot: sum of refreshed token shares
    partial: list[int] = field(default_factory=list)  # per slot: calls that refreshed some tokens
    fast_blocks: int = 0  # block calls served by a block fast path (all components reused)
    expert_calls: list[int] = field(default_factory=list)  # denoiser calls per expert (Wan 2.2: two)
    span: Span = field(default_factory=Span)  # first denoiser call's start to the last one's end
    shape_key: tuple | None = None


class RunState:
    """One per accelerated pipeline. Tracks steps from the denoiser's calls and holds the component cache.

    A new pipeline call is recognised when the scheduler's ``timesteps`` tensor is a new object (every
    diffusers pipeline calls ``set_timesteps``), the timestep rises, or the previous call ended (diffusers
    resets stateful hooks at the end of a call); repeated calls at the same timestep within a step are
    separate branches (cond / uncond passes) with caches of their own.

    Modules may be shared by several pipelines (``Pipeline(**pipe.components)``, ``from_pipe``). A call that
    another pipeline makes through them is *foreign*: every hook then runs the module as it is, stores and
    counts nothing, so that pipeline's images are exactly its plain images and this pipeline's state is kept.
    """

    def __init__(self, pipe, slots: list[tuple[int, int, str]], policy: CachePolicy | None,
                 modules: list[torch.nn.Module] | None = None) -> None:
        self._pipe_ref = weakref.ref(pipe) if pipe is not None else None
        self.slots = slots  # (block, component, module name) per cache slot
        self.modules = modules or []  # the component module of each slot (token refresh reads attention's buffer)
        self.policy = policy
        self.measuring = False
        self.foreign = False  # the current denoiser call belongs to another pipeline sharing the modules
        self.fast_blocks = True  # BlockSkipHook may serve a fully reused block without running it
        self.fast_block_ids: list[int] = []  # the blocks that have a BlockSkipHook
        self._timesteps_obj: Any = None
        self._last_t: float | None = None
        self._step = -1
        self._branch = 0
        self._offset = 0
        self._row: Row | None = None
        self._keep: list[list[bool]] | None = None  # which outputs of this step a later step reads (None: all)
        self._store: list[dict[int, Entry]] = [dict() for _ in slots]  # per slot: branch -> entry
        self.record = CallRecord(computed=[0] * len(slots), reused=[0] * len(slots), refreshed=[0.0] * len(slots),
                                 partial=[0] * len(slots))
        self.last_inputs: tuple[tuple, dict] | None = None
        self.reporters: dict = {}  # name -> callable giving a value for accel.stats (guidance etc.)
        self.observers: list = []  # fn(step, branch, slot, output) for every computed component (calibration)
        self.call_listeners: list = []  # fn() at the start of every pipeline call

    @property
    def pipe(self):
        """The accelerated pipeline (None for a bare denoiser, or once the pipeline is gone)."""
        return self._pipe_ref() if self._pipe_ref is not None else None

    @property
    def active(self) -> bool:
        """Whether hooks act on the current denoiser call (False while measuring or in a foreign call)."""
        return not (self.measuring or self.foreign)

    # -- step tracking (called by the denoiser hook) --------------------------------------------
    @torch.compiler.disable
    def on_denoiser_call(self, timestep, args: tuple, kwargs: dict, expert: int = 0) -> None:
        if self.measuring:
            return
        pipe = self.pipe
        sched = getattr(pipe, "scheduler", None)
        ts = getattr(sched, "timesteps", None)
        # the scheduler's own timestep where it keeps a step index: it falls step by step whatever the denoiser's
        # time convention (Z-Image's model time rises)
        own = current_timestep(sched) if sched is not None else None
        timestep = own if own is not None else timestep
        t = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        new_call = (ts is not None and ts is not self._timesteps_obj) or self._last_t is None or t > self._last_t
        if new_call:
            caller = calling_pipeline() if pipe is not None else None
            self.foreign = caller is not None and caller is not pipe
            if self.foreign:  # another pipeline's call: keep this pipeline's state as it is
                self._timesteps_obj, self._last_t, self._row = ts, t, None
                return
            self.last_inputs = (args, kwargs)  # before the call listeners, which may count MACs on them
            self._begin_call(sched, ts)
        elif self.foreign:
            self._last_t = t
            return
        elif t == self._last_t:
            self._branch += 1
        else:
            self._step += 1
            self._branch = 0
        self._last_t = t
        self.record.steps = self._step + 1
        self.record.denoiser_calls += 1
        calls = self.record.expert_calls
        calls.extend([0] * (expert + 1 - len(calls)))
        calls[expert] += 1
        if self.policy is not None:
            self._row = self.policy.row(self._offset + self._step)
            self._keep = self.policy.keeps(self._offset + self._step)
        if not self.record.span.started:
            self.record.span.start(device_of(args, kwargs))

    @torch.compiler.disable
    def on_denoiser_return(self) -> None:
        if self.active:
            self.record.span.stop()

    def _begin_call(self, sched, ts) -> None:
        self._timesteps_obj = ts
        self._step, self._branch = 0, 0
        for s in self._store:
            s.clear()
        n = getattr(sched, "num_inference_steps", None) or (len(ts) if ts is not None else 0)
        self._offset = int(getattr(sched, "begin_index", None) or 0) if sched is not None else 0
        if self._offset and getattr(sched, "order", 1) > 1:
            self._offset //= sched.order
        self.record = CallRecord(computed=[0] * len(self.slots), reused=[0] * len(self.slots),
                                 refreshed=[0.0] * len(self.slots), partial=[0] * len(self.slots),
                                 num_steps_planned=n)
        if self.policy is not None:
            self.policy.begin_call(int(n))
        for fn in self.call_listeners:
            fn()

    def reset(self) -> None:
        """Forget the current call and its stored outputs (the next denoiser call starts a new one); the record
        of the last call stays for ``accel.stats``. Diffusers calls this at the end of every pipeline call
        (through ``reset_stateful_hooks``), so no activations are held between calls."""
        self._timesteps_obj = None
        self._last_t = None
        self._row = None
        self.foreign = False
        for s in self._store:
            s.clear()

    # -- the component cache (called by the component hooks) ----------------------------------
    @torch.compiler.disable
    def lookup(self, slot: int, args: tuple, kwargs: dict):
        """The stored output if this slot reuses at this step, a ``Refresh`` for a partial recompute, or
        None (the caller computes)."""
        if self._row is None or not self.active:
            return None
        b, c, _ = self.slots[slot]
        share = self._row[b][c]
        if share >= COMPUTE:
            return None
        hit = self._store[slot].get(self._branch)
        x = _first_tensor(args, kwargs)
        if hit is None or (x is not None and hit.shape != x.shape):
            return None  # nothing stored yet (or another shape): compute, as ECAD's code does
        if share <= REUSE:
            return self._forecast(slot, hit)[0]
        if not isinstance(hit, TokenEntry):
            return None
        return Refresh(float(share), hit)  # counted by count_partial once the component really did it

    def count_partial(self, slot: int, fraction: float) -> None:
        """Count a partial recompute of ``slot`` (``fraction`` of its tokens)."""
        self.record.refreshed[slot] += fraction
        self.record.partial[slot] += 1

    @torch.compiler.disable
    def lookup_block(self, slots: list[int], x: torch.Tensor) -> tuple[list, list[bool]] | None:
        """The reused outputs of ``slots`` (all components of one block) and, per output, whether it is a new
        tensor (a forecast) the caller may overwrite, if every one of them is reused at this step with an
        entry stored for inputs of ``x``'s shape; else None (nothing is counted then)."""
        if self._row is None or not self.fast_blocks or not self.active:
            return None
        row, branch, hits = self._row, self._branch, []
        for slot in slots:
            b, c, _ = self.slots[slot]
            hit = self._store[slot].get(branch)
            if row[b][c] > REUSE or hit is None or hit.shape != x.shape:
                return None
            hits.append(hit)
        self.record.fast_blocks += 1
        found = [self._forecast(slot, hit) for slot, hit in zip(slots, hits)]
        return [f[0] for f in found], [f[1] for f in found]

    def _forecast(self, slot: int, hit: Entry) -> tuple[Any, bool]:
        """Count a reuse of ``slot``: its stored output (the forecast, for taylor reuse) and whether that is a
        new tensor rather than the stored entry."""
        self.record.reused[slot] += 1
        if isinstance(hit, ForecastEntry) and hit.prev_step is not None:
            w = (self._offset + self._step - hit.step) / (hit.step - hit.prev_step)
            value = _extrapolate(hit.output, hit.prev_output, w)
            return value, value is not hit.output and isinstance(value, torch.Tensor)
        return hit.output, False

    @torch.compiler.disable
    def store(self, slot: int, output, args: tuple, kwargs: dict) -> None:
        if not self.active:
            return
        self.record.computed[slot] += 1
        for fn in self.observers:
            fn(self._offset + self._step, self._branch, slot, output)
        if self.policy is None:
            return
        if self._keep is not None:
            b, c, _ = self.slots[slot]
            if not self._keep[b][c]:
                return  # no later step of this call reads it: holding it would only keep memory busy
        x = _first_tensor(args, kwargs)
        shape = x.shape if x is not None else None
        if self.policy.keeps_inputs and x is not None:
            core = getattr(getattr(self.modules[slot], "processor", None), "last_core", None) if self.modules else None
            self._store[slot][self._branch] = TokenEntry(shape, output, x, core)
        elif self.policy.reuse == "taylor":
            step, old = self._offset + self._step, self._store[slot].get(self._branch)
            prev = (old.output, old.step) if isinstance(old, ForecastEntry) and old.step < step else (None, None)
            self._store[slot][self._branch] = ForecastEntry(shape, output, step, *prev)
        else:
            self._store[slot][self._branch] = Entry(shape, output)


def calling_pipeline():
    """The innermost diffusers pipeline whose ``__call__`` is on the stack (None when there is none): read once
    per pipeline call, to tell this pipeline's calls from those of another pipeline sharing its modules."""
    frame = _pipeline_call_frame()
    return frame.f_locals.get("self") if frame is not None else None


def calling_argument(name: str, default: Any = None) -> Any:
    """The argument ``name`` of the innermost running pipeline call (e.g. its ``guidance_scale``), else ``default``."""
    frame = _pipeline_call_frame()
    return frame.f_locals.get(name, default) if frame is not None else default


def _pipeline_call_frame():
    from diffusers import DiffusionPipeline

    f = sys._getframe(2)
    while f is not None:
        if f.f_code.co_name == "__call__" and isinstance(f.f_locals.get("self"), DiffusionPipeline):
            return f
        f = f.f_back
    return None
