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
    """``--height`` / ``--width`` of the pipeline calls a subcommand makes, and on video pipelines ``--num-frames``
    and ``--fps``."""
    p.add_argument("--height", type=int, help="image height in pixels (default: the pipeline's own)")
    p.add_argument("--width", type=int, help="image width in pixels (default: the pipeline's own)")
    p.add_argument("--num-frames", type=int, help="video pipelines: frames per clip (default: the pipeline's own; "
                                                  "refused on image pipelines)")
    p.add_argument("--fps", type=int, help="video pipelines: frames per second, passed to pipelines conditioned on "
                                           "it (LTX's frame_rate), else only the rate written clips play at "
                                           "(default: the pipeline's own, else 16)")


def check_call_args(a: argparse.Namespace) -> None:
    """Bad numbers refused before anything loads: steps, images, sizes, frames and frame rates below 1, a negative
    guidance scale."""
    for name, minimum in (("steps", 1), ("num_images", 1), ("height", 1), ("width", 1), ("batch", 1),
                          ("num_frames", 1), ("fps", 1)):
        value = getattr(a, name, None)
        if value is not None and value < minimum:
            raise InputError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
    guidance = getattr(a, "guidance", None)
    if guidance is not None and guidance < 0:
        raise InputError(f"--guidance must not be negative, got {guidance}")


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    """``--context-parallel KIND:N``: diffusers' context parallelism under ``torchrun --nproc_per_node N``."""
    p.add_argument("--context-parallel", metavar="KIND:N",
                   help="spread each image's tokens over N processes with diffusers' context parallelism (ulysses:N "
                        "or ring:N); launch with torchrun --nproc_per_node N, one accelerator per process; rank 0 "
                        "writes the outputs")


def parse_parallel(a: argparse.Namespace):
    """The ``ContextParallel`` of ``--context-parallel`` (None without it); a bad spec is an ``InputError``."""
    text = getattr(a, "context_parallel", None)
    if text is None:
        return None
    from .parallel import ContextParallel, check_launch

    try:
        spec = ContextParallel.parse(text)
    except ValueError as e:
        raise InputError(f"--context-parallel: {e}") from None
    import torch

    if torch.cuda.is_available() and getattr(a, "device", "auto") != "auto":
        raise InputError(f"--device {a.device} under --context-parallel: leave --device auto, each process takes "
                         "its own GPU (LOCAL_RANK)")
    try:
        check_launch(spec)
    except ValueError as e:
        raise InputError(f"--context-parallel {spec}: {e}") from None
    return spec


def enable_parallel(pipe, spec) -> int:
    """Enable ``spec`` (a ``ContextParallel`` or None) on ``pipe``; returns this process's rank (0 without it)."""
    if spec is None:
        return 0
    import torch

    from .parallel import enable_context_parallel

    try:
        enable_context_parallel(pipe, spec)
    except ValueError as e:
        raise InputError(f"--context-parallel {spec}: {e}") from None
    return torch.distributed.get_rank()


def uneven_split(spec, error: AssertionError) -> str:
    """The one-line reason for diffusers' assertion when a sequence does not split evenly over the ranks."""
    return (f"diffusers splits the image and text token sequences (and the attention heads) evenly over "
            f"{spec.degree} processes and one of them does not divide: choose a size, prompt length or process "
            f"count that does ({error or 'uneven split'})")

