"""``accel calibrate --method uniform``: the static FORA-style schedule (no model run needed)."""
from __future__ import annotations

import argparse

from .registry import CalibrationMethod, register


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=int, default=2, help="recompute every K steps")
    p.add_argument("--warmup", type=int, default=0, help="steps that always compute at the start")


def _run(a: argparse.Namespace) -> None:
    import accel
    from accel.cli import _load

    pipe = _load(a.pipeline)
    sched = accel.CacheSchedule.uniform(pipe, a.steps, a.interval, warmup=a.warmup)
    path = sched.save(a.out)
    print(f"uniform schedule (interval {a.interval}, {sched.compute_fraction():.0%} computed) -> {path}")


register(CalibrationMethod("uniform", "static schedule: recompute every K steps", _args, _run))
