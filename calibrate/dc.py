"""DC-Solver calibration: ``accel calibrate --method dc``.

For each (NFE, guidance) of a grid: a 200-step ground-truth trajectory from the same noise (the
pipeline's own scheduler), then a greedy step-by-step search of the compensation ratio rho_i
(steps 0 and 1 stay 1) minimising the MSE of the compensated predictor plus the next corrector
(one extra model call) against the ground-truth latent at the nearest noise level >= the step's
target. Finally cascade polynomial regression (36 coefficients) is fitted over all searched ratios,
so ``DCSolverScheduler`` can serve (NFE, guidance) pairs that were not searched.

Departures from the official code, each for a stated reason:
- rho_i is found by a bounded scalar search on (0.5, 1.5) (the official optional tanh bound) instead
  of 20 AdamW steps: the problem is one scalar per step, and it needs no autograd through the
  scheduler; rho = 1 (no compensation) is kept when the search does not beat it.
- the official search targets the final latent at the second-to-last step (a quirk); here every step
  targets the ground truth at its own noise level.
- ``--objective final`` (not the default) refines the greedy ratios jointly on the final latent's error:
  at NFE 5-6 the greedy per-step optimum need not lower the final error (measured on pixart-eps).
- the CPR fitting code is not published; here it is ridge-regularised least squares over all searched
  ratios of steps >= 2.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from accel.solvers.dc_solver import DCSolverScheduler
from accel.solvers.dc_file import load_dc, save_dc  # noqa: F401 - the file format lives with the solver


@dataclass
class Trajectory:
    sigmas: list[float]  # noise level of each stored latent, decreasing; the last is the final sample
    latents: list[torch.Tensor]

    def at_or_above(self, sigma: float) -> torch.Tensor:
        """The stored latent at the smallest noise level >= ``sigma`` (the final one for sigma 0)."""
        best = None
        for s, x in zip(self.sigmas, self.latents):
            if s >= sigma - 1e-9:
                best = x
        return best if best is not None else self.latents[0]


def _scale_in(scheduler, x: torch.Tensor, t) -> torch.Tensor:
    """The model input at ``t`` (FlowMatch schedulers take the latents as they are)."""
    return scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x


def _set_timesteps(scheduler, steps: int, fn) -> None:
    """``set_timesteps`` with what the pipeline passes its scheduler (FLUX's ``mu``, captured by ``fn``)."""
    scheduler.set_timesteps(steps, **getattr(fn, "timestep_kwargs", {}))


def noise_levels(scheduler) -> list[float]:
    """The noise level before each step and after the last, in the units of the scheduler's ``sigmas`` (flow: sigma;
    VP: sqrt((1 - a) / a)); schedulers without ``sigmas`` (DDIM, PNDM) from their timesteps' ``alphas_cumprod``."""
    if getattr(scheduler, "sigmas", None) is not None:
        return [float(v) for v in scheduler.sigmas]
    acp = scheduler.alphas_cumprod.double()
    ts = [int(t) for t in scheduler.timesteps]
    return [float(((1 - acp[t]) / acp[t]).sqrt()) for t in ts] + [0.0]


@torch.no_grad()
def sample(fn, scheduler, noise: torch.Tensor, steps: int, record: bool = False) -> tuple[torch.Tensor, Trajectory | None]:
    """Solve the guided ODE with ``scheduler`` from ``noise``; optionally record every step's latent."""
    _set_timesteps(scheduler, steps, fn)
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    levels = noise_levels(scheduler) if record else []
    traj = Trajectory([levels[0]], [x.clone()]) if record else None
    for i, t in enumerate(scheduler.timesteps):
        m = fn(_scale_in(scheduler, x, t), t)
        x = scheduler.step(m, t, x).prev_sample
        if traj is not None:
            traj.sigmas.append(levels[min(i + 1, len(levels) - 1)])
            traj.latents.append(x.clone())
    return x, traj


def _corrected(sched, fn, x_pred: torch.Tensor, t_next) -> torch.Tensor:
    """UniPC's corrector of the next step applied to ``x_pred`` (what the next ``step`` would do first)."""
    m = fn(_scale_in(sched, x_pred, t_next), t_next)
    mo = sched.convert_model_output(m, sample=x_pred)
    return sched.multistep_uni_c_bh_update(this_model_output=mo, last_sample=sched.last_sample, this_sample=x_pred,
                                           order=sched.this_order)


def dc_solver(source, **overrides) -> DCSolverScheduler:
    """A DC-Solver for the noise schedule of ``source`` (a pipeline's scheduler, or a scheduler config as before)."""
    if isinstance(source, dict) or not hasattr(source, "config"):
        return DCSolverScheduler.from_config(source, **overrides)
    from accel.solvers.named import build_solver_for

    return build_solver_for(DCSolverScheduler, source, **overrides)


@torch.no_grad()
def search_ratios(fn, config, noise: torch.Tensor, nfe: int, gt: Trajectory, bounds: tuple[float, float] = (0.5, 1.5),
                  max_evals: int = 20) -> tuple[list[float], float]:
    """Greedy per-step search of DC-Solver's ratios for one NFE; returns the ratios and the final MSE.
    ``config``: the pipeline's scheduler (or a scheduler config)."""
    from scipy.optimize import minimize_scalar

    sched = dc_solver(config, dc_ratios=[1.0] * nfe)
    _set_timesteps(sched, nfe, fn)
    x = noise * sched.init_noise_sigma
    ts = list(sched.timesteps)
    for i, t in enumerate(ts):
        m = fn(_scale_in(sched, x, t), t)
        if i >= 2:
            sigma_next = float(sched.sigmas[i + 1])
            target = gt.at_or_above(sigma_next) if i + 1 < nfe else gt.latents[-1]

            def loss(rho: float) -> float:
                s = copy.deepcopy(sched)
                s._ratios[i] = float(rho)
                xp = s.step(m, t, x).prev_sample
                if i + 1 < nfe:
                    xp = _corrected(s, fn, xp, ts[i + 1])
                return float(torch.mean((xp.float() - target.float()) ** 2))

            res = minimize_scalar(loss, bounds=bounds, method="bounded", options={"maxiter": max_evals, "xatol": 1e-3})
            sched._ratios[i] = float(res.x) if res.fun < loss(1.0) else 1.0
        x = sched.step(m, t, x).prev_sample
    return list(sched._ratios), float(torch.mean((x.float() - gt.latents[-1].float()) ** 2))


@torch.no_grad()
def refine_ratios(fn, config, noise: torch.Tensor, nfe: int, target: torch.Tensor, ratios: list[float],
                  bounds: tuple[float, float] = (0.5, 1.5), max_evals: int = 200) -> tuple[list[float], float]:
    """Ratios of steps >= 2 refined jointly (bounded Powell from ``ratios``) on the MSE of the final latent to
    ``target``; returns the ratios and that MSE. An accel option (``--objective final``), not in the paper: the
    greedy per-step search optimises each step's own error, which at NFE 5-6 need not lower the final one."""
    from scipy.optimize import minimize

    if nfe <= 2:
        return list(ratios), float("nan")
    base = dc_solver(config, dc_ratios=list(ratios))
    _set_timesteps(base, nfe, fn)
    x = noise * base.init_noise_sigma
    ts = list(base.timesteps)
    for t in ts[:2]:  # the first two steps do not depend on the ratios
        x = base.step(fn(_scale_in(base, x, t), t), t, x).prev_sample
    m2 = fn(_scale_in(base, x, ts[2]), ts[2])

    def final(free) -> torch.Tensor:
        sch = copy.deepcopy(base)
        sch._ratios[2:] = [float(v) for v in free]
        xx = sch.step(m2, ts[2], x).prev_sample
        for t in ts[3:]:
            xx = sch.step(fn(_scale_in(sch, xx, t), t), t, xx).prev_sample
        return xx

    def loss(free) -> float:
        return float(torch.mean((final(free).float() - target.float()) ** 2))

    start = np.clip(np.asarray(ratios[2:], dtype=np.float64), *bounds)
    res = minimize(loss, start, method="Powell", bounds=[bounds] * len(start),
                   options={"maxfev": max_evals, "xtol": 1e-3, "ftol": 1e-4})
    start_loss = loss(start)
    best, best_loss = (res.x, float(res.fun)) if res.fun < start_loss else (start, start_loss)
    return [1.0, 1.0] + [float(v) for v in best], best_loss


def _cpr_features(i: int, nfe: int, guidance: float) -> np.ndarray:
    """The 36 products x^p g^q n^r of ``accel.solvers.dc_solver.cpr_ratios`` (order p, q, r)."""
    x, g, n = i / nfe, guidance / 12.0, nfe / 50.0
    return np.array([x**p * g**q * n**r for p in range(4) for q in range(3) for r in range(3)])


def fit_cpr(records: list[dict], ridge: float = 1e-4) -> list[float]:
    """Least-squares CPR coefficients (ridge-regularised) from searched ratios ``{nfe, guidance, ratios}``."""
    rows, ys = [], []
    for rec in records:
        for i, rho in enumerate(rec["ratios"]):
            if i >= 2:
                rows.append(_cpr_features(i, rec["nfe"], rec["guidance"]))
                ys.append(rho)
    a, y = np.stack(rows), np.asarray(ys)
    coef = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y)
    return [float(c) for c in coef]


