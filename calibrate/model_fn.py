"""A pipeline's guided denoiser as a plain function ``fn(x_t, t) -> prediction``, for solver calibration.

The denoiser's keyword arguments (text embeddings, masks, class labels, FLUX's ids and guidance input, ...)
are captured from one real pipeline call, so no model forward or prompt encoding is re-implemented.
Classifier-free guidance is applied as the pipeline applies it (uncond + w (cond - uncond)), in the
scheduler's prediction space, for both CFG forms: one batched call (two identical latent halves) and two
calls per step with the same latents (FLUX's true CFG; the first call is the conditional one, as FLUX
makes them). ``t`` is the scheduler's timestep; the family's model time (FLUX: t / 1000) is applied here.
The ``mu`` a pipeline passes to its scheduler (FLUX's dynamic shift) is captured too (``timestep_kwargs``).
"""
from __future__ import annotations

import functools
import inspect

import torch
from diffusers.hooks import HookRegistry, ModelHook

from accel.pipelines.families import find_denoiser, layout_of

_CAPTURE = "accel.calibrate.capture"
_SAMPLE_ARGS = ("hidden_states", "sample")


class _Capture(ModelHook):
    """Keeps the arguments of the first two denoiser calls (one step of either CFG form)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple, dict]] = []

    def new_forward(self, module, *args, **kwargs):
        if len(self.calls) < 2:
            self.calls.append((args, dict(kwargs)))
        return self.fn_ref.original_forward(*args, **kwargs)


class GuidedDenoiser:
    """``fn(x, t)``: x [B, *latent_shape] latents of the captured call's batch, t a scalar or [B] scheduler timestep.

    ``call`` holds the conditioning call arguments (``accel.pipelines.calls.condition``); ``call_kwargs`` any
    others (size, the pipeline's defaults)."""

    def __init__(self, pipe, call: dict, guidance: float, call_kwargs: dict | None = None):
        _, self.den = find_denoiser(pipe)
        layout = layout_of(self.den)
        self.cond_first = layout.cfg_cond_first
        self.time_scale = layout.model_timestep_scale
        self.guidance = guidance
        cap = _Capture()
        reg = HookRegistry.check_if_exists_or_initialize(self.den)
        reg.register_hook(cap, _CAPTURE)
        seen: dict = {}
        sched = pipe.scheduler
        original = sched.set_timesteps

        @functools.wraps(original)
        def recording(*args, **kwargs):  # what the pipeline passes its scheduler (FLUX: mu)
            seen.update(kwargs)
            return original(*args, **kwargs)

        sched.set_timesteps = recording  # this instance, for this one call; removed below
        try:
            kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="latent", **(call_kwargs or {}))
            pipe(num_inference_steps=2, guidance_scale=guidance, **kwargs, **call)
        finally:
            reg.remove_hook(_CAPTURE, recurse=False)
            del sched.set_timesteps
        self.timestep_kwargs = {k: v for k, v in seen.items() if k == "mu" and v is not None}
        params = list(inspect.signature(self.den.forward).parameters)
        self._x_name = next(p for p in params if p in _SAMPLE_ARGS)
        first, x = self._named(params, cap.calls[0])
        self.two_call = len(cap.calls) > 1 and self._named(params, cap.calls[1])[1] is x
        half = x.shape[0] // 2
        self.cfg = (not self.two_call and x.shape[0] % 2 == 0 and guidance > 1 and torch.equal(x[:half], x[half:]))
        self.batch = half if self.cfg else x.shape[0]
        self.kwargs = first
        self.kwargs_uncond = self._named(params, cap.calls[1])[0] if self.two_call else None
        self.latent_shape = tuple(x.shape[1:])

    def _named(self, params: list[str], call: tuple[tuple, dict]) -> tuple[dict, torch.Tensor]:
        args, kw = call
        named = dict(zip(params, args))
        named.update(kw)
        x = named[self._x_name]
        rest = {k: v for k, v in named.items() if k not in (self._x_name, "timestep")}
        rest["return_dict"] = False
        return rest, x

    def _run(self, x: torch.Tensor, t: torch.Tensor, kwargs: dict) -> torch.Tensor:
        out = self.den(**{self._x_name: x}, timestep=t * self.time_scale, **kwargs)[0]
        return out if out.shape[1:] == x.shape[1:] else out[:, : x.shape[1]]  # DiT's learned-sigma channels

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
