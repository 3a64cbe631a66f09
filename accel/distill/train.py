"""One-step student training in the manner of SlimFlow (arXiv 2407.12718), on cached teacher pairs.

Stage 1, reflow: from the teacher's weights, fit the straight path between each paired noise z and
teacher sample x: x_s = (1 - s) x + s z, target velocity z - x (the teacher's convention: sigma s,
timestep 1000 s, v = noise - data).
Stage 2, one-step distillation: G(z) = z - sigma_1 v(z, t_1) (exactly what the pipeline's scheduler
does with one step from sigma_1), loss ||G(z) - x||^2.
The student is initialised from the teacher and keeps its architecture, so it loads as the same
diffusers transformer class. The guidance the teacher sampled with is baked into the pairs, so the
student runs without CFG (one denoiser evaluation of the conditional batch).

Departures, each for a stated reason:
- squared error in latent space instead of LPIPS: this is a latent model and no LPIPS network is
  available offline (the metrics' own networks are kept out of training so they stay independent);
- no annealing of the pairing and no flow-guided term (SlimFlow's optional parts): the teacher is
  already a trained flow, and the 2-core budget goes to the two main stages;
- reflow times are drawn logit-normal(0, 1), as the teacher was trained.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..pipelines.training.common import EMA, load_checkpoint, save_checkpoint
from .pairs import load_pairs


@dataclass
class DistillConfig:
    reflow_steps: int = 600
    distill_steps: int = 1800
    batch: int = 128
    lr: float = 1e-4
    ema_decay: float = 0.999
    seed: int = 0


def one_step_sigma(scheduler) -> tuple[float, float]:
    """(timestep, sigma) of the single step the pipeline's scheduler takes with ``num_inference_steps=1``."""
    s = copy.deepcopy(scheduler)
    s.set_timesteps(1)
    return float(s.timesteps[0]), float(s.sigmas[0])


@torch.no_grad()
def prompt_table(pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's own text embeddings and masks of each prompt (PixArt pipelines)."""
    d = getattr(pipe, "accel_defaults", {})
    emb, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, clean_caption=False,
                                         max_sequence_length=d.get("max_sequence_length", 300))
    return emb.float(), mask


def _predict(model, x, t, emb, mask) -> torch.Tensor:
    out = model(x, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t,
                added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    return out[:, : x.shape[1]]


def require_flow(pipe) -> None:
    """A ValueError unless ``pipe`` is a flow (velocity) pipeline, the kind accel distill makes one-step."""
    from accel.guidance.hook import prediction_type

    if prediction_type(pipe.scheduler) != "flow_prediction":
        raise ValueError("accel distill turns a flow (velocity) pipeline into a one-step generator; this pipeline's "
                         f"scheduler predicts {prediction_type(pipe.scheduler)!r}")


def train_student(pipe, pair_dir: str | Path, ckpt_path: str | Path, cfg: DistillConfig, progress: bool = True):
    """Reflow then one-step distillation of ``pipe.transformer``; resumable from ``ckpt_path``.

    Returns the EMA student (same class and config as the teacher).
    """
    require_flow(pipe)
    z_all, x_all, p_all, prompts = load_pairs(pair_dir)
    emb, mask = prompt_table(pipe, prompts)
    t1, sigma1 = one_step_sigma(pipe.scheduler)
    n_train = pipe.scheduler.config.num_train_timesteps
    student = copy.deepcopy(pipe.transformer).float().train()
    dev = next(student.parameters()).device
    for p in student.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(student, cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    total = cfg.reflow_steps + cfg.distill_steps
    start = 0
    ckpt_path = Path(ckpt_path)
    if (ck := load_checkpoint(ckpt_path)) is not None:
        student.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); ema.load_state_dict(ck["ema"])
        gen.set_state(ck["gen"]); start = ck["step"]
    bar = tqdm(range(start, total), initial=start, total=total, desc="distill", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(z_all), (cfg.batch,), generator=gen)
        z, x, pi = z_all[idx].to(dev), x_all[idx].to(dev), p_all[idx].to(emb.device)
        if step < cfg.reflow_steps:
            s = torch.sigmoid(torch.randn(cfg.batch, generator=gen)).to(dev)  # drawn on the CPU: any device alike
            sv = s.view(-1, 1, 1, 1)
            v = _predict(student, (1 - sv) * x + sv * z, s * n_train, emb[pi], mask[pi])
            loss = F.mse_loss(v, z - x)
            stage = "reflow"
        else:
            v = _predict(student, z, torch.full((cfg.batch,), t1, device=dev), emb[pi], mask[pi])
            loss = F.mse_loss(z - sigma1 * v, x)
            stage = "one-step"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        ema.update(student)
        if step + 1 == cfg.reflow_steps:  # the distillation stage starts from the reflowed weights
            ema = EMA(student, cfg.ema_decay)
        bar.set_postfix(stage=stage, loss=f"{loss.item():.4f}")
        if (step + 1) % 100 == 0 or step + 1 == total:
            save_checkpoint(ckpt_path, model=student.state_dict(), opt=opt.state_dict(), ema=ema.state_dict(),
                            gen=gen.get_state(), step=step + 1)
    final = copy.deepcopy(student).eval()
    final.load_state_dict(ema.shadow)
    for p in final.parameters():
        p.requires_grad_(False)
    return final
