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

On clips (video pipelines) the image measures read every frame as an image: ``psnr``, ``ssim`` and ``lpips`` are
means over frames against the plain clip's frame, ``fd_plain`` / ``fd_ref`` / ``fid`` Frechet distances over all
frames of all clips, ``clip`` the mean over frames. Two measure whole clips, and only clips:
- ``temporal_err``: the error of the motion, sum (d - d_plain)^2 / sum d_plain^2 over the frame-to-frame
  differences d = clip[t + 1] - clip[t] (``accel.metrics.clips``): 0 is the plain clips' motion, 1 as far off as a
  frozen clip, more is flicker; it catches what per-frame measures miss;
- ``fvd_plain``: FVD (Frechet distance on Kinetics-400 I3D logits, ``accel.metrics.fvd``) to the plain pipeline's
  clips, where cd-fvd and its I3D weights are installed (else the table says why).
The image-only measures (``fd_domain``, ``fd_effnet``, ``alignment``, ``clipping``) are refused on clips.
The video reference pipeline only (``wan-motion``, ``accel.metrics.motion``): ``fd_frames`` (Frechet distance of all
frames to real test clips' frames on the clip classifier's features; not FVD), ``item_acc`` (the classifier, averaged
over a clip's frames, recognises the prompted item) and ``motion_acc`` (the measured motion is the prompted one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

REFERENCE_ONLY = ("fd_domain", "fd_effnet", "alignment")
CLIP_REFERENCE_ONLY = ("fd_frames", "item_acc", "motion_acc")
FMNIST = "Fashion-MNIST"


@dataclass
class MetricInputs:
    """What one row's metrics are computed from (``of``: from a row's output, images or clips)."""

    images: torch.Tensor  # the row's images, [0, 1], NCHW (on clips: every frame of every clip)
    plain: torch.Tensor  # the plain row's images from the same prompts and seeds
    is_plain: bool
    labels: list  # reference pipelines: the prompted class per image (None where a prompt names none)
    ref_stats: object | None = None  # FeatureStats (EfficientNet) of the user's reference data
    ref_images: torch.Tensor | None = None
    prompts: list | None = None  # the prompt of each image (CLIP score)
    clip: str | None = None  # a local CLIP model folder
    clips: torch.Tensor | None = None  # video pipelines: the row's clips, [0, 1], NFCHW
    plain_clips: torch.Tensor | None = None  # and the plain row's
    clip_labels: list | None = None  # the video reference: (item, motion) of each clip (None where a prompt names none)

    @classmethod
    def of(cls, output: torch.Tensor, plain: torch.Tensor, is_plain: bool, labels: list, prompts: list | None = None,
           **data) -> "MetricInputs":
        """The inputs of a row whose output is ``output`` (images NCHW, or clips NFCHW: then ``images`` are their
        frames, each with its clip's label and prompt) against the plain row's ``plain``."""
        if output.dim() != 5:
            return cls(output, plain, is_plain, labels, prompts=prompts, **data)
        from ..metrics.clips import frames

        per_frame = (lambda xs: None if xs is None else [x for x in xs for _ in range(output.shape[1])])  # noqa: E731
        return cls(frames(output), frames(plain), is_plain, per_frame(labels), prompts=per_frame(prompts),
                   clips=output, plain_clips=plain, clip_labels=labels, **data)


@dataclass(frozen=True)
class Metric:
    """A quality column. ``reads``: ``"any"`` (images, or the frames of clips), ``"clips"`` (whole clips only) or
    ``"images"`` (single images only; ``why`` says what it measures, the reason it is refused on clips)."""

    name: str
    fn: Callable[[MetricInputs], float | None]
    header: str
    fmt: str = "{:.2f}"
    reads: str = "any"
    why: str = ""


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


def _whole_clips(m: MetricInputs) -> tuple[torch.Tensor, torch.Tensor]:
    if m.clips is None:
        raise ValueError("this metric measures clips, and the row made images")
    return m.clips, m.plain_clips


def _temporal_err(m: MetricInputs) -> float:
    from ..metrics import temporal_err

    clips, plain = _whole_clips(m)
    return 0.0 if m.is_plain else temporal_err(clips, plain)


def _fvd_plain(m: MetricInputs) -> float:
    from ..metrics import fvd

    clips, plain = _whole_clips(m)
    return 0.0 if m.is_plain else fvd(clips, plain)  # the same set: distance 0 by definition


def _labelled_clips(m: MetricInputs, part: int) -> tuple[torch.Tensor, list[int]] | None:
    clips, _ = _whole_clips(m)
    known = [i for i, label in enumerate(m.clip_labels or []) if label is not None]
    return (clips[known], [m.clip_labels[i][part] for i in known]) if known else None


def _item_acc(m: MetricInputs) -> float | None:
    from ..metrics.motion import item_accuracy

    got = _labelled_clips(m, 0)
    return item_accuracy(*got) if got else None


def _motion_acc(m: MetricInputs) -> float | None:
    from ..metrics.motion import motion_accuracy

    got = _labelled_clips(m, 1)
    return motion_accuracy(*got) if got else None


def _fd_frames(m: MetricInputs) -> float:
    from ..metrics.motion import fd_frames

    return fd_frames(_whole_clips(m)[0])


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fd_domain", _fd_domain, "fd_domain", reads="images", why=f"compares single images with {FMNIST}'s"),
    Metric("fd_effnet", _fd_effnet, "fd_effnet", reads="images", why=f"compares single images with {FMNIST}'s"),
    Metric("alignment", _alignment, "alignment", "{:.1%}", reads="images",
           why=f"asks a {FMNIST} classifier which class a single image shows"),
    Metric("fd_plain", _fd_plain, "fd_plain"),
    Metric("fd_ref", _fd_ref, "fd_ref"),
    Metric("fid", _fid, "FID"),
    Metric("clip", _clip, "CLIP score"),
    Metric("psnr", _psnr, "psnr", "{:.1f}"),
    Metric("ssim", _ssim, "ssim", "{:.3f}"),
    Metric("lpips", _lpips, "LPIPS", "{:.3f}"),
    Metric("clipping", _clipping, "clipping (>=0.995)", "{:.2%}", reads="images",
           why="counts the saturated pixels of the reference pipelines' images"),
    Metric("temporal_err", _temporal_err, "temporal_err", "{:.3f}", reads="clips"),
    Metric("fvd_plain", _fvd_plain, "fvd_plain", reads="clips"),
    Metric("fd_frames", _fd_frames, "fd_frames", reads="clips"),
    Metric("item_acc", _item_acc, "item_acc", "{:.1%}", reads="clips"),
    Metric("motion_acc", _motion_acc, "motion_acc", "{:.1%}", reads="clips"),
)}
CLIP_METRICS = ", ".join(n for n, m in METRICS.items() if m.reads != "images" and n not in CLIP_REFERENCE_ONLY)