def calibrate_dc(pipe, prompts: list[str], nfes: list[int], guidances: list[float], gt_steps: int = 200,
                 seed: int = 0, progress: bool = True, objective: str = "steps",
                 bounds: tuple[float, float] = (0.5, 1.5), call_kwargs: dict | None = None) -> dict:
    """Search ratios for every (NFE, guidance) and fit CPR; returns the content of a DC ratio file.
    ``objective``: ``"steps"`` (the paper: greedy, each step against the ground truth at its noise level) or
    ``"final"`` (then refined jointly on the final latent, ``refine_ratios``)."""
    if objective not in ("steps", "final"):
        raise ValueError(f"objective must be 'steps' or 'final', not {objective!r}")
    from accel.pipelines.calls import condition
    from accel.pipelines.families import find_denoiser
    from accel.solvers.provenance import made_for

    from .model_fn import GuidedDenoiser

    _, den = find_denoiser(pipe)
    records = []
    bar = tqdm(total=len(nfes) * len(guidances), desc="dc: ratio search", disable=not progress)
    for g in guidances:
        fn = GuidedDenoiser(pipe, condition(pipe, prompts, g), g, call_kwargs)
        shape = (fn.batch, *fn.latent_shape)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(den.device)  # the same on every device
        gt_sched = type(pipe.scheduler).from_config(pipe.scheduler.config)  # the pipeline's own solver
        _, gt = sample(fn, gt_sched, noise, gt_steps, record=True)
        for nfe in nfes:
            x_unipc, _ = sample(fn, dc_solver(pipe.scheduler), noise, nfe)
            ratios, mse = search_ratios(fn, pipe.scheduler, noise, nfe, gt, bounds)
            if objective == "final":
                ratios, mse = refine_ratios(fn, pipe.scheduler, noise, nfe, gt.latents[-1], ratios, bounds)
            unipc_mse = float(torch.mean((x_unipc.float() - gt.latents[-1].float()) ** 2))
            records.append({"nfe": nfe, "guidance": g, "ratios": ratios, "mse": mse, "unipc_mse": unipc_mse})
            bar.set_postfix(nfe=nfe, g=g, mse=f"{mse:.4f}", unipc=f"{unipc_mse:.4f}")
            bar.update()
    bar.close()
    return {**made_for(den), "gt_steps": gt_steps, "num_datapoints": len(prompts),
            "objective": objective, "bounds": list(bounds), "searched": records, "cpr_coefficients": fit_cpr(records)}


