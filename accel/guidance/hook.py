"""The guidance hook: rewrites the denoiser's CFG batch so the pipeline's own ``u + w (c - u)`` yields
accel's guided prediction (both halves set to it), without forking the pipeline.

A CFG batch is recognised by its two identical latent halves (every classic pipeline builds it with
``cat([latents] * 2)``); other calls pass through untouched.
"""
from __future__ import annotations

import inspect

import torch
from diffusers.hooks import ModelHook

from ..cache.state import RunState
from . import functional as G
from .methods import APG, FrequencyAwareCFG

GUIDANCE_HOOK = "accel.guidance"
_SAMPLE_ARGS = ("hidden_states", "sample")


def prediction_type(scheduler) -> str:
    pt = getattr(scheduler.config, "prediction_type", None)
    if pt is None and "FlowMatch" in type(scheduler).__name__:
        return "flow_prediction"
    if pt not in ("epsilon", "v_prediction", "flow_prediction"):
        raise ValueError(f"guidance supports epsilon, v and flow predictions; the scheduler says {pt!r}")
    return pt


class GuidanceHook(ModelHook):
    def __init__(self, method: APG | FrequencyAwareCFG, pipe, state: RunState, cond_first: bool) -> None:
        super().__init__()
        self.method = method
        self.pipe = pipe
        self.state = state
        self.cond_first = cond_first
        self._record = None
        self._running: torch.Tensor | None = None
        # kept as tensors until report(): a float() per step would wait for the accelerator every step
        self.update_norms: list[torch.Tensor] = []
        self.clips: list[torch.Tensor] = []
        self._t_pos: int | None = None

    def initialize_hook(self, module):
        params = list(inspect.signature(module.forward).parameters)
        self._t_pos = params.index("timestep") if "timestep" in params else None
        return module

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs)
        return self._guide(module, args, kwargs, out)

    @torch.compiler.disable
    def _guide(self, module, args, kwargs, out):
        if self.state.measuring:
            return out
        x = next((kwargs[k] for k in _SAMPLE_ARGS if k in kwargs), args[0] if args else None)
        t = kwargs.get("timestep", args[self._t_pos] if self._t_pos is not None and len(args) > self._t_pos else None)
        pred = out.sample if hasattr(out, "sample") else out[0]
        n = x.shape[0]
        if n % 2 or t is None or not torch.equal(x[: n // 2], x[n // 2 :]):
            return out  # not a CFG batch
        if self.state.record is not self._record:  # a new pipeline call: fresh momentum and statistics
            self._record, self._running = self.state.record, None
            self.update_norms, self.clips = [], []
        c_in = x.shape[1]
        p = pred[:, :c_in].float()
        first, second = p[: n // 2], p[n // 2 :]
        cond, uncond = (first, second) if self.cond_first else (second, first)
        guided = self._combine(cond, uncond, x[: n // 2].float(), t if torch.is_tensor(t) else torch.tensor([t], device=x.device))
        self.update_norms.append((guided - cond).flatten(1).norm(dim=1).mean().detach())
        new = pred.clone()
        new[: n // 2, :c_in] = guided.to(pred.dtype)
        new[n // 2 :, :c_in] = guided.to(pred.dtype)
        if hasattr(out, "sample"):
            out.sample = new
            return out
        return (new, *out[1:])

    def _combine(self, cond, uncond, x_t, t):
        m = self.method
        if isinstance(m, FrequencyAwareCFG):
            return G.frequency_aware_cfg(cond, uncond, m.scale_low, m.scale_high, m.cutoff)
        pt = prediction_type(self.pipe.scheduler)
        t = t.flatten()[: cond.shape[0]] if t.numel() > 1 else t.flatten().expand(cond.shape[0])
        a, s = G.alpha_sigma(self.pipe.scheduler, t, pt)
        d_c, d_u = G.to_x0(cond, x_t, a, s, pt), G.to_x0(uncond, x_t, a, s, pt)
        d, self._running, clipped = G.apg(d_c, d_u, m.scale, m.eta, m.momentum, self._running, m.norm_threshold)
        self.clips.append(clipped.detach().reshape(-1))
        return G.from_x0(d, x_t, a, s, pt)

    def report(self) -> dict:
        clips = torch.cat(self.clips).float().cpu() if self.clips else None
        return {"mean_update_norm": float(torch.stack(self.update_norms).cpu().mean()) if self.update_norms else 0.0,
                "clip_rate": float(clips.mean()) if clips is not None and len(clips) else 0.0,
                "guided_calls": len(self.update_norms)}
