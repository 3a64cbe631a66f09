"""Frechet distance between Gaussian fits of two feature sets, and the statistics files behind it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file


@dataclass
class FeatureStats:
    """Mean and covariance of a feature set (float64), with what produced them."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor: str

    @classmethod
    def of(cls, feats: torch.Tensor | np.ndarray, extractor: str) -> "FeatureStats":
        f = np.asarray(feats.cpu() if isinstance(feats, torch.Tensor) else feats, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"need at least 2 feature rows of shape (N, D), got {f.shape}")
        return cls(f.mean(0), np.cov(f, rowvar=False), f.shape[0], extractor)

    def save(self, path: str | Path) -> None:
        save_file({"mu": self.mu.astype(np.float64), "sigma": self.sigma.astype(np.float32)}, str(path),
                  metadata={"n": str(self.n), "extractor": self.extractor})

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            meta = f.metadata()
        t = load_file(str(path))
        return cls(t["mu"].astype(np.float64), t["sigma"].astype(np.float64), int(meta["n"]), meta["extractor"])


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed with symmetric square roots."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def frechet_between(a: FeatureStats, b: FeatureStats) -> float:
    if a.extractor != b.extractor:
        raise ValueError(f"feature statistics of different extractors: {a.extractor} vs {b.extractor}")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
