"""accel's attention processor for the cached paths: Triton kernels on CUDA, torch SDPA elsewhere.

- Cross-attention keys and values of the text are computed once per pipeline call and reused at
  every step while the text is the same unwritten memory (the pipeline's prompt embeddings, or accel's
  call-invariant projection of them); nothing is compared by value, so the per-call path never waits on
  the device.
- ``accel_q_index`` / ``accel_core_out``: attention for a subset of query tokens against all keys,
  written straight into a cached pre-projection buffer (the partial recompute of token refresh).
- With the torch backend and no partial recompute the output is bit-identical to diffusers'
  ``AttnProcessor2_0``; anything this processor does not handle goes to the module's original processor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels.attention import attention_reference
from .kernels.select import Backend, resolve
from .cache.call_invariant import version_of


class AccelAttnProcessor:
    def __init__(self, original, backend: str = "auto", counters: dict | None = None) -> None:
        self.original = original
        self.backend = Backend(backend)
        self.counters = counters if counters is not None else {}
        self._text = None  # (tensor, version, key, value)
        self.keep_core = False  # keep the pre-projection output for token refresh (accel.apply sets it)
        self.last_core: torch.Tensor | None = None
        self._padding: dict = {}  # mask shape -> whether the mask is a key-padding bias, decided once per call

    def reset(self) -> None:
        self._text = None
        self._padding = {}

    def _supported(self, attn, hidden_states, kwargs) -> bool:
        return (hidden_states.ndim == 3 and attn.spatial_norm is None and attn.group_norm is None
                and not attn.residual_connection and attn.rescale_output_factor == 1.0 and not kwargs
                and not attn.norm_cross)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 accel_q_index: torch.Tensor | None = None, accel_core_out: torch.Tensor | None = None, **kwargs):
        if not self._supported(attn, hidden_states, kwargs):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        bsz = hidden_states.shape[0]
        cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if cross else hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, ctx.shape[1], bsz)
            attention_mask = attention_mask.view(bsz, attn.heads, -1, attention_mask.shape[-1])
        q_in = hidden_states
        if accel_q_index is not None:
            q_in = torch.gather(hidden_states, 1, accel_q_index[..., None].expand(-1, -1, hidden_states.shape[-1]))
        query = attn.to_q(q_in)
        key, value = self._kv(attn, ctx, cross)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(bsz, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(bsz, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(bsz, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        backend = resolve(self.backend, query.device)
        self.counters[backend.value] = self.counters.get(backend.value, 0) + 1
        key_mask = self._key_mask(attention_mask) if backend is Backend.TRITON else None
        if accel_q_index is not None:
            core = self._partial(query, key, value, attention_mask, key_mask, accel_q_index, accel_core_out, backend)
        elif backend is Backend.TRITON and (attention_mask is None or key_mask is not None):
            from .kernels.attention import triton_attention

            core = triton_attention(query, key, value, key_mask=key_mask)
        else:
            core = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                  is_causal=False)
        if self.keep_core:
            self.last_core = core
        out = core.transpose(1, 2).reshape(bsz, -1, attn.heads * head_dim).to(query.dtype)
        if accel_q_index is not None:  # project only the refreshed rows
            rows = torch.gather(out, 1, accel_q_index[..., None].expand(-1, -1, out.shape[-1]))
            return attn.to_out[1](attn.to_out[0](rows))
        return attn.to_out[1](attn.to_out[0](out))

    def _kv(self, attn, ctx, cross: bool):
        # the same memory, unmodified (accel's call-invariant hook hands one projection to every step, seen
        # through views) is reused without reading it; any other tensor is projected
        if cross and self._text is not None and _same_memory(self._text[0], self._text[1], ctx):
            self.counters["text_kv_reused"] = self.counters.get("text_kv_reused", 0) + 1
            return self._text[2], self._text[3]
        key, value = attn.to_k(ctx), attn.to_v(ctx)
        if cross:
            self._text = (ctx, version_of(ctx), key, value)
        return key, value

    def _key_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The Triton kernel's [B, Nk] keep-mask when the additive mask is a pure key-padding bias. Whether it is
        one is read from the values (a wait on the device) once per call and mask shape, not at every step."""
        if mask is None:
            return None
        kind = self._padding.get(mask.shape)
        if kind is None:
            kind = self._padding[mask.shape] = _key_padding(mask) is not None
        return mask[:, 0, 0, :] > -1.0 if kind else None

    @staticmethod
    def _partial(query, key, value, mask, key_mask, idx, core_out, backend):
        if core_out is None:
            raise ValueError("partial recompute needs the cached attention buffer (accel_core_out)")
        if backend is Backend.TRITON and (mask is None or key_mask is not None):
            from .kernels.attention import triton_attention

            return triton_attention(query, key, value, key_mask=key_mask, q_index=idx, out=core_out, q_compact=True)
        rows = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        core_out.scatter_(2, idx[:, None, :, None].expand(-1, query.shape[1], -1, query.shape[3]), rows)
        return core_out


def _same_memory(held: torch.Tensor, version: int | None, x: torch.Tensor) -> bool:
    """``x`` reads the memory of ``held`` (kept alive, so its address is not reused) the same way, unwritten since
    ``version`` (views share the version counter; inference-mode tensors have none, so they never match)."""
    return (version is not None and x.data_ptr() == held.data_ptr() and x.shape == held.shape
            and x.stride() == held.stride() and x.dtype == held.dtype and x.device == held.device
            and version_of(x) == version)


def _key_padding(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A [B, Nk] keep-mask when the additive mask is a pure key-padding bias (same for every head and query)."""
    if mask is None:
        return None
    if mask.shape[1] == 1 or (mask == mask[:, :1]).all():
        if mask.shape[2] == 1 or (mask == mask[:, :, :1]).all():
            return mask[:, 0, 0, :] > -1.0
    return None


__all__ = ["AccelAttnProcessor", "attention_reference"]
