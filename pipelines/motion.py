"""Fashion-MNIST motion clips, their captions and the measured direction of motion (the video reference's data).

A clip is one Fashion-MNIST item, scaled from 28x28 to 24x24, on a black 32x32 canvas for ``NUM_FRAMES`` frames,
either still (centred) or moving one pixel a frame across the whole free space: left, right, up or down. Captions
name the item and the motion ("a sneaker sliding to the left", "a clip of a coat standing still"). Clips are float tensors in
[-1, 1], shape (N, F, 1, 32, 32) (frames second, as ``pipe(..., output_type="pt").frames`` returns them).

Example:
    >>> from accel.pipelines.motion import make_clips, measured_motion, MOTIONS
    >>> import torch
    >>> item = torch.full((1, 1, 28, 28), -1.0); item[..., 8:20, 8:20] = 1.0
    >>> clips = make_clips(item, torch.tensor([MOTIONS.index("left")]))
    >>> tuple(clips.shape), MOTIONS[measured_motion(clips)[0]]
    ((1, 9, 1, 32, 32), 'left')
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import CLASS_NAMES, with_article

NUM_FRAMES = 9
SIZE = 32
ITEM = 24  # the item's side on the canvas; it travels SIZE - ITEM = 8 pixels, one a frame
MOTIONS: tuple[str, ...] = ("still", "left", "right", "up", "down")

# Two phrasings of each motion; every template uses both.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "still": ("standing still", "not moving"),
    "left": ("sliding to the left", "moving left"),
    "right": ("sliding to the right", "moving right"),
    "up": ("moving up", "sliding upwards"),
    "down": ("moving down", "sliding downwards"),
}
# {a}: the item with its article, {m}: a motion phrase.
TRAIN_TEMPLATES: tuple[str, ...] = ("{a} {m}", "a video of {a} {m}", "a clip of {a} {m}", "footage of {a} {m}")
# Held out from training: the bench's evaluation prompts.
EVAL_TEMPLATES: tuple[str, ...] = ("an animation of {a} {m}", "a short film of {a} {m}")
# Neither trained on nor evaluated on: ``accel tune``'s prompts.
TUNE_TEMPLATES: tuple[str, ...] = ("a recording of {a} {m}", "a moving picture of {a} {m}")

# A clip whose item moves less than this many pixels a frame (along its main axis) is measured as still.
STILL_SPEED = 0.4


def clip_caption(label: int, motion: int, template: str, phrase: int = 0) -> str:
    return template.format(a=with_article(CLASS_NAMES[label]), m=MOTION_PHRASES[MOTIONS[motion]][phrase])


def train_captions() -> list[tuple[str, int, int]]:
    """Every (caption, item label, motion) used in training, ordered item-major, then motion, template, phrase."""
    return [(clip_caption(c, m, t, p), c, m) for c in range(len(CLASS_NAMES)) for m in range(len(MOTIONS))
            for t in TRAIN_TEMPLATES for p in range(2)]


def captions_per_pair() -> int:
    return len(TRAIN_TEMPLATES) * 2


def clip_prompts(n: int, seed: int = 0, templates: tuple[str, ...] = EVAL_TEMPLATES) -> tuple[list[str], list[int], list[int]]:
    """``n`` prompts with their item labels and motions: every 10 prompts have every item once and every motion
    twice, every 50 every (item, motion) pair once; templates and phrasings drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    labels, motions, prompts = [], [], []
    for i in range(n):
        c, m = i % len(CLASS_NAMES), (i + i // len(CLASS_NAMES)) % len(MOTIONS)
        prompts.append(clip_caption(c, m, templates[rng.integers(len(templates))], int(rng.integers(2))))
        labels.append(c); motions.append(m)
    return prompts, labels, motions


def calibration_clip_prompts(n: int, seed: int = 1) -> list[str]:
    """Calibration prompts: training templates only, disjoint from ``clip_prompts``' evaluation templates."""
    return clip_prompts(n, seed=seed, templates=TRAIN_TEMPLATES)[0]


def tune_clip_prompts(n: int, seed: int = 1) -> list[str]:
    return clip_prompts(n, seed=seed, templates=TUNE_TEMPLATES)[0]


def parse_clip_caption(prompt: str) -> tuple[int, int] | None:
    """(item label, motion) of a prompt that is exactly one of the reference clip captions, else None."""
    return _CAPTIONS.get(prompt.strip().lower())


def offsets(motion: int, frames: int = NUM_FRAMES) -> list[tuple[int, int]]:
    """(x, y) of the item's top-left corner in each frame."""
    free = SIZE - ITEM
    mid = free // 2
    ramp = [min(f, free) for f in range(frames)]
    name = MOTIONS[motion]
    if name == "still":
        return [(mid, mid)] * frames
    if name == "left":
        return [(free - r, mid) for r in ramp]
    if name == "right":
        return [(r, mid) for r in ramp]
    if name == "up":
        return [(mid, free - r) for r in ramp]
    return [(mid, r) for r in ramp]


def scale_items(items: torch.Tensor) -> torch.Tensor:
    """28x28 items (N, 1, 28, 28) in [-1, 1] (or the data module's 32x32 padded ones) to ITEM x ITEM."""
    if items.shape[-1] == 32:
        items = items[..., 2:30, 2:30]
    return F.interpolate(items, size=(ITEM, ITEM), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)


def make_clips(items: torch.Tensor, motions: torch.Tensor, frames: int = NUM_FRAMES) -> torch.Tensor:
    """Clips (N, F, 1, SIZE, SIZE) in [-1, 1] of ``items`` (N, 1, 28 or 32, ...) moving as ``motions`` (N,) say."""
    small = scale_items(items)
    out = torch.full((len(items), frames, 1, SIZE, SIZE), -1.0)
    for i, m in enumerate(motions.tolist()):
        for f, (x, y) in enumerate(offsets(m, frames)):
            out[i, f, :, y : y + ITEM, x : x + ITEM] = small[i]
    return out


def place_frames(items: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Single frames (N, 1, SIZE, SIZE): each item scaled and put anywhere its clips may put it (the clip
    classifier's training images)."""
    small = scale_items(items)
    out = torch.full((len(items), 1, SIZE, SIZE), -1.0)
    xy = torch.randint(0, SIZE - ITEM + 1, (len(items), 2), generator=gen).tolist()
    for i, (x, y) in enumerate(xy):
        out[i, :, y : y + ITEM, x : x + ITEM] = small[i]
    return out


def centroids(clips: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre (x, y) of each frame, (N, F, 2); clips in [-1, 1] or [0, 1] (read as brightness)."""
    w = clips.float().mean(2)
    w = (w - w.amin(dim=(-2, -1), keepdim=True)).clamp_min(0)  # black background weighs nothing
    total = w.sum(dim=(-2, -1)).clamp_min(1e-6)
    ys = torch.arange(w.shape[-2], dtype=w.dtype).view(-1, 1)
    xs = torch.arange(w.shape[-1], dtype=w.dtype).view(1, -1)
    return torch.stack([(w * xs).sum(dim=(-2, -1)) / total, (w * ys).sum(dim=(-2, -1)) / total], -1)


def velocities(clips: torch.Tensor) -> torch.Tensor:
    """Least-squares speed (pixels a frame) of the centre along x and y, (N, 2)."""
    c = centroids(clips)
    t = torch.arange(c.shape[1], dtype=c.dtype)
    t = (t - t.mean()).view(1, -1, 1)
    return (t * (c - c.mean(1, keepdim=True))).sum(1) / (t**2).sum()


def measured_motion(clips: torch.Tensor) -> list[int]:
    """The motion (index into MOTIONS) each clip shows: its main axis' direction, or still below STILL_SPEED."""
    out = []
    for vx, vy in velocities(clips).tolist():
        if max(abs(vx), abs(vy)) < STILL_SPEED:
            out.append(MOTIONS.index("still"))
        elif abs(vx) >= abs(vy):
            out.append(MOTIONS.index("left" if vx < 0 else "right"))
        else:
            out.append(MOTIONS.index("up" if vy < 0 else "down"))
    return out


_CAPTIONS: dict[str, tuple[int, int]] = {
    clip_caption(c, m, t, p).lower(): (c, m)
    for c in range(len(CLASS_NAMES)) for m in range(len(MOTIONS)) for p in range(2)
    for t in TRAIN_TEMPLATES + EVAL_TEMPLATES + TUNE_TEMPLATES
}
