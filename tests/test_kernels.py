"""Triton attention under the interpreter against the torch reference (skipped without triton)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module defines its @triton.jit functions

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")

from accel.kernels.attention import INTERPRET, attention_reference, triton_attention  # noqa: E402

if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("triton kernels need a GPU or TRITON_INTERPRET=1 set before import", allow_module_level=True)

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _qkv(b, h, nq, nk, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(dtype) for n in (nq, nk, nk)]


@pytest.mark.parametrize("d", [64, 72, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_self_attention_matches_reference(d, dtype):
    q, k, v = _qkv(1, 2, 37, 37, d, dtype)  # odd sequence length
    got = triton_attention(q, k, v)
    ref = attention_reference(q.float(), k.float(), v.float())
    assert (got.float() - ref).abs().max().item() <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cross_attention_with_key_padding_mask(dtype):
    q, k, v = _qkv(2, 2, 33, 19, 72, dtype, seed=1)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[0, 7:] = False
    mask[1, 12:] = False
    got = triton_attention(q, k, v, key_mask=mask)
    ref = attention_reference(q.float(), k.float(), v.float(), key_mask=mask)
    assert (got.float() - ref).abs().max().item() <= TOL[dtype]
    # masked keys really do not matter
    v2 = v.clone()
    v2[0, :, 7:] = 100.0
    assert torch.equal(triton_attention(q, k, v2, key_mask=mask)[0], got[0])


def test_partial_recompute_writes_only_the_chosen_rows():
    q, k, v = _qkv(2, 2, 40, 40, 64, torch.float32, seed=2)
    buf = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    before = buf.clone()
    idx = torch.tensor([[0, 5, 17, 39], [3, 4, 20, 21]])
    triton_attention(q, k, v, q_index=idx, out=buf)
    full = attention_reference(q, k, v)
    chosen = torch.zeros(2, 40, dtype=torch.bool)
    chosen[0, idx[0]] = True
    chosen[1, idx[1]] = True
    for b in range(2):
        assert (buf[b][:, chosen[b]] - full[b][:, chosen[b]]).abs().max() <= 1e-5
        assert torch.equal(buf[b][:, ~chosen[b]], before[b][:, ~chosen[b]])  # untouched rows bit-identical


def test_launcher_checks_shapes():
    q, k, v = _qkv(1, 2, 8, 8, 64, torch.float32)
    with pytest.raises(AssertionError):
        triton_attention(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="output buffer"):
        triton_attention(q, k, v, q_index=torch.zeros(1, 2, dtype=torch.long))


def test_compact_queries_scatter_into_the_buffer():
    q, k, v = _qkv(2, 2, 24, 24, 72, torch.float32, seed=4)
    idx = torch.tensor([[1, 2, 9], [0, 23, 7]])
    qc = torch.gather(q, 2, idx[:, None, :, None].expand(-1, 2, -1, 72))
    buf = torch.zeros_like(q)
    triton_attention(qc, k, v, q_index=idx, out=buf, q_compact=True)
    ref = attention_reference(q, k, v, q_index=idx, out=torch.zeros_like(q))
    assert (buf - ref).abs().max() <= 1e-5
