"""Compute Frechet reference statistics: ``python -m accel.metrics.reference_stats``.

Without arguments: the Fashion-MNIST test set (10,000 images) for both extractors, written next
to the reference weights. ``--folder DIR --out PREFIX``: statistics of your own image folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .features import domain_features, effnet_features
from .frechet import FeatureStats
from .quality import REF_STATS


def load_folder(folder: str | Path) -> torch.Tensor:
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    arrs = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)


def compute(images: torch.Tensor, chunk: int = 500) -> dict[str, FeatureStats]:
    eff, dom = [], []
    for i in tqdm(range(0, len(images), chunk), desc="features"):
        x = images[i : i + chunk]
        eff.append(effnet_features(x))
        dom.append(domain_features(x))
    return {"effnet": FeatureStats.of(torch.cat(eff), "effnet-lite0-160"),
            "domain": FeatureStats.of(torch.cat(dom), "fmnist-classifier-256")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m accel.metrics.reference_stats", description=__doc__)
    p.add_argument("--folder", help="an image folder (default: the Fashion-MNIST test set)")
    p.add_argument("--out", help="output prefix: PREFIX-effnet.safetensors, PREFIX-domain.safetensors")
    a = p.parse_args(argv)
    if a.folder:
        stats = compute(load_folder(a.folder))
        prefix = a.out or str(Path(a.folder).name) + "-stats"
        paths = {k: Path(f"{prefix}-{k}.safetensors") for k in stats}
    else:
        from ..pipelines.data import load_fashion_mnist

        x, _ = load_fashion_mnist("test")
        stats = compute((x + 1) / 2)
        paths = REF_STATS
    for k, s in stats.items():
        s.save(paths[k])
        print(f"{k}: {s.n} images -> {paths[k]}")


if __name__ == "__main__":
    main()
