"""Stages 2 and 3: the PixArt transformers, epsilon-prediction (VP) and rectified flow (velocity)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..components import VP_SCHEDULE, WEIGHTS_DIR, encode_text, load_text_encoder, new_transformer
from ..data import TRAIN_TEMPLATES, train_captions
from .common import EMA, checkpoint, optimize, resume, runs_dir, seed_all


def _caption_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings and masks of every training caption, plus the pipeline's own "" (unconditional) last."""
    caps = train_captions()
    tok, enc = load_text_encoder()
    emb, mask = encode_text(tok, enc, [c for c, _ in caps] + [""])
    labels = torch.tensor([l for _, l in caps])
    return emb, mask, labels


def _vp_alphas_cumprod() -> torch.Tensor:
    s = VP_SCHEDULE
    betas = torch.linspace(s["beta_start"], s["beta_end"], s["num_train_timesteps"], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def train_denoiser(kind: str, steps: int = 6000, batch: int = 128, lr: float = 3e-4, seed: int = 0,
                   ema_decay: float = 0.9995, caption_dropout: float = 0.1) -> None:
    """Train ``pixart-eps`` (kind="eps") or ``pixart-flow`` (kind="flow"); resumable; writes the EMA weights.

    Calling again with a larger ``steps`` continues the same run (the learning rate is constant after warm-up).
    """
    assert kind in ("eps", "flow")
    out = WEIGHTS_DIR / f"pixart-{kind}"
    seed_all(seed)
    torch.set_num_threads(torch.get_num_threads())
    lat = torch.load(runs_dir() / "latents.pt")
    mean, std, labels, sf = lat["mean"], lat["std"], lat["labels"], lat["scaling_factor"]
    emb, mask, cap_labels = _caption_table()
    n_t = len(TRAIN_TEMPLATES)
    # captions are ordered class-major: caption index = label * n_templates + template
    assert torch.equal(cap_labels, torch.arange(10).repeat_interleave(n_t))
    empty = emb.shape[0] - 1
    model = new_transformer().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 250))
    ema = EMA(model, ema_decay)
    gen = torch.Generator().manual_seed(seed)
    ckpt_path = runs_dir() / f"pixart-{kind}.ckpt"
    start = resume(ckpt_path, model, opt, sched, gen, ema)
    acp = _vp_alphas_cumprod()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"pixart-{kind}")
    for step in bar:
        idx = torch.randint(0, len(mean), (batch,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * sf
        cap = labels[idx] * n_t + torch.randint(0, n_t, (batch,), generator=gen)
        cap = torch.where(torch.rand(batch, generator=gen) < caption_dropout, torch.full_like(cap, empty), cap)
        noise = torch.randn(z0.shape, generator=gen)
        if kind == "eps":
            t = torch.randint(0, 1000, (batch,), generator=gen)
            a = acp[t].view(-1, 1, 1, 1)
            xt, target, timestep = a.sqrt() * z0 + (1 - a).sqrt() * noise, noise, t
        else:
            s = torch.sigmoid(torch.randn(batch, generator=gen))  # logit-normal(0, 1), as in SD3
            sv = s.view(-1, 1, 1, 1)
            xt, target, timestep = (1 - sv) * z0 + sv * noise, noise - z0, s * 1000
        pred = model(xt, encoder_hidden_states=emb[cap], encoder_attention_mask=mask[cap], timestep=timestep,
                     added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        loss = F.mse_loss(pred, target)
        optimize(loss, model, opt, sched)
        ema.update(model)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 == steps:
            checkpoint(ckpt_path, step + 1, model, opt, sched, gen, ema)
    final = new_transformer()
    final.load_state_dict(ema.shadow)
    # stored in fp16 to stay within the size budget of the shipped weights; loaded back as fp32
    final.to(torch.float16).save_pretrained(out)
    print(f"pixart-{kind}: saved EMA weights (fp16) after {steps} steps to {out}")
