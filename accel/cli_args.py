"""Arguments several ``accel`` subcommands share, and their checks."""
from __future__ import annotations

import argparse

from .devices import DTYPES
from .errors import InputError


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` of the pipeline a subcommand loads."""
    p.add_argument("--device", default="auto", help="where the pipeline runs: auto (CUDA when available, the local "
                                                    "GPU of each process under accelerate launch; else cpu), cpu, "
                                                    "cuda, cuda:N, ...")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="the pipeline's weights")


def add_call_args(p: argparse.ArgumentParser) -> None:
    """``--height`` / ``--width`` of the pipeline calls a subcommand makes."""
    p.add_argument("--height", type=int, help="image height in pixels (default: the pipeline's own)")
    p.add_argument("--width", type=int, help="image width in pixels (default: the pipeline's own)")


def check_call_args(a: argparse.Namespace) -> None:
    """Bad numbers refused before anything loads: steps, images and sizes below 1, a negative guidance scale."""
    for name, minimum in (("steps", 1), ("num_images", 1), ("height", 1), ("width", 1), ("batch", 1)):
        value = getattr(a, name, None)
        if value is not None and value < minimum:
            raise InputError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
    guidance = getattr(a, "guidance", None)
    if guidance is not None and guidance < 0:
        raise InputError(f"--guidance must not be negative, got {guidance}")

