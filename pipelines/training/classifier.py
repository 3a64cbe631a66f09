"""Stage 0: the Fashion-MNIST classifier used by ``fd_domain`` and ``alignment``."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from accel.metrics.domain_net import FashionClassifier

from ..components import WEIGHTS_DIR
from ..data import load_fashion_mnist
from .common import seed_all


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
    return torch.roll(x, (dy, dx), (-2, -1))


def fit_classifier(net: FashionClassifier, x: torch.Tensor, y: torch.Tensor,
                   augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor], gen: torch.Generator,
                   epochs: int, batch: int, lr: float, desc: str) -> FashionClassifier:
    """AdamW with a one-cycle schedule over ``epochs`` shuffled passes, each batch through ``augment``."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    total = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    bar = tqdm(total=total, desc=desc)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(net(augment(x[idx], gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
            bar.update(); bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


@torch.no_grad()
def accuracy(net: FashionClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)]).eq(y).float().mean().item()


def train_classifier(epochs: int = 8, batch: int = 128, lr: float = 2e-3, seed: int = 0) -> float:
    """Train, report test accuracy, write weights/fmnist-classifier.safetensors. Returns the accuracy."""
    out = WEIGHTS_DIR / "fmnist-classifier.safetensors"
    seed_all(seed)
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    net = FashionClassifier()
    gen = torch.Generator().manual_seed(seed)
    net = fit_classifier(net, x, y, _augment, gen, epochs, batch, lr, "classifier")
    acc = accuracy(net, xt, yt)
    print(f"classifier: test accuracy {acc:.4f}")
    save_file(net.state_dict(), out, metadata={"test_accuracy": f"{acc:.4f}", "epochs": str(epochs), "seed": str(seed)})
    return acc