def default_metrics(reference: bool, has_ref: bool, effnet: bool = True, has_clip: bool = False,
                    clips: bool = False) -> tuple[str, ...]:
    """Reference pipelines: the domain metrics (the video reference's on clips: fd_frames, item_acc, motion_acc) and
    the generic ones; any other pipeline: the generic ones (and ``fd_ref`` with reference data, ``clip`` with a CLIP
    folder); clips add ``temporal_err``. ``effnet=False`` leaves
    out the EfficientNet metrics (the slowest)."""
    names = (["fd_frames", "item_acc", "motion_acc"] if clips else ["fd_domain", "fd_effnet", "alignment"]) \
        if reference else []
    names += ["fd_plain"] + (["fd_ref"] if has_ref else []) + (["clip"] if has_clip else []) + ["psnr", "ssim"]
    names += ["clipping"] if reference and not clips else []
    names += ["temporal_err"] if clips else []
    if not effnet:
        names = [n for n in names if n not in ("fd_effnet", "fd_plain", "fd_ref")]
    return tuple(names)


def check_metrics(names: tuple[str, ...], reference: bool, has_ref: bool, clips: bool = False) -> None:
    """A clear ``ValueError`` for an unknown metric, an image-only metric on clips or a clip metric on images, a
    Fashion-MNIST metric on another model, or ``fd_ref`` without reference data."""
    for n in names:
        if n not in METRICS:
            raise ValueError(f"unknown metric {n!r}; known: {', '.join(METRICS)}")
        if clips and METRICS[n].reads == "images":
            raise ValueError(f"{n} {METRICS[n].why} and is not measured on clips; on clips use {CLIP_METRICS}")
        if not clips and METRICS[n].reads == "clips":
            raise ValueError(f"{n} measures whole clips and this pipeline makes images")
        if n in CLIP_REFERENCE_ONLY and not reference:
            raise ValueError(f"{n} measures Fashion-MNIST motion clips and means something only on the video "
                             "reference pipeline wan-motion; on your model use psnr, ssim, fd_plain or temporal_err")
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
