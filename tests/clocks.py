"""Fixed clocks for the tests. Code that times something takes a ``clock`` (``accel.bench.run_bench``,
``accel.calibrate.tune.tune``, ...); a test gives it one of these instead of the machine's, so nothing a test asserts
depends on the machine's speed or load (speed is measured by the benchmarks, never asserted by a test)."""
from __future__ import annotations

import functools
import random

TICK = 2.0 ** -20  # about a microsecond, and a power of two: sums and differences of ticks are exact


class TickClock:
    """Every read advances the clock by one ``tick``. A timed denoising loop reads it as the first denoiser call starts
    and as each call ends, so it measures ``calls * tick``: speed-ups are ratios of denoiser calls. Ticks far below
    a second also keep a budget's deadlines from ever passing (a tune runs every stage to the end of its work)."""

    def __init__(self, tick: float = TICK):
        self.tick, self.reads = tick, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.reads * self.tick


class JitterClock(TickClock):
    """Every read advances the clock by a seeded random 0.1 to 10 ticks: the same call timed twice takes very
    different times, so speed-ups taken round by round spread far beyond any steadiness bound (and, seeded, the
    readings are the same on every run)."""

    def __init__(self, tick: float = TICK, seed: int = 0):
        super().__init__(tick)
        self.rng, self.now = random.Random(seed), 0.0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.tick * self.rng.uniform(0.1, 10.0)
        return self.now


def on_clock(module, name: str, clock, set_attr=setattr) -> None:
    """``module.name`` (a function taking ``clock=``) called with ``clock`` from now on, e.g. the ``run_bench`` that
    ``accel bench`` calls; ``set_attr``: ``monkeypatch.setattr`` in a test (undone after it)."""
    set_attr(module, name, functools.partial(getattr(module, name), clock=clock))
