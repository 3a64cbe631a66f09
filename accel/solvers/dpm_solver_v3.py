"""DPM-Solver-v3 (Zheng et al., NeurIPS 2023): multistep predictor(-corrector) with empirical model statistics.

Empirical model statistics (EMS) l, s, b live on a grid uniform in lambda = log(alpha / sigma). With
f = (sigma eps - l x) / alpha, the solver integrates along lambda (all integrals from the start of
the trajectory, trapezoid rule on a refined grid):
    L = int l, S = int s, I = int e^{L+S}, B = int e^{-S} b, C = int e^{L+S} B,
    g_i = e^{S_s - S_i} f_i - e^{S_s} (B_i - B_s),
    x_t = (a_t / a_s) e^{L_s - L_t} x_s - a_t e^{-L_t - S_s} (I_t - I_s) g_s
          - a_t e^{-L_t} (C_t - C_s - B_s (I_t - I_s)) - sum_k a_t e^{L_s - L_t} E_k g^(k),
    E_k = int_s^t e^{(L+S) - (L+S)_s} (lambda - lambda_s)^k / k! dlambda,
with g^(k) from a Taylor system (or divided differences, "pseudo" order). The corrector re-solves
s -> t with the new evaluation at t (no extra NFE), keeping f (so sigma eps - l x) of the new point.

Departures, each for a reason: the statistics are interpolated (linearly in lambda) at the
scheduler's own timesteps instead of snapping the timesteps to the EMS grid, so the scheduler keeps
diffusers' timesteps and the degenerate case (l=1, s=0, b=0) is DPM-Solver++ exactly; the last step
ends at sigma_min (``final_sigmas_type="sigma_min"``), as the official code ends at t = 1/N, since
the integrals need a finite lambda. With degenerate statistics the second-order step is the exact
integral of the linear interpolation, i.e. diffusers' DPM-Solver++ with ``solver_type="heun"``
(its default "midpoint" is another second-order rule); tests check that reduction to 1e-5.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from .noise_schedule import PipelineTimesteps


def _cumtrapz(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cumulative trapezoid along dim 0 (starts at 0)."""
    dx = (x[1:] - x[:-1]).view(-1, *([1] * (y.dim() - 1)))
    out = torch.cumsum(0.5 * dx * (y[1:] + y[:-1]), 0)
    return torch.cat([torch.zeros_like(y[:1]), out], 0)


