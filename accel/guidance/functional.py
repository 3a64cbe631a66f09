"""Guidance maths as pure functions (per sample, batch first), written to read like the papers."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w (cond - uncond)."""
    return uncond + scale * (cond - uncond)


def _flat_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def apg(cond: torch.Tensor, uncond: torch.Tensor, scale: float, eta: float = 0.0, momentum: float = 0.0,
        running: torch.Tensor | None = None, norm_threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adaptive projected guidance (Sadat et al. 2024, Algorithm 1) on denoised predictions D(x):

    1. delta = D_cond - D_uncond
    2. reverse momentum: running = delta + beta * running; delta = running
    3. rescale: delta *= min(1, r / ||delta||)
    4. v = D_cond / ||D_cond|| (float64); par = <delta, v> v; orth = delta - par
    5. D = D_cond + (w - 1) (orth + eta * par)

    Returns (guided prediction, new running average, per-sample clip flags).
    """
    delta = cond - uncond
    if momentum != 0.0:
        running = delta + momentum * running if running is not None else delta
        delta = running
    clipped = torch.zeros(cond.shape[0], dtype=torch.bool, device=cond.device)
    if norm_threshold is not None and norm_threshold > 0:
        n = _flat_norm(delta)
        factor = torch.clamp(norm_threshold / n, max=1.0)
        clipped = factor.flatten() < 1.0
        delta = delta * factor
    d64, c64 = delta.double(), cond.double()
    v = c64 / _flat_norm(c64).clamp_min(1e-12)
    par = (d64 * v).flatten(1).sum(1).view(-1, *([1] * (cond.dim() - 1))) * v
    orth = d64 - par
    update = (orth + eta * par).to(cond.dtype)
    return cond + (scale - 1) * update, running, clipped


def low_pass(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Low band as FreCaS defines it: bilinear resize down by ``cutoff`` and back up, over the last two (spatial)
    dimensions; every other dimension (channels, and a video's frames) is a plane of its own, so a clip is split
    per frame, spatially (FreCaS defines its bands on images)."""
    h, w = x.shape[-2:]
    planes = x.reshape(-1, 1, h, w)
    small = (max(1, round(h * cutoff)), max(1, round(w * cutoff)))
    down = F.interpolate(planes, size=small, mode="bilinear", align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).reshape(x.shape)


def frequency_aware_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale_low: float, scale_high: float,
                        cutoff: float = 0.5) -> torch.Tensor:
    """FA-CFG (FreCaS, ICLR 2025): CFG with its own scale per band, low = resize down/up, high = rest.

    out = [u_low + w_low (c_low - u_low)] + [u_high + w_high (c_high - u_high)]
    """
    c_low, u_low = low_pass(cond, cutoff), low_pass(uncond, cutoff)
    return cfg(c_low, u_low, scale_low) + cfg(cond - c_low, uncond - u_low, scale_high)


def alpha_sigma(scheduler, timestep: torch.Tensor, prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t, sigma_t of x_t = alpha x0 + sigma noise at a (per-sample) timestep.

    VP models: from the scheduler's ``alphas_cumprod`` at the integer timestep; flow models:
    sigma = t / num_train_timesteps, alpha = 1 - sigma.
    """
    t = timestep.float().flatten()
    if prediction == "flow_prediction":
        n = getattr(scheduler.config, "num_train_timesteps", 1000)
        sigma = (t / n).clamp(0, 1)
        return 1 - sigma, sigma
    acp = scheduler.alphas_cumprod.to(t.device)
    idx = t.round().long().clamp(0, len(acp) - 1)
    a = acp[idx].float()
    return a.sqrt(), (1 - a).sqrt()


def _b(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.dim() - 1))).to(device=like.device, dtype=like.dtype)


def to_x0(pred: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    a, s = _b(alpha, x_t), _b(sigma, x_t)
    if prediction == "epsilon":
        return (x_t - s * pred) / a
    if prediction == "v_prediction":
        return a * x_t - s * pred
    if prediction == "flow_prediction":  # v = noise - x0, x_t = (1 - s) x0 + s noise
        return x_t - s * pred
    raise ValueError(f"unsupported prediction type {prediction!r}")


def from_x0(x0: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    a, s = _b(alpha, x_t), _b(sigma, x_t).clamp_min(1e-8)
    if prediction == "epsilon":
        return (x_t - a * x0) / s
    if prediction == "v_prediction":
        return (a * x_t - x0) / s
    if prediction == "flow_prediction":
        return (x_t - x0) / s
    raise ValueError(f"unsupported prediction type {prediction!r}")


def unpack_tokens(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """FLUX's packed latents [B, rows * cols, 4C] (2x2 patches as tokens) -> [B, C, 2 rows, 2 cols]."""
    b, _, d = x.shape
    c = d // 4
    return x.view(b, rows, cols, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, 2 * rows, 2 * cols)


def pack_tokens(x: torch.Tensor) -> torch.Tensor:
    """The inverse of ``unpack_tokens``."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)
