"""Fused attention forward (flash-attention style, online softmax) in Triton, with a torch reference.

Contract: ``q`` [B, H, Nq, D], ``k``/``v`` [B, H, Nk, D] (any strides), fp16/bf16/fp32, D <= 128
(64, 72 and 128 are the families' head dims; D is padded to a power of two inside), an optional key
padding mask [B, Nk] (nonzero = attend), and an optional query index [B, M]: attention is then
computed only for those query rows and written into ``out`` at those rows (gather and scatter
fused), leaving every other row of ``out`` untouched.

Triton runs on CUDA GPUs; on a CPU it runs only under its interpreter (TRITON_INTERPRET=1, set
before this module is imported), where bf16 arithmetic is wrong, so the kernel upcasts there.
"""
from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
                        q_index: torch.Tensor | None = None, out: torch.Tensor | None = None,
                        scale: float | None = None) -> torch.Tensor:
    """Plain torch attention with the kernel's contract (fp32 math). Rows whose keys are all masked give 0."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    qs = q if q_index is None else torch.gather(q, 2, q_index[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[3]))
    s = torch.einsum("bhmd,bhnd->bhmn", qs.float(), k.float()) * scale
    if key_mask is not None:
        s = s.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    o = torch.einsum("bhmn,bhnd->bhmd", p, v.float()).to(q.dtype)
    if q_index is None:
        if out is not None:
            out.copy_(o)
            return out
        return o
    if out is None:
        raise ValueError("q_index needs the output buffer to scatter into")
    out.scatter_(2, q_index[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[3]), o)
    return out


if HAS_TRITON:

    @triton.jit
    def _attn_fwd(Q, K, V, O, Mask, Idx, sm_scale,
                  sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, smb, smn, sib, sim,
                  H, NQ, NK, D,
                  HAS_MASK: tl.constexpr, HAS_IDX: tl.constexpr, Q_COMPACT: tl.constexpr, UPCAST: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < NQ
        if HAS_IDX:
            rows = tl.load(Idx + b * sib + offs_m * sim, mask=row_ok, other=0)
        else:
            rows = offs_m
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        q_rows = offs_m if Q_COMPACT else rows
        q = tl.load(Q + b * sqb + h * sqh + q_rows[:, None] * sqm + offs_d[None, :] * sqd,
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start in range(0, NK, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            n_ok = offs_n < NK
            kt = tl.load(K + b * skb + h * skh + offs_n[None, :] * skn + offs_d[:, None] * skd,
                         mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            vv = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :] * svd,
                         mask=n_ok[:, None] & d_ok[None, :], other=0.0)
            if UPCAST:
                kt = kt.to(tl.float32)
                vv = vv.to(tl.float32)
            s = tl.dot(q, kt) * sm_scale
            keep = n_ok
            if HAS_MASK:
                km = tl.load(Mask + b * smb + offs_n * smn, mask=n_ok, other=0)
                keep = keep & (km != 0)
            s = tl.where(keep[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vv.dtype), vv)
            m_i = m_new
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + b * sob + h * soh + rows[:, None] * som + offs_d[None, :] * sod, o.to(O.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
                     q_index: torch.Tensor | None = None, out: torch.Tensor | None = None, scale: float | None = None,
                     q_compact: bool = False, block_m: int = 32, block_n: int = 32) -> torch.Tensor:
    """Launch the Triton kernel (same contract as ``attention_reference``).

    ``q_compact``: ``q`` holds only the M indexed query rows ([B, H, M, D]); the index then places the
    results in ``out`` (the caller projected only the tokens it refreshes).
    """
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed: pip install 'accel[triton]'")
    assert q.dim() == 4 and k.dim() == 4 and v.shape == k.shape, "q [B,H,Nq,D], k/v [B,H,Nk,D]"
    bsz, heads, nq, d = q.shape
    assert k.shape[:2] == (bsz, heads) and k.shape[3] == d, "k/v must match q in batch, heads and head dim"
    assert d <= 128, "head dims up to 128"
    assert q.dtype == k.dtype == v.dtype and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
    if out is None:
        if q_index is not None:
            raise ValueError("q_index needs the output buffer to scatter into")
        out = torch.empty_like(q)
    assert out.dtype == q.dtype and (out.shape == q.shape or (q_compact and out.shape[:2] == q.shape[:2]
                                                             and out.shape[3] == d))
    if q_compact:
        assert q_index is not None and q_index.shape[1] == nq, "compact q needs an index with one row per query"
        nq = out.shape[2]
    if key_mask is not None:
        assert key_mask.shape == (bsz, k.shape[2]), "key_mask is [B, Nk]"
        key_mask = key_mask.to(torch.int32)
    m_rows = nq
    if q_index is not None:
        assert q_index.dim() == 2 and q_index.shape[0] == bsz, "q_index is [B, M]"
        q_index = q_index.to(torch.int64)
        m_rows = q_index.shape[1]
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    block_d = max(16, triton.next_power_of_2(d))
    upcast = q.dtype == torch.float32 or (INTERPRET and q.dtype == torch.bfloat16)
    mask_t = key_mask if key_mask is not None else q  # dummy pointer when absent
    idx_t = q_index if q_index is not None else q
    grid = (triton.cdiv(m_rows, block_m), bsz * heads)
    _attn_fwd[grid](
        q, k, v, out, mask_t, idx_t, scale,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *(key_mask.stride() if key_mask is not None else (0, 0)), *(q_index.stride() if q_index is not None else (0, 0)),
        heads, m_rows, k.shape[2], d,
        HAS_MASK=key_mask is not None, HAS_IDX=q_index is not None, Q_COMPACT=q_compact, UPCAST=upcast,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
    )
    return out
