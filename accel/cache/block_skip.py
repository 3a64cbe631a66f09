"""Fast path for a block whose every component is reused at a step.

With every component's output served from the cache, a block still runs its own glue (norms,
adaptive-norm modulation, gates, residual adds), and on small or CPU-bound models that glue is a
large share of a cached step. When all components of a block are reused, the block's output is a
function of its input, its timestep modulation and the reused outputs alone; this module computes
exactly that, with the same floating-point operations in the same order as the block's forward,
so the result equals the hooked forward (the reference path, ``module.forward`` with the component
hooks) bit for bit. ``tests/test_block_skip.py`` holds the two equal. The combines work in place where
that is exact (the same products and sums, commuted, which IEEE arithmetic leaves bit for bit
unchanged), into tensors of their own or forecasts made for them: a cached step is mostly such
elementwise operations, and a new activation-sized tensor per operation adds to each (on the 2-core CPU
here, 10-30% for the reference pipelines' sizes).

A fast path exists per block type; blocks without one (or in a configuration it does not cover)
simply run their forward with the component hooks.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers.hooks import ModelHook
from torch import nn

BLOCK_HOOK = "accel.block"

# combine(block, hidden_states, kwargs-by-name, reused outputs in component order, fresh) -> block output;
# ``fresh[i]``: output i is a new tensor (a forecast) that combine may overwrite, not the cache's own entry
Combine = Callable[[nn.Module, torch.Tensor, dict, list, list], torch.Tensor]


def _into(big: torch.Tensor, small: torch.Tensor) -> bool:
    """Whether ``big op small`` has ``big``'s shape and dtype (so it can be written into ``big``)."""
    if small.ndim > big.ndim or torch.result_type(big, small) != big.dtype:
        return False
    return all(s == 1 or s == b for s, b in zip(reversed(small.shape), reversed(big.shape)))


def _gate(gate: torch.Tensor, out: torch.Tensor, fresh: bool) -> torch.Tensor:
    """``gate * out``, written into ``out`` when it is fresh and the product fits it."""
    return out.mul_(gate) if fresh and _into(out, gate) else gate * out


def _add(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``h + y``, written into ``h`` (a tensor of the combine's own) when the sum fits it."""
    return h.add_(y) if _into(h, y) else h + y


@dataclass(frozen=True)
class BlockFastPath:
    """The exact output algebra of one block type, given the reused outputs of its components."""

    components: tuple[str, ...]  # the component attributes it needs, in the order ``combine`` takes them
    applies: Callable[[nn.Module], bool]  # whether this block instance's configuration is covered
    combine: Combine
    needs: tuple[str, ...]  # forward arguments ``combine`` reads besides hidden_states
    # a weight ``combine`` reads: when it is not on the input's device (offloading hooks of the block have not
    # loaded it, e.g. diffusers group offloading or accelerate's sequential offload), the block runs its forward
    probe: Callable[[nn.Module], torch.Tensor] = lambda block: next(block.parameters())


def _pixart_applies(block: nn.Module) -> bool:
    return (type(block).__name__ == "BasicTransformerBlock" and getattr(block, "norm_type", None) == "ada_norm_single"
            and block.attn2 is not None and block.pos_embed is None and not block.only_cross_attention
            and not hasattr(block, "fuser"))


def _pixart_combine(block: nn.Module, x: torch.Tensor, kw: dict, outs: list, fresh: list) -> torch.Tensor:
    """``BasicTransformerBlock.forward`` with ``norm_type="ada_norm_single"`` (PixArt), components given."""
    a1, a2, ff = outs
    t = kw["timestep"]
    mod = (block.scale_shift_table[None] + t.reshape(x.shape[0], 6, -1)).chunk(6, dim=1)
    h = _add(_gate(mod[2], a1, fresh[0]), x)  # gate_msa * attn1 + residual
    if h.ndim == 4:
        h = h.squeeze(1)
    h = _add(h, a2)
    h = _add(h, _gate(mod[5], ff, fresh[2]))  # gate_mlp * ff + residual
    return h.squeeze(1) if h.ndim == 4 else h


def _dit_applies(block: nn.Module) -> bool:
    return (type(block).__name__ == "BasicTransformerBlock" and getattr(block, "norm_type", None) == "ada_norm_zero"
            and block.attn2 is None and block.pos_embed is None and not block.only_cross_attention
            and not hasattr(block, "fuser") and getattr(block.norm1, "emb", None) is not None)


def _dit_combine(block: nn.Module, x: torch.Tensor, kw: dict, outs: list, fresh: list) -> torch.Tensor:
    """``BasicTransformerBlock.forward`` with ``norm_type="ada_norm_zero"`` (DiT), components given: the gates
    still need the block's own timestep and class embedding (``AdaLayerNormZero``), the norms do not run."""
    a1, ff = outs
    n1 = block.norm1
    emb = n1.linear(n1.silu(n1.emb(kw["timestep"], kw["class_labels"], hidden_dtype=x.dtype)))
    gates = emb.chunk(6, dim=1)
    h = _add(_gate(gates[2].unsqueeze(1), a1, fresh[0]), x)  # gate_msa * attn1 + residual
    if h.ndim == 4:
        h = h.squeeze(1)
    h = _add(h, _gate(gates[5].unsqueeze(1), ff, fresh[1]))  # gate_mlp * ff + residual
    return h.squeeze(1) if h.ndim == 4 else h


FAST_PATHS: dict[str, BlockFastPath] = {
    "pixart": BlockFastPath(("attn1", "attn2", "ff"), _pixart_applies, _pixart_combine, ("timestep",),
                            lambda block: block.scale_shift_table),
    "dit": BlockFastPath(("attn1", "ff"), _dit_applies, _dit_combine, ("timestep", "class_labels"),
                         lambda block: block.norm1.linear.weight),
}


class BlockSkipHook(ModelHook):
    """On a block: when the run state reuses every component of the block at this step, returns the
    block's output from the reused outputs (``BlockFastPath.combine``); otherwise runs the block."""

    def __init__(self, state, slots: list[int], path: BlockFastPath) -> None:
        super().__init__()
        self.state = state
        self.slots = slots
        self.path = path
        self._pos: dict[str, int] = {}

    def initialize_hook(self, module):
        params = list(inspect.signature(module.forward).parameters)
        self._pos = {n: params.index(n) for n in ("hidden_states", *self.path.needs) if n in params}
        return module

    def _arg(self, name: str, args: tuple, kwargs: dict):
        if name in kwargs:
            return kwargs[name]
        i = self._pos.get(name)
        return args[i] if i is not None and i < len(args) else None

    def new_forward(self, module, *args, **kwargs):
        x = self._arg("hidden_states", args, kwargs)
        ready = isinstance(x, torch.Tensor) and self.path.probe(module).device == x.device
        found = self.state.lookup_block(self.slots, x) if ready else None
        if found is not None:
            outs, fresh = found
            kw = {n: self._arg(n, args, kwargs) for n in self.path.needs}
            return self.path.combine(module, x, kw, outs, fresh)
        return self.fn_ref.original_forward(*args, **kwargs)
