"""The cache core's realised speed-up against the work it skips, and its cost when it skips nothing (not a test).

Rows, timed in interleaved rounds in one run (the denoising loop, from the first denoiser call's start to the
last one's end; median over rounds; one warm-up call each, excluded):

- plain; accel's all-compute schedule and diffusers' FirstBlockCache at threshold 0 (both skip nothing: their
  overhead);
- accel uniform every 2 and every 4 (held outputs, block fast path), every 4 with forecast reuse;
- cache-dit DBCache F1B0 with a fixed steps mask (every 2, every 4): the peer's realised speed-up.

"ideal" is 1 / (the share of the denoiser's MACs the row computes), so "realised / ideal" is the share of the
skipped work that turned into time. Models: ``xl`` is the PixArt-alpha-XL-shaped transformer of
``accel.bench.shapes`` (28 blocks, width 1152, 256 tokens; random weights), or a reference pipeline name.

    python benchmarks/cache_core.py --model xl --dtype bfloat16 --steps 8 --rounds 5
    python benchmarks/cache_core.py --model pixart-eps --steps 20 --rounds 5
    python benchmarks/cache_core.py --model xl --layers 12 --steps 20 --only ecad \
        --schedule benchmarks/schedules/ecad-pixart-flow-taylor/schedule_05.json   # a shipped table at full width
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

import accel


class LoopTimer:
    """The denoising loop's wall time of the last call: first denoiser call's start to the last one's end
    (plain forward hooks on the denoiser, the same for every row)."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.start: float | None = None
        self.end = 0.0
        denoiser.register_forward_pre_hook(self._pre)
        denoiser.register_forward_hook(self._post)

    def _pre(self, *_):
        if self.start is None:
            self.start = time.perf_counter()

    def _post(self, *_):
        self.end = time.perf_counter()

    def reset(self) -> None:
        self.start = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _model(a):
    if a.model == "xl":
        from accel.bench.shapes import pixart_alpha_shaped, pixart_alpha_shaped_inputs

        dtype = getattr(torch, a.dtype)
        pipe = pixart_alpha_shaped(dtype=dtype, num_layers=a.layers)
        return pipe, lambda: pixart_alpha_shaped_inputs(steps=a.steps, dtype=dtype)
    from accel.pipelines.reference import load_reference

    pipe = load_reference(a.model)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a photo of a sneaker", "an ankle boot", "a photo of a dress", "a bag"] * (a.batch // 4 or 1)
    return pipe, lambda: dict(prompt=prompts[: a.batch], num_inference_steps=a.steps, guidance_scale=4.5,
                              output_type="pt", generator=torch.Generator().manual_seed(0), **pipe.accel_defaults)


def _transplanted(path: str, den: torch.nn.Module, steps: int) -> accel.CacheSchedule:
    """A shipped schedule's table on ``den``: same family, block count, components and steps, its own weights.

    The speed of a schedule depends on its table and the model's shape, not on the weights it was calibrated
    for, so the fingerprint (which names the weights' config) is replaced; nothing is claimed about quality.
    """
    from accel.pipelines.families import fingerprint

    sched = accel.CacheSchedule.load(path)
    sched = dataclasses.replace(sched, fingerprint=fingerprint(den))
    sched.check_compatible(den)  # family, block count, components
    if sched.num_inference_steps != steps:
        raise SystemExit(f"{path} is a {sched.num_inference_steps}-step schedule: pass --steps "
                         f"{sched.num_inference_steps}")
    return sched


def _rows(pipe, a) -> dict[str, tuple[Callable, Callable, Callable[[], float]]]:
    """name -> (attach, detach, computed share of the MACs, read after a call)."""
    from accel.bench.rows import make_row

    den = pipe.transformer
    rows = {"plain": (lambda: None, lambda: None, lambda: 1.0)}

    def accel_row(sched):
        return (lambda: accel.apply(pipe, cache=sched), lambda: accel.remove(pipe),
                lambda: accel.stats(pipe).macs_fraction)

    rows["accel all-compute"] = accel_row(accel.CacheSchedule.full(pipe, a.steps))
    for path in a.schedule:
        rows[f"accel {Path(path).parent.name}/{Path(path).name}"] = accel_row(_transplanted(path, den, a.steps))

    fbc = make_row("fbcache:0")  # the bench's row: it sets the cache context PixArt's pipeline does not set
    cfg = SimpleNamespace(steps=a.steps)

    def fbc_attach():
        fbc.attach(pipe, cfg)
        fbc.before_call(pipe)

    rows["diffusers FirstBlockCache(0)"] = (fbc_attach, lambda: fbc.detach(pipe), lambda: 1.0)
    rows["accel uniform every 2"] = accel_row(accel.CacheSchedule.uniform(pipe, a.steps, 2))
    rows["accel uniform every 4"] = accel_row(accel.CacheSchedule.uniform(pipe, a.steps, 4))
    rows["accel uniform every 4, forecast"] = accel_row(accel.CacheSchedule.uniform(pipe, a.steps, 4, reuse="taylor"))
    try:
        import cache_dit
    except ImportError:
        return rows
    n_blocks = len(den.transformer_blocks)
    for k in (2, 4):
        mask = [1 if s % k == 0 else 0 for s in range(a.steps)]
        # a cached step still runs block 0 (F1B0): its share of the block MACs
        share = (sum(mask) + (len(mask) - sum(mask)) / n_blocks) / len(mask)
        cfg = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=1e9,
                                      max_warmup_steps=0, num_inference_steps=a.steps, steps_computation_mask=mask,
                                      steps_computation_policy="static")
        rows[f"cache-dit DBCache F1B0, steps mask every {k}"] = (
            lambda cfg=cfg: cache_dit.enable_cache(pipe, cache_config=cfg), lambda: cache_dit.disable_cache(pipe),
            lambda share=share: share)
    return rows


