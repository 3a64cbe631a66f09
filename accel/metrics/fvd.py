"""FVD, the Frechet Video Distance, for machines that can load the I3D weights; without them it stops and says why.

FVD (Unterthiner et al. 2018) is a Frechet distance between Gaussian fits of the Kinetics-400 I3D logits of two
sets of clips. The I3D network comes from ``cd-fvd`` (``pip install cd-fvd``), which downloads its weights
(``i3d_pretrained_400.pt``, from the TATS repository) into its own package folder on first use; offline, with the
file not there, this raises ``FVDUnavailableError`` with the reason (copying the file into that folder makes it
run offline). Clips are float tensors in [0, 1], shape (N, F, C, H, W); the I3D network needs at least 9 frames
(the usual protocol takes 16).

Example:
    >>> import torch
    >>> from accel.metrics.fvd import fvd
    >>> a, b = torch.rand(8, 16, 3, 64, 64), torch.rand(8, 16, 3, 64, 64)
    >>> fvd(a, b)  # doctest: +SKIP
    >>> round(fvd(a, a, features=lambda clips: clips.mean((2, 3, 4))), 6)  # any clip features (N, D) for I3D's
    0.0
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from .clips import check_clips
from .frechet import FeatureStats, frechet_between

I3D_SIZE = 224  # the I3D network's input resolution
MIN_FRAMES = 9  # fewer frames leave its last pooling window (2 frames after 8x temporal downsampling) empty
EXTRACTOR = "i3d-kinetics400-logits"


class FVDUnavailableError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def i3d() -> torch.nn.Module:
    """cd-fvd's Kinetics-400 I3D with its pretrained weights, or ``FVDUnavailableError`` saying why not."""
    try:
        from cdfvd.third_party.i3d.utils import load_i3d_model
    except ImportError as e:
        raise FVDUnavailableError("FVD needs cd-fvd (pip install cd-fvd) and its I3D weights (downloaded on first "
                                  "use); not installed here") from e
    try:
        return load_i3d_model(torch.device("cpu")).eval()
    except Exception as e:  # noqa: BLE001 - offline: the download fails (requests' ConnectionError, ...)
        raise FVDUnavailableError(f"the I3D weights for FVD could not be loaded ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:150] if str(e) else ''})") from e


@torch.no_grad()
def i3d_features(clips: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """The 400 Kinetics logits of each clip (N, 400): frames resized to 224 x 224 and scaled to [-1, 1], as FVD's
    reference implementation feeds them."""
    check_clips(clips)
    if clips.shape[1] < MIN_FRAMES:
        raise ValueError(f"FVD's I3D network needs clips of at least {MIN_FRAMES} frames (16 in the usual protocol), "
                         f"got {clips.shape[1]}")
    net = i3d()
    out = []
    for x in clips.float().cpu().split(batch):
        n, f, c, h, w = x.shape
        x = x.expand(-1, -1, 3, -1, -1) if c == 1 else x
        x = F.interpolate(x.flatten(0, 1), size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
        out.append(net(x.unflatten(0, (n, f)).transpose(1, 2) * 2 - 1))  # (N, C, F, H, W)
    return torch.cat(out)


def fvd(clips: torch.Tensor, reference: torch.Tensor,
        features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Frechet distance between the I3D logits of ``clips`` and of ``reference`` (two or more clips each).
    ``features``: another clip feature extractor (N, F, C, H, W) -> (N, D) in place of I3D."""
    extract = features or i3d_features
    a = FeatureStats.of(extract(clips), EXTRACTOR)
    b = FeatureStats.of(extract(reference), EXTRACTOR)
    return max(0.0, frechet_between(a, b))  # rounding in the matrix square root can leave a tiny negative