def _interp(grid: torch.Tensor, values: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of values [K+1, ...] on increasing ``grid`` at points ``at`` (clamped)."""
    at = at.clamp(grid[0], grid[-1])
    idx = torch.searchsorted(grid, at).clamp(1, len(grid) - 1)
    x0, x1 = grid[idx - 1], grid[idx]
    w = ((at - x0) / (x1 - x0).clamp_min(1e-12)).view(-1, *([1] * (values.dim() - 1)))
    return values[idx - 1] * (1 - w) + values[idx] * w


class EMSIntegrals:
    """Step-point values of L, S, I, B, C and per-step E_k, integrated on a refined lambda grid.

    Each step interval is split into ``sub`` trapezoids. The fine grid is walked in chunks of at most
    ``chunk_elems`` values, carrying the running integrals, so memory stays bounded for large latents
    (the whole fine grid of a 4 x 64 x 64 latent at 6 steps is gigabytes), on ``device``.
    """

    def __init__(self, lambdas: torch.Tensor, ems: dict[str, torch.Tensor] | None, shape: tuple, sub: int = 512,
                 max_order: int = 3, device: torch.device | str | None = None, chunk_elems: int = 1 << 21):
        dev = torch.device("cpu" if device is None else device)
        f64 = dict(dtype=torch.float64, device=dev)
        lam = [float(v) for v in lambdas]
        if ems is None:  # degenerate statistics
            stats, dims = None, (1,) * len(shape)
        else:
            stats = [ems[k].to(**f64) for k in ("lambdas", "l", "s", "b")]
            dims = tuple(stats[1].shape[1:])
        view = (-1,) + (1,) * len(dims)
        rows = max(1, chunk_elems // math.prod(dims))

        def at(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if stats is None:
                one = torch.ones((len(x),) + dims, **f64)
                return one, torch.zeros_like(one), torch.zeros_like(one)
            return tuple(_interp(stats[0], v, x) for v in stats[1:])

        def trapz(y: torch.Tensor, y_c: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
            """Trapezoid areas of the chunk's intervals (the first starts at the current point, value y_c)."""
            ys = torch.cat([y_c[None], y])
            return 0.5 * dx * (ys[1:] + ys[:-1])

        x_c = lam[0]
        l_c, s_c, b_c = (v[0] for v in at(torch.tensor([x_c], **f64)))
        L, S, I, B, C = (torch.zeros(dims, **f64) for _ in range(5))
        pts: list[tuple[torch.Tensor, ...]] = [(l_c, L, S, I, B, C)]
        self.E: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(len(lam) - 1):  # step i -> i + 1
            fine = torch.linspace(lam[i], lam[i + 1], sub + 1, **f64)[1:]
            phi_s = L + S
            E = [torch.zeros(dims, **f64) for _ in range(1, max_order)]
            for start in range(0, sub, rows):
                x = fine[start: start + rows]
                l, s, b = at(x)
                dx = torch.diff(x, prepend=x.new_tensor([x_c])).view(view)
                Lx = L + torch.cumsum(trapz(l, l_c, dx), 0)
                Sx = S + torch.cumsum(trapz(s, s_c, dx), 0)
                ex, ex_c = torch.exp(Lx + Sx), torch.exp(L + S)
                I = I + trapz(ex, ex_c, dx).sum(0)
                Bx = B + torch.cumsum(trapz(torch.exp(-Sx) * b, torch.exp(-S) * b_c, dx), 0)
                C = C + trapz(ex * Bx, ex_c * B, dx).sum(0)
                for k in range(1, max_order):
                    w = ex * ((x - lam[i]) ** k / math.factorial(k)).view(view)
                    w_c = ex_c * ((x_c - lam[i]) ** k / math.factorial(k))
                    E[k - 1] = E[k - 1] + trapz(w, w_c, dx).sum(0)
                x_c, l_c, s_c, b_c = float(x[-1]), l[-1], s[-1], b[-1]
                L, S, B = Lx[-1], Sx[-1], Bx[-1]
            pts.append((l_c, L, S, I, B, C))
            for k in range(1, max_order):
                self.E[(i, k)] = E[k - 1] * torch.exp(-phi_s)
        self.lam = torch.tensor(lam, dtype=torch.float64)
        self.l, self.L, self.S, self.I, self.B, self.C = (torch.stack(v) for v in zip(*pts))

    def to(self, device: torch.device | str) -> "EMSIntegrals":
        """The same integrals on ``device``."""
        for k in ("l", "L", "S", "I", "B", "C"):
            setattr(self, k, getattr(self, k).to(device))
        self.E = {k: v.to(device) for k, v in self.E.items()}
        return self


def reference_integrals(lambdas: torch.Tensor, ems: dict[str, torch.Tensor] | None, shape: tuple, sub: int = 512,
                        max_order: int = 3) -> dict:
    """The same integrals as ``EMSIntegrals``, the plain way: the whole fine grid at once (for tests;
    memory grows with steps x sub x latent size)."""
    lam = lambdas.double()
    n = len(lam) - 1
    fine = torch.cat([torch.linspace(float(lam[i]), float(lam[i + 1]), sub + 1, dtype=torch.float64)[:-1]
                      for i in range(n)] + [lam[-1:]])
    pos = torch.arange(n + 1) * sub  # step points inside the fine grid
    if ems is None:
        l = torch.ones((len(fine),) + (1,) * len(shape), dtype=torch.float64)
        s, b = torch.zeros_like(l), torch.zeros_like(l)
    else:
        l, s, b = (_interp(ems["lambdas"].double(), ems[k].double(), fine) for k in ("l", "s", "b"))
    L, S = _cumtrapz(l, fine), _cumtrapz(s, fine)
    I, B = _cumtrapz(torch.exp(L + S), fine), _cumtrapz(torch.exp(-S) * b, fine)
    C = _cumtrapz(torch.exp(L + S) * B, fine)
    out = {"l": l[pos], "L": L[pos], "S": S[pos], "I": I[pos], "B": B[pos], "C": C[pos]}
    for i in range(n):
        seg = slice(pos[i], pos[i + 1] + 1)
        a = (L[seg] + S[seg]) - (L[pos[i]] + S[pos[i]])
        dl = (fine[seg] - fine[pos[i]]).view(-1, *([1] * (a.dim() - 1)))
        for k in range(1, max_order):
            out[("E", i, k)] = _cumtrapz(torch.exp(a) * dl**k / math.factorial(k), fine[seg])[-1]
    return out


def taylor_derivatives(lams: list[float], gs: list[torch.Tensor], pseudo: bool) -> list[torch.Tensor]:
    """g^(1..n) at lams[0] from the points (lams[j], gs[j]): Taylor system, or divided differences (pseudo)."""
    n = len(gs) - 1
    if pseudo:
        d = [list(gs)]
        for i in range(1, n + 1):
            d.append([(d[i - 1][j] - d[i - 1][j + 1]) / (lams[j] - lams[i + j]) for j in range(n - i + 1)])
        return [d[i][0] * math.factorial(i) for i in range(1, n + 1)]
    # the n x n system (n <= 3) is solved on the host: its weights combine the device tensors as numbers,
    # so a step neither copies to nor waits for an accelerator
    r = torch.tensor([[(lams[j] - lams[0]) ** i for i in range(1, n + 1)] for j in range(1, n + 1)], dtype=torch.float64)
    w = torch.linalg.inv(r).tolist()
    diffs = [g - gs[0] for g in gs[1:]]
    return [math.factorial(i) * sum(w[i - 1][j] * diffs[j] for j in range(n)) for i in range(1, n + 1)]


class DPMSolverV3Scheduler(PipelineTimesteps, DPMSolverMultistepScheduler):
    """DPM-Solver-v3 as a diffusers scheduler (data in, ``step`` out), for VP epsilon and flow models.

    Example:
        >>> from accel.solvers import DPMSolverV3Scheduler
        >>> pipe.scheduler = DPMSolverV3Scheduler.from_config(pipe.scheduler.config, ems_path="ems.safetensors")  # doctest: +SKIP
    """

    points_differentiable = False  # the integrals are computed from numbers: no gradient in the step placement

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 sample_max_value: float = 1.0, algorithm_type: str = "dpmsolver++", solver_type: str = "midpoint",
                 lower_order_final: bool = True, euler_at_final: bool = False, use_karras_sigmas: bool = False,
                 use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False, use_lu_lambdas: bool = False,
                 use_flow_sigmas: bool = False, flow_shift: float = 1.0, final_sigmas_type: str = "sigma_min",
                 lambda_min_clipped: float = -float("inf"), variance_type=None, timestep_spacing: str = "linspace",
                 steps_offset: int = 0, rescale_betas_zero_snr: bool = False, use_dynamic_shifting: bool = False,
                 time_shift_type: str = "exponential", ems_path: str | None = None, degenerated: bool = False,
                 use_corrector: bool = True, predictor_pseudo: bool = False, corrector_pseudo: bool = True,
                 integration_points: int = 512):
        if final_sigmas_type != "sigma_min":
            final_sigmas_type = "sigma_min"  # the integrals need a finite lambda at the end (see module docstring)
        super().__init__(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule=beta_schedule, trained_betas=trained_betas, solver_order=solver_order,
                         prediction_type=prediction_type, thresholding=thresholding,
                         dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value,
                         algorithm_type="dpmsolver++", solver_type=solver_type, lower_order_final=lower_order_final,
                         euler_at_final=euler_at_final, use_karras_sigmas=use_karras_sigmas,
                         use_exponential_sigmas=use_exponential_sigmas, use_beta_sigmas=use_beta_sigmas,
                         use_lu_lambdas=use_lu_lambdas, use_flow_sigmas=use_flow_sigmas, flow_shift=flow_shift,
                         final_sigmas_type=final_sigmas_type, lambda_min_clipped=lambda_min_clipped,
                         variance_type=variance_type, timestep_spacing=timestep_spacing, steps_offset=steps_offset,
                         rescale_betas_zero_snr=rescale_betas_zero_snr, use_dynamic_shifting=use_dynamic_shifting,
                         time_shift_type=time_shift_type)
        self.register_to_config(final_sigmas_type="sigma_min")
        self.ems: dict[str, torch.Tensor] | None = None
        self.ems_stamp: dict = {}
        self._ints_cache: dict[tuple, EMSIntegrals] = {}  # by timestep lambdas, device, statistics, settings
        self._ints: EMSIntegrals | None = None
        if ems_path is not None and not degenerated:
            self.ems = load_ems(ems_path)
            self.ems_stamp = ems_stamp(ems_path)
        elif ems_path is None and not degenerated:
            raise ValueError("DPM-Solver-v3 needs empirical model statistics (ems_path, from `accel calibrate "
                             "--method ems`) or degenerated=True")

    def check_model(self, denoiser) -> None:
        """A clear error when the statistics were computed for another model (``accel.apply`` calls this)."""
        from .provenance import check_made_for

        check_made_for(denoiser, self.ems_stamp, f"the EMS file {self.config.ems_path}", "ems")
        super().check_model(denoiser)

    def _on_timesteps(self, device) -> None:
        self._hist: list[tuple[int, torch.Tensor, torch.Tensor, int]] = []  # (point index, x, f, order used)
        # integrate here, before the first model call, so the denoising loop does not wait for it; calls with
        # the same timesteps reuse the integrals
        lams = self._lambdas()
        cfg = self.config
        key = (tuple(lams.tolist()), str(torch.device(device)) if device is not None else "cpu", id(self.ems),
               cfg.integration_points, cfg.solver_order)
        if key not in self._ints_cache:
            if len(self._ints_cache) >= 2:  # each holds ~9 latents per step point on the device
                self._ints_cache.pop(next(iter(self._ints_cache)))
            self._ints_cache[key] = EMSIntegrals(lams, self.ems, (1, 1, 1), cfg.integration_points,
                                                 max_order=cfg.solver_order + 1, device=device)
        self._ints = self._ints_cache[key]

    def _alpha_sigma(self, i: int) -> tuple[float, float]:
        a, s = self._sigma_to_alpha_sigma_t(self.sigmas[i].double())
        return float(a), float(s)

    def _lambdas(self) -> torch.Tensor:
        vals = []
        for i in range(len(self.sigmas)):
            a, s = self._alpha_sigma(i)
            vals.append(math.log(a) - math.log(s))
        return torch.tensor(vals, dtype=torch.float64)

    def _integrals(self, device: torch.device) -> EMSIntegrals:
        """This call's integrals, on ``device`` (moved once if ``set_timesteps`` got another device)."""
        if self._ints.L.device != device:
            self._ints = copy.copy(self._ints).to(device)
        return self._ints

    def _g(self, ints: EMSIntegrals, f: torch.Tensor, i_s: int, i: int) -> torch.Tensor:
        return torch.exp(ints.S[i_s] - ints.S[i]) * f - torch.exp(ints.S[i_s]) * (ints.B[i] - ints.B[i_s])

    def _solve(self, ints: EMSIntegrals, points: list[tuple[int, torch.Tensor, torch.Tensor]], x_s: torch.Tensor,
               i_s: int, i_t: int, pseudo: bool) -> torch.Tensor:
        """x at point i_t from x_s at i_s, with f values at ``points`` (the first is i_s)."""
        a_s, _ = self._alpha_sigma(i_s)
        a_t, _ = self._alpha_sigma(i_t)
        gs = [self._g(ints, f, i_s, i) for i, _, f in points]
        L, S, I, B, C = ints.L, ints.S, ints.I, ints.B, ints.C
        x_t = (a_t / a_s * torch.exp(L[i_s] - L[i_t]) * x_s
               - a_t * torch.exp(-L[i_t] - S[i_s]) * (I[i_t] - I[i_s]) * gs[0]
               - a_t * torch.exp(-L[i_t]) * (C[i_t] - C[i_s] - B[i_s] * (I[i_t] - I[i_s])))
        if len(points) > 1:
            lams = [float(ints.lam[i]) for i, _, _ in points]
            for k, gk in enumerate(taylor_derivatives(lams, gs, pseudo), start=1):
                e = ints.E[(min(i_s, i_t), k)]
                x_t = x_t - a_t * torch.exp(L[i_s] - L[i_t]) * e * gk
        return x_t

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None, variance_noise=None,
             return_dict: bool = True):
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' first")
        if self.step_index is None:
            self._init_step_index(timestep)
        i = self.step_index
        n = len(self.timesteps)
        x = sample.double()
        x0 = self.convert_model_output(model_output, sample=sample).double()
        ints = self._integrals(sample.device)
        a_i, _ = self._alpha_sigma(i)
        l_i = ints.l[i]
        f = ((1 - l_i) * x - a_i * x0) / a_i  # f = (sigma eps - l x) / alpha with sigma eps = x - alpha x0
        cfg = self.config
        if cfg.use_corrector and self._hist:
            j, x_prev, f_prev, used = self._hist[-1]
            order_c = used + (1 if cfg.corrector_pseudo else 0)
            if order_c > 1:
                pts = [(j, x_prev, f_prev), (i, x, f)] + [(p[0], p[1], p[2]) for p in self._hist[-2:-order_c:-1]]
                pts = pts[: order_c]
                x = self._solve(ints, pts, x_prev, j, i, cfg.corrector_pseudo)
        lower_final = i == n - 1 and (cfg.euler_at_final or (cfg.lower_order_final and n < 15))
        lower_second = i == n - 2 and cfg.lower_order_final and n < 15
        order = min(cfg.solver_order, len(self._hist) + 1)
        if lower_final:
            order = 1
        elif lower_second:
            order = min(order, 2)
        self._hist.append((i, x, f, order))
        pts = [(p[0], p[1], p[2]) for p in self._hist[::-1][:order]]
        prev = self._solve(ints, pts, x, i, i + 1, cfg.predictor_pseudo)
        self._hist = self._hist[-(cfg.solver_order + 1) :]
        self._step_index += 1
        if self._step_index == n and not bool(torch.isfinite(prev).all()):  # one check per call, at its end
            raise FloatingPointError(f"DPM-Solver-v3 ended with non-finite latents: the statistics "
                                     f"{self.config.ems_path or ''} do not suit these steps (too few samples?); "
                                     "recalibrate with more --num-samples")
        prev = prev.to(model_output.dtype)
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)


