"""A pipeline's guided denoiser as a plain function ``fn(x_t, t) -> prediction``, for solver calibration.

The denoiser's keyword arguments (text embeddings, masks, class labels, FLUX's ids and guidance input, ...)
are captured from one real pipeline call, so no model forward or prompt encoding is re-implemented.
Classifier-free guidance is applied as the pipeline applies it (uncond + w (cond - uncond)), in the
scheduler's prediction space, for both CFG forms: one batched call (two identical latent halves) and two
calls per step with the same latents (FLUX's true CFG; the first call is the conditional one, as FLUX
makes them). ``t`` is the scheduler's timestep; the denoiser's own time (FLUX: t / 1000, Z-Image:
1 - t / 1000, Wan: t) is read off the captured call, as the affine map from the scheduler's timestep at each
captured step to the time the pipeline passed. The ``mu`` a pipeline passes to its scheduler (FLUX's dynamic
shift) is captured too (``timestep_kwargs``). A denoiser that takes a list of per-sample latents with a frame
axis (Z-Image: [C, 1, H, W] each) is served from the scheduler's [B, C, H, W]; a family layout's ``output_sign`` and ``cfg_scale_offset`` (Z-Image:
the model returns minus the velocity, and its pipeline's scale w is the CFG scale 1 + w) are applied. A pipeline
with two experts (Wan 2.2) is followed as it switches: ``transformer`` at scheduler timesteps at or above its
``boundary_ratio`` * num_train_timesteps, ``transformer_2`` below, both with the captured arguments (the pipeline
passes its experts the same ones) and the calibration's guidance scale (the pipeline's ``guidance_scale_2``
defaults to it).
"""
from __future__ import annotations

import functools
import inspect

import torch
from diffusers.hooks import HookRegistry, ModelHook

from accel.pipelines.families import FamilyLayout, find_denoiser, find_experts, find_layout, timestep_arg
from accel.solvers.noise_schedule import current_timestep

_CAPTURE = "accel.calibrate.capture"
_SAMPLE_ARGS = ("hidden_states", "sample", "x")
_NO_LAYOUT = FamilyLayout("none", ())


class _Capture(ModelHook):
    """Keeps the arguments of the first two denoiser calls (one step of either CFG form) and, for every call, the
    scheduler's timestep and the time the pipeline passed the denoiser."""

    def __init__(self, scheduler, time_name: str, time_pos: int) -> None:
        super().__init__()
        self.calls: list[tuple[tuple, dict]] = []
        self.out_channels: int | None = None  # of the first call's prediction
        self.times: list[tuple[float, float]] = []
        self._scheduler, self._name, self._pos = scheduler, time_name, time_pos

    def new_forward(self, module, *args, **kwargs):
        if len(self.calls) < 2:
            self.calls.append((args, dict(kwargs)))
        t = kwargs.get(self._name, args[self._pos] if len(args) > self._pos else None)
        own = current_timestep(self._scheduler)
        if t is not None and own is not None:
            self.times.append((float(own), float(torch.as_tensor(t).flatten()[0])))
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.out_channels is None:
            pred = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
            pred = pred[0] if isinstance(pred, (list, tuple)) else pred
            self.out_channels = pred.shape[1] if isinstance(pred, torch.Tensor) and pred.dim() > 3 else None
        return out


def model_time_map(pairs: list[tuple[float, float]], fallback_scale: float) -> tuple[float, float]:
    """(a, b) with model time = a * t + b, through the (scheduler t, model t) pairs of the captured call; a map
    found among the conventions diffusers' pipelines use (t, t / 1000, 1 - t / 1000) is taken exactly. Without two
    distinct scheduler timesteps (a scheduler that keeps no step index): ``fallback_scale`` * t."""
    distinct = sorted(dict(pairs).items())
    if len(distinct) < 2:
        return fallback_scale, 0.0
    (t0, m0), (t1, m1) = distinct[0], distinct[-1]
    a = (m1 - m0) / (t1 - t0)
    b = m0 - a * t0
    for exact in ((1.0, 0.0), (1e-3, 0.0), (-1e-3, 1.0)):
        if abs(a - exact[0]) <= 1e-6 * abs(exact[0]) + 1e-9 and abs(b - exact[1]) <= 1e-4:
            return exact
    return a, b


