"""Time accel's Triton attention against torch SDPA (and FlashAttention when installed), on a GPU.

Each timed kernel is also checked against the torch reference. Without a CUDA GPU this says so and
exits 0: no speed figure of the kernels is claimed anywhere without a measurement.

    python benchmarks/kernels.py
"""
from __future__ import annotations

import sys

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py: no CUDA GPU here; Triton kernel speed cannot be measured (correctness is "
              "tested under the interpreter by tests/test_kernels.py).")
        return 0
    import torch.nn.functional as F
    import triton

    from accel.kernels.attention import attention_reference, triton_attention

    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    print(f"{'shape (B,H,Nq,Nk,D)':28s} {'dtype':9s} {'sdpa ms':>8s} {'triton ms':>9s} {'flash ms':>8s} {'max err':>8s}")
    for (b, h, nq, nk, d) in [(2, 16, 256, 256, 72), (2, 16, 1024, 1024, 72), (2, 16, 4096, 120, 72),
                              (2, 24, 4096, 4096, 128), (2, 16, 1024, 1024, 64)]:
        for dtype in (torch.float16, torch.bfloat16):
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for n in (nq, nk, nk))
            out = triton_attention(q, k, v)
            err = (out.float() - attention_reference(q, k, v).float()).abs().max().item()
            t_sdpa = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v))
            t_tri = triton.testing.do_bench(lambda: triton_attention(q, k, v))
            t_fa = float("nan")
            if flash_attn_func is not None:
                qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                t_fa = triton.testing.do_bench(lambda: flash_attn_func(qt, kt, vt))
            print(f"{str((b, h, nq, nk, d)):28s} {str(dtype)[6:]:9s} {t_sdpa:8.3f} {t_tri:9.3f} {t_fa:8.3f} {err:8.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
