"""LPIPS (Zhang et al. 2018) fidelity to the unaccelerated images, where its weights can be loaded."""
from __future__ import annotations

import torch


class LPIPSUnavailableError(RuntimeError):
    pass


def lpips(images: torch.Tensor, reference: torch.Tensor, net: str = "alex") -> float:
    """Mean LPIPS distance between ``images`` and ``reference`` (same prompts and seeds), images in [0, 1].

    Through torchmetrics, which needs torchvision and the backbone's ImageNet weights (downloaded on first use).
    Without them this raises ``LPIPSUnavailableError`` with the reason; ``psnr``, ``ssim`` and ``fd_plain`` run
    offline.

    Example:
        >>> import torch
        >>> from accel.metrics.lpips import lpips
        >>> x = torch.rand(2, 3, 64, 64)
        >>> lpips(x, x)  # doctest: +SKIP
        0.0
    """
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError as e:
        raise LPIPSUnavailableError("LPIPS needs torchmetrics[image] with torchvision and its backbone weights "
                                    "(downloaded on first use); not installed here") from e
    try:
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="mean")
    except Exception as e:  # noqa: BLE001 - the backbone download fails offline
        raise LPIPSUnavailableError(f"the LPIPS backbone weights could not be loaded ({str(e).splitlines()[0][:150]})"
                                    ) from e
    rgb = lambda x: x.float().cpu().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float().cpu()  # noqa: E731
    return float(metric(rgb(images).clamp(0, 1), rgb(reference).clamp(0, 1)))
