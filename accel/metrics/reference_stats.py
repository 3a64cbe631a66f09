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
from .quality import EXTRACTORS, REF_STATS


def load_folder(folder: str | Path) -> torch.Tensor:
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    arrs = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)


def compute(images: torch.Tensor, chunk: int = 500, kinds: tuple[str, ...] = ("effnet", "domain")) -> dict[str, FeatureStats]:
    feats: dict[str, list] = {k: [] for k in kinds}
    for i in tqdm(range(0, len(images), chunk), desc="features"):
        x = images[i : i + chunk]
        if "effnet" in kinds:
            feats["effnet"].append(effnet_features(x))
        if "domain" in kinds:
            feats["domain"].append(domain_features(x))
    return {k: FeatureStats.of(torch.cat(v), EXTRACTORS[k]) for k, v in feats.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m accel.metrics.reference_stats", description=__doc__)
    p.add_argument("--folder", help="an image folder (default: the Fashion-MNIST test set)")
    p.add_argument("--out", help="output prefix: PREFIX-effnet.safetensors, PREFIX-domain.safetensors")
    p.add_argument("--only", choices=("effnet", "domain"), help="compute one extractor's statistics")
    a = p.parse_args(argv)
    kinds = (a.only,) if a.only else ("effnet", "domain")
    if a.folder:
        stats = compute(load_folder(a.folder), kinds=kinds)
        prefix = a.out or str(Path(a.folder).name) + "-stats"
        paths = {k: Path(f"{prefix}-{k}.safetensors") for k in stats}
    else:
        from ..pipelines.data import load_fashion_mnist

        x, _ = load_fashion_mnist("test")
        stats = compute((x + 1) / 2, kinds=kinds)
        paths = REF_STATS
    for k, s in stats.items():
        s.save(paths[k])
        print(f"{k}: {s.n} images -> {paths[k]}")


if __name__ == "__main__":
    main()
