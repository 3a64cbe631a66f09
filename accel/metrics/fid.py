"""The standard FID, for machines that can load the Inception weights; offline it stops and says why."""
from __future__ import annotations

import torch


class FIDUnavailableError(RuntimeError):
    pass


def fid(images: torch.Tensor, real: torch.Tensor) -> float:
    """FID (Inception-v3 pool features) through torchmetrics; images in [0, 1].

    Needs ``torchmetrics`` with ``torch-fidelity`` and the Inception weights, which they download on first
    use. Without them this raises ``FIDUnavailableError``: use ``fd_effnet`` (a Frechet distance on
    EfficientNet-Lite0 features, not comparable to published FID) instead.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise FIDUnavailableError(
            "FID needs torchmetrics[image] and the Inception weights (downloaded on first use); neither is "
            "available here. Use accel.metrics.fd_effnet, which runs offline (not comparable to published FID)."
        ) from e
    try:
        metric = FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception as e:  # the weight download fails offline
        raise FIDUnavailableError(
            f"the Inception weights for FID could not be loaded ({e}); on an offline machine use "
            "accel.metrics.fd_effnet (not comparable to published FID)."
        ) from e
    rgb = lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # noqa: E731
    metric.update(rgb(real), real=True)
    metric.update(rgb(images), real=False)
    return float(metric.compute())
