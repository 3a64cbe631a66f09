"""Which attention backend accel's processors use: Triton kernels on CUDA with triton installed, torch SDPA elsewhere.

Force a choice with ``backend="torch"`` / ``"triton"`` or the environment variable ``ACCEL_ATTENTION``.
"""
from __future__ import annotations

import os
from enum import Enum

import torch


class Backend(str, Enum):
    AUTO = "auto"
    TORCH = "torch"
    TRITON = "triton"


def triton_available() -> bool:
    from .attention import HAS_TRITON, INTERPRET

    return HAS_TRITON and (torch.cuda.is_available() or INTERPRET)


def resolve(backend: str | Backend = Backend.AUTO, device: torch.device | None = None) -> Backend:
    """The backend a call on ``device`` uses. ``triton`` forced where it cannot run is a clear error."""
    b = Backend(os.environ.get("ACCEL_ATTENTION", backend) if backend in (Backend.AUTO, "auto") else backend)
    if b is Backend.TRITON:
        if not triton_available():
            raise RuntimeError("attention backend 'triton' needs triton and a CUDA GPU (or TRITON_INTERPRET=1)")
        return b
    if b is Backend.TORCH:
        return b
    on_cuda = device is not None and device.type == "cuda"
    return Backend.TRITON if on_cuda and triton_available() else Backend.TORCH
