"""Per-pipeline run state shared by accel's hooks: where the denoising loop is, cached outputs, counters."""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ..timing import Span, device_of
from .policy import CachePolicy


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
class Refresh:
    """Lookup answer of token-refresh policies: recompute ``fraction`` of the tokens of the stored entry."""

    fraction: float
    entry: list  # [input shape, output, input, attention core buffer]


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
    span: Span = field(default_factory=Span)  # first denoiser call's start to the last one's end
    shape_key: tuple | None = None


class RunState:
    """One per accelerated pipeline. Tracks steps from the denoiser's calls and holds the component cache.

    A new pipeline call is recognised when the scheduler's ``timesteps`` tensor is a new object (every
    diffusers pipeline calls ``set_timesteps``) or the timestep rises; repeated calls at the same
    timestep within a step are separate branches (cond / uncond passes) with caches of their own.
    """

    def __init__(self, pipe, slots: list[tuple[int, int, str]], policy: CachePolicy | None) -> None:
        self._pipe = weakref.ref(pipe) if pipe is not None else None
        self.slots = slots  # (block, component, module name) per cache slot
        self._modules: list | None = None  # the component modules (token-refresh policies read them)
        self.policy = policy
        self.measuring = False
        self.fast_blocks = True  # BlockSkipHook may serve a fully reused block without running it
        self.fast_block_ids: list[int] = []  # the blocks that have a BlockSkipHook
        self._timesteps_obj: Any = None
        self._last_t: float | None = None
        self._step = -1
        self._branch = 0
        self._offset = 0
        self._row: list[list[bool]] | None = None
        self._store: list[dict[int, tuple[torch.Size, Any]]] = [dict() for _ in slots]
        self.record = CallRecord(computed=[0] * len(slots), reused=[0] * len(slots), refreshed=[0.0] * len(slots),
                                 partial=[0] * len(slots))
        self.last_inputs: tuple[tuple, dict] | None = None
        self.reporters: dict = {}  # name -> callable giving a value for accel.stats (guidance etc.)
        self.observers: list = []  # fn(step, branch, slot, output) for every computed component (calibration)
        self.call_listeners: list = []  # fn() at the start of every pipeline call

    # -- step tracking (called by the denoiser hook) --------------------------------------------
    def _scheduler(self):
        pipe = self._pipe() if self._pipe is not None else None
        return getattr(pipe, "scheduler", None)

    @torch.compiler.disable
    def on_denoiser_call(self, timestep, args: tuple, kwargs: dict) -> None:
        if self.measuring:
            return
        t = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        sched = self._scheduler()
        ts = getattr(sched, "timesteps", None)
        new_call = (ts is not None and ts is not self._timesteps_obj) or self._last_t is None or (
            self._last_t is not None and t > self._last_t
        )
        if new_call:
            self._begin_call(sched, ts)
            self.last_inputs = (args, kwargs)
        elif t == self._last_t:
            self._branch += 1
        else:
            self._step += 1
            self._branch = 0
        self._last_t = t
        self.record.steps = self._step + 1
        self.record.denoiser_calls += 1
        self._row = self.policy.row(self._offset + self._step) if self.policy is not None else None
        if not self.record.span.started:
            self.record.span.start(device_of(args, kwargs))

    @torch.compiler.disable
    def on_denoiser_return(self) -> None:
        if not self.measuring:
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
        """Forget the current call (the next denoiser call starts a new one)."""
        self._timesteps_obj = None
        self._last_t = None
        for s in self._store:
            s.clear()

    # -- the component cache (called by the component hooks) ----------------------------------
    @torch.compiler.disable
    def lookup(self, slot: int, args: tuple, kwargs: dict):
        """The stored output if this slot reuses at this step, a ``Refresh`` for a partial recompute, or
        None (the caller computes)."""
        if self.measuring or self._row is None:
            return None
        b, c, _ = self.slots[slot]
        dec = self._row[b][c]
        if dec is True or dec >= 1:
            return None
        hit = self._store[slot].get(self._branch)
        x = _first_tensor(args, kwargs)
        if hit is None or (x is not None and hit[0] != x.shape):
            return None  # nothing stored yet (or another shape): compute, as ECAD's code does
        if dec is False or dec <= 0:
            return self._reuse(slot, hit)
        if len(hit) < 3:
            return None
        return Refresh(float(dec), hit)  # counted by count_partial once the component really did it

    def count_partial(self, slot: int, fraction: float) -> None:
        """Count a partial recompute of ``slot`` (``fraction`` of its tokens)."""
        self.record.refreshed[slot] += fraction
        self.record.partial[slot] += 1

    @torch.compiler.disable
    def lookup_block(self, slots: list[int], x: torch.Tensor) -> tuple[list, list[bool]] | None:
        """The reused outputs of ``slots`` (all components of one block) and, per output, whether it is a new
        tensor (a forecast) the caller may overwrite, if every one of them is reused at this step with an
        entry stored for inputs of ``x``'s shape; else None (nothing is counted then)."""
        if self.measuring or self._row is None or not self.fast_blocks:
            return None
        row, branch, hits = self._row, self._branch, []
        for slot in slots:
            b, c, _ = self.slots[slot]
            dec = row[b][c]
            hit = self._store[slot].get(branch)
            if not (dec is False or dec <= 0) or hit is None or hit[0] != x.shape:
                return None
            hits.append(hit)
        self.record.fast_blocks += 1
        found = [self._forecast(slot, hit) for slot, hit in zip(slots, hits)]
        return [f[0] for f in found], [f[1] for f in found]

    def _reuse(self, slot: int, hit):
        """Count a reuse of ``slot`` and return its stored output (the forecast, for taylor reuse)."""
        return self._forecast(slot, hit)[0]

    def _forecast(self, slot: int, hit) -> tuple[Any, bool]:
        """Count a reuse of ``slot``: its stored output (the forecast, for taylor reuse) and whether that is a
        new tensor rather than the stored entry."""
        self.record.reused[slot] += 1
        if len(hit) == 5 and hit[3] is not None:  # taylor reuse: (shape, out, step, prev out, prev step)
            _, out, s1, prev, s0 = hit
            value = _extrapolate(out, prev, (self._offset + self._step - s1) / (s1 - s0))
            return value, value is not out and isinstance(value, torch.Tensor)
        return hit[1], False

    @torch.compiler.disable
    def store(self, slot: int, output, args: tuple, kwargs: dict) -> None:
        if self.measuring:
            return
        self.record.computed[slot] += 1
        for fn in self.observers:
            fn(self._offset + self._step, self._branch, slot, output)
        if self.policy is None:
            return
        x = _first_tensor(args, kwargs)
        if getattr(self.policy, "keeps_inputs", False) and x is not None:
            core = getattr(getattr(self._modules[slot], "processor", None), "last_core", None) if self._modules else None
            self._store[slot][self._branch] = [x.shape, output, x, core]
        elif getattr(self.policy, "reuse", "hold") == "taylor":
            step, old = self._offset + self._step, self._store[slot].get(self._branch)
            prev = (old[1], old[2]) if old is not None and len(old) == 5 and old[2] < step else (None, None)
            self._store[slot][self._branch] = (x.shape if x is not None else None, output, step, *prev)
        else:
            self._store[slot][self._branch] = (x.shape if x is not None else None, output)
