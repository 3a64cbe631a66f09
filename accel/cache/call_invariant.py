"""Exact reuse of denoiser modules whose input is the same tensor at every step of a call.

Some denoisers project the prompt embeddings at every call although the pipeline passes the very
same tensor at every step: PixArt's ``caption_projection``, SD3's and FLUX's ``context_embedder``.
``CallInvariantHook`` computes such a module once per input: when it is called again with the same
tensor objects, unmodified (same identity and in-place version counter) and the same keyword
arguments, it returns the stored output, which is the output the module would compute. It holds
its input, so the identity cannot be taken over by a new tensor, and forgets both at every new
pipeline call. Under autograd (an output that requires grad) it always computes, so no graph is
shared between steps.
"""
from __future__ import annotations

import torch
from diffusers.hooks import ModelHook

INVARIANT_HOOK = "accel.invariant"

# family (accel layout name) -> denoiser submodules whose inputs the pipelines keep fixed within a call
CALL_INVARIANT: dict[str, tuple[str, ...]] = {
    "pixart": ("caption_projection",),
    "sd3": ("context_embedder",),
    "flux": ("context_embedder",),
}


def _signature(args: tuple, kwargs: dict) -> tuple | None:
    """Identity and version of every tensor argument; None when a non-tensor argument makes reuse unsafe."""
    sig = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            sig.append((id(a), a._version))
        elif a is not None:
            return None
    return tuple(sig), tuple(kwargs)


class CallInvariantHook(ModelHook):
    """Returns the stored output when the module is called again with the same, unmodified input tensors."""

    def __init__(self, state=None) -> None:
        super().__init__()
        self.state = state  # the RunState: its measuring passes (accel.stats counting MACs) are computed, not counted
        self._key = None
        self._held: tuple = ()
        self._out = None
        self.hits = 0

    def reset(self) -> None:
        self._key, self._held, self._out = None, (), None

    def new_forward(self, module, *args, **kwargs):
        if self.state is not None and self.state.measuring:
            return self.fn_ref.original_forward(*args, **kwargs)
        key = _signature(args, kwargs)
        if key is not None and key == self._key:
            self.hits += 1
            return self._out
        out = self.fn_ref.original_forward(*args, **kwargs)
        if key is not None and isinstance(out, torch.Tensor) and not out.requires_grad:
            self._key, self._held, self._out = key, (args, kwargs), out
        else:
            self.reset()
        return out