def cached_step(pipe, inputs: Callable[[], dict], steps: int, calls: int = 3) -> None:
    """Print a computed and a fully cached denoiser call's wall time: a schedule that computes step 0 only."""
    den, times = pipe.transformer, []
    pre = den.register_forward_pre_hook(lambda *_: times.append(-time.perf_counter()))
    post = den.register_forward_hook(lambda *_: times.__setitem__(-1, times[-1] + time.perf_counter()))
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, steps, steps))
    computed, cached = [], []
    try:
        for _ in range(calls + 1):  # the first call warms up
            times.clear()
            pipe(**inputs())
            computed.append(times[0])
            cached.extend(times[1:])
    finally:
        accel.remove(pipe)
        pre.remove()
        post.remove()
    c, k = statistics.median(computed[1:]), statistics.median(cached[steps - 1:])
    print(f"denoiser call, median of {calls} pipeline calls: computed {c * 1e3:.1f} ms, fully cached (block fast "
          f"path) {k * 1e3:.1f} ms ({k / c:.1%} of a computed one)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="xl", help="xl (the PixArt-alpha-XL-shaped transformer) or a reference name")
    p.add_argument("--dtype", default="bfloat16", help="xl only")
    p.add_argument("--layers", type=int, default=28, help="xl only: transformer blocks")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4, help="reference pipelines: prompts per call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--schedule", action="append", default=[], metavar="FILE",
                   help="a shipped schedule's table as a row (repeatable); xl takes --layers of the schedule's blocks")
    p.add_argument("--only", default="", help="comma-separated row names to keep besides plain (substring match)")
    p.add_argument("--cached-step", action="store_true",
                   help="instead of the table: a computed and a fully cached denoiser call's wall time")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe, inputs = _model(a)
    if a.cached_step:
        return cached_step(pipe, inputs, a.steps)
    timer = LoopTimer(pipe.transformer)
    rows = _rows(pipe, a)
    if a.only:
        keep = [w.strip() for w in a.only.split(",")]
        rows = {k: v for k, v in rows.items() if k == "plain" or any(w in k for w in keep)}
    times: dict[str, list[float]] = {k: [] for k in rows}
    shares: dict[str, float] = {}
    outs: dict[str, torch.Tensor] = {}
    for r in range(a.rounds + 1):  # round 0: warm-up, and the MACs share and outputs
        print(f"round {r}/{a.rounds}" + (" (warm-up)" if r == 0 else ""), file=sys.stderr, flush=True)
        names = list(rows)
        names = names[r % len(names):] + names[:r % len(names)]  # rotated each round: no row always runs first
        for name in names:
            attach, detach, share = rows[name]
            attach()
            try:
                if r == 0 and a.model != "xl":  # a small model's first call warms caches; an xl call is seconds long
                    pipe(**inputs())
                timer.reset()
                out = pipe(**inputs()).images
                if r == 0:
                    shares[name], outs[name] = share(), out
                else:
                    times[name].append(timer.seconds)
            finally:
                detach()
    same = torch.equal(outs["plain"], outs["accel all-compute"]) if "accel all-compute" in outs else None
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain"]
    shape = (f"PixArt-alpha-XL-shaped transformer ({a.layers} blocks x 1152, 256 tokens, {a.dtype})" if a.model == "xl"
             else f"{a.model} (batch {a.batch})")
    print(f"{shape}, {a.steps} steps with CFG, {a.threads} threads, denoising loop, median of {a.rounds} "
          f"interleaved rounds; all-compute bit-identical to plain: { {True: 'yes', False: 'NO', None: 'not run'}[same]}\n")
    print("| row | loop s | speed-up | ideal (1 / MACs share) | realised / ideal | per-round spread |")
    print("|---|---|---|---|---|---|")
    for k, t in med.items():
        ideal = 1.0 / shares[k]
        sp = base / t
        rounds = [b / x for b, x in zip(times["plain"], times[k])]
        print(f"| {k} | {t:.3f} | {sp:.2f}x | {ideal:.2f}x | {sp / ideal:.0%} | {min(rounds):.2f}-{max(rounds):.2f}x |")


if __name__ == "__main__":
    main()
