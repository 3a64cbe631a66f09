"""Wall-clock spans that see queued accelerator work without waiting for it inside the span.

On CUDA a ``Span`` records events on the device's stream (no host wait per step) and reads their
elapsed time once, when asked; elsewhere it reads ``time.perf_counter``. ``clock()`` is for timing
a whole call from the host: it waits for queued CUDA work first. A ``Span`` given a clock reads that clock
instead, on any device (e.g. a fixed clock in tests, so that nothing asserted depends on the machine's speed).
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def clock() -> float:
    """``time.perf_counter()`` after ``torch.cuda.synchronize()`` when CUDA is in use (a plain read otherwise)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


class Span:
    """From ``start`` to the last ``stop``: CUDA events on ``device``'s stream, else host time.

    ``clock``: read at ``start`` and at every ``stop`` instead (no CUDA events); None: the default above."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self._t0 = self._t1 = None
        self._events: tuple | None = None
        self._stream = None

    def start(self, device: torch.device | None = None) -> None:
        self.reset()
        self._t0 = (self.clock or time.perf_counter)()
        if self.clock is None and device is not None and device.type == "cuda":
            self._stream = torch.cuda.current_stream(device)
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record(self._stream)

    def stop(self) -> None:
        self._t1 = (self.clock or time.perf_counter)()
        if self._events is not None:
            self._events[1].record(self._stream)

    @property
    def started(self) -> bool:
        return self._t0 is not None

    @property
    def seconds(self) -> float:
        if self._t0 is None or self._t1 is None:
            return 0.0
        if self._events is not None:
            self._events[1].synchronize()
            return self._events[0].elapsed_time(self._events[1]) / 1e3
        return self._t1 - self._t0


def device_of(*values) -> torch.device | None:
    """The device of the first tensor among ``values`` (and the values of dicts among them)."""
    for v in values:
        for x in (v.values() if isinstance(v, dict) else v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(x, torch.Tensor):
                return x.device
    return None
