"""Empirical model statistics (EMS) for DPM-Solver-v3: ``accel calibrate --method ems``.

On a grid uniform in lambda = log(alpha / sigma) between the scheduler's ends, with x_t = alpha x0 +
sigma z from data latents x0 (real images through the VAE, or the model's own samples):
- l = E[sigma (J_eps v) . v] per dimension, Hutchinson with Rademacher v (J_eps v by forward-mode JVP);
- l' by central differences in lambda, smoothed over +-0.25 in lambda (+-5 points of the official 250-point grid);
- f = (sigma eps - l x) / alpha, f' = e^{-lambda} ((l - 1) eps + d eps / d lambda) - l' x / alpha, with
  d eps / d lambda a JVP along the ODE tangent (dx/dlambda = (d log alpha / d lambda) x - sigma eps,
  dt/dlambda of the model time);
- s = Cov(f, f') / Var(f), b = E f' - s E f.
Two passes over the grid with the same noise (l first, then f and f'), so memory does not grow with
the number of samples beyond one batch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from accel.guidance.functional import to_x0
from accel.guidance.hook import prediction_type


SMOOTH_HALF_WIDTH = 0.25  # lambda units


def _alpha_sigma_t(scheduler, lam: float) -> tuple[float, float, float]:
    """alpha, sigma and the (continuous) model timestep at half-logSNR ``lam``."""
    pt = prediction_type(scheduler)
    n = scheduler.config.num_train_timesteps
    if pt == "flow_prediction" or getattr(scheduler.config, "use_flow_sigmas", False):
        sigma = 1.0 / (1.0 + math.exp(lam))
        return 1.0 - sigma, sigma, sigma * n
    a2 = 1.0 / (1.0 + math.exp(-2 * lam))
    log_acp = torch.log(scheduler.alphas_cumprod.double()).numpy()  # decreasing in t
    t = float(np.interp(math.log(a2), log_acp[::-1], np.arange(len(log_acp))[::-1]))
    return math.sqrt(a2), math.sqrt(1 - a2), t


def _alpha_sigma_of_t(scheduler, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha and sigma as differentiable functions of the continuous model timestep (inverse of ``_alpha_sigma_t``)."""
    if prediction_type(scheduler) == "flow_prediction" or getattr(scheduler.config, "use_flow_sigmas", False):
        sigma = t / scheduler.config.num_train_timesteps
        return 1 - sigma, sigma
    log_acp = torch.log(scheduler.alphas_cumprod.double())
    i = t.detach().clamp(0, len(log_acp) - 2).floor().long()
    la2 = log_acp[i] + (t - i) * (log_acp[i + 1] - log_acp[i])  # piecewise linear, as np.interp inverts it
    return torch.exp(la2 / 2), torch.sqrt(-torch.expm1(la2))


def lambda_range(scheduler, steps: int = 1000) -> tuple[float, float]:
    """lambda at the most and the least noisy ends of the scheduler's sampling range."""
    scheduler.set_timesteps(steps)
    lams = []
    for sig in (scheduler.sigmas[0], scheduler.sigmas[-2]):
        a, s = scheduler._sigma_to_alpha_sigma_t(sig.double())
        lams.append(math.log(float(a)) - math.log(float(s)))
    return lams[0], lams[1]


