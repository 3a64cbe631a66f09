"""The video reference ``wan-motion``: its frame classifier, its Wan VAE, cached latents and its Wan transformer.

Each stage is seeded and resumable (checkpoints in ``ACCEL_RUNS``) and writes to accel/pipelines/weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from accel.metrics.domain_net import FashionClassifier

from ..components import WEIGHTS_DIR, load_text_encoder
from ..data import load_fashion_mnist
from ..motion import MOTIONS, captions_per_pair, make_clips, place_frames, train_captions
from ..video_components import encode_text_wan, new_video_transformer, new_video_vae
from .classifier import accuracy, fit_classifier
from .common import EMA, checkpoint, optimize, resume, runs_dir, seed_all

CLIP_CLASSIFIER = "fmnist-clip-classifier.safetensors"
VIDEO_VAE = "video-vae"
VIDEO_DENOISER = "wan-motion"


def train_clip_classifier(epochs: int = 4, batch: int = 128, lr: float = 2e-3, seed: int = 0) -> float:
    """The frame classifier of the clip metrics: the image references' CNN trained on frames as clips show items
    (scaled to 24x24, anywhere on the canvas). Writes weights/fmnist-clip-classifier.safetensors; returns the test
    accuracy on such frames."""
    out = WEIGHTS_DIR / CLIP_CLASSIFIER
    seed_all(seed)
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    gen = torch.Generator().manual_seed(seed)
    xt = place_frames(xt, gen)
    net = fit_classifier(FashionClassifier(), x, y, _place_flipped, gen, epochs, batch, lr, "clip classifier")
    acc = accuracy(net, xt, yt)
    print(f"clip classifier: test accuracy on placed frames {acc:.4f}")
    save_file(net.state_dict(), out, metadata={"test_accuracy": f"{acc:.4f}", "epochs": str(epochs), "seed": str(seed)})
    return acc


def _place_flipped(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    return place_frames(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), gen)


def _random_clips(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, len(x), (n,), generator=gen)
    motion = torch.randint(0, len(MOTIONS), (n,), generator=gen)
    return make_clips(x[idx], motion).transpose(1, 2)  # (N, C, F, H, W), the VAE's layout


def train_video_vae(steps: int = 600, batch: int = 16, lr: float = 1e-3, seed: int = 0, kl_weight: float = 1e-6) -> None:
    """Train the Wan VAE on random training clips (L1 + MSE + a small KL term), then set its per-channel latent
    mean and std (Wan's normalisation) from 2,000 training clips; resumable; writes weights/video-vae."""
    out = WEIGHTS_DIR / VIDEO_VAE
    if (out / "config.json").exists():
        print(f"video vae: {out} exists, skipping")
        return
    seed_all(seed)
    x, _ = load_fashion_mnist("train")
    vae = new_video_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    warm = 30
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + torch.cos(torch.tensor(s / steps * torch.pi)).item()))
    ckpt_path = runs_dir() / "video-vae.ckpt"
    gen = torch.Generator().manual_seed(seed)
    start = resume(ckpt_path, vae, opt, sched, gen)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="video vae")
    for step in bar:
        xb = _random_clips(x, batch, gen)
        post = vae.encode(xb).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, xb) + F.mse_loss(rec, xb) + kl_weight * post.kl().mean()
        optimize(loss, vae, opt, sched)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0 or step + 1 == steps:
            checkpoint(ckpt_path, step + 1, vae, opt, sched, gen)
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(_random_clips(x, 100, gen)).latent_dist.mean for _ in range(20)])
    dims = (0, 2, 3, 4)
    vae.register_to_config(latents_mean=means.mean(dims).tolist(), latents_std=means.std(dims).tolist())
    vae.save_pretrained(out)
    print(f"video vae: saved to {out}")


