"""Streaming statistics of component outputs over the steps of calibration calls.

For every cacheable component the recorder keeps one pipeline call's per-step outputs (optionally a
fixed random subset of their coordinates, so memory stays bounded on large models), turns them into
a step x step similarity matrix and a caching error at the end of the call, adds those to running
sums, and drops the features. Nothing grows with the number of calibration prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("cosine", "l1", "mse")


def _flat(output) -> torch.Tensor:
    """Per-sample flattened output; tuple outputs (joint attention, UNet down blocks) are concatenated."""
    if isinstance(output, torch.Tensor):
        return output.detach().float().flatten(1)
    parts = [_flat(o) for o in output if isinstance(o, (torch.Tensor, tuple, list))]
    return torch.cat(parts, 1)


def _scores(pred: torch.Tensor, tgt: torch.Tensor, metric: str) -> torch.Tensor:
    """Similarity of ``pred`` to ``tgt`` ([..., B, D], broadcast) averaged over the batch B; l1 and mse negated."""
    if metric == "cosine":
        return torch.nn.functional.cosine_similarity(pred, tgt, dim=-1).mean(-1)
    if metric == "l1":
        return -(pred - tgt).abs().mean((-1, -2))
    if metric == "mse":
        return -((pred - tgt) ** 2).mean((-1, -2))
    raise ValueError(f"unknown similarity metric {metric!r}; choose from {METRICS}")


def similarity(feats: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """S[a, t] between the steps of ``feats`` [K, B, D], averaged over the batch. Higher is more similar
    (l1 and mse are negated distances, so every metric is maximised)."""
    f = feats.double()
    if metric == "cosine":  # one matrix product instead of the [K, K, B, D] broadcast
        n = torch.nn.functional.normalize(f, dim=-1)
        return torch.einsum("abd,tbd->atb", n, n).mean(-1)
    return _scores(f[:, None], f[None, :], metric)


def forecast_similarity(feats: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """F[j, i, t] (j < i <= t): similarity of A_t to the first-order forecast from updates at steps j and i,
    A_i + (t - i) / (i - j) (A_i - A_j) (what ``CacheSchedule(reuse="taylor")`` returns), averaged over the batch;
    -inf elsewhere. Same metrics and sign as ``similarity``. Cosine and mse come from the per-sample Gram matrix of
    the steps (the forecast is linear in A_i, A_j); l1 from ``forecast_similarity_reference``."""
    if metric not in ("cosine", "mse"):
        return forecast_similarity_reference(feats, metric)
    k, _, d = feats.shape
    f = feats.double()
    g = torch.einsum("kbd,tbd->bkt", f, f)  # [B, K, K]
    s = torch.arange(k)
    j, i, t = torch.meshgrid(s, s, s, indexing="ij")
    valid = (j < i) & (i <= t)
    a = torch.where(valid, (t - i).double() / (i - j).clamp(min=1).double(), 0.0)  # forecast weight [K, K, K]
    dot = (1 + a) * g[:, i, t] - a * g[:, j, t]  # <forecast, A_t>, [B, K, K, K]
    sq = (1 + a) ** 2 * g[:, i, i] - 2 * a * (1 + a) * g[:, i, j] + a**2 * g[:, j, j]  # |forecast|^2
    if metric == "cosine":
        val = dot / (sq.clamp(min=0) * g[:, t, t]).sqrt().clamp(min=1e-8)
    else:
        val = -(sq - 2 * dot + g[:, t, t]).clamp(min=0) / d  # |forecast - A_t|^2 expanded (rounding: >= 0)
    return torch.where(valid, val.mean(0), torch.full((), -torch.inf, dtype=torch.float64))


def forecast_similarity_reference(feats: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """``forecast_similarity`` by forming every forecast (the reference the Gram form is tested against)."""
    k = feats.shape[0]
    f = feats.double()
    out = torch.full((k, k, k), -torch.inf, dtype=torch.float64)
    for i in range(1, k):
        w = torch.arange(0, k - i, dtype=torch.float64)  # t - i for t = i..K-1
        for j in range(i):
            pred = f[i][None] + (w / (i - j))[:, None, None] * (f[i] - f[j])[None]  # [T, B, D]
            out[j, i, i:] = _scores(pred, f[i:], metric)
    return out


def caching_error(feats: torch.Tensor) -> float:
    """BAC's caching error: mean over step pairs i < j of mean |A_i - A_j|."""
    k = feats.shape[0]
    f = feats.double()
    errs = [(f[i] - f[j]).abs().mean() for i in range(k) for j in range(i + 1, k)]
    return float(torch.stack(errs).mean()) if errs else 0.0


@dataclass
class ComponentStatistics:
    """Mean similarity matrices [slots, K, K] and caching errors [slots] over the calibration calls; with
    ``forecast`` also the forecast similarities [slots, K, K, K] (``forecast_similarity``)."""

    similarity: np.ndarray
    error: np.ndarray
    calls: int
    metric: str
    forecast: np.ndarray | None = None


class FeatureRecorder:
    """Observer for ``RunState``: ``observe`` per computed component, ``end_call`` after each call."""

    def __init__(self, num_slots: int, num_steps: int, metric: str = "cosine", max_dim: int = 16384, seed: int = 0,
                 forecast: bool = False):
        if metric not in METRICS:
            raise ValueError(f"unknown similarity metric {metric!r}; choose from {METRICS}")
        self.k, self.metric, self.max_dim = num_steps, metric, max_dim
        self._gen = torch.Generator().manual_seed(seed)
        self._idx: dict[int, torch.Tensor | None] = {}
        self._buf: dict[tuple[int, int], dict[int, torch.Tensor]] = {}
        self.sim_sum = np.zeros((num_slots, num_steps, num_steps))
        self.err_sum = np.zeros(num_slots)
        self.fsim_sum = np.zeros((num_slots, num_steps, num_steps, num_steps)) if forecast else None
        self.counts = np.zeros(num_slots)
        self.calls = 0

    def observe(self, step: int, branch: int, slot: int, output) -> None:
        if step >= self.k:
            return
        x = _flat(output)
        if slot not in self._idx:
            d = x.shape[1]
            self._idx[slot] = None if d <= self.max_dim else torch.randperm(d, generator=self._gen)[: self.max_dim]
        if self._idx[slot] is not None:
            x = x[:, self._idx[slot].to(x.device)]
        # kept on the CPU: K steps of every component would crowd an accelerator, and the statistics are small
        self._buf.setdefault((slot, branch), {})[step] = x.to("cpu", torch.float16 if x.numel() > 1 << 20 else torch.float32)

    def end_call(self) -> None:
        for (slot, _), steps in self._buf.items():
            if len(steps) != self.k:
                continue  # a component that did not run at every step (should not happen when all compute)
            feats = torch.stack([steps[t] for t in range(self.k)]).float()
            self.sim_sum[slot] += similarity(feats, self.metric).numpy()
            self.err_sum[slot] += caching_error(feats)
            if self.fsim_sum is not None:
                self.fsim_sum[slot] += forecast_similarity(feats, self.metric).numpy()
            self.counts[slot] += 1
        self._buf.clear()
        self.calls += 1

    def result(self) -> ComponentStatistics:
        c = np.maximum(self.counts, 1)
        fc = self.fsim_sum / c[:, None, None, None] if self.fsim_sum is not None else None
        return ComponentStatistics(self.sim_sum / c[:, None, None], self.err_sum / c, self.calls, self.metric, fc)
