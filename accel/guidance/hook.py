"""The guidance hook: turns the pipeline's own classifier-free guidance into accel's guided prediction,
without forking the pipeline. Both forms of CFG are served:

- one batched call (PixArt, SD, SDXL, SD3, DiT): the CFG batch is recognised by its two identical latent
  halves (``cat([latents] * 2)``); both halves of the output are set to the guided prediction, so the
  pipeline's ``u + w (c - u)`` yields it;
- two calls per step (FLUX's true CFG, and any pipeline that calls the denoiser once per branch): the
  second call of a step passes the same latents tensor as the first; the first call's output (already
  returned, not yet combined) is overwritten in place with the guided prediction and the second call
  returns it too, so ``u + w (c - u)`` again yields it for any w. The first call is the conditional one
  unless the pipeline's cache context names it "uncond".

A pipeline call with neither form (guidance-distilled FLUX, guidance_scale <= 1) has nothing to guide:
the hook passes it through and warns once.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import StateManager

from ..cache.state import RunState
from ..solvers.noise_schedule import NoiseSchedule, current_timestep
from . import functional as G
from .methods import APG, FrequencyAwareCFG

GUIDANCE_HOOK = "accel.guidance"
_SAMPLE_ARGS = ("hidden_states", "sample", "x")  # the latents argument of the denoiser (Z-Image: x)
_TIME_ARGS = ("timestep", "t", "timesteps")
NOTHING_TO_GUIDE = ("accel guidance: this pipeline call has no classifier-free guidance (one denoiser call per step, "
                    "no CFG batch), so there is nothing to guide and the output is the plain one; pass "
                    "guidance_scale > 1 (FLUX: true_cfg_scale > 1 and a negative prompt)")


def prediction_type(scheduler) -> str:
    """The prediction type of a pipeline's scheduler (``NoiseSchedule``), or a clear error."""
    return NoiseSchedule.of(scheduler).prediction_type


class _ContextState:
    """Empty per-context state: the hook only reads the name of the context the pipeline sets."""

    def reset(self) -> None:
        pass


@dataclass
class _Pending:
    """The first call of a step in two-call CFG: its latents (identity marks the step) and output."""

    x: torch.Tensor
    t: torch.Tensor | float
    pred: torch.Tensor
    uncond: bool