@torch.no_grad()
def cache_video_latents(items: int = 6000, batch: int = 100) -> None:
    """Posterior mean and std of the first ``items`` training items in every motion (items x 5 clips), normalised
    as the pipeline normalises latents, for the denoiser stage."""
    path = runs_dir() / "video-latents.pt"
    if path.exists():
        return
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(WEIGHTS_DIR / VIDEO_VAE).eval()
    mean_c = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std_c = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    x, y = load_fashion_mnist("train")
    x, y = x[:items], y[:items]
    idx = torch.arange(items).repeat_interleave(len(MOTIONS))
    motion = torch.arange(len(MOTIONS)).repeat(items)
    means, stds = [], []
    for i in tqdm(range(0, len(idx), batch), desc="video latents"):
        clips = make_clips(x[idx[i : i + batch]], motion[i : i + batch]).transpose(1, 2)
        post = vae.encode(clips).latent_dist
        means.append(((post.mean - mean_c) / std_c).half()); stds.append((post.std / std_c).half())
    torch.save({"mean": torch.cat(means), "std": torch.cat(stds), "labels": y[idx], "motions": motion}, path)


def _caption_table() -> torch.Tensor:
    """Wan prompt embeddings of every training caption, plus the pipeline's own "" (unconditional) last."""
    caps = train_captions()
    tok, enc = load_text_encoder()
    return encode_text_wan(tok, enc, [c for c, _, _ in caps] + [""])


def train_video_denoiser(steps: int = 3000, batch: int = 64, lr: float = 3e-4, seed: int = 0, ema_decay: float = 0.999,
                         caption_dropout: float = 0.1) -> None:
    """Train ``wan-motion``'s transformer by rectified flow (x_t = (1 - s) x0 + s noise, velocity noise - x0,
    timestep 1000 s, s logit-normal(0, 1)), captions dropped to "" 10% of the time so CFG works; resumable (a
    larger ``steps`` continues the run); writes the EMA weights in fp16."""
    out = WEIGHTS_DIR / VIDEO_DENOISER
    seed_all(seed)
    lat = torch.load(runs_dir() / "video-latents.pt")
    mean, std, labels, motions = lat["mean"], lat["std"], lat["labels"], lat["motions"]
    emb = _caption_table()
    per_pair = captions_per_pair()
    empty = emb.shape[0] - 1
    model = new_video_transformer().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 250))
    ema = EMA(model, ema_decay)
    gen = torch.Generator().manual_seed(seed)
    ckpt_path = runs_dir() / f"{VIDEO_DENOISER}.ckpt"
    start = resume(ckpt_path, model, opt, sched, gen, ema)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=VIDEO_DENOISER)
    for step in bar:
        idx = torch.randint(0, len(mean), (batch,), generator=gen)
        z0 = mean[idx].float() + std[idx].float() * torch.randn(mean[idx].shape, generator=gen)
        # captions are ordered item-major, then motion: index = (item * 5 + motion) * per_pair + template/phrase
        cap = (labels[idx] * len(MOTIONS) + motions[idx]) * per_pair + torch.randint(0, per_pair, (batch,), generator=gen)
        cap = torch.where(torch.rand(batch, generator=gen) < caption_dropout, torch.full_like(cap, empty), cap)
        noise = torch.randn(z0.shape, generator=gen)
        s = torch.sigmoid(torch.randn(batch, generator=gen))
        sv = s.view(-1, 1, 1, 1, 1)
        xt, target = (1 - sv) * z0 + sv * noise, noise - z0
        pred = model(xt, timestep=s * 1000, encoder_hidden_states=emb[cap]).sample
        loss = F.mse_loss(pred, target)
        optimize(loss, model, opt, sched)
        ema.update(model)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            checkpoint(ckpt_path, step + 1, model, opt, sched, gen, ema)
    final = new_video_transformer()
    final.load_state_dict(ema.shadow)
    final.to(torch.float16).save_pretrained(out)  # fp16 within the size budget; loaded back as fp32
    print(f"{VIDEO_DENOISER}: saved EMA weights (fp16) after {steps} steps to {out}")