def save_ems(path: str | Path, lambdas: torch.Tensor, l: torch.Tensor, s: torch.Tensor, b: torch.Tensor,
             metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file({"lambdas": lambdas.double().contiguous(), "l": l.float().contiguous(), "s": s.float().contiguous(),
               "b": b.float().contiguous()}, str(path), metadata=metadata)


def load_ems(path: str | Path, fingerprint: str | None = None) -> dict[str, torch.Tensor]:
    """EMS tensors; with ``fingerprint`` a file made for another model is a clear error."""
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise FileNotFoundError(f"EMS file {path} not found; make one with `accel calibrate --method ems`")
    if fingerprint is not None:
        made_for = ems_stamp(path)["fingerprint"]
        if made_for != fingerprint:
            raise ValueError(f"EMS file {path} was made for model {made_for!r}, not {fingerprint!r}")
    t = load_file(str(path))
    if np.any(np.diff(t["lambdas"].numpy()) <= 0):
        raise ValueError("EMS lambdas must increase")
    return t


def ems_metadata(path: str | Path) -> dict[str, str]:
    """The metadata an EMS file was saved with (model stamp, guidance, data, samples, reduce)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata() or {})


def ems_stamp(path: str | Path) -> dict:
    """The model an EMS file was made for: ``{"fingerprint": ..., "weights": [...]}`` from its metadata
    (``accel.solvers.provenance``)."""
    import json

    meta = ems_metadata(path)
    return {"fingerprint": meta.get("fingerprint"), "weights": json.loads(meta.get("weights", "[]"))}
