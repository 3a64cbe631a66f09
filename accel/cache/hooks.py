"""The two hooks accel registers through diffusers' ``HookRegistry``.

- ``DenoiserStepHook`` on the denoiser: tells the run state which step and branch a call belongs to.
- ``ComponentCacheHook`` on every cacheable component: returns the stored output when the policy
  says reuse, otherwise runs the component and stores its output.

Data-dependent decisions live in ``RunState`` methods marked ``torch.compiler.disable``, so a
compiled block breaks its graph only there and does not recompile from step to step.
"""
from __future__ import annotations

import inspect

from diffusers.hooks import ModelHook

from .state import Refresh, RunState

STEP_HOOK = "accel.step"
COMPONENT_HOOK = "accel.cache"


class DenoiserStepHook(ModelHook):
    _is_stateful = True  # diffusers resets it at the end of every pipeline call (``reset_stateful_hooks``)

    def __init__(self, state: RunState, timestep_arg: str = "timestep") -> None:
        super().__init__()
        self.state = state
        self.timestep_arg = timestep_arg
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
            self.state.on_denoiser_call(t, args, kwargs)
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
