"""CLIP score (Hessel et al. 2021, as torchmetrics computes it): 100 * max(cos(image, text), 0) per image,
averaged, with a CLIP model the user has in a local folder (``transformers``' ``CLIPModel`` and its tokenizer).

Example:
    >>> from accel.metrics.clip import clip_score
    >>> clip_score(images, prompts, "./clip-vit-base-patch32")  # doctest: +SKIP
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

# OpenAI CLIP's preprocessing constants, used when the folder has no image processor config
_MEAN, _STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@lru_cache(maxsize=2)
def _load(folder: str):
    from transformers import AutoTokenizer, CLIPModel

    if not (Path(folder) / "config.json").exists():
        raise FileNotFoundError(f"--clip {folder}: no CLIP model there (a folder with config.json, the weights and "
                                "the tokenizer, as CLIPModel.save_pretrained writes it)")
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    mean, std = _MEAN, _STD
    cfg = Path(folder) / "preprocessor_config.json"
    if cfg.exists():
        import json

        d = json.loads(cfg.read_text())
        mean, std = tuple(d.get("image_mean", mean)), tuple(d.get("image_std", std))
    return model, tokenizer, mean, std


@torch.no_grad()
def clip_embeddings(images: torch.Tensor, prompts: list[str], folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm image and text embeddings of ``images`` ([0, 1], NCHW) and ``prompts`` with the CLIP model in
    ``folder``: images resized (bicubic) to its input size and normalised as CLIP's processor does."""
    model, tokenizer, mean, std = _load(str(folder))
    size = model.config.vision_config.image_size
    x = images.float().cpu()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    tokens = tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
    img = model.get_image_features(pixel_values=x)
    txt = model.get_text_features(**tokens)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)


def clip_score(images: torch.Tensor, prompts: list[str], folder: str | Path) -> float:
    """Mean CLIP score of images against their prompts: 100 * max(cos, 0)."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    img, txt = clip_embeddings(images, prompts, folder)
    return float((100 * (img * txt).sum(-1).clamp_min(0)).mean())