class GuidanceHook(ModelHook):
    _is_stateful = True  # so diffusers hands it the cache context ("cond" / "uncond") a pipeline sets

    def __init__(self, method: APG | FrequencyAwareCFG, pipe, state: RunState, cond_first: bool,
                 timestep_scale: float = 1.0, output_sign: float = 1.0) -> None:
        super().__init__()
        self.method = method
        self.pipe = pipe
        self.state = state
        self.cond_first = cond_first
        self.timestep_scale = timestep_scale
        self.output_sign = output_sign  # -1: the denoiser returns minus the scheduler's prediction (Z-Image)
        self.context = StateManager(_ContextState)
        self._record = None
        self._running: torch.Tensor | None = None
        self._pending: _Pending | None = None
        self._unguided_steps = 0
        self.warned = False
        self._schedule: tuple[object, NoiseSchedule] | None = None
        self._grid: tuple[object, tuple[int, int]] | None = None
        # kept as tensors until report(): a float() per step would wait for the accelerator every step
        self.update_norms: list[torch.Tensor] = []
        self.clips: list[torch.Tensor] = []
        self._t_pos: int | None = None
        self._x_pos = 0
        self._batched: dict[int, bool] = {}  # batch size -> one CFG batch, for the current pipeline call

    def initialize_hook(self, module):
        params = list(inspect.signature(module.forward).parameters)
        self._t_pos = next((params.index(n) for n in _TIME_ARGS if n in params), None)
        self._x_pos = next((params.index(n) for n in _SAMPLE_ARGS if n in params), 0)
        return module

    def reset_state(self, module):
        self._pending = None
        return module

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs)
        return self._guide(module, args, kwargs, out)

    @staticmethod
    def _arg(args, kwargs, names, pos):
        found = next((kwargs[k] for k in names if k in kwargs), None)
        return found if found is not None else (args[pos] if pos is not None and len(args) > pos else None)

    @torch.compiler.disable
    def _guide(self, module, args, kwargs, out):
        if not self.state.active:  # measuring MACs, or another pipeline's call through shared modules
            return out
        given = self._arg(args, kwargs, _SAMPLE_ARGS, self._x_pos)
        t = self._arg(args, kwargs, _TIME_ARGS, self._t_pos)
        if t is None or given is None:
            return out
        if self.state.record is not self._record:  # a new pipeline call: fresh momentum and statistics
            self._record, self._running, self._pending = self.state.record, None, None
            self._unguided_steps = 0
            self.update_norms, self.clips = [], []
            self._batched = {}
        listed = isinstance(given, (list, tuple))  # Z-Image: a list of per-sample latents in, a list out
        x = torch.stack(list(given)) if listed else given
        raw = out.sample if hasattr(out, "sample") else out[0]
        pred = torch.stack(list(raw)) if listed else raw
        n = x.shape[0]
        if self._is_cfg_batch(x):  # one batched CFG call
            first, second = self._part(pred[: n // 2], x), self._part(pred[n // 2:], x)
            cond, uncond = (first, second) if self.cond_first else (second, first)
            guided = self._guided(cond, uncond, x[: n // 2], t, kwargs).to(pred.dtype)
            new = pred.clone()
            self._part(new[: n // 2], x).copy_(guided)
            self._part(new[n // 2:], x).copy_(guided)
            return self._replace(out, list(new.unbind(0)) if listed else new)
        pending, self._pending = self._pending, None
        if pending is not None and pending.x is given and not listed:  # the second call of a two-call CFG step
            first, second = self._part(pending.pred, x), self._part(pred, x)
            cond, uncond = (second, first) if pending.uncond else (first, second)
            guided = self._guided(cond, uncond, x, t, kwargs).to(pred.dtype)
            first.copy_(guided)  # the first output, held by the pipeline until it combines the two
            new = pred.clone()
            self._part(new, x).copy_(guided)
            return self._replace(out, new)
        if pending is not None:  # the previous step had one call and no CFG batch
            self._unguided_steps += 1
            if not self.warned:
                self.warned = True
                warnings.warn(NOTHING_TO_GUIDE, UserWarning, stacklevel=2)
        self._pending = _Pending(given, t, pred, uncond=self._context_name() == "uncond")
        return out

    def _is_cfg_batch(self, x: torch.Tensor) -> bool:
        """Whether the latents are one CFG batch (the same latents twice). Read from the values (a wait on the
        device) at the first call of each batch size in a pipeline call, then known for the rest of it."""
        n = x.shape[0]
        if n not in self._batched:
            self._batched[n] = n % 2 == 0 and torch.equal(x[: n // 2], x[n // 2:])
        return self._batched[n]

    def _context_name(self) -> str | None:
        try:
            return self.context.context.name
        except ValueError:  # the pipeline sets no cache context
            return None

    @staticmethod
    def _part(pred: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The prediction of x (DiT's learned-sigma channels left out): a view."""
        return pred if pred.shape[1:] == x.shape[1:] else pred[:, : x.shape[1]]

    @staticmethod
    def _replace(out, new):
        if hasattr(out, "sample"):
            out.sample = new
            return out
        return (new, *out[1:])

    def _noise_schedule(self) -> NoiseSchedule:
        sched = self.pipe.scheduler
        if self._schedule is None or self._schedule[0] is not sched:
            self._schedule = (sched, NoiseSchedule.of(sched))
        return self._schedule[1]

    def _spatial(self, v: torch.Tensor, kwargs) -> torch.Tensor:
        """Packed latent tokens [B, N, 4C] as the [B, C, H, W] latents they pack (diffusers' 2x2 packing of FLUX,
        FLUX.2, Qwen-Image, Chroma), the grid read once per ids tensor from ``img_ids`` or ``img_shapes``; LTX-Video's
        tokens [B, F H W, C] as [B, C, F, H, W] (its ``num_frames``, ``height``, ``width``); other latents as they
        are."""
        if v.dim() != 3:
            return v
        grid = tuple(kwargs.get(k) for k in ("num_frames", "height", "width"))
        if all(isinstance(g, int) for g in grid) and grid[0] * grid[1] * grid[2] == v.shape[1]:
            # LTX-Video: tokens of a [frames, rows, cols] latent grid, one latent each (patch size 1)
            return v.view(v.shape[0], *grid, v.shape[2]).permute(0, 4, 1, 2, 3)
        ids = kwargs.get("img_ids", kwargs.get("img_shapes"))
        if ids is None or v.shape[-1] % 4:
            raise ValueError("frequency-aware CFG needs the spatial grid of packed latent tokens; this denoiser is "
                             "passed no img_ids or img_shapes to read it from")
        if self._grid is None or self._grid[0] is not ids:
            if torch.is_tensor(ids):  # rows of (.., row, col, ..) positions
                ids2 = ids[-1] if ids.dim() == 3 else ids
                grid = (int(ids2[:, 1].max()) + 1, int(ids2[:, 2].max()) + 1)
            else:  # Qwen-Image: per sample, a list of (frames, rows, cols)
                grid = tuple(int(d) for d in ids[0][-1][-2:])
            if grid[0] * grid[1] != v.shape[1]:
                raise ValueError(f"frequency-aware CFG: a {grid[0]}x{grid[1]} token grid does not hold the "
                                 f"{v.shape[1]} latent tokens")
            self._grid = (ids, grid)
        return G.unpack_tokens(v, *self._grid[1])

    def _guided(self, cond, uncond, x_t, t, kwargs) -> torch.Tensor:
        if x_t.dim() == cond.dim() and x_t.shape[1] > cond.shape[1]:
            x_t = x_t[:, : cond.shape[1]]  # the latents ahead of conditioning channels (HunyuanVideo-1.5's image)
        sign = self.output_sign
        guided = sign * self._combine(sign * cond.float(), sign * uncond.float(), x_t.float(), t, kwargs)
        self.update_norms.append((guided - cond.float()).flatten(1).norm(dim=1).mean().detach())
        return guided

    def _combine(self, cond, uncond, x_t, t, kwargs):
        m = self.method
        if isinstance(m, FrequencyAwareCFG):
            c, u = self._spatial(cond, kwargs), self._spatial(uncond, kwargs)
            out = G.frequency_aware_cfg(c, u, m.scale_low, m.scale_high, m.cutoff)
            if cond.dim() == 3:  # back to the tokens they came as
                return out.flatten(2).transpose(1, 2) if out.dim() == 5 else G.pack_tokens(out)
            return out
        ns = self._noise_schedule()
        a, s = ns.alpha_sigma(self._scheduler_time(t, cond.shape[0], x_t.device))
        pt = ns.prediction_type
        d_c, d_u = G.to_x0(cond, x_t, a, s, pt), G.to_x0(uncond, x_t, a, s, pt)
        d, self._running, clipped = G.apg(d_c, d_u, m.scale, m.eta, m.momentum, self._running, m.norm_threshold)
        self.clips.append(clipped.detach().reshape(-1))
        return G.from_x0(d, x_t, a, s, pt)

    def _scheduler_time(self, t, n: int, device) -> torch.Tensor:
        """The step's timestep in the scheduler's units for ``n`` samples: the scheduler's own (so the denoiser's
        time convention does not matter: FLUX's t / 1000, Z-Image's 1 - t / 1000, per-token times), else the
        denoiser's divided by the family's scale."""
        own = current_timestep(self.pipe.scheduler)
        if own is not None:
            return torch.as_tensor(own, device=device).float().flatten()[:1].expand(n)
        t = t if torch.is_tensor(t) else torch.tensor([t], device=device)
        t = t.flatten()[:n] if t.numel() > 1 else t.flatten().expand(n)
        return t.float() / self.timestep_scale

    def report(self) -> dict:
        return merge_reports([self])


def merge_reports(hooks: list[GuidanceHook]) -> dict:
    """What the guidance hooks of one pipeline did in its last call (one hook per denoiser the pipeline calls)."""
    norms = [n for h in hooks for n in h.update_norms]
    clips = torch.cat([c for h in hooks for c in h.clips]).float().cpu() if any(h.clips for h in hooks) else None
    return {"mean_update_norm": float(torch.stack(norms).cpu().mean()) if norms else 0.0,
            "clip_rate": float(clips.mean()) if clips is not None and len(clips) else 0.0,
            "guided_calls": len(norms)}
