"""Exact reuse of denoiser modules whose input is the same tensor at every step of a call.

Some denoisers project the prompt embeddings at every call although the pipeline passes the very
same tensor at every step: PixArt's ``caption_projection``, SD3's and FLUX's ``context_embedder``.
``CallInvariantHook`` computes such a module once per input: when it is called again with the same
tensor objects, unmodified (same identity and in-place version counter) and the same keyword
arguments, it returns the stored output, which is the output the module would compute. It holds
its input, so the identity cannot be taken over by a new tensor, and forgets both at every new
pipeline call. With grad enabled it always computes, so no graph is shared between steps.
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


def version_of(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter, or None for an inference-mode tensor: it has none, so an in-place
    write could not be seen and nothing may be reused by version."""
    return None if t.is_inference() else t._version


def _signature(args: tuple, kwargs: dict) -> tuple | None:
    """Identity and version of every tensor argument; None when a non-tensor argument (or a tensor without a
    version counter) makes reuse unsafe."""
    sig = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            if (v := version_of(a)) is None:
                return None
            sig.append((id(a), v))
        elif a is not None:
            return None
    return tuple(sig), tuple(kwargs)


class CallInvariantHook(ModelHook):
    """Returns the stored output when the module is called again with the same, unmodified input tensors.

    Keeps up to ``max_entries`` inputs per call, so pipelines that run the denoiser once per branch with
    different prompt tensors (e.g. FLUX's true CFG) reuse each branch's projection.
    """

    def __init__(self, state=None, max_entries: int = 4) -> None:
        super().__init__()
        self.state = state  # the RunState: its measuring passes (accel.stats counting MACs) are computed, not counted
        self.max_entries = max_entries
        self._entries: dict = {}  # signature -> (inputs held, output)
        self.hits = 0

    def reset(self) -> None:
        """Forget the stored inputs and outputs and zero ``hits`` (a new pipeline call)."""
        self._entries = {}
        self.hits = 0

    @torch.compiler.disable
    def _lookup(self, args: tuple, kwargs: dict):
        if (self.state is not None and not self.state.active) or torch.is_grad_enabled():
            return None, None  # measuring, other pipelines' calls and autograd (training) always compute
        key = _signature(args, kwargs)
        hit = self._entries.get(key) if key is not None else None
        if hit is not None:
            self.hits += 1
            return key, hit[1]
        return key, None

    @torch.compiler.disable
    def _store(self, key, args: tuple, kwargs: dict, out) -> None:
        if key is None or not isinstance(out, torch.Tensor) or out.requires_grad:
            return  # under autograd nothing is shared between steps
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = ((args, kwargs), out)

    def new_forward(self, module, *args, **kwargs):
        key, out = self._lookup(args, kwargs)
        if out is not None:
            return out
        out = self.fn_ref.original_forward(*args, **kwargs)
        self._store(key, args, kwargs, out)
        return out