def compute_ems(fn, scheduler, x0: torch.Tensor, grid_points: int = 100, seed: int = 0, progress: bool = True):
    """l, s, b [K+1, C, H, W] and the lambda grid for the guided denoiser ``fn(x, t)`` on data latents ``x0``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # forward-mode AD is implemented for the math attention kernel only (not the fused CPU/GPU kernels);
    # no_grad: forward-mode JVPs need no reverse graph, which would otherwise pin every step's activations
    with sdpa_kernel([SDPBackend.MATH]), torch.no_grad():
        return _compute_ems(fn, scheduler, x0, grid_points, seed, progress)


def _compute_ems(fn, scheduler, x0, grid_points, seed, progress):
    pt = prediction_type(scheduler)
    lam_t, lam_0 = lambda_range(scheduler)
    lams = np.linspace(lam_t, lam_0, grid_points + 1)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(x0.shape, generator=g)
    v = torch.randint(0, 2, x0.shape, generator=g).float() * 2 - 1

    def eps_of(x, t, a, s):
        a, s = torch.as_tensor(a, dtype=torch.float64).reshape(1), torch.as_tensor(s, dtype=torch.float64).reshape(1)
        return (x - a.view(-1, *[1] * (x.dim() - 1)) * to_x0(fn(x, t), x, a, s, pt)) / s.view(-1, *[1] * (x.dim() - 1))

    ls = []
    for lam in tqdm(lams, desc="ems: l (Hutchinson)", disable=not progress):
        a, s, t = _alpha_sigma_t(scheduler, float(lam))
        x = a * x0 + s * z
        _, jv = torch.func.jvp(lambda xx: eps_of(xx, t, a, s), (x,), (v,))
        ls.append((s * jv * v).mean(0))
    l = torch.stack(ls).double()
    dl = torch.gradient(l, spacing=(torch.tensor(lams, dtype=torch.float64),), dim=0)[0]
    # smooth l' over +-0.25 in lambda: the official setting (+-5 points of a 250-point SD grid); as +-5 points on
    # a coarse grid it would average l' over several units of lambda, where l falls from 1 to 0, and bias f'
    half = int(round(SMOOTH_HALF_WIDTH / float(lams[1] - lams[0])))
    if half > 0:
        kernel = torch.ones(2 * half + 1, dtype=torch.float64) / (2 * half + 1)
        flat = dl.reshape(len(lams), -1).T[:, None]
        pad = torch.nn.functional.pad(flat, (half, half), mode="replicate")
        dl = torch.nn.functional.conv1d(pad, kernel.view(1, 1, -1)).squeeze(1).T.reshape(dl.shape)
    ss, bs = [], []
    for k, lam in enumerate(tqdm(lams, desc="ems: s, b", disable=not progress)):
        a, s, t = _alpha_sigma_t(scheduler, float(lam))
        da = s * s if pt != "flow_prediction" else s  # d log alpha / d lambda (VP: sigma^2; flow: sigma)
        # dt/dlambda by differences that stay inside the schedule (t is clamped past its ends)
        lo, hi = max(float(lam) - 1e-3, lams[0]), min(float(lam) + 1e-3, lams[-1])
        dt = (_alpha_sigma_t(scheduler, hi)[2] - _alpha_sigma_t(scheduler, lo)[2]) / (hi - lo)
        x = a * x0 + s * z
        with torch.no_grad():
            eps = eps_of(x, t, a, s)
        x_dot = (da * x - s * eps).to(x.dtype)
        # alpha and sigma move with t inside the JVP: for flow models eps = x + alpha v depends on t through
        # alpha as well as through the network (for epsilon models they cancel)
        eps, deps = torch.func.jvp(lambda xx, tt: eps_of(xx, tt, *_alpha_sigma_of_t(scheduler, tt)),
                                   (x, torch.tensor(float(t), dtype=torch.float64)), (x_dot, torch.tensor(float(dt), dtype=torch.float64)))
        eps, deps, xd = eps.double(), deps.double(), x.double()
        f = (s * eps - l[k] * xd) / a
        fp = math.exp(-lam) * ((l[k] - 1) * eps + deps) - dl[k] * xd / a
        mf, mfp = f.mean(0), fp.mean(0)
        cov = ((f - mf) * (fp - mfp)).mean(0)
        # departure: ridge term 1e-4 Var(f'): where f hardly varies (std below 1% of f''s) the ratio is noise over
        # noise (s ~ 1e4 on exactly Gaussian data, then e^S overflows); there s shrinks to 0, elsewhere nothing changes
        var = ((f - mf) ** 2).mean(0) + 1e-4 * ((fp - mfp) ** 2).mean(0) + 1e-30
        sk = cov / var
        ss.append(sk)
        bs.append(mfp - sk * mf)
    return torch.tensor(lams), l.detach().float(), torch.stack(ss).detach().float(), torch.stack(bs).detach().float()


def reference_data_latents(pipe, n: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Real Fashion-MNIST training images through the pipeline's VAE, and captions of their classes."""
    from accel.pipelines.data import TRAIN_TEMPLATES, caption, load_fashion_mnist

    x, y = load_fashion_mnist("train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:n]
    with torch.no_grad():
        lat = pipe.vae.encode(x[idx].to(pipe.vae.dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
    prompts = [caption(int(c), TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)]) for i, c in enumerate(y[idx])]
    return lat.float(), prompts


def _cli_args(p) -> None:
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--num-samples", type=int, default=64, help="data latents the statistics average over")
    p.add_argument("--grid-points", type=int, default=100, help="lambda grid intervals")
    p.add_argument("--data", default="real", choices=("real", "samples"),
                   help="real: dataset images through the VAE (reference pipelines); samples: the model's own")
    p.add_argument("--prompts", help="prompts for --data samples, one per line")
    p.add_argument("--seed", type=int, default=0)


def _cli_run(a) -> None:
    from pathlib import Path

    from accel.cli import CLIError, _load
    from accel.pipelines.families import find_denoiser, fingerprint
    from accel.solvers.dpm_solver_v3 import save_ems

    from .model_fn import GuidedDenoiser

    pipe = _load(a.pipeline)
    pipe.set_progress_bar_config(disable=True)
    if a.data == "real":
        if getattr(pipe, "accel_reference", None) is None:
            raise CLIError("--data real needs a reference pipeline (its dataset is known); use --data samples")
        x0, prompts = reference_data_latents(pipe, a.num_samples, a.seed)
    else:
        if not a.prompts or not Path(a.prompts).exists():
            raise CLIError("--data samples needs --prompts FILE")
        prompts = [l.strip() for l in Path(a.prompts).read_text().splitlines() if l.strip()][: a.num_samples]
        x0 = pipe(prompts, num_inference_steps=50, guidance_scale=a.guidance, output_type="latent",
                  generator=torch.Generator().manual_seed(a.seed), **getattr(pipe, "accel_defaults", {})).images.float()
    fn = GuidedDenoiser(pipe, {"prompt": prompts}, a.guidance)
    lams, l, s, b = compute_ems(fn, pipe.scheduler, x0, a.grid_points, a.seed)
    _, den = find_denoiser(pipe)
    save_ems(a.out, lams, l, s, b, {"fingerprint": fingerprint(den), "guidance": str(a.guidance),
                                   "data": a.data, "num_samples": str(len(x0))})
    print(f"EMS on {len(lams)} lambda points from {len(x0)} {a.data} samples -> {a.out}")


from .registry import CalibrationMethod, register  # noqa: E402

register(CalibrationMethod("ems", "empirical model statistics for DPM-Solver-v3 (Hutchinson + JVP)", _cli_args, _cli_run))