def _cli_args(p) -> None:
    p.add_argument("--nfe", help="dc: comma-separated step counts to search (default 5,6,8,10); steps: the one NFE "
                                 "to learn")
    p.add_argument("--guidances", default="2,4.5,7.5", help="comma-separated CFG scales to search")
    p.add_argument("--num-datapoints", type=int, default=10, help="calibration prompts/noises (the paper: 10)")
    p.add_argument("--gt-steps", type=int, default=200, help="steps of the ground-truth solve")
    p.add_argument("--objective", default="steps", choices=("steps", "final"),
                   help="steps: the paper's greedy per-step search; final: then refine all ratios jointly on the "
                        "final latent's error (an accel option)")


def _cli_run(a) -> None:
    from accel.devices import load_from_args
    from accel.errors import InputError

    from accel.pipelines.calls import repeat_to

    from .cli_common import read_prompts, size_args

    try:
        nfes = [int(v) for v in (a.nfe or "5,6,8,10").split(",")]
        gs = [float(v) for v in a.guidances.split(",")]
    except ValueError:
        raise InputError(f"--nfe {a.nfe} / --guidances {a.guidances}: comma-separated numbers expected") from None
    if min(nfes) < 1 or min(gs) < 0 or a.num_datapoints < 1 or a.gt_steps <= max(nfes):
        raise InputError("DC needs --nfe values >= 1, --guidances >= 0, --num-datapoints >= 1 and --gt-steps above "
                       "every NFE")
    pipe = load_from_args(a)
    pipe.set_progress_bar_config(disable=True)
    # the datapoints: the file's prompts (repeated to --num-datapoints), else that many default prompts
    prompts = repeat_to(read_prompts(a, pipe, n=a.num_datapoints), a.num_datapoints)
    content = calibrate_dc(pipe, prompts, nfes, gs, a.gt_steps, a.seed, objective=a.objective,
                           call_kwargs=size_args(a, pipe) or None)
    save_dc(a.out, content)
    for r in content["searched"]:
        print(f"NFE {r['nfe']:>2} guidance {r['guidance']:g}: MSE {r['mse']:.5f} (UniPC {r['unipc_mse']:.5f}) "
              f"ratios {', '.join(f'{v:.3f}' for v in r['ratios'])}")
    print(f"-> {a.out}")


from .registry import CalibrationMethod, register  # noqa: E402

register(CalibrationMethod("dc", "DC-Solver compensation ratios + cascade polynomial regression", _cli_args, _cli_run))
