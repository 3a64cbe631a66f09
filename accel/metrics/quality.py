"""Image quality metrics: Frechet distances, prompt alignment, fidelity to the uncached output, clipping.

All take images as float tensors in [0, 1], shape (N, C, H, W).

Example:
    >>> from accel.metrics import fd_domain, alignment
    >>> fd_domain(images)  # doctest: +SKIP  (against the shipped Fashion-MNIST test-set statistics)
    >>> alignment(images, labels)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..pipelines.components import WEIGHTS_DIR
from .features import domain_features, domain_logits, domain_predict, effnet_features
from .frechet import FeatureStats, frechet_between

REF_STATS = {
    "effnet": WEIGHTS_DIR / "stats-fmnist-test-effnet.safetensors",
    "domain": WEIGHTS_DIR / "stats-fmnist-test-domain.safetensors",
}
EXTRACTORS = {"effnet": "effnet-lite0-160", "domain": "fmnist-classifier-256"}  # names stored with the statistics


def _ref(kind: str, ref: FeatureStats | str | Path | None) -> FeatureStats:
    if isinstance(ref, FeatureStats):
        return ref
    path = Path(ref) if ref is not None else REF_STATS[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: compute it with `python -m accel.metrics.reference_stats`")
    return FeatureStats.load(path)


def fd_effnet(images: torch.Tensor, ref: FeatureStats | str | Path | None = None) -> float:
    """Frechet distance on EfficientNet-Lite0 (ImageNet) features. Not FID: another network, not comparable."""
    return frechet_between(FeatureStats.of(effnet_features(images), EXTRACTORS["effnet"]), _ref("effnet", ref))


def fd_plain(images: torch.Tensor, plain: torch.Tensor | FeatureStats) -> float:
    """Frechet distance on EfficientNet-Lite0 features between ``images`` and the unaccelerated pipeline's images
    from the same prompts and seeds (the caching papers' "FID to the original outputs"; another network, not FID).
    ``plain`` may be those images or their statistics (``effnet_stats``), to extract them once."""
    a = effnet_stats(images)
    b = plain if isinstance(plain, FeatureStats) else effnet_stats(plain)
    # a distance: rounding in the matrix square root can leave a tiny negative where the sets agree
    return max(0.0, frechet_between(a, b))


def effnet_stats(images: torch.Tensor) -> FeatureStats:
    """Mean and covariance of the EfficientNet-Lite0 features of ``images``."""
    return FeatureStats.of(effnet_features(images), EXTRACTORS["effnet"])


def fd_domain(images: torch.Tensor, ref: FeatureStats | str | Path | None = None) -> float:
    """Frechet distance on the penultimate features of the Fashion-MNIST classifier trained here."""
    return fd_domain_of_features(domain_features(images), ref)


def fd_domain_of_features(features: torch.Tensor | np.ndarray, ref: FeatureStats | str | Path | None = None) -> float:
    """``fd_domain`` of feature rows already extracted with ``domain_features`` (e.g. to resample images)."""
    return frechet_between(FeatureStats.of(features, EXTRACTORS["domain"]), _ref("domain", ref))


def alignment(images: torch.Tensor, labels: torch.Tensor | list[int]) -> float:
    """Share of images the domain classifier assigns to the prompted class (the CLIP-score analogue here)."""
    labels = torch.as_tensor(labels)
    return float((domain_predict(images) == labels.cpu()).float().mean())


def class_probability(images: torch.Tensor, labels: torch.Tensor | list[int]) -> float:
    """Mean probability the domain classifier gives the prompted class: a continuous companion of ``alignment``
    (it moves with every image, where alignment moves in steps of one image)."""
    labels = torch.as_tensor(labels)
    return float(domain_logits(images).softmax(1).gather(1, labels.cpu()[:, None]).mean())


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean PSNR (dB) per image against ``reference`` (the unaccelerated output, same seeds); inf if identical."""
    mse = ((images.cpu().double() - reference.cpu().double()) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(images: torch.Tensor, reference: torch.Tensor, window: int = 11) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1)."""
    x, y = images.cpu().double(), reference.cpu().double()
    c = x.shape[1]
    w = _gauss(min(window, x.shape[-1] - (1 - x.shape[-1] % 2)))[None, None].repeat(c, 1, 1, 1)
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def clipping(images: torch.Tensor, reference: torch.Tensor | None = None, eps: float = 0.005) -> dict[str, float]:
    """Oversaturation: share of pixels within ``eps`` of 0 or 1, mean and std intensity, and their drift
    from ``reference`` images when given."""
    x = images.float()
    out = {
        "clipped": float(((x <= eps) | (x >= 1 - eps)).float().mean()),
        "clipped_high": float((x >= 1 - eps).float().mean()),
        "mean": float(x.mean()),
        "std": float(x.std()),
    }
    if reference is not None:
        out["mean_drift"] = out["mean"] - float(reference.float().mean())
        out["std_drift"] = out["std"] - float(reference.float().std())
    return out
