"""A pipeline's guided denoiser as a plain function ``fn(x_t, t) -> prediction``, for solver calibration.

The denoiser's keyword arguments (text embeddings, masks, class labels, ...) are captured from one
real pipeline call, so no model forward or prompt encoding is re-implemented. Classifier-free guidance
is applied as the pipeline applies it (uncond + w (cond - uncond)), in the scheduler's prediction space.
"""
from __future__ import annotations

import inspect

import torch
from diffusers.hooks import HookRegistry, ModelHook

from accel.pipelines.families import find_denoiser, layout_of

_CAPTURE = "accel.calibrate.capture"
_SAMPLE_ARGS = ("hidden_states", "sample")


class _Capture(ModelHook):
    def __init__(self) -> None:
        super().__init__()
        self.args = None

    def new_forward(self, module, *args, **kwargs):
        if self.args is None:
            self.args = (args, dict(kwargs))
        return self.fn_ref.original_forward(*args, **kwargs)


class GuidedDenoiser:
    """``fn(x, t)``: x [B, C, H, W] latents of the captured call's batch, t a scalar or [B] model timestep."""

    def __init__(self, pipe, call: dict, guidance: float, call_kwargs: dict | None = None):
        _, self.den = find_denoiser(pipe)
        self.cond_first = layout_of(self.den).cfg_cond_first
        self.guidance = guidance
        cap = _Capture()
        reg = HookRegistry.check_if_exists_or_initialize(self.den)
        reg.register_hook(cap, _CAPTURE)
        try:
            kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="latent", **(call_kwargs or {}))
            pipe(num_inference_steps=2, guidance_scale=guidance, **kwargs, **call)
        finally:
            reg.remove_hook(_CAPTURE, recurse=False)
        args, kw = cap.args
        params = list(inspect.signature(self.den.forward).parameters)
        self._x_name = next(p for p in params if p in _SAMPLE_ARGS)
        named = dict(zip(params, args))
        named.update(kw)
        x = named[self._x_name]
        half = x.shape[0] // 2
        self.cfg = x.shape[0] % 2 == 0 and guidance > 1 and torch.equal(x[:half], x[half:])
        self.batch = half if self.cfg else x.shape[0]
        self.kwargs = {k: v for k, v in named.items() if k not in (self._x_name, "timestep")}
        self.kwargs["return_dict"] = False
        self.channels = x.shape[1]

    def __call__(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).flatten()
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        dtype = x.dtype  # the calibration's precision; the model runs in its own
        x = x.to(self.den.dtype)
        if self.cfg:
            x, t = torch.cat([x, x]), torch.cat([t, t])
        # continuous (float) model time, as DPM-Solver's model wrapper feeds discrete-time models
        out = self.den(**{self._x_name: x}, timestep=t, **self.kwargs)[0][:, : self.channels].to(dtype)
        if not self.cfg:
            return out
        a, b = out.chunk(2)
        cond, uncond = (a, b) if self.cond_first else (b, a)
        return uncond + self.guidance * (cond - uncond)
