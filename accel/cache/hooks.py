"""The two hooks accel registers through diffusers' ``HookRegistry``.

- ``DenoiserStepHook`` on the denoiser: tells the run state which step and branch a call belongs to.
- ``ComponentCacheHook`` on every cacheable component: returns the stored output when the policy
  says reuse, otherwise runs the component and stores its output.
- ``ResidualCacheHook`` on every block of a generic layout (the whole block is the component): stores the
  block's residual (output minus input, on the hidden states and the encoder hidden states it returns) and on
  reuse returns the input plus the stored residual, as diffusers' FirstBlockCache and cache-dit do.

Data-dependent decisions live in ``RunState`` methods marked ``torch.compiler.disable``, so a
compiled block breaks its graph only there and does not recompile from step to step.
"""
from __future__ import annotations

import inspect

import torch
from diffusers.hooks import ModelHook

from ..pipelines.families import BlockIO
from .state import Refresh, RunState
from ..parallel import inner_input_splits

STEP_HOOK = "accel.step"
COMPONENT_HOOK = "accel.cache"
_TENSOR = torch.empty(0)  # the template of a block that returns its hidden states tensor itself


class DenoiserStepHook(ModelHook):
    _is_stateful = True  # diffusers resets it at the end of every pipeline call (``reset_stateful_hooks``)

    def __init__(self, state: RunState, timestep_arg: str = "timestep", expert: int = 0) -> None:
        super().__init__()
        self.state = state
        self.timestep_arg = timestep_arg
        self.expert = expert  # which of the pipeline's denoisers this hook sits on
        self._pos: int | None = None

    def initialize_hook(self, module):
        params = list(inspect.signature(module.forward).parameters)
        self._pos = params.index(self.timestep_arg) if self.timestep_arg in params else None
        return module

    def reset_state(self, module):
        self.state.reset()  # the call ended: forget its stored outputs; the next call starts afresh
        return module

    def new_forward(self, module, *args, **kwargs):
        t = kwargs.get(self.timestep_arg)
        if t is None and self._pos is not None and len(args) > self._pos:
            t = args[self._pos]
        if t is not None:
            self.state.on_denoiser_call(t, args, kwargs, self.expert)
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.state.on_denoiser_return()
        return out


class ComponentCacheHook(ModelHook):
    def __init__(self, state: RunState, slot: int) -> None:
        super().__init__()
        self.state = state
        self.slot = slot

    def new_forward(self, module, *args, **kwargs):
        cached = self.state.lookup(self.slot, args, kwargs)
        if isinstance(cached, Refresh):
            from .token_refresh import partial_forward

            out = partial_forward(module, self.fn_ref.original_forward, cached, args, kwargs)
            if out is not None:
                self.state.count_partial(self.slot, cached.fraction)
                return out
        elif cached is not None:
            return cached
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.state.store(self.slot, out, args, kwargs)
        return out


class ResidualCacheHook(ModelHook):
    def __init__(self, state: RunState, slot: int, io: BlockIO) -> None:
        super().__init__()
        self.state = state
        self.slot = slot
        self.io = io
        self._template = None  # the layout of the block's return value, without its hidden states

    def new_forward(self, module, *args, **kwargs):
        # a context-parallel split on this very block runs inside this hook: the residual is taken against the
        # shard the block receives (and a reuse returns that shard), not against the whole input
        seen_args, seen_kwargs = args, kwargs
        for split in inner_input_splits(module, self):
            seen_args, seen_kwargs = split.pre_forward(module, *seen_args, **dict(seen_kwargs))
        hidden, encoder = self.io.inputs(seen_args, seen_kwargs)
        cached = self.state.lookup(self.slot, args, kwargs)
        if cached is not None and not isinstance(cached, Refresh) and self._template is not None:
            res_h, res_e = cached
            return self.io.rebuild(self._template, hidden + res_h, encoder + res_e if res_e is not None else None)
        out = self.fn_ref.original_forward(*args, **kwargs)
        if not self.state.active:
            return out
        residual = None
        if self.state.policy is not None or self.state.observers:
            out_h, out_e = self.io.outputs(out)
            if out_h.shape != hidden.shape or (out_e is not None and (encoder is None or out_e.shape != encoder.shape)):
                raise ValueError(f"{type(module).__name__} changes the shape of its hidden states, so its residual "
                                 "cannot be cached: it needs a family layout of its own (register_family)")
            residual = (out_h - hidden, out_e - encoder if out_e is not None else None)
            self._template = self.io.rebuild(out, None, None) if not isinstance(out, torch.Tensor) else _TENSOR
        self.state.store(self.slot, residual, args, kwargs)
        return out
