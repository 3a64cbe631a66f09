"""Where a pipeline runs: ``--device auto`` resolved, and a pipeline loaded on a device and dtype."""
from __future__ import annotations

import os

from .errors import InputError

DTYPES = ("bfloat16", "float16", "float32")


def resolve_device(name: str) -> str:
    """``auto``: ``cuda:LOCAL_RANK`` under a launcher, ``cuda`` on a GPU machine, else ``cpu``; an indexed CUDA
    device becomes the process's current device. A device torch cannot use is an ``InputError``."""
    import torch

    if name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise InputError(f"--device {name}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {name}: torch sees no CUDA device here (torch {torch.__version__})")
    elif not torch.cuda.is_available():
        return "cpu"
    else:
        name = f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    if torch.device(name).type == "cuda" and torch.device(name).index is not None:
        torch.cuda.set_device(torch.device(name))  # the current device: default streams, synchronize()
    return name


def load_from_args(a):
    """The pipeline of a command's ``--pipeline`` on its ``--device`` / ``--dtype`` (the CLI and calibrators)."""
    return load_pipeline_on(a.pipeline, getattr(a, "device", "auto"), getattr(a, "dtype", "float32"))


def load_pipeline_on(name: str, device: str = "auto", dtype: str = "float32"):
    """The pipeline ``name`` (a reference name or a local folder) on ``device`` in ``dtype``; a name that does
    not load is an ``InputError`` with the loader's reason.

    Example:
        >>> from accel.devices import load_pipeline_on
        >>> pipe = load_pipeline_on("pixart-eps", "cpu")  # doctest: +SKIP
    """
    import torch

    from .pipelines.reference import load_pipeline

    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    try:
        return load_pipeline(name, dtype=getattr(torch, dtype), device=resolve_device(device))
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise InputError(str(e)) from None
