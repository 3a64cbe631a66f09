"""The Fashion-MNIST classifier behind ``fd_domain`` and ``alignment`` (trained here, weights shipped)."""
from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, n: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)]


class FashionClassifier(nn.Module):
    """A small CNN on 32x32 grayscale images in [-1, 1]; ``features`` is its 256-d penultimate layer."""

    feature_dim = 256

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*_block(1, 32, 2), *_block(32, 64, 2), *_block(64, 128, 1), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(128 * 16, self.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(self.feature_dim, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
