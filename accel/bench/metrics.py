"""The bench's quality metrics by name, chosen per pipeline: every metric says what it measures against what.

Reference-free (any pipeline):
- ``psnr``, ``ssim``: fidelity to the plain pipeline's images from the same prompts and seeds;
- ``lpips``: LPIPS to the plain pipeline's images, where torchmetrics can load its weights (else the table
  says why);
- ``fd_plain``: Frechet distance on EfficientNet-Lite0 features between a row's images and the plain
  pipeline's (the caching papers' "FID to the original outputs", on another network: not FID).
Against the user's data:
- ``fd_ref``: Frechet distance on EfficientNet-Lite0 features to reference statistics (``--ref-stats FILE``
  or ``--ref-images DIR``, made by ``python -m accel.metrics.reference_stats``);
- ``fid``: the standard FID (torchmetrics, Inception weights) against ``--ref-images``; unavailable offline,
  and then the table says why;
- ``clip``: CLIP score of each image against its prompt with a local CLIP model (``--clip DIR``).
The reference pipelines only (Fashion-MNIST): ``fd_domain`` and ``fd_effnet`` (Frechet distances to the
Fashion-MNIST test set on the domain classifier's and EfficientNet's features), ``alignment`` (the domain
classifier recognises the prompted class), ``clipping`` (saturated pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

REFERENCE_ONLY = ("fd_domain", "fd_effnet", "alignment")


@dataclass
class MetricInputs:
    """What one row's metrics are computed from."""

    images: torch.Tensor  # the row's images, [0, 1], NCHW
    plain: torch.Tensor  # the plain row's images from the same prompts and seeds
    is_plain: bool
    labels: list  # reference pipelines: the prompted class per image (None where a prompt names none)
    ref_stats: object | None = None  # FeatureStats (EfficientNet) of the user's reference data
    ref_images: torch.Tensor | None = None
    prompts: list | None = None  # the prompt of each image (CLIP score)
    clip: str | None = None  # a local CLIP model folder


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[MetricInputs], float | None]
    header: str
    fmt: str = "{:.2f}"


def _psnr(m: MetricInputs) -> float:
    from ..metrics import psnr

    return float("inf") if m.is_plain else psnr(m.images, m.plain)


def _ssim(m: MetricInputs) -> float:
    from ..metrics import ssim

    return ssim(m.images, m.plain)


def _lpips(m: MetricInputs) -> float:
    from ..metrics.lpips import lpips

    return 0.0 if m.is_plain else lpips(m.images, m.plain)


def _fd_plain(m: MetricInputs) -> float:
    from ..metrics import fd_plain

    return 0.0 if m.is_plain else fd_plain(m.images, m.plain)  # the same set: distance 0 by definition


def _fd_ref(m: MetricInputs) -> float:
    from ..metrics import fd_effnet

    return fd_effnet(m.images, m.ref_stats)


def _fid(m: MetricInputs) -> float:
    from ..metrics import fid

    if m.ref_images is None:
        raise ValueError("fid needs --ref-images DIR (real images of the same domain)")
    return fid(m.images, m.ref_images)


def _clip(m: MetricInputs) -> float:
    from ..metrics.clip import clip_score

    if m.clip is None:
        raise ValueError("clip needs --clip DIR (a local CLIP model folder)")
    return clip_score(m.images, m.prompts, m.clip)


def _fd_domain(m: MetricInputs) -> float:
    from ..metrics import fd_domain

    return fd_domain(m.images)


def _fd_effnet(m: MetricInputs) -> float:
    from ..metrics import fd_effnet

    return fd_effnet(m.images)


def _alignment(m: MetricInputs) -> float | None:
    from ..metrics import alignment

    known = [i for i, label in enumerate(m.labels) if label is not None]
    return alignment(m.images[known], [m.labels[i] for i in known]) if known else None


def _clipping(m: MetricInputs) -> float:
    from ..metrics import clipping

    return clipping(m.images)["clipped_high"]


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fd_domain", _fd_domain, "fd_domain"),
    Metric("fd_effnet", _fd_effnet, "fd_effnet"),
    Metric("alignment", _alignment, "alignment", "{:.1%}"),
    Metric("fd_plain", _fd_plain, "fd_plain"),
    Metric("fd_ref", _fd_ref, "fd_ref"),
    Metric("fid", _fid, "FID"),
    Metric("clip", _clip, "CLIP score"),
    Metric("psnr", _psnr, "psnr", "{:.1f}"),
    Metric("ssim", _ssim, "ssim", "{:.3f}"),
    Metric("lpips", _lpips, "LPIPS", "{:.3f}"),
    Metric("clipping", _clipping, "clipping (>=0.995)", "{:.2%}"),
)}


def default_metrics(reference: bool, has_ref: bool, effnet: bool = True, has_clip: bool = False) -> tuple[str, ...]:
    """Reference pipelines: the domain metrics and the generic ones; any other pipeline: the generic ones (and
    ``fd_ref`` with reference data, ``clip`` with a CLIP folder). ``effnet=False`` leaves out the EfficientNet
    metrics (the slowest)."""
    names = ["fd_domain", "fd_effnet", "alignment"] if reference else []
    names += ["fd_plain"] + (["fd_ref"] if has_ref else []) + (["clip"] if has_clip else []) + ["psnr", "ssim"]
    names += ["clipping"] if reference else []
    if not effnet:
        names = [n for n in names if n not in ("fd_effnet", "fd_plain", "fd_ref")]
    return tuple(names)


def check_metrics(names: tuple[str, ...], reference: bool, has_ref: bool) -> None:
    """A clear ``ValueError`` for an unknown metric, a Fashion-MNIST metric on another model, or ``fd_ref``
    without reference data."""
    for n in names:
        if n not in METRICS:
            raise ValueError(f"unknown metric {n!r}; known: {', '.join(METRICS)}")
        if n in REFERENCE_ONLY and not reference:
            raise ValueError(f"{n} measures against Fashion-MNIST and means something only on the reference "
                             "pipelines; on your model use psnr, ssim, fd_plain, or fd_ref with --ref-images / --ref-stats")
        if n == "fd_ref" and not has_ref:
            raise ValueError("fd_ref needs --ref-images DIR or --ref-stats FILE")


def compute(names: tuple[str, ...], inputs: MetricInputs) -> tuple[dict, dict]:
    """The metrics ``names`` of one row, and for each one that could not be computed, the reason."""
    values, reasons = {}, {}
    for n in names:
        try:
            values[n] = METRICS[n].fn(inputs)
        except Exception as e:  # noqa: BLE001 - e.g. FID without its weights: the reason goes in the table
            values[n] = None
            reasons[n] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    return values, reasons
