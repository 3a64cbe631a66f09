"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` and the captions built from it.

Images are padded from 28x28 to 32x32 and returned as float tensors in [-1, 1], shape (N, 1, 32, 32).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

DATA_DIR = Path(os.environ.get("ACCEL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

CLASS_NAMES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

# Training templates; {a} is the article-prefixed class name.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "{a}",
    "a photo of {a}",
    "{a}, studio shot",
    "a grayscale picture of {a}",
    "a product photo of {a}",
    "a picture of {a} on a black background",
    "a small image of {a}",
    "{a}, centered",
)
# Held-out templates: evaluation prompts are disjoint from what the model saw in training.
EVAL_TEMPLATES: tuple[str, ...] = (
    "an image of {a}",
    "a catalogue photo of {a}",
    "{a} photographed from the front",
)

# Tune templates: neither trained on nor evaluated on. `accel tune` searches and validates on these by default,
# since a cache schedule that keeps its quality on training captions need not keep it on captions the model never saw.
TUNE_TEMPLATES: tuple[str, ...] = (
    "a close-up of {a}",
    "{a} for sale",
    "a low resolution photo of {a}",
    "a thumbnail of {a}",
    "a black and white photo of {a}",
    "this is {a}",
)


def with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def caption(label: int, template: str) -> str:
    return template.format(a=with_article(CLASS_NAMES[label]))


def train_captions() -> list[tuple[str, int]]:
    """All (caption, label) pairs used in training."""
    return [(caption(c, t), c) for c in range(len(CLASS_NAMES)) for t in TRAIN_TEMPLATES]


def eval_prompts(n: int, seed: int = 0, templates: tuple[str, ...] = EVAL_TEMPLATES) -> tuple[list[str], list[int]]:
    """``n`` evaluation prompts, classes balanced (round robin), templates drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    labels = [i % len(CLASS_NAMES) for i in range(n)]
    prompts = [caption(c, templates[rng.integers(len(templates))]) for c in labels]
    return prompts, labels


def label_of_caption(prompt: str) -> int | None:
    """The class of a prompt that is exactly one of the reference captions (a training or evaluation template,
    or the bare class name, with its article or without), else None: never a substring ("a woman in a dress" is
    no dress caption)."""
    return _CAPTIONS.get(prompt.strip().lower())


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 32, 32) in [-1, 1] and labels (N,) of the ``train`` or ``test`` split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    img_path = DATA_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not img_path.exists():
        raise FileNotFoundError(
            f"{img_path} not found: install Fashion-MNIST with "
            "`apt-get install dataset-fashion-mnist` or set ACCEL_FASHION_MNIST to its folder."
        )
    images = _read_idx(img_path, 16).reshape(-1, 1, 28, 28)
    labels = _read_idx(DATA_DIR / f"{prefix}-labels-idx1-ubyte.gz", 8)
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1.0)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def calibration_prompts(n: int, seed: int = 1) -> list[str]:
    """Calibration prompts: training templates only, so they are disjoint from ``eval_prompts``."""
    return eval_prompts(n, seed=seed, templates=TRAIN_TEMPLATES)[0]


def tune_prompts(n: int, seed: int = 1) -> list[str]:
    """``accel tune``'s default prompts: the tune templates, disjoint from training and from ``eval_prompts``."""
    return eval_prompts(n, seed=seed, templates=TUNE_TEMPLATES)[0]


_CAPTIONS: dict[str, int] = {
    **{name: c for c, name in enumerate(CLASS_NAMES)},
    **{caption(c, t).lower(): c for c in range(len(CLASS_NAMES)) for t in TRAIN_TEMPLATES + EVAL_TEMPLATES
        + TUNE_TEMPLATES},
}
