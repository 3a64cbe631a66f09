"""Empirical model statistics (EMS) for DPM-Solver-v3: ``accel calibrate --method ems``.

On a grid uniform in lambda = log(alpha / sigma) between the scheduler's ends, with x_t = alpha x0 +
sigma z from data latents x0 (real images through the VAE, or the model's own samples):
- l = E[sigma (J_eps v) . v] per dimension, Hutchinson with Rademacher v (J_eps v by forward-mode JVP);
- l' by central differences in lambda, smoothed over +-0.25 in lambda (+-5 points of the official 250-point grid);
- f = (sigma eps - l x) / alpha, f' = e^{-lambda} ((l - 1) eps + d eps / d lambda) - l' x / alpha, with
  d eps / d lambda a JVP along the ODE tangent (dx/dlambda = (d log alpha / d lambda) x - sigma eps,
  dt/dlambda of the model time);
- s = Cov(f, f') / Var(f), b = E f' - s E f.
Two passes over the grid with the same noise (l first, then f and f'), streamed over chunks of samples, so
memory does not grow with the number of samples beyond one chunk.

Paths: ``"noised"`` (the paper) takes x_t = alpha x0 + sigma z; ``"ode"`` (an accel option, not in the paper)
takes x_t on the guided probability-flow ODE's own paths from noise (a fine DPM-Solver++ 2M solve through
the grid), because under classifier-free guidance the ODE's marginals are not the noised marginals of
its samples, and the solver only ever meets x_t on those paths.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from accel.guidance.functional import to_x0
from accel.solvers.noise_schedule import NoiseSchedule


SMOOTH_HALF_WIDTH = 0.25  # lambda units
MIN_SAMPLES = 16  # the CLI's floor: s = Cov(f, f') / Var(f) from fewer samples diverges


def _alpha_sigma_t(ns: NoiseSchedule, lam: float) -> tuple[float, float, float]:
    """alpha, sigma and the (continuous) scheduler timestep at half-logSNR ``lam``."""
    n = ns.num_train_timesteps
    if ns.is_flow:
        sigma = 1.0 / (1.0 + math.exp(lam))
        return 1.0 - sigma, sigma, sigma * n
    a2 = 1.0 / (1.0 + math.exp(-2 * lam))
    log_acp = torch.log(ns.alphas_cumprod.double()).numpy()  # decreasing in t
    t = float(np.interp(math.log(a2), log_acp[::-1], np.arange(len(log_acp))[::-1]))
    return math.sqrt(a2), math.sqrt(1 - a2), t


def _alpha_sigma_of_t(ns: NoiseSchedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha and sigma as differentiable functions of the continuous timestep (inverse of ``_alpha_sigma_t``)."""
    if ns.is_flow:
        sigma = t / ns.num_train_timesteps
        return 1 - sigma, sigma
    log_acp = torch.log(ns.alphas_cumprod.double())
    i = t.detach().clamp(0, len(log_acp) - 2).floor().long()
    la2 = log_acp[i] + (t - i) * (log_acp[i + 1] - log_acp[i])  # piecewise linear, as np.interp inverts it
    return torch.exp(la2 / 2), torch.sqrt(-torch.expm1(la2))


def lambda_range(scheduler, steps: int = 1000, **timestep_kwargs) -> tuple[float, float]:
    """lambda at the most and the least noisy ends of the sampling range of a DPM-Solver built for ``scheduler``'s
    noise schedule (``timestep_kwargs``: what the pipeline passes its scheduler, e.g. FLUX's ``mu``)."""
    from accel.solvers.baselines import DPMSolverPlusPlus
    from accel.solvers.named import build_solver_for

    # linspace spacing: a "leading" config (SD's DDIM / PNDM) at 1000 steps puts every step on one timestep
    solver = build_solver_for(DPMSolverPlusPlus, scheduler, timestep_spacing="linspace", steps_offset=0)
    solver.set_timesteps(steps, **timestep_kwargs)
    lams = []
    for sig in (solver.sigmas[0], solver.sigmas[-2]):
        a, s = solver._sigma_to_alpha_sigma_t(sig.double())
        lams.append(math.log(float(a)) - math.log(float(s)))
    return lams[0], lams[1]


