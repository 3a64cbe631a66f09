"""Arguments shared by the calibration methods that run the pipeline on prompts, and what they read from them."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_shared_args(p: argparse.ArgumentParser) -> None:
    """Arguments of several methods, declared once (a method adds only its own)."""
    p.add_argument("--prompts", help="calibration prompts, one per line (default: reference training-template "
                                     "prompts; ems: for --data samples/paths)")
    p.add_argument("--num-prompts", type=int, default=32, help="how many default prompts when --prompts is not given")
    p.add_argument("--guidance", type=float, default=4.5, help="CFG scale of the calibration calls (dc: --guidances)")
    p.add_argument("--batch", type=int, default=64, help="prompts per pipeline call; ems: samples per chunk (memory), "
                                                        "the statistics use them all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=None, help="uniform, bac: first steps that always compute "
                                                            "(default 0; bac: a tenth of --steps, see --paper)")
    p.add_argument("--reuse", default=None, choices=("hold", "taylor"),
                   help="uniform, bac, ecad: what reused outputs return: hold (as computed, the papers) or taylor "
                        "(forecast from the last two updates, and bac plans the updates for it; an accel option). "
                        "Default hold; bac: taylor, see --paper")


def warmup_reuse(a: argparse.Namespace, best: tuple[int, str] = (0, "hold")) -> tuple[int, str]:
    """``--warmup`` / ``--reuse`` as given, else the method's ``best`` measured defaults."""
    return (a.warmup if a.warmup is not None else best[0]), (a.reuse if a.reuse is not None else best[1])


def read_prompts(a: argparse.Namespace, pipe=None, n: int | None = None) -> list[str]:
    """The calibration prompts: ``--prompts FILE`` (refused when missing or empty), else ``n`` (default
    ``--num-prompts``) defaults for ``pipe`` (class names on class-conditional pipelines, else the reference
    calibration prompts)."""
    from accel.errors import InputError

    if a.prompts:
        path = Path(a.prompts)
        if not path.exists():
            raise InputError(f"prompt file {a.prompts!r} not found")
        prompts = [l.strip() for l in path.read_text().splitlines() if l.strip()]
        if not prompts:
            raise InputError(f"prompt file {a.prompts!r} has no prompts")
    elif pipe is not None:
        from accel.pipelines.calls import default_prompts

        prompts = default_prompts(pipe, n or a.num_prompts, seed=a.seed + 1, calibration=True)
    else:
        from accel.pipelines.data import calibration_prompts

        prompts = calibration_prompts(n or a.num_prompts, seed=a.seed + 1)
    if pipe is not None:
        from accel.pipelines.calls import condition

        try:
            condition(pipe, prompts)
        except ValueError as e:  # prompts a class-conditional pipeline does not know
            raise InputError(str(e)) from None
    return prompts


def size_args(a: argparse.Namespace, pipe) -> dict:
    """``--height`` / ``--width`` (and ``--num-frames`` / ``--fps`` of video pipelines) as call arguments of ``pipe``
    (a clear error where it has a fixed size, or makes images and was given frames)."""
    from accel.errors import InputError
    from accel.pipelines.calls import size_kwargs

    try:
        return size_kwargs(pipe, getattr(a, "height", None), getattr(a, "width", None),
                           getattr(a, "num_frames", None), getattr(a, "fps", None))
    except ValueError as e:
        raise InputError(str(e)) from None
