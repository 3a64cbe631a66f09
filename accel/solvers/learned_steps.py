"""Learned step placements for accel's solvers: the step file, and how its points become a call's sigmas.

A step file (``accel calibrate --method steps``, LD3-style) holds the NFE points at which a solver evaluates
the model, in the schedule's step coordinate:

- ``vp``: the model timestep t in [0, num_train_timesteps - 1], continuous. sigma(t) interpolates diffusers'
  sigma = sqrt((1 - alpha_bar) / alpha_bar) linearly between the integer training steps, as diffusers' own
  ``set_timesteps`` does, and the model sees t as a float timestep (as DPM-Solver's wrapper feeds
  discrete-time models).
- ``flow``: the unshifted sigma u in (0, 1]. The scheduler's own shift maps it: a FlowMatch source applies its
  shift, or FLUX's dynamic shift with the call's ``mu`` (so a file learned at one resolution follows FLUX's
  shift at another); a DPM-Solver / UniPC flow config applies its ``flow_shift``. The model sees
  sigma * num_train_timesteps.

The end of the solve (sigma 0, or sigma_min) stays the solver's own. The same function maps points for a call
and for learning (``PipelineTimesteps.use_points``), so the learned placement is solved with exactly the
arithmetic it was learned with.

Example:
    >>> import accel
    >>> accel.apply(pipe, solver="unipc:steps=steps-unipc-5.json")  # doctest: +SKIP
    >>> image = pipe("a shirt", num_inference_steps=5).images[0]  # doctest: +SKIP
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT = "accel.Steps/1"


@dataclass(frozen=True)
class StepFile:
    """Learned evaluation points of one solver at one NFE, with what they were learned for."""

    kind: str  # "vp" or "flow": the step coordinate (module docstring)
    points: tuple[float, ...]  # NFE points, decreasing
    solver: str  # the solver name they were learned with (dpm++, unipc, v3, dc)
    guidance: float  # the CFG scale of the calls they were learned on
    fingerprint: str | None = None
    weights: tuple[float, ...] = ()
    meta: dict = field(default_factory=dict)  # how they were learned: teacher steps, prompts, losses, time

    def __post_init__(self) -> None:
        if self.kind not in ("vp", "flow"):
            raise ValueError(f"step file kind {self.kind!r}: 'vp' or 'flow'")
        p = np.asarray(self.points, dtype=np.float64)
        if len(p) < 1 or not np.all(np.isfinite(p)) or np.any(np.diff(p) >= 0) or p[-1] < 0:
            raise ValueError(f"step points must be finite, non-negative and strictly decreasing, got {list(p)}")

    @property
    def nfe(self) -> int:
        return len(self.points)

    def points_for(self, n: int) -> list[float]:
        """The points for a call of ``n`` steps: the file's own at its NFE, else the learned placement
        interpolated (as a curve from the first point to the end at 0) with a warning."""
        if n == self.nfe:
            return list(self.points)
        warnings.warn(f"step file learned for {self.nfe} steps used at {n}: its placement is interpolated; learn "
                      f"one for {n} steps (`accel calibrate --method steps --nfe {n}`)", stacklevel=4)
        curve = np.append(np.asarray(self.points, dtype=np.float64), 0.0)
        x = np.linspace(0.0, 1.0, self.nfe + 1)
        return [float(v) for v in np.interp(np.linspace(0.0, 1.0, n + 1), x, curve)[:-1]]

    def stamp(self) -> dict:
        return {"fingerprint": self.fingerprint, "weights": list(self.weights)}

    def save(self, path: str | Path) -> None:
        d = asdict(self)
        d["points"], d["weights"] = list(self.points), list(self.weights)
        Path(path).write_text(json.dumps({"format": FORMAT, **d}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "StepFile":
        """Read a step file, or a clear error when it is missing or is not one."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"step file {path} not found; make one with `accel calibrate --method steps`")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a step file (not JSON: {e})") from None
        if not isinstance(d, dict) or d.pop("format", None) != FORMAT:
            raise ValueError(f"{path} is not a step file (format {FORMAT!r} expected)")
        known = set(cls.__dataclass_fields__)
        if set(d) - known:
            raise ValueError(f"{path}: unknown keys {sorted(set(d) - known)}")
        d["points"], d["weights"] = tuple(d.get("points", ())), tuple(d.get("weights", ()))
        return cls(**d)


def schedule_kind(scheduler) -> str:
    """``"flow"`` or ``"vp"``: the step coordinate of ``scheduler`` (a ``PipelineTimesteps`` solver)."""
    return "flow" if scheduler.timestep_source is not None or scheduler.config.get("use_flow_sigmas", False) else "vp"


