"""Checkpointing and small helpers shared by the training stages."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def runs_dir() -> Path:
    """Where checkpoints and caches go: outside the repository (``ACCEL_RUNS`` or ~/.cache/accel/runs)."""
    d = Path(os.environ.get("ACCEL_RUNS", Path.home() / ".cache" / "accel" / "runs"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, **state) -> None:
    """Atomic save: a run killed mid-write keeps the previous checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def resume(path: Path, model: torch.nn.Module, opt, sched, gen: torch.Generator, ema: "EMA | None" = None) -> int:
    """Restore a run from its checkpoint at ``path`` (model, optimiser, schedule, data generator, EMA); the step to
    continue from (0: a new run)."""
    ck = load_checkpoint(path)
    if ck is None:
        return 0
    model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); sched.load_state_dict(ck["sched"])
    gen.set_state(ck["gen"])
    if ema is not None:
        ema.load_state_dict(ck["ema"])
    return ck["step"]


def checkpoint(path: Path, step: int, model: torch.nn.Module, opt, sched, gen: torch.Generator,
               ema: "EMA | None" = None) -> None:
    """What ``resume`` restores."""
    extra = {"ema": ema.state_dict()} if ema is not None else {}
    save_checkpoint(path, model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                    gen=gen.get_state(), step=step, **extra)


def optimize(loss: torch.Tensor, model: torch.nn.Module, opt, sched, clip: float = 1.0) -> None:
    """One step: gradients of ``loss``, clipped to norm ``clip``, then the optimiser's and the schedule's step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step(); sched.step()


class EMA:
    """Exponential moving average of parameters with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, s: dict) -> None:
        """Restore a state (checkpoints load on the CPU: each average goes back to where it was)."""
        self.shadow = {k: v.to(self.shadow[k].device) if k in self.shadow else v for k, v in s["shadow"].items()}
        self.updates, self.decay = s["updates"], s["decay"]
