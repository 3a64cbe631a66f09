"""Measures on clips, float tensors in [0, 1] of shape (N, F, C, H, W): the frames as images, and the motion
between frames that per-frame measures cannot see.

Per-frame measures (PSNR, SSIM, Frechet distances) read ``frames(clips)``, every frame of every clip as one image
batch. ``temporal_err`` compares how a clip changes from frame to frame with how the plain pipeline's clip does:
a clip whose frames are each close to the plain ones can still flicker (its frame differences are larger) or
freeze (they are smaller), and only the differences show it.

Example:
    >>> import torch
    >>> from accel.metrics.clips import temporal_err
    >>> plain = torch.rand(2, 5, 3, 16, 16)
    >>> temporal_err(plain, plain)
    0.0
    >>> frozen = plain[:, :1].expand_as(plain)  # the first frame held: no motion at all
    >>> temporal_err(frozen, plain)
    1.0
"""
from __future__ import annotations

import torch


def check_clips(clips: torch.Tensor, name: str = "clips") -> None:
    """A ``ValueError`` unless ``clips`` is (N, F, C, H, W)."""
    if clips.dim() != 5:
        raise ValueError(f"{name} are (clips, frames, channels, height, width), got shape {tuple(clips.shape)}")


def frames(clips: torch.Tensor) -> torch.Tensor:
    """Every frame of every clip as one image batch (N * F, C, H, W), clip after clip."""
    check_clips(clips)
    return clips.flatten(0, 1)


def frame_differences(clips: torch.Tensor) -> torch.Tensor:
    """``clip[t + 1] - clip[t]`` of every clip (N, F - 1, C, H, W), in float64."""
    check_clips(clips)
    x = clips.detach().cpu().double()
    return x[:, 1:] - x[:, :-1]


def temporal_err(clips: torch.Tensor, plain: torch.Tensor) -> float:
    """Error of the motion: the mean squared difference between the clips' frame-to-frame differences and the plain
    clips' (same prompts and seeds), relative to the plain clips' mean squared frame difference:

        sum (d - d_plain)^2 / sum d_plain^2,   d = clip[t + 1] - clip[t]  (over all clips, frames, pixels)

    0: the same motion; 1: as far off as a frozen clip (no change between frames) would be; above 1: flicker or
    motion the plain clips do not have. Needs two frames or more, and plain clips that change."""
    if clips.shape != plain.shape:
        raise ValueError(f"clips {tuple(clips.shape)} and plain clips {tuple(plain.shape)} differ in shape")
    if clips.dim() == 5 and clips.shape[1] < 2:
        raise ValueError("temporal_err compares frame-to-frame changes: clips of one frame have none")
    d, d_plain = frame_differences(clips), frame_differences(plain)
    energy = float((d_plain ** 2).sum())
    if energy == 0.0:
        raise ValueError("the plain clips do not change from frame to frame: there is no motion to compare with")
    return float(((d - d_plain) ** 2).sum()) / energy