def compute_ems(fn, scheduler, x0: torch.Tensor, grid_points: int = 100, seed: int = 0, progress: bool = True,
                path: str = "noised"):
    """l, s, b [K+1, C, H, W] and the lambda grid for the guided denoiser ``fn(x, t)`` on data latents ``x0``
    (``path="ode"``: only ``x0``'s shape is used; see the module docstring)."""
    return compute_ems_chunked([(fn, x0)], scheduler, grid_points, seed, progress, path)


def compute_ems_chunked(chunks: list[tuple], scheduler, grid_points: int = 100, seed: int = 0, progress: bool = True,
                        path: str = "noised"):
    """``compute_ems`` over ``[(fn, x0), ...]`` chunks (a denoiser per chunk of prompts), streaming the sums so memory
    stays at one chunk however many samples the statistics average over."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if path not in ("noised", "ode"):
        raise ValueError(f"path must be 'noised' or 'ode', not {path!r}")
    # forward-mode AD is implemented for the math attention kernel only (not the fused CPU/GPU kernels);
    # no_grad: forward-mode JVPs need no reverse graph, which would otherwise pin every step's activations
    with sdpa_kernel([SDPBackend.MATH]), torch.no_grad():
        return _compute_ems(chunks, scheduler, grid_points, seed, progress, path)


def ode_path(fn, scheduler, z: torch.Tensor, lams: np.ndarray, refine: int = 4) -> list[torch.Tensor]:
    """x at each of ``lams`` (increasing) on the ODE path of ``fn`` from x = z at lams[0]: DPM-Solver++ 2M in
    lambda (data prediction) with ``refine`` substeps per grid interval."""
    ns = NoiseSchedule.of(scheduler)
    pt = ns.prediction_type
    x, x0_prev, h_prev, out = z.clone(), None, None, [z.clone()]
    for k in range(len(lams) - 1):
        sub = np.linspace(lams[k], lams[k + 1], refine + 1)
        for j in range(refine):
            a_s, s_s, t = _alpha_sigma_t(ns, float(sub[j]))
            a_t, s_t, _ = _alpha_sigma_t(ns, float(sub[j + 1]))
            x0 = to_x0(fn(x, t), x, torch.tensor(a_s, device=x.device), torch.tensor(s_s, device=x.device), pt)
            h = float(sub[j + 1] - sub[j])
            d = x0 if x0_prev is None else (1 + h / (2 * h_prev)) * x0 - h / (2 * h_prev) * x0_prev
            x = (s_t / s_s) * x - a_t * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        out.append(x.clone())
    return out


def _compute_ems(chunks, scheduler, grid_points, seed, progress, path):
    ns = NoiseSchedule.of(scheduler)
    pt = ns.prediction_type
    lam_t, lam_0 = lambda_range(scheduler, **getattr(chunks[0][0], "timestep_kwargs", {}))
    lams = np.linspace(lam_t, lam_0, grid_points + 1)
    noise = []  # per chunk: z (the path's noise) and v (Hutchinson's probe), reused by both passes
    for c, (_, x0) in enumerate(chunks):
        g = torch.Generator().manual_seed(seed + 7919 * c)
        z, v = torch.randn(x0.shape, generator=g), torch.randint(0, 2, x0.shape, generator=g).float() * 2 - 1
        noise.append((z.to(x0.device), v.to(x0.device)))  # drawn on the CPU: the same on every device
    n = sum(len(x0) for _, x0 in chunks)
    paths = None
    if path == "ode":  # x_t of every chunk at every grid point, from the chunk's noise (kept for both passes)
        refine = max(1, math.ceil(160 / grid_points))  # at least 160 solver steps over the range
        paths = [ode_path(fn, scheduler, z.to(x0.dtype), lams, refine)
                 for (fn, x0), (z, _) in tqdm(list(zip(chunks, noise)), desc="ems: ODE paths", disable=not progress)]

    def x_at(c: int, k: int, a: float, s: float) -> torch.Tensor:
        return paths[c][k] if paths is not None else a * chunks[c][1] + s * noise[c][0]

    def eps_of(fn, x, t, a, s):
        a, s = (torch.as_tensor(v, dtype=torch.float64, device=x.device).reshape(1) for v in (a, s))
        return (x - a.view(-1, *[1] * (x.dim() - 1)) * to_x0(fn(x, t), x, a, s, pt)) / s.view(-1, *[1] * (x.dim() - 1))

    ls = []
    for k, lam in enumerate(tqdm(lams, desc="ems: l (Hutchinson)", disable=not progress)):
        a, s, t = _alpha_sigma_t(ns, float(lam))
        acc = 0.0
        for c, ((fn, _), (_, v)) in enumerate(zip(chunks, noise)):
            x = x_at(c, k, a, s)
            _, jv = torch.func.jvp(lambda xx: eps_of(fn, xx, t, a, s), (x,), (v,))
            acc = acc + (s * jv * v).double().sum(0)
        ls.append(acc / n)
    l = torch.stack(ls).double()
    dl = torch.gradient(l, spacing=(torch.tensor(lams, dtype=torch.float64, device=l.device),), dim=0)[0]
    # smooth l' over +-0.25 in lambda: the official setting (+-5 points of a 250-point SD grid); as +-5 points on
    # a coarse grid it would average l' over several units of lambda, where l falls from 1 to 0, and bias f'
    half = int(round(SMOOTH_HALF_WIDTH / float(lams[1] - lams[0])))
    if half > 0:
        kernel = torch.ones(2 * half + 1, dtype=torch.float64, device=dl.device) / (2 * half + 1)
        flat = dl.reshape(len(lams), -1).T[:, None]
        pad = torch.nn.functional.pad(flat, (half, half), mode="replicate")
        dl = torch.nn.functional.conv1d(pad, kernel.view(1, 1, -1)).squeeze(1).T.reshape(dl.shape)
    ss, bs = [], []
    for k, lam in enumerate(tqdm(lams, desc="ems: s, b", disable=not progress)):
        a, s, t = _alpha_sigma_t(ns, float(lam))
        da = s * s if pt != "flow_prediction" else s  # d log alpha / d lambda (VP: sigma^2; flow: sigma)
        # dt/dlambda by differences that stay inside the schedule (t is clamped past its ends)
        lo, hi = max(float(lam) - 1e-3, lams[0]), min(float(lam) + 1e-3, lams[-1])
        dt = (_alpha_sigma_t(ns, hi)[2] - _alpha_sigma_t(ns, lo)[2]) / (hi - lo)
        sums = [0.0] * 5  # f, f', f f', f^2, f'^2 summed over samples
        for c, (fn, _) in enumerate(chunks):
            x = x_at(c, k, a, s)
            eps = eps_of(fn, x, t, a, s)
            x_dot = (da * x - s * eps).to(x.dtype)
            # alpha and sigma move with t inside the JVP: for flow models eps = x + alpha v depends on t through
            # alpha as well as through the network (for epsilon models they cancel)
            eps, deps = torch.func.jvp(lambda xx, tt: eps_of(fn, xx, tt, *_alpha_sigma_of_t(ns, tt)),
                                       (x, torch.tensor(float(t), dtype=torch.float64)),
                                       (x_dot, torch.tensor(float(dt), dtype=torch.float64)))
            eps, deps, xd = eps.double(), deps.double(), x.double()
            f = (s * eps - l[k] * xd) / a
            fp = math.exp(-lam) * ((l[k] - 1) * eps + deps) - dl[k] * xd / a
            for j, term in enumerate((f, fp, f * fp, f * f, fp * fp)):
                sums[j] = sums[j] + term.sum(0)
        mf, mfp, mffp, mff, mfpfp = (v / n for v in sums)
        cov = mffp - mf * mfp
        # departure: ridge term 1e-4 Var(f'): where f hardly varies (std below 1% of f''s) the ratio is noise over
        # noise (s ~ 1e4 on exactly Gaussian data, then e^S overflows); there s shrinks to 0, elsewhere nothing changes
        var = (mff - mf * mf) + 1e-4 * (mfpfp - mfp * mfp) + 1e-30
        sk = cov / var
        ss.append(sk)
        bs.append(mfp - sk * mf)
    return (torch.tensor(lams), l.detach().float().cpu(), torch.stack(ss).detach().float().cpu(),
            torch.stack(bs).detach().float().cpu())


def average_over_positions(stat: torch.Tensor) -> torch.Tensor:
    """A statistic ``[K+1, C, *positions]`` averaged over the positions of each channel, broadcast back to its shape.

    Departure (an option, ``--reduce channel``): the paper keeps one statistic per dimension; the mean of the
    per-dimension statistics (not a pooled fit: s and b were fitted with each position's own l) drops
    position-dependent structure, which helps some configurations and costs others; at 256 samples the
    statistics are converged, so it does not act by lowering estimation noise (docs/results/few-step-solvers.md)."""
    if stat.dim() < 3:
        raise ValueError(f"statistics of shape [K+1, C, *positions] expected, got {tuple(stat.shape)}")
    return stat.mean(tuple(range(2, stat.dim())), keepdim=True).expand_as(stat).contiguous()


def reduce_ems_file(src: str | Path, dst: str | Path, reduce: str = "channel") -> None:
    """Write the statistics of the EMS file ``src`` averaged over positions (``reduce="channel"``) to ``dst``; the
    metadata (model stamp, data, samples) is kept and ``reduce`` recorded. The same as ``--reduce channel`` on the
    run that made ``src``.

    Example:
        >>> from accel.calibrate.ems import reduce_ems_file
        >>> reduce_ems_file("ems.safetensors", "ems-channel.safetensors")  # doctest: +SKIP
    """
    from accel.solvers.dpm_solver_v3 import ems_metadata, load_ems, save_ems

    if reduce != "channel":
        raise ValueError(f"reduce must be 'channel', not {reduce!r}")
    t = load_ems(src)  # the checks of a file the solver would load (present, lambdas increasing)
    meta = ems_metadata(src)
    if meta.get("reduce", "none") != "none":
        raise ValueError(f"{src} is already reduced ({meta['reduce']})")
    save_ems(dst, t["lambdas"], *(average_over_positions(t[k]) for k in ("l", "s", "b")), {**meta, "reduce": reduce})


def reference_data_latents(pipe, n: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Real Fashion-MNIST training images (the video reference: training clips, every motion in turn) through the
    pipeline's VAE, normalised as the pipeline normalises latents, and captions of their classes (and motions)."""
    from accel.pipelines.data import TRAIN_TEMPLATES, caption, load_fashion_mnist
    from accel.pipelines.reference import is_video_reference

    x, y = load_fashion_mnist("train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)[:n]
    if is_video_reference(getattr(pipe, "accel_reference", None)):
        return _reference_clip_latents(pipe, x[idx], y[idx])
    with torch.no_grad():
        lat = pipe.vae.encode(x[idx].to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
    prompts = [caption(int(c), TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)]) for i, c in enumerate(y[idx])]
    return lat.float(), prompts


@torch.no_grad()
def _reference_clip_latents(pipe, items: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    from accel.pipelines.motion import MOTIONS, TRAIN_TEMPLATES, clip_caption, make_clips

    vae = pipe.vae
    motions = torch.arange(len(items)) % len(MOTIONS)
    clips = make_clips(items, motions).transpose(1, 2).to(vae.device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(vae.device, vae.dtype)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(vae.device, vae.dtype)
    lat = torch.cat([(vae.encode(clips[i : i + 100]).latent_dist.mean - mean) / std for i in range(0, len(clips), 100)])
    prompts = [clip_caption(int(c), int(m), TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)], (i // len(TRAIN_TEMPLATES)) % 2)
               for i, (c, m) in enumerate(zip(labels, motions))]
    return lat.float(), prompts


def _cli_args(p) -> None:
    p.add_argument("--num-samples", type=int, default=64, help="data latents the statistics average over")
    p.add_argument("--grid-points", type=int, default=100, help="lambda grid intervals")
    p.add_argument("--data", default=None, choices=("real", "samples", "paths"),
                   help="default: real on the reference pipelines, paths elsewhere. "
                        "real: dataset images through the VAE, noised (reference pipelines); samples: the model's own, "
                        "generated at --guidance with --sample-steps steps, noised; paths: x_t on the guided ODE's own "
                        "paths from noise (an accel option, see `accel.calibrate.ems`)")
    p.add_argument("--sample-steps", type=int, default=50, help="steps of the pipeline's scheduler for --data samples")
    p.add_argument("--reduce", default="none", choices=("none", "channel"),
                   help="none: a statistic per dimension (the paper); channel: averaged over the positions of each "
                        "channel (an accel option: no position structure)")


def _cli_run(a) -> None:
    import json

    from accel.devices import load_from_args
    from accel.errors import InputError

    from accel.pipelines.calls import condition, output_tensor, repeat_to
    from accel.pipelines.families import find_denoiser
    from accel.solvers.dpm_solver_v3 import save_ems

    from .cli_common import read_prompts, size_args
    from accel.solvers.provenance import made_for

    from .model_fn import GuidedDenoiser

    if a.num_samples < MIN_SAMPLES:
        raise InputError(f"--num-samples {a.num_samples}: s and b are covariances over the samples; fewer than "
                       f"{MIN_SAMPLES} give statistics that make DPM-Solver-v3 diverge (64 suffice on the reference "
                       "pipelines, the paper uses 1,024)")
    pipe = load_from_args(a)
    pipe.set_progress_bar_config(disable=True)
    ref = getattr(pipe, "accel_reference", None)
    data = a.data or ("real" if ref is not None else "paths")  # a user's model: its own guided ODE paths
    size = size_args(a, pipe)
    if data == "real":
        if ref is None:
            raise InputError("--data real needs a reference pipeline (its dataset is known); use --data paths or samples")
        x0, prompts = reference_data_latents(pipe, a.num_samples, a.seed)
    else:  # samples, paths: the model's own, on prompts
        # reference pipelines without --prompts: one calibration prompt per sample (a user's model: --num-prompts)
        prompts = repeat_to(read_prompts(a, pipe, n=a.num_samples if ref is not None else None), a.num_samples)
    starts = range(0, len(prompts), a.batch)
    fns = [GuidedDenoiser(pipe, condition(pipe, prompts[i : i + a.batch], a.guidance), a.guidance, size)
           for i in tqdm(starts, desc="ems: capturing the denoiser's inputs")]
    if data == "paths":  # the paths start from noise: x0 only gives the shape
        x0 = torch.zeros(len(prompts), *fns[0].latent_shape, device=fns[0].den.device)
    elif data == "samples":
        x0 = torch.cat([output_tensor(pipe(num_inference_steps=a.sample_steps, guidance_scale=a.guidance,
                                           output_type="latent", generator=torch.Generator().manual_seed(a.seed + i),
                                           **{**getattr(pipe, "accel_defaults", {}), **size},
                                           **condition(pipe, prompts[i : i + a.batch], a.guidance)))
                        for i in tqdm(starts, desc="ems: samples")])
    chunks = [(fn, x0[i : i + a.batch]) for fn, i in zip(fns, starts)]
    lams, l, s, b = compute_ems_chunked(chunks, pipe.scheduler, a.grid_points, a.seed,
                                        path="ode" if data == "paths" else "noised")
    if a.reduce == "channel":
        l, s, b = (average_over_positions(v) for v in (l, s, b))
    _, den = find_denoiser(pipe)
    stamp = made_for(den)
    save_ems(a.out, lams, l, s, b, {"fingerprint": stamp["fingerprint"], "weights": json.dumps(stamp["weights"]),
                                   "guidance": str(a.guidance),
                                   "data": data, "num_samples": str(len(x0)), "reduce": a.reduce})
    print(f"EMS on {len(lams)} lambda points from {len(x0)} {data} samples ({a.reduce} reduce) -> {a.out}")


from .registry import CalibrationMethod, register  # noqa: E402

register(CalibrationMethod("ems", "empirical model statistics for DPM-Solver-v3 (Hutchinson + JVP)", _cli_args, _cli_run))
