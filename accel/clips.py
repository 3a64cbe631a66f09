"""Clips on disk: one video file per clip and a contact sheet a person can look at.

A clip is a float tensor in [0, 1] of shape (F, C, H, W), a batch of them (N, F, C, H, W): what diffusers' video
pipelines return as ``frames`` with ``output_type="pt"``. Each clip is written as an mp4 (H.264) through
``imageio-ffmpeg`` where it is installed (``pip install 'accel[video]'``: it ships its own ffmpeg), else as an
animated GIF with Pillow; the contact sheet is a PNG with the frames of each clip in a row, one row per clip.

Example:
    >>> import torch
    >>> from accel.clips import write_clips
    >>> written = write_clips(torch.rand(2, 5, 3, 32, 32), "outputs/clips", fps=8)  # doctest: +SKIP
    >>> [p.name for p in written.files], written.sheet.name  # doctest: +SKIP
    (['000.mp4', '001.mp4'], 'contact_sheet.png')
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHEET_NAME = "contact_sheet.png"
MIN_TILE = 64  # contact-sheet tiles are scaled up (nearest) to at least this many pixels on their longer side
GAP = 2  # white pixels between tiles


@dataclass(frozen=True)
class WrittenClips:
    """What ``write_clips`` wrote: one file per clip, the contact sheet, and the format of the files."""

    files: list[Path]
    sheet: Path
    format: str  # "mp4" or "gif"
    fps: int


def video_format() -> str:
    """``"mp4"`` where imageio-ffmpeg is installed, else ``"gif"`` (Pillow, always there)."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return "gif"
    return "mp4"


def to_uint8(clip: torch.Tensor) -> np.ndarray:
    """A clip (F, C, H, W) in [0, 1] as RGB bytes (F, H, W, 3); one channel is repeated to three."""
    if clip.dim() != 4:
        raise ValueError(f"a clip is (frames, channels, height, width), got shape {tuple(clip.shape)}")
    x = clip.detach().float().cpu().clamp(0, 1)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> Path:
    """H.264 mp4 of RGB bytes (F, H, W, 3) through imageio-ffmpeg (yuv420p: an odd side is scaled up by one pixel)."""
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         macro_block_size=2, quality=8, ffmpeg_log_level="error")
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def write_gif(frames: np.ndarray, path: Path, fps: int) -> Path:
    """Animated GIF of RGB bytes (F, H, W, 3) with Pillow, looping, each frame shown 1 / fps seconds."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


def contact_sheet(clips: torch.Tensor, path: str | Path) -> Path:
    """A PNG of ``clips`` (N, F, C, H, W): the frames of each clip left to right, one row per clip, each frame
    scaled up (nearest) to at least ``MIN_TILE`` pixels, ``GAP`` white pixels between them."""
    from PIL import Image

    n, f, _, h, w = clips.shape
    scale = max(1, -(-MIN_TILE // max(h, w)))
    th, tw = h * scale, w * scale
    sheet = Image.new("RGB", (f * tw + (f - 1) * GAP, n * th + (n - 1) * GAP), (255, 255, 255))
    for r, clip in enumerate(clips):
        for c, frame in enumerate(to_uint8(clip)):
            sheet.paste(Image.fromarray(frame).resize((tw, th), Image.NEAREST), (c * (tw + GAP), r * (th + GAP)))
    path = Path(path)
    sheet.save(path)
    return path


def write_clips(clips: torch.Tensor, out_dir: str | Path, fps: int, fmt: str | None = None) -> WrittenClips:
    """Write each clip of ``clips`` (N, F, C, H, W) to ``out_dir`` as ``000.mp4``, ``001.mp4``, ... (``fmt``
    ``"gif"``, or None: ``video_format()``) at ``fps`` frames per second, and the contact sheet ``contact_sheet.png``."""
    if clips.dim() != 5:
        raise ValueError(f"clips are (clips, frames, channels, height, width), got shape {tuple(clips.shape)}")
    fmt = fmt or video_format()
    write = {"mp4": write_mp4, "gif": write_gif}[fmt]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [write(to_uint8(clip), out / f"{i:03d}.{fmt}", fps) for i, clip in enumerate(clips)]
    return WrittenClips(files, contact_sheet(clips, out / SHEET_NAME), fmt, fps)
