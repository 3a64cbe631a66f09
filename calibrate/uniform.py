"""``accel calibrate --method uniform``: the static FORA-style schedule (no model run needed)."""
from __future__ import annotations

import argparse

from .cli_common import size_args, warmup_reuse
from .registry import CalibrationMethod, register


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=int, default=2, help="recompute every K steps")
    p.add_argument("--compute-steps", help="instead of --interval: the steps that compute, e.g. 0,1,2,4,10,16 "
                                           "(diffusers' TaylorSeer, warm-up 3, interval 6, at 20 steps)")


def _run(a: argparse.Namespace) -> None:
    import accel
    from accel.devices import load_from_args
    from accel.errors import InputError

    try:
        steps = [int(i) for i in a.compute_steps.split(",")] if a.compute_steps else None
    except ValueError:
        raise InputError(f"--compute-steps takes comma-separated step indices, got {a.compute_steps!r}") from None
    pipe = load_from_args(a)
    size_args(a, pipe)  # no call is made, but --num-frames on an image pipeline is refused all the same
    warmup, reuse = warmup_reuse(a)
    try:
        if steps is not None:
            sched = accel.CacheSchedule.at_steps(pipe, a.steps, steps, reuse=reuse)
        else:
            sched = accel.CacheSchedule.uniform(pipe, a.steps, a.interval, warmup=warmup, reuse=reuse)
    except ValueError as e:
        raise InputError(str(e)) from None
    path = sched.save(a.out)
    print(f"{sched.method} schedule ({sched.compute_fraction():.0%} computed, reuse {sched.reuse}) -> {path}")


register(CalibrationMethod("uniform", "static schedule: recompute every K steps", _args, _run))
