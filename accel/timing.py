"""Wall-clock reads that wait for queued accelerator work, so a time taken after a GPU call includes it."""
from __future__ import annotations

import time

import torch


def clock() -> float:
    """``time.perf_counter()`` after ``torch.cuda.synchronize()`` when CUDA is in use (a plain read otherwise)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
