"""What the block fast path (``accel.cache.block_skip``) saves on a reference pipeline (not a test).

Each schedule runs twice per round, with the fast path on and off (the hooked block forward);
rounds are interleaved with the plain pipeline's and the median denoising time is reported. The
two paths' latents are compared for bit identity. ``--schedule FILE`` adds a schedule file
(e.g. an ECAD or BAC schedule, whose blocks are often only partly reused).

    python benchmarks/block_fast_path.py --pipeline pixart-eps --rounds 7
    python benchmarks/block_fast_path.py --schedules 4 --schedule benchmarks/schedules/ecad-pixart-eps-taylor/schedule_08.json
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import accel
from accel.api import handle_of
from accel.pipelines.reference import load_reference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="pixart-eps")
    p.add_argument("--schedules", default="2,3,4,6,20", help="uniform intervals (20 = only the first step computes)")
    p.add_argument("--reuse", default="taylor", choices=["hold", "taylor"])
    p.add_argument("--schedule", action="append", default=[], help="a schedule file to measure too (repeatable)")
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--attention", default=None, choices=["auto", "torch"],
                   help="also install accel's attention processors (text keys/values reused across steps)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe = load_reference(a.pipeline)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(pipe.accel_defaults, num_inference_steps=a.steps, guidance_scale=4.5, output_type="latent")
    prompts = ["a photo of a dog on the grass"] * a.batch

    def denoise_seconds(cache, fast: bool) -> tuple[float, torch.Tensor, float]:
        accel.apply(pipe, cache=cache, attention=a.attention if cache is not None else None)
        handle_of(pipe).state.fast_blocks = fast
        with torch.no_grad():
            out = pipe(prompts, generator=torch.Generator().manual_seed(0), **kw).images
        st = accel.stats(pipe)
        return st.denoise_seconds, out, st.macs_fraction

    intervals = [int(x) for x in a.schedules.split(",")]
    scheds = {f"every {k} ({a.reuse})": accel.CacheSchedule.uniform(pipe, a.steps, k, reuse=a.reuse) for k in intervals}
    files = {Path(f).parent.name + "/" + Path(f).name: accel.CacheSchedule.load(f) for f in a.schedule}
    scheds.update(files)
    times: dict = {"plain": []}
    same, frac = {}, {}
    denoise_seconds(None, True)  # warm-up
    for _ in range(a.rounds):
        times["plain"].append(denoise_seconds(None, True)[0])
        for k, s in scheds.items():
            t_ref, o_ref, _ = denoise_seconds(s, False)
            t_fast, o_fast, frac[k] = denoise_seconds(s, True)
            times.setdefault((k, False), []).append(t_ref)
            times.setdefault((k, True), []).append(t_fast)
            same[k] = same.get(k, True) and torch.equal(o_ref, o_fast)
    accel.remove(pipe)
    med = {key: statistics.median(v) for key, v in times.items()}
    att = f", accel attention processors ({a.attention})" if a.attention else ""
    print(f"{a.pipeline}, batch {a.batch}, {a.steps} steps, {a.threads} threads{att}, median of {a.rounds} interleaved rounds\n")
    print("| schedule | MACs | hooked blocks: denoise s (speed-up) | fast path: denoise s (speed-up) | fast / hooked "
          "| bit-identical |")
    print("|---|---|---|---|---|---|")
    base = med["plain"]
    print(f"| plain pipeline | 100% | {base:.3f} (1.00x) | | | |")
    for k in scheds:
        r, f = med[(k, False)], med[(k, True)]
        print(f"| {k} | {frac[k]:.0%} | {r:.3f} ({base / r:.2f}x) | {f:.3f} ({base / f:.2f}x) "
              f"| {f / r:.2f} | {'yes' if same[k] else 'NO'} |")


if __name__ == "__main__":
    main()
