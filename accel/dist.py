"""Process groups for work spread with ``accelerate launch`` (torch.distributed; gloo on CPU)."""
from __future__ import annotations

import atexit
import datetime
import os

import torch


def rank_world() -> tuple[int, int]:
    """(rank, world size); joins the process group ``accelerate launch`` prepared, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # a long timeout: a process may wait at a gather while another learns or searches for a stage's time
        init_group("gloo", timeout=datetime.timedelta(hours=12))
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather(obj, world: int) -> list:
    """Every process's ``obj``, in rank order (just ``[obj]`` in a single process)."""
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def init_group(backend: str, **kwargs) -> None:
    """``torch.distributed.init_process_group``, destroyed again at exit."""
    torch.distributed.init_process_group(backend, **kwargs)
    atexit.register(_leave)


def _leave() -> None:
    """Destroy the group this module joined before the interpreter tears down its threads (no barrier: a process
    leaving on an error must not wait for the others)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