def default_points(scheduler, n: int) -> list[float]:
    """The points of ``scheduler``'s own default steps for ``n`` steps, in the step coordinate (the start of
    learning, and the placement a step file is measured against)."""
    import copy

    if scheduler.timestep_source is not None:  # what PipelineTimesteps passes a FlowMatch source
        return [float(v) for v in np.linspace(1.0, 1.0 / scheduler.config.num_train_timesteps, n + 1)[:-1]]
    probe = copy.deepcopy(scheduler)
    probe.learned_steps = None
    probe._set_default(n, None, None, None, None)
    if scheduler.config.get("use_flow_sigmas", False):  # the solver's own flow spacing, before its flow_shift
        sig, s = probe.sigmas[:n].double().numpy(), _flow_shift(scheduler)
        return [float(v) for v in sig / (s - (s - 1) * sig)]
    return [float(v) for v in probe.timesteps]


def _flow_shift(scheduler) -> float:
    cfg = scheduler.config
    if cfg.get("use_dynamic_shifting", False) or cfg.get("shift_terminal", None):
        raise ValueError(f"learned steps on {type(scheduler).__name__} with use_dynamic_shifting / shift_terminal are "
                         "not supported (a FlowMatch scheduler with them is)")
    return float(cfg.get("flow_shift", 1.0))


def _flow_source_map(src, u: np.ndarray, mu: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A FlowMatch source's sigmas and timesteps for custom unshifted sigmas ``u``."""
    import inspect

    kw = {"sigmas": [float(v) for v in u]}
    if mu is not None and "mu" in inspect.signature(src.set_timesteps).parameters:
        kw["mu"] = mu  # the filter noise_schedule._accepted applies (not imported: noise_schedule imports this module)
    src.set_timesteps(**kw)
    n = len(u)
    return (src.sigmas[:n].detach().double().cpu().numpy(), src.timesteps[:n].detach().double().cpu().numpy())


def sigmas_at(scheduler, points: torch.Tensor, mu: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sigmas (in ``scheduler.sigmas``' units) and model timesteps at ``points``, both differentiable in
    ``points`` (float64 in, float64 out)."""
    cfg = scheduler.config
    ntrain = cfg.num_train_timesteps
    pts = points.double()
    src = scheduler.timestep_source
    if src is not None:
        # the source's own shift, exactly; its derivative by central differences of the same map
        u = pts.detach().cpu().numpy()
        sig, ts = _flow_source_map(src, u, mu)
        h = 1e-4  # the source computes in float32
        up, dn = _flow_source_map(src, np.clip(u + h, 0, 1), mu)[0], _flow_source_map(src, np.clip(u - h, 0, 1), mu)[0]
        slope = torch.as_tensor((up - dn) / (np.clip(u + h, 0, 1) - np.clip(u - h, 0, 1)), dtype=torch.float64)
        delta = (pts - pts.detach()) * slope.to(pts.device)
        sig_t = torch.as_tensor(sig, dtype=torch.float64, device=pts.device) + delta
        ts_t = torch.as_tensor(ts, dtype=torch.float64, device=pts.device) + delta * ntrain
        return sig_t.clamp(max=1 - 1 / ntrain), ts_t
    if cfg.get("use_flow_sigmas", False):
        # the model sees sigma * num_train_timesteps unrounded (diffusers' flow configs truncate it to an integer)
        s = _flow_shift(scheduler)
        sig = s * pts / (1 + (s - 1) * pts)
        return sig.clamp(max=1 - 1e-6), sig * ntrain  # alpha 0 at sigma 1: as UniPC's own flow sigmas, step in
    acp = scheduler.alphas_cumprod.float()
    table = (((1 - acp) / acp) ** 0.5).double().to(pts.device)  # in float32 first, as diffusers computes it
    t = pts.clamp(0, len(table) - 1)
    lo = t.detach().floor().long().clamp(max=len(table) - 2)
    w = t - lo.double()
    return table[lo] * (1 - w) + table[lo + 1] * w, t


def check_steps_for(steps: StepFile, scheduler, solver: str) -> None:
    """A clear error when the file's step coordinate is not this schedule's; a warning when it was learned with
    another solver."""
    kind = schedule_kind(scheduler)
    if steps.kind != kind:
        raise ValueError(f"the step file was learned on a {steps.kind} schedule, this pipeline's is {kind}")
    top = 1.0 if kind == "flow" else scheduler.config.num_train_timesteps - 1
    if steps.points[0] > top + 1e-9:
        raise ValueError(f"the step file's first point {steps.points[0]:g} lies beyond this schedule's start ({top:g})")
    if steps.solver != solver:
        warnings.warn(f"the step file was learned for solver {steps.solver!r}, used with {solver!r}: its placement "
                      f"need not suit this solver; learn one with `accel calibrate --method steps --solver {solver}`",
                      stacklevel=4)


def warn_guidance(steps: StepFile, guidance: float | None) -> None:
    """A warning when a call's CFG scale is not the one the steps were learned at."""
    if guidance is not None and abs(float(guidance) - steps.guidance) > 1e-6:
        warnings.warn(f"the step file was learned at guidance {steps.guidance:g}, this call uses {float(guidance):g}: "
                      "the placement need not suit it", stacklevel=2)
