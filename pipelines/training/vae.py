"""Stage 1: the 1-channel AutoencoderKL (32x32 -> 8x8x4) and the cached latents of the training set."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..components import WEIGHTS_DIR, new_vae
from ..data import load_fashion_mnist
from .common import checkpoint, optimize, resume, runs_dir, seed_all


def train_vae(steps: int = 700, batch: int = 128, lr: float = 5e-4, seed: int = 0, kl_weight: float = 1e-6) -> None:
    """Train with L1 + MSE reconstruction and a small KL term; resumable; writes weights/vae."""
    out = WEIGHTS_DIR / "vae"
    if (out / "config.json").exists():
        print(f"vae: {out} exists, skipping")
        return
    seed_all(seed)
    x, _ = load_fashion_mnist("train")
    vae = new_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + torch.cos(torch.tensor(s / steps * torch.pi)).item()))
    ckpt_path = runs_dir() / "vae.ckpt"
    gen = torch.Generator().manual_seed(seed)
    start = resume(ckpt_path, vae, opt, sched, gen)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="vae")
    for step in bar:
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb = x[idx]
        post = vae.encode(xb).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = post.kl().mean()
        loss = F.l1_loss(rec, xb) + F.mse_loss(rec, xb) + kl_weight * kl
        optimize(loss, vae, opt, sched)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            checkpoint(ckpt_path, step + 1, vae, opt, sched, gen)
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(x[i : i + 1000]).latent_dist.mean for i in range(0, 10000, 1000)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    vae.save_pretrained(out)
    print(f"vae: saved to {out} (scaling_factor {vae.config.scaling_factor:.4f})")


@torch.no_grad()
def cache_latents() -> None:
    """Posterior mean and std of every training image, for the denoiser stages."""
    path = runs_dir() / "latents.pt"
    if path.exists():
        return
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "vae").eval()
    x, y = load_fashion_mnist("train")
    means, stds = [], []
    for i in tqdm(range(0, len(x), 1000), desc="latents"):
        post = vae.encode(x[i : i + 1000]).latent_dist
        means.append(post.mean); stds.append(post.std)
    torch.save({"mean": torch.cat(means), "std": torch.cat(stds), "labels": y,
                "scaling_factor": vae.config.scaling_factor}, path)
