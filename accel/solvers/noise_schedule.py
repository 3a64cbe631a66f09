"""A pipeline's noise schedule, read once from whatever scheduler it ships.

Two kinds cover the families accel supports:

- ``vp``: x_t = alpha_t x0 + sigma_t eps with alpha_t^2 = ``alphas_cumprod[t]`` (DDIM, PNDM, Euler,
  DPM-Solver, UniPC configs of SD / SDXL / PixArt-alpha / DiT), predicting epsilon or v;
- ``flow``: x_t = (1 - sigma) x0 + sigma eps with sigma = t / num_train_timesteps, predicting the
  velocity eps - x0 (FlowMatchEuler of FLUX / SD3, and DPM-Solver / UniPC with ``use_flow_sigmas``).

Solvers by name (``accel.solvers.named``), guidance and solver calibration all read alpha / sigma and
the prediction type from here. On a flow schedule the pipeline's own scheduler keeps deciding the
timesteps (its shift, dynamic shifting with the ``mu`` the pipeline passes, custom ``sigmas`` or
``timesteps``): ``PipelineTimesteps`` hands them to accel's solvers, which change the update rule and,
where the pipeline passes no sigmas of its own, use diffusers' flow-solver spacing under the same shift.

Example:
    >>> from diffusers import FlowMatchEulerDiscreteScheduler
    >>> ns = NoiseSchedule.of(FlowMatchEulerDiscreteScheduler(shift=3.0))
    >>> ns.kind, ns.prediction_type
    ('flow', 'flow_prediction')
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

VP, FLOW = "vp", "flow"
_PREDICTIONS = {VP: ("epsilon", "v_prediction"), FLOW: ("flow_prediction",)}
# options of the source scheduler that decide its sigmas; accel's flow solvers take the sigmas themselves
_FLOW_SPACING_KEYS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_dynamic_shifting",
                      "shift_terminal", "invert_sigmas")


def _is_flow(scheduler) -> bool:
    cfg = scheduler.config
    return (type(scheduler).__name__.startswith("FlowMatch") or bool(cfg.get("use_flow_sigmas", False))
            or cfg.get("prediction_type") == "flow_prediction")


@dataclass(frozen=True)
class NoiseSchedule:
    """The noise schedule of a scheduler: its kind (``"vp"`` or ``"flow"``), prediction type, training
    timesteps, ``alphas_cumprod`` (VP) and a private copy of the scheduler (``source``) that decides timesteps."""

    kind: str
    prediction_type: str
    num_train_timesteps: int
    alphas_cumprod: torch.Tensor | None = field(default=None, repr=False, compare=False)
    source: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, scheduler) -> "NoiseSchedule":
        """Read the schedule of ``scheduler``; a clear error for schedules accel cannot solve."""
        source = getattr(scheduler, "timestep_source", None) or scheduler  # an accel solver: what it follows
        cfg = source.config
        n = int(cfg.get("num_train_timesteps", 1000))
        name = type(source).__name__
        if _is_flow(source):
            if cfg.get("invert_sigmas", False):
                raise NotImplementedError(f"{name} with invert_sigmas=True (noise at t = 0) is not supported by accel")
            return cls(FLOW, "flow_prediction", n, None, copy.deepcopy(source))
        acp = getattr(source, "alphas_cumprod", None)
        if acp is None:
            raise NotImplementedError(f"accel cannot read a noise schedule from {name}: it has neither flow sigmas nor "
                                      "alphas_cumprod (supported: FlowMatchEuler, Euler, DDIM, PNDM, DPM-Solver, UniPC "
                                      "and other VP schedulers)")
        pt = cfg.get("prediction_type", "epsilon")
        if pt not in _PREDICTIONS[VP]:
            raise NotImplementedError(f"{name} predicts {pt!r}: accel supports epsilon and v_prediction on VP schedules")
        return cls(VP, pt, n, torch.as_tensor(acp, dtype=torch.float32).clone(), copy.deepcopy(source))

    @property
    def is_flow(self) -> bool:
        return self.kind == FLOW

    @property
    def source_decides_timesteps(self) -> bool:
        """A FlowMatch scheduler: its sigmas (shift, dynamic shift, custom sigmas) are not expressible in a
        DPM-Solver / UniPC config, so accel's solvers take them from it. A DPM-Solver / UniPC flow config
        carries over as it is (diffusers' own way of swapping schedulers)."""
        return self.is_flow and type(self.source).__name__.startswith("FlowMatch")

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t, sigma_t at scheduler timesteps ``t`` (VP: the integer training step, rounded; flow:
        sigma = t / num_train_timesteps)."""
        t = torch.as_tensor(t).float().flatten()
        if self.is_flow:
            sigma = (t / self.num_train_timesteps).clamp(0, 1)
            return 1 - sigma, sigma
        acp = self.alphas_cumprod.to(t.device)
        a = acp[t.round().long().clamp(0, len(acp) - 1)].float()
        return a.sqrt(), (1 - a).sqrt()

    def solver_config(self) -> dict:
        """The config a DPM-Solver / UniPC family scheduler needs for this schedule: the source's own config
        (betas, spacing, offset, prediction type carry over), and on flow the flow-matching settings; flow
        timesteps then come from the source (``PipelineTimesteps``)."""
        cfg = dict(self.source.config)
        if self.source_decides_timesteps:
            # use_flow_sigmas=False: the solver does not make flow sigmas itself, so pipelines (FLUX) hand it the
            # sigmas they give their own scheduler; PipelineTimesteps supplies the flow alpha / sigma
            cfg.update(use_flow_sigmas=False, prediction_type="flow_prediction", flow_shift=1.0,
                       timestep_spacing="linspace", steps_offset=0)
            for k in _FLOW_SPACING_KEYS + ("use_lu_lambdas",):
                if k in cfg:
                    cfg[k] = None if k == "shift_terminal" else False
        return cfg


def current_timestep(scheduler) -> torch.Tensor | None:
    """The timestep (in the scheduler's units) of the step ``scheduler`` is at, read from its step index while the
    pipeline calls the denoiser; None for schedulers that keep no step index (DDIM, PNDM, DDPM: VP schedulers whose
    pipelines pass the denoiser that very timestep)."""
    if not hasattr(type(scheduler), "step_index") or getattr(scheduler, "timesteps", None) is None:
        return None
    i = scheduler.step_index
    if i is None:  # before the call's first step
        i = getattr(scheduler, "begin_index", None) or 0
    ts = scheduler.timesteps
    return ts[min(int(i), len(ts) - 1)] if len(ts) else None


def _accepted(fn, kwargs: dict) -> dict:
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if v is not None and k in params}


class PipelineTimesteps:
    """Mixin for DPM-Solver / UniPC family schedulers: on a FlowMatch schedule, the timesteps and sigmas of a call
    are those the pipeline's own scheduler (``timestep_source``) sets for the same arguments, timesteps as it
    gives them (float model times from FlowMatch schedulers); the solver's update rule is unchanged.
    Without a source (a scheduler built directly, a VP or a DPM-Solver / UniPC flow schedule) the base class
    decides as usual.

    Subclasses that derive per-call state from the timesteps override ``_on_timesteps(device)``.
    """

    timestep_source: Any = None
    learned_steps: Any = None  # an accel.solvers.learned_steps.StepFile: its points replace the default steps
    points_differentiable = True  # use_points carries the gradient of the points through the step coefficients

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None):
        if self.learned_steps is not None:
            # the file's points replace the steps the pipeline asks for (FLUX passes its own sigmas); n is kept
            given = sigmas if sigmas is not None else timesteps
            if num_inference_steps is None and given is None:
                raise ValueError("set_timesteps needs num_inference_steps (or sigmas / timesteps)")
            n = num_inference_steps if num_inference_steps is not None else len(given)
            self.use_points(torch.tensor(self.learned_steps.points_for(n), dtype=torch.float64), device, mu)
            return
        self._set_default(num_inference_steps, device, sigmas, mu, timesteps)
        self._on_timesteps(device)

    def use_points(self, points: torch.Tensor, device: str | torch.device | None = None,
                   mu: float | None = None) -> torch.Tensor:
        """Set this call's steps to evaluate the model at ``points`` (``accel.solvers.learned_steps``) and return
        the model timesteps. Differentiable: ``self.sigmas`` and the returned timesteps carry the gradient of
        ``points`` (learning), while ``self.timesteps`` holds their values (the loop's step lookup)."""
        from .learned_steps import sigmas_at

        n = len(points)
        self._set_default(n, device, None, mu, None)  # the base's per-call state and its final sigma
        sig, ts = sigmas_at(self, points, mu)
        last = self.sigmas[-1:].detach().float()
        self.sigmas = torch.cat([sig.float().cpu(), last.cpu()])
        self.timesteps = ts.detach().float().to(device)
        self.num_inference_steps = n
        self._on_timesteps(device)
        return ts

    def _set_default(self, num_inference_steps, device, sigmas, mu, timesteps) -> None:
        """The solver's own steps for these arguments (the module docstring)."""
        src = self.timestep_source
        base = super().set_timesteps
        if src is None:
            extra = dict(sigmas=sigmas, mu=mu, timesteps=timesteps)
            take = _accepted(base, extra)
            refused = [k for k, v in extra.items() if v is not None and k not in take]
            if refused:
                raise ValueError(f"{type(self).__name__} cannot take custom {', '.join(refused)} on this schedule; "
                                 "pass num_inference_steps")
            if "timesteps" in take:
                num_inference_steps = None
            base(num_inference_steps=num_inference_steps, device=device, **take)
        else:
            if sigmas is None and timesteps is None:
                # diffusers' flow-solver spacing (DPM-Solver / UniPC with use_flow_sigmas), shifted by the source:
                # no step lands in the last 1/N, where a multistep update would span a huge log-SNR gap
                sigmas = np.linspace(1.0, 1.0 / self.config.num_train_timesteps, num_inference_steps + 1)[:-1]
                num_inference_steps = None
            src.set_timesteps(**_accepted(src.set_timesteps, dict(num_inference_steps=num_inference_steps, device=device,
                                                                  sigmas=sigmas, mu=mu, timesteps=timesteps)))
            n = len(src.timesteps)
            base(num_inference_steps=n, device=device)  # the base's per-call state
            last = self.sigmas[-1:] if self.config.final_sigmas_type == "sigma_min" else torch.zeros(1)
            # sigma 1 is alpha 0, an infinite log-SNR; UniPC's own flow sigmas step in by 1e-6 there too
            sig = src.sigmas[:n].detach().float().cpu().clamp(max=1 - 1 / self.config.num_train_timesteps)
            self.sigmas = torch.cat([sig, last.float()])
            self.timesteps = src.timesteps[:n].to(device=device)  # as the source gives them (float for FlowMatch)
            self.num_inference_steps = n

    def check_model(self, denoiser) -> None:
        """A clear error when the step file was learned on another model (``accel.apply`` calls this)."""
        if self.learned_steps is not None:
            from .provenance import check_made_for

            check_made_for(denoiser, self.learned_steps.stamp(), "the step file", "steps")

    def _on_timesteps(self, device) -> None:
        """Per-call state derived from ``self.timesteps`` / ``self.sigmas`` (none here)."""

    def _sigma_to_alpha_sigma_t(self, sigma):
        if self.timestep_source is not None:  # a FlowMatch schedule: x_t = (1 - sigma) x0 + sigma noise
            return 1 - sigma, sigma
        return super()._sigma_to_alpha_sigma_t(sigma)


def follow_pipeline(scheduler, schedule: NoiseSchedule):
    """``scheduler`` (a ``PipelineTimesteps`` solver) set to take its flow timesteps from ``schedule``'s source (a
    private copy: ``NoiseSchedule.of`` made it)."""
    scheduler.timestep_source = schedule.source if schedule.source_decides_timesteps else None
    return scheduler
