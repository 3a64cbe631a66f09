"""Token-wise refresh (in the manner of ToCa): at cached steps recompute only the tokens whose input
changed most since they were last computed, and keep the cached output for the rest.

Departure from ToCa: tokens are scored by the L2 change of the component's input per token, not by
attention-map scores, because the scores must come without computing the attention they would save.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention

from .policy import COMPUTE, CachePolicy, Row
from .state import Refresh


@dataclass
class TokenRefresh(CachePolicy):
    """Full compute every ``interval`` steps; in between each component recomputes ``ratio`` of its tokens.

    Needs accel's attention processors for attention components (``accel.apply`` installs them);
    components that are neither attention nor a token-wise feed-forward compute in full.

    Example:
        >>> accel.apply(pipe, cache=accel.TokenRefresh(interval=4, ratio=0.25))  # doctest: +SKIP
    """

    interval: int = 3
    ratio: float = 0.25
    keeps_inputs: ClassVar[bool] = True
    fast_path: ClassVar[bool] = False  # a block is never wholly reused: its tokens are refreshed

    def __post_init__(self) -> None:
        if self.interval < 1 or not 0 < self.ratio < 1:
            raise ValueError("interval >= 1 and 0 < ratio < 1")
        self._rows: dict[int, list] = {}
        self._shape: tuple[int, int] | None = None

    def bind(self, num_blocks: int, num_components: int) -> None:
        self._shape = (num_blocks, num_components)

    def row(self, step: int) -> Row:
        b, c = self._shape
        v = COMPUTE if step % self.interval == 0 else self.ratio
        return [[v] * c for _ in range(b)]


def _scatter_rows(base: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    out = base.clone()
    out.scatter_(1, idx[..., None].expand(-1, -1, base.shape[-1]), rows.to(base.dtype))
    return out


def partial_forward(module, forward, hit: Refresh, args: tuple, kwargs: dict):
    """Recompute the top tokens of a token-wise component; None when the component cannot do it."""
    entry = hit.entry
    y_prev, x_prev, core = entry.output, entry.inputs, entry.core
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not isinstance(y_prev, torch.Tensor):
        return None
    n = x.shape[1]
    m = max(1, math.ceil(hit.fraction * n))
    idx = (x - x_prev).float().norm(dim=-1).topk(m, dim=1).indices  # [B, m]
    if isinstance(module, Attention) and type(module.processor).__name__ == "AccelAttnProcessor":
        if core is None:
            return None
        rest = dict(kwargs)
        rest.pop("hidden_states", None)
        rows = forward(x, *args[1:], accel_q_index=idx, accel_core_out=core, **rest)
    elif isinstance(module, FeedForward):
        xr = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        rows = forward(xr, *args[1:], **kwargs)
    else:
        return None
    y = _scatter_rows(y_prev, idx, rows)
    entry.output = y
    entry.inputs = _scatter_rows(x_prev, idx, torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1])))
    return y
