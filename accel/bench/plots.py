"""Bench figures: quality against measured speed-up, and a same-seed image grid."""
from __future__ import annotations

from pathlib import Path

import torch


def pareto_png(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = next((k for k in ("fd_domain", "fd_frames", "fd_plain", "fd_ref", "ssim") if results and results[0].get(k) is not None),
               None)
    if key is None:  # no quality measure to plot against speed
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        x, y = r.get("speedup_denoise") or r["speedup_e2e"], r[key]
        if y is None:
            continue
        ax.scatter(x, y, marker="s" if r["peer"] else "o", color="tab:gray" if r["peer"] else "tab:blue")
        ax.annotate(r["method"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("measured speed-up of the denoising loop (wall clock)")
    ax.set_ylabel(f"{key} ({'higher' if key == 'ssim' else 'lower'} is better)")
    ax.set_title("quality vs speed (squares: peers)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grid_png(images: dict[str, torch.Tensor], path: Path, per_row: int = 10) -> None:
    """One row per method, the same first ``per_row`` seeds/prompts in each column; clips (NFCHW): the frames of
    each method's first clip."""
    from PIL import Image, ImageDraw

    images = {name: x[0] if x.dim() == 5 else x for name, x in images.items()}
    names = list(images)
    h, w = images[names[0]].shape[-2:]
    scale = max(1, 64 // max(h, w))
    label_w = 150
    canvas = Image.new("L", (label_w + per_row * w * scale, len(names) * h * scale), 255)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        draw.text((4, r * h * scale + h * scale // 2 - 5), name[:24], fill=0)
        for c, img in enumerate(images[name][:per_row]):
            arr = (img.mean(0).clamp(0, 1) * 255).round().byte().numpy()
            tile = Image.fromarray(arr, "L").resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * w * scale, r * h * scale))
    canvas.save(path)