class GuidedDenoiser:
    """``fn(x, t)``: x [B, *latent_shape] latents of the captured call's batch, t a scalar or [B] scheduler timestep.

    ``call`` holds the conditioning call arguments (``accel.pipelines.calls.condition``); ``call_kwargs`` any
    others (size, the pipeline's defaults)."""

    def __init__(self, pipe, call: dict, guidance: float, call_kwargs: dict | None = None):
        _, self.den = find_denoiser(pipe)
        experts = find_experts(pipe)
        self.low_noise, self.boundary = None, None
        if len(experts) > 1:
            ratio = getattr(getattr(pipe, "config", None), "boundary_ratio", None)
            if len(experts) > 2 or ratio is None:
                raise NotImplementedError(f"this pipeline calls {len(experts)} denoisers and says no boundary_ratio "
                                          "between them, so a calibration cannot tell which one a timestep belongs to")
            self.low_noise = experts[1][1]
            self.boundary = float(ratio) * pipe.scheduler.config.num_train_timesteps
        layout = find_layout(self.den)[0] or _NO_LAYOUT
        self.cond_first = layout.cfg_cond_first
        self.sign = layout.output_sign
        self.guidance = guidance + layout.cfg_scale_offset
        params = list(inspect.signature(type(self.den).forward).parameters)[1:]
        self._t_name = timestep_arg(self.den)
        sched = pipe.scheduler
        cap = _Capture(sched, self._t_name, params.index(self._t_name) if self._t_name in params else len(params))
        reg = HookRegistry.check_if_exists_or_initialize(self.den)
        reg.register_hook(cap, _CAPTURE)
        seen: dict = {}
        original = sched.set_timesteps

        @functools.wraps(original)
        def recording(*args, **kwargs):  # what the pipeline passes its scheduler (FLUX: mu)
            seen.update(kwargs)
            return original(*args, **kwargs)

        sched.set_timesteps = recording  # this instance, for this one call; removed below
        try:
            kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="latent", **(call_kwargs or {}))
            if "guidance_scale" in inspect.signature(type(pipe).__call__).parameters:  # not where a guider decides
                kwargs["guidance_scale"] = guidance
            pipe(num_inference_steps=2, **kwargs, **call)
        finally:
            reg.remove_hook(_CAPTURE, recurse=False)
            del sched.set_timesteps
        self.timestep_kwargs = {k: v for k, v in seen.items() if k == "mu" and v is not None}
        self.time_map = model_time_map(cap.times, layout.model_timestep_scale)
        self._x_name = next(p for p in params if p in _SAMPLE_ARGS)
        first, given = self._named(params, cap.calls[0])
        self.two_call = len(cap.calls) > 1 and self._named(params, cap.calls[1])[1] is given
        self._listed = isinstance(given, (list, tuple))
        x = self._from_model(given)
        half = x.shape[0] // 2
        self.cfg = (not self.two_call and x.shape[0] % 2 == 0 and self.guidance > 1 and torch.equal(x[:half], x[half:]))
        self.batch = half if self.cfg else x.shape[0]
        self.kwargs = first
        self.kwargs_uncond = self._named(params, cap.calls[1])[0] if self.two_call else None
        # channels after the latents that the pipeline appends and keeps fixed (HunyuanVideo-1.5's conditioning
        # image and mask): served as captured, and left out of the ODE's state
        c = cap.out_channels
        self._fixed = x[:, c:] if c is not None and not self._listed and c < x.shape[1] else None
        self._fixed_uncond = (self._from_model(self._named(params, cap.calls[1])[1])[:, c:]
                              if self._fixed is not None and self.two_call else None)
        self.latent_shape = tuple(x[:, :c].shape[1:] if self._fixed is not None else x.shape[1:])

    def _named(self, params: list[str], call: tuple[tuple, dict]) -> tuple[dict, torch.Tensor]:
        args, kw = call
        named = dict(zip(params, args))
        named.update(kw)
        x = named[self._x_name]
        rest = {k: v for k, v in named.items() if k not in (self._x_name, self._t_name)}
        rest["return_dict"] = False
        return rest, x

    def _from_model(self, v) -> torch.Tensor:
        """The scheduler's latents from the denoiser's: a list of per-sample [C, 1, H, W] (Z-Image) stacked, without
        the frame axis the pipeline adds."""
        return torch.stack(list(v)).squeeze(2) if self._listed else v

    def _run(self, x: torch.Tensor, t: torch.Tensor, kwargs: dict) -> torch.Tensor:
        fixed = self._fixed_uncond if kwargs is self.kwargs_uncond else self._fixed
        if fixed is not None:
            if fixed.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"the captured call's fixed channels are for a batch of {fixed.shape[0]}, not "
                                 f"{x.shape[0]}")
            x = torch.cat([x, fixed.to(x.dtype).expand(x.shape[0], *fixed.shape[1:])], dim=1)
        if self.low_noise is None:
            return self._run_on(self.den, x, t, kwargs)
        high = t >= self.boundary  # the pipeline's own test: the high-noise expert at and above the boundary
        if bool(high.all()) or not bool(high.any()):
            return self._run_on(self.den if bool(high.all()) else self.low_noise, x, t, kwargs)
        parts = []
        for mask, den in ((high, self.den), (~high, self.low_noise)):
            sub = {k: v[mask] if isinstance(v, torch.Tensor) and v.shape[:1] == x.shape[:1] else v
                   for k, v in kwargs.items()}
            parts.append((mask, self._run_on(den, x[mask], t[mask], sub)))
        out = parts[0][1].new_empty((x.shape[0], *parts[0][1].shape[1:]))
        for mask, part in parts:
            out[mask] = part
        return out

    def _run_on(self, den, x: torch.Tensor, t: torch.Tensor, kwargs: dict) -> torch.Tensor:
        a, b = self.time_map
        model_t = t * a + b if b else t * a
        given = list(x.unsqueeze(2).unbind(0)) if self._listed else x
        out = self._from_model(den(**{self._x_name: given, self._t_name: model_t}, **kwargs)[0])
        out = out if out.shape[1:] == x.shape[1:] else out[:, : x.shape[1]]  # DiT's learned-sigma channels
        return -out if self.sign < 0 else out

    def __call__(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).flatten()
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        dtype = x.dtype  # the calibration's precision; the model runs in its own
        x = x.to(self.den.dtype)
        if self.two_call:
            cond, uncond = self._run(x, t, self.kwargs).to(dtype), self._run(x, t, self.kwargs_uncond).to(dtype)
            return uncond + self.guidance * (cond - uncond)
        if self.cfg:
            x, t = torch.cat([x, x]), torch.cat([t, t])
        # continuous (float) model time, as DPM-Solver's model wrapper feeds discrete-time models
        out = self._run(x, t, self.kwargs).to(dtype)
        if not self.cfg:
            return out
        a, b = out.chunk(2)
        cond, uncond = (a, b) if self.cond_first else (b, a)
        return uncond + self.guidance * (cond - uncond)
