"""Hook overhead of accel's all-compute schedule against the plain pipeline (not a test).

Full-size PixArt-alpha-shaped transformer (28 blocks, width 1152, 256 tokens, bf16, random weights),
8 steps with CFG. Rows are timed interleaved (A B C A B C ...) in one run, warm-up excluded,
median of repeats; diffusers' FirstBlockCache at threshold 0 (always computes) is the anchor.

    python benchmarks/overhead.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache
from diffusers.hooks.hooks import CacheContext, _set_cache_context

import accel
from accel.bench.shapes import pixart_alpha_shaped, pixart_alpha_shaped_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(2)
    plain = pixart_alpha_shaped()
    acc = pixart_alpha_shaped()
    accel.apply(acc, cache=accel.CacheSchedule.full(acc, a.steps))
    fbc = pixart_alpha_shaped()
    apply_first_block_cache(fbc.transformer, FirstBlockCacheConfig(threshold=0.0))

    def run_fbc():
        HookRegistry.check_if_exists_or_initialize(fbc.transformer).reset_stateful_hooks()
        _set_cache_context(fbc.transformer, CacheContext("cond"))
        return fbc(**pixart_alpha_shaped_inputs(steps=a.steps)).images

    rows = {"plain": lambda: plain(**pixart_alpha_shaped_inputs(steps=a.steps)).images,
            "accel all-compute": lambda: acc(**pixart_alpha_shaped_inputs(steps=a.steps)).images,
            "diffusers FirstBlockCache(0)": run_fbc}
    outs = {k: f() for k, f in rows.items()}  # warm-up
    assert torch.equal(outs["plain"], outs["accel all-compute"]), "all-compute schedule must be bit-identical"
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.repeats):
        for k, f in rows.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["plain"])
    print(f"PixArt-alpha-shaped (28 x 1152, 256 tokens, bf16), {a.steps} steps + CFG, median of {a.repeats}:")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"  {k:30s} {m:.3f} s  overhead {100 * (m / base - 1):+.2f}%")


if __name__ == "__main__":
    main()
