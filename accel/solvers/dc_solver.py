"""DC-Solver (Zhao et al., ECCV 2024): UniPC (bh2) predictor-corrector with dynamic compensation.

At step i >= 2 the newest buffered x0 prediction is replaced, before the predictor, by the Lagrange
interpolation through the last ``dc_order + 1`` buffered predictions evaluated at
``tau = t[-2] + rho_i (t[-1] - t[-2])`` (interpolation in the diffusers timestep). rho = 1 is a
no-op, so ratios of 1 are exactly UniPC. The compensated value stays in the buffer for later steps
and the next corrector, as in the official code. Ratios come from a search against a ground-truth
trajectory (``accel calibrate --method dc``) or from cascade polynomial regression over (NFE, CFG).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler
from diffusers.configuration_utils import register_to_config

from .noise_schedule import PipelineTimesteps


def lagrange_interpolate(ts: Sequence[float], values: Sequence[torch.Tensor], tau: float) -> torch.Tensor:
    """Value at ``tau`` of the Lagrange polynomial through (ts[j], values[j])."""
    out = torch.zeros_like(values[0], dtype=torch.float32)
    for j, (tj, vj) in enumerate(zip(ts, values)):
        w = 1.0
        for m, tm in enumerate(ts):
            if m != j:
                w *= (tau - tm) / (tj - tm)
        out = out + w * vj.float()
    return out.to(values[0].dtype)


def cpr_ratios(coefficients: Sequence[float], nfe: int, guidance: float) -> list[float]:
    """Cascade polynomial regression: rho(i) = sum_p c_p x^p with x = i / NFE, each c_p quadratic in
    g = CFG / 12, whose coefficients are quadratic in n = NFE / 50 (36 numbers, shape (4, 3, 3));
    the first two steps are fixed to 1."""
    a = np.asarray(coefficients, dtype=np.float64).reshape(4, 3, 3)
    n, g = nfe / 50.0, guidance / 12.0
    c = (a @ np.array([1.0, n, n * n])) @ np.array([1.0, g, g * g])  # [4]
    rho = [float(sum(c[p] * (i / nfe) ** p for p in range(4))) for i in range(nfe)]
    return [1.0, 1.0][: min(2, nfe)] + rho[2:]


class DCSolverScheduler(PipelineTimesteps, UniPCMultistepScheduler):
    """UniPC (bh2, data prediction, order 2) with DC-Solver's dynamic compensation.

    Example:
        >>> from accel.solvers import DCSolverScheduler
        >>> # ratios for 5-step calls (num_inference_steps=5): one per step
        >>> pipe.scheduler = DCSolverScheduler.from_config(pipe.scheduler.config, dc_ratios=[1, 1, 1.03, 0.74, 1.2])  # doctest: +SKIP
        >>> # or a file from `accel calibrate --method dc` (searched ratios, CPR for other NFE / guidance):
        >>> accel.apply(pipe, solver=DCSolverScheduler.from_config(pipe.scheduler.config, dc_path="dc.json",
        ...                                                         cpr_guidance_scale=4.5))  # doctest: +SKIP
    """

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas=None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 sample_max_value: float = 1.0, predict_x0: bool = True, solver_type: str = "bh2",
                 lower_order_final: bool = True, disable_corrector: list[int] = [], solver_p=None,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 use_flow_sigmas: bool = False, flow_shift: float = 1.0, timestep_spacing: str = "linspace",
                 steps_offset: int = 0, final_sigmas_type: str = "zero", rescale_betas_zero_snr: bool = False,
                 use_dynamic_shifting: bool = False, time_shift_type: str = "exponential", sigma_min=None,
                 sigma_max=None, shift_terminal=None, dc_order: int = 2, dc_ratios: list[float] | None = None,
                 cpr_coefficients: list[float] | None = None, cpr_guidance_scale: float | None = None,
                 dc_path: str | None = None):
        super().__init__(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule=beta_schedule, trained_betas=trained_betas, solver_order=solver_order,
                         prediction_type=prediction_type, thresholding=thresholding,
                         dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value,
                         predict_x0=predict_x0, solver_type=solver_type, lower_order_final=lower_order_final,
                         disable_corrector=disable_corrector, solver_p=solver_p, use_karras_sigmas=use_karras_sigmas,
                         use_exponential_sigmas=use_exponential_sigmas, use_beta_sigmas=use_beta_sigmas,
                         use_flow_sigmas=use_flow_sigmas, flow_shift=flow_shift, timestep_spacing=timestep_spacing,
                         steps_offset=steps_offset, final_sigmas_type=final_sigmas_type,
                         rescale_betas_zero_snr=rescale_betas_zero_snr, use_dynamic_shifting=use_dynamic_shifting,
                         time_shift_type=time_shift_type, sigma_min=sigma_min, sigma_max=sigma_max,
                         shift_terminal=shift_terminal)
        if dc_order < 1:
            raise ValueError("dc_order must be >= 1")
        self._dc_hist: list[list] = []
        self._ratios: list[float] = []
        self._t_host: list = []
        self.dc_file: dict | None = None
        if dc_path is not None:
            from .dc_file import load_dc

            self.dc_file = load_dc(dc_path)
            if cpr_guidance_scale is None:
                raise ValueError("a DC ratio file needs cpr_guidance_scale (the CFG scale of the calls)")

    def check_model(self, denoiser) -> None:
        """A clear error when the ratio file was calibrated on another model (``accel.apply`` calls this)."""
        from .provenance import check_made_for

        check_made_for(denoiser, self.dc_file or {}, f"the DC ratio file {self.config.dc_path}", "dc")
        super().check_model(denoiser)

    def _file_ratios(self, n: int) -> list[float]:
        """Searched ratios when the file has this (NFE, guidance), else its CPR prediction."""
        g = self.config.cpr_guidance_scale
        for rec in self.dc_file["searched"]:
            if rec["nfe"] == n and abs(rec["guidance"] - g) < 1e-6:
                return list(rec["ratios"])
        return cpr_ratios(self.dc_file["cpr_coefficients"], n, g)

    def _on_timesteps(self, device) -> None:
        self._dc_hist = []
        self._t_host = self.timesteps.tolist()  # read per step without waiting for the accelerator
        n = len(self.timesteps)
        cfg = self.config
        if cfg.dc_ratios is not None:
            r = list(cfg.dc_ratios)
            if len(r) != n:
                raise ValueError(f"dc_ratios has {len(r)} values for {n} steps: calibrate for this step count "
                                 "(or give cpr_coefficients)")
            self._ratios = r
        elif self.dc_file is not None:
            self._ratios = self._file_ratios(n)
        elif cfg.cpr_coefficients is not None:
            if cfg.cpr_guidance_scale is None:
                raise ValueError("cpr_coefficients need cpr_guidance_scale (the CFG scale of the calls)")
            self._ratios = cpr_ratios(cfg.cpr_coefficients, n, cfg.cpr_guidance_scale)
        else:
            self._ratios = [1.0] * n

    @property
    def dc_ratios(self) -> list[float]:
        return list(self._ratios)

    def multistep_uni_p_bh_update(self, *args, **kwargs):
        self._compensate()
        return super().multistep_uni_p_bh_update(*args, **kwargs)

    def _compensate(self) -> None:
        i = self.step_index
        t_new = float(self._t_host[i])  # = timestep_list[-1], the current step's timestep
        self._dc_hist.append([t_new, self.model_outputs[-1]])
        rho = self._ratios[i] if i < len(self._ratios) else 1.0
        if i < 2 or rho == 1.0 or len(self._dc_hist) < 2:
            return
        k = min(self.config.dc_order + 1, 4, len(self._dc_hist))
        pts = self._dc_hist[-k:]
        t_prev = pts[-2][0]
        tau = t_prev + rho * (t_new - t_prev)
        comp = lagrange_interpolate([p[0] for p in pts], [p[1] for p in pts], tau)
        self.model_outputs[-1] = comp
        self._dc_hist[-1][1] = comp
