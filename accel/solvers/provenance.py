"""Which model a solver file was made for: architecture fingerprint plus a weights signature.

DPM-Solver-v3 statistics and DC-Solver ratios are measured on one model's outputs, so they belong to its
weights, not only to its architecture: two checkpoints of one architecture (``pixart-eps`` and
``pixart-flow`` here) share ``fingerprint`` but not ``weights_signature``. The signature is a few weights
spread over the parameters, compared with a tolerance, so a dtype cast (fp16, bf16) of the same model
still matches.

Example:
    >>> from accel.solvers.provenance import made_for, check_made_for
    >>> stamp = made_for(pipe.transformer)  # doctest: +SKIP
    >>> check_made_for(pipe.transformer, stamp, "the EMS file ems.safetensors", "ems")  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

RTOL = 1e-2  # bf16 rounds weights at 2^-8 = 0.4% relative; another checkpoint differs far more


def weights_signature(denoiser: nn.Module, tensors: int = 64, per_tensor: int = 4) -> list[float]:
    """``per_tensor`` values from each of ``tensors`` parameters spread over the model (parameters on the meta
    device, i.e. offloaded, are skipped; an empty list means nothing could be read)."""
    params = [p for p in denoiser.parameters() if p.numel() and p.device.type != "meta"]
    if not params:
        return []
    picks = np.unique(np.linspace(0, len(params) - 1, min(tensors, len(params))).round().astype(int))
    out: list[float] = []
    for i in picks:
        flat = params[i].detach().reshape(-1)
        for j in np.unique(np.linspace(0, flat.numel() - 1, per_tensor).round().astype(int)):
            out.append(float(flat[int(j)]))
    return out


def same_weights(a: Sequence[float], b: Sequence[float], rtol: float = RTOL) -> bool:
    """Two signatures of the same weights, up to a dtype cast."""
    if len(a) != len(b):
        return False
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(np.abs(x - y) <= rtol * np.maximum(np.abs(x), np.abs(y)) + 1e-6))


def made_for(denoiser: nn.Module) -> dict:
    """The stamp a solver file carries: ``{"fingerprint": ..., "weights": [...]}``."""
    from accel.pipelines.families import fingerprint

    return {"fingerprint": fingerprint(denoiser), "weights": weights_signature(denoiser)}


def check_made_for(denoiser: nn.Module, stamp: dict, what: str, method: str) -> None:
    """A clear error when ``stamp`` (a file's ``fingerprint`` and ``weights``) is not this model's. Files without a
    weights signature (made before it existed) are checked on the architecture only."""
    from accel.pipelines.families import fingerprint

    fix = f"run `accel calibrate --method {method}` for it"
    theirs = stamp.get("fingerprint")
    if theirs is not None and theirs != fingerprint(denoiser):
        raise ValueError(f"{what} was made for model {theirs!r}, not this one ({fingerprint(denoiser)!r}); {fix}")
    weights = stamp.get("weights")
    if not weights:
        return
    mine = weights_signature(denoiser)
    if mine and not same_weights(weights, mine):
        raise ValueError(f"{what} was made for other weights of this architecture ({theirs!r}): the statistics of "
                         f"one checkpoint do not hold for another; {fix}")
