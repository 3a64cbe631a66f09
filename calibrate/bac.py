"""Block-wise Adaptive Caching (BAC, arXiv 2506.13456) on diffusers pipelines.

1. Record every component's output per step on calibration prompts (``features.FeatureRecorder``)
   and average step x step similarity matrices.
2. Adaptive Caching Scheduler: per component, the M update steps that maximise the summed
   similarity of reused features to fresh ones (dynamic programming, ``acs_update_steps``).
3. Bubbling Union: the top-k components by caching error also update whenever an FFN at their
   block or below it updates, so their errors are refreshed before they propagate.
4. The budget is a target speed-up (or MACs fraction): the largest M whose schedule meets it.

``reuse="taylor"`` (accel's extension, not in the paper): reused features are forecast from the last two
updates (``CacheSchedule.reuse``) and the scheduler plans for that (``acs_all_forecast``), because holding
a feature across the steps where the image forms costs more than the paper's policies could tolerate here.

Departures from the paper, each for a stated reason: the paper uses diffusion policies and one M
given by hand; here M is derived from the budget (users think in speed-ups), and the speed-up is
predicted by a latency model measured on the pipeline itself (three timed calls) because MACs
overstate wall-clock gains on small models.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

import accel
from accel.api import handle_of
from accel.pipelines.calls import output_frames
from accel.pipelines.families import experts_blocks, experts_fingerprint, experts_layout

from .features import ComponentStatistics, FeatureRecorder


def segment_costs(sim: np.ndarray, max_gap: int | None = None) -> np.ndarray:
    """cost[a, b] = sum_{t=a..b} S[a, t]: value of computing at step a and reusing through step b
    (-inf where that reuses more than ``max_gap`` consecutive steps)."""
    k = sim.shape[0]
    cum = np.cumsum(sim, axis=1)
    cost = np.full((k, k), -np.inf)
    for a in range(k):
        end = k if max_gap is None else min(k, a + max_gap + 1)
        cost[a, a:end] = cum[a, a:end] - (cum[a, a - 1] if a > 0 else 0.0)
    return cost


def _acs_dp(sim: np.ndarray, m: int, max_gap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """dp[k, i]: best value of k updates over steps 0..i; arg: the split that reached it."""
    k_steps = sim.shape[0]
    cost = segment_costs(sim, max_gap)
    dp = np.full((m + 1, k_steps), -np.inf)
    arg = np.zeros((m + 1, k_steps), dtype=int)
    dp[1] = cost[0]
    for k in range(2, m + 1):
        for i in range(k - 1, k_steps):
            js = np.arange(k - 2, i)
            vals = dp[k - 1, js] + cost[js + 1, i]
            best = int(np.argmax(vals))
            dp[k, i], arg[k, i] = vals[best], js[best]
    return dp, arg


def _backtrack(arg: np.ndarray, m: int, k_steps: int) -> list[int]:
    steps, i = [], k_steps - 1
    for k in range(m, 1, -1):
        j = arg[k, i]
        steps.append(j + 1)
        i = j
    return sorted([0] + steps)


def acs_update_steps(sim: np.ndarray, m: int) -> list[int]:
    """Adaptive Caching Scheduler: the ``m`` update steps (step 0 included) maximising the summed similarity.

    dp[1, i] = cost[0, i]; dp[k, i] = max_{j in [k-2, i-1]} dp[k-1, j] + cost[j+1, i]; backtrack from dp[m, K-1].
    """
    m = max(1, min(m, sim.shape[0]))
    _, arg = _acs_dp(sim, m)
    return _backtrack(arg, m, sim.shape[0])


def acs_all(sim: np.ndarray, max_gap: int | None = None) -> tuple[np.ndarray, list[list[int]]]:
    """Optimal value and update steps for every m = 1..K from one dynamic programme (index m - 1); with
    ``max_gap`` no update is followed by more than that many reused steps (-inf and [] where m cannot)."""
    k_steps = sim.shape[0]
    dp, arg = _acs_dp(sim, k_steps, max_gap)
    values = dp[1:, -1].copy()
    return values, [_backtrack(arg, m, k_steps) if np.isfinite(values[m - 1]) else []
                    for m in range(1, k_steps + 1)]


def acs_all_forecast(sim: np.ndarray, fsim: np.ndarray, warmup: int = 0,
                     max_gap: int | None = None) -> tuple[np.ndarray, list[list[int]]]:
    """The Adaptive Caching Scheduler for forecast reuse (``CacheSchedule(reuse="taylor")``), for every update
    count m = 1..K (index m - 1; -inf and [] where m cannot hold the warm-up).

    A reused step t after updates j < i is scored by ``fsim[j, i, t]`` (the forecast's similarity), after the first
    update alone by ``sim[0, t]`` (held). The segment value then depends on the last two updates, so the programme
    runs over pairs: f[k][i, j] = best value of the steps before i with k updates, the last two at j < i;
    f[k+1][n, i] = max_j f[k][i, j] + sum_{t=i..n-1} fsim[j, i, t]. An accel extension of BAC (the paper holds
    reused features); the first ``warmup`` steps are forced updates, and with ``max_gap`` no update is followed by
    more than that many reused steps.
    """
    k_steps = sim.shape[0]
    t = np.arange(k_steps)
    tri = (t[None, :, None] <= t[None, None, :])  # [1, i, t]: t >= i
    pair = t[:, None] < t[None, :]  # [j, i]: j < i
    fz = np.where(tri & pair[:, :, None], fsim, 0.0)
    segf = np.full((k_steps, k_steps, k_steps + 1), -np.inf)  # segf[j, i, n] = sum_{t=i}^{n-1} fsim[j, i, t]
    csum = np.cumsum(fz, axis=2)
    for i in range(1, k_steps):
        segf[:i, i, i + 1:] = csum[:i, i, i:]
    hold = np.concatenate([[0.0], np.cumsum(sim[0])])  # hold[n] = sum_{t<n} sim[0, t]
    if max_gap is not None:  # a segment i..n-1 reuses n - i - 1 steps
        too_long = np.arange(k_steps + 1)[None, :] - t[:, None] > max_gap + 1  # [i, n]
        segf[:, too_long] = -np.inf
        hold[max_gap + 2:] = -np.inf

    def allowed(a: int, n: int) -> bool:  # no forced (warm-up) step strictly between updates a and n
        return not (a + 1 < warmup and n > a + 1)

    values = np.full(k_steps, -np.inf)
    steps: list[list[int]] = [[] for _ in range(k_steps)]
    if allowed(0, k_steps) and np.isfinite(hold[k_steps]):
        values[0], steps[0] = hold[k_steps], [0]
    f = np.full((k_steps, k_steps), -np.inf)  # f[i, j] for the current k
    for i in range(1, k_steps):
        if allowed(0, i):
            f[i, 0] = hold[i]
    args: list[np.ndarray] = []  # per k >= 3: the j that reached f[n, i]
    for k in range(2, k_steps + 1):
        if k >= 3:
            new = np.full((k_steps, k_steps), -np.inf)
            arg = np.zeros((k_steps, k_steps), dtype=int)
            for i in range(1, k_steps):
                vals = f[i][:, None] + segf[:, i, :k_steps]  # [j, n]
                best = np.argmax(vals, axis=0)
                bv = vals[best, np.arange(k_steps)]
                for n in range(i + 1, k_steps):
                    if allowed(i, n) and bv[n] > new[n, i]:
                        new[n, i], arg[n, i] = bv[n], best[n]
            f = new
            args.append(arg)
        # close the last segment at the end (the last update must not skip a warm-up step)
        tot = f + segf[:, :, k_steps].T  # [i, j]
        tot[: max(warmup - 1, 0)] = -np.inf
        if np.isfinite(tot).any():
            i, j = np.unravel_index(int(np.argmax(tot)), tot.shape)
            values[k - 1] = tot[i, j]
            seq = [int(i), int(j)]
            for arg in reversed(args):
                seq.append(int(arg[seq[-2], seq[-1]]))
            steps[k - 1] = sorted(seq)
    return values, steps


def allocate_updates(values: np.ndarray, macs: np.ndarray, budget: float) -> np.ndarray:
    """Update counts per component (>= 1) maximising the summed ACS value within ``budget`` MACs.

    ``values[s, m - 1]`` is component s's optimal value with m updates; greedy on the best value gained per
    MAC over any number of extra updates (the upper hull of each value curve), so non-concave curves are
    handled. accel's extension of BAC's single M per block (see the module docstring).
    """
    n, k = values.shape
    m = np.argmax(np.isfinite(values), axis=1) + 1  # the fewest updates each component can have (1 unless max_gap)
    spent = float((macs * m).sum())
    while True:
        best, pick = 0.0, None
        for s in range(n):
            if m[s] >= k or macs[s] <= 0:
                continue
            extra = np.arange(m[s] + 1, k + 1)
            cost = (extra - m[s]) * macs[s]
            ok = spent + cost <= budget + 1e-9
            if not ok.any():
                continue
            gain = (values[s, extra[ok] - 1] - values[s, m[s] - 1]) / cost[ok]
            j = int(np.argmax(gain))
            if gain[j] > best:
                best, pick = float(gain[j]), (s, int(extra[ok][j]))
        if pick is None:
            return m
        s, new_m = pick
        spent += (new_m - m[s]) * macs[s]
        m[s] = new_m


def schedule_value(sim: np.ndarray, updates: list[int]) -> float:
    """Total similarity of a set of update steps (what ``acs_update_steps`` maximises)."""
    cost = segment_costs(sim)
    bounds = sorted(updates) + [sim.shape[0]]
    return float(sum(cost[bounds[i], bounds[i + 1] - 1] for i in range(len(bounds) - 1)))


def forecast_schedule_value(sim: np.ndarray, fsim: np.ndarray, updates: list[int]) -> float:
    """Total similarity of a set of update steps under forecast reuse (what ``acs_all_forecast`` maximises)."""
    u = sorted(updates)
    total = 0.0
    for t in range(sim.shape[0]):
        last = [s for s in u if s <= t]
        total += sim[0, t] if len(last) < 2 else fsim[last[-2], last[-1], t]
    return float(total)


def bubbling_union(updates: list[set[int]], errors: np.ndarray, slots: list[tuple[int, int]],
                   ffn_components: set[int], top_k: int) -> list[set[int]]:
    """The ``top_k`` slots by caching error also take the update steps of every FFN slot at their block or deeper."""
    out = [set(u) for u in updates]
    for s in np.argsort(-errors)[:top_k]:
        block = slots[s][0]
        for t, (b, c) in enumerate(slots):
            if c in ffn_components and b >= block:
                out[s] |= updates[t]
    return out


@dataclass
class LatencyModel:
    """Denoising time of a call: fixed time, plus time per block run at a step (its norms, modulations and
    residual adds: what a block served by the block fast path skips), plus time per computed component MAC.

    Fitted on three timed calls (all computed; only step 0 computed, with and without the block fast path).
    ``fast_blocks`` lists the blocks the fast path covers; every other block runs at every step.
    """

    t_fixed: float
    sec_per_mac: float
    t_full: float
    sec_per_block_step: float = 0.0
    fast_blocks: tuple[int, ...] = ()

    def block_steps(self, table: np.ndarray) -> int:
        """Block runs of a [step, block, component] schedule: a covered block runs when any component computes."""
        steps, blocks = table.shape[:2]
        covered = [b for b in self.fast_blocks if b < blocks]
        return int(table[:, covered].any(axis=2).sum()) + steps * (blocks - len(covered))

    def predict(self, computed_macs: float, block_steps: int = 0) -> float:
        return self.t_fixed + self.sec_per_block_step * block_steps + self.sec_per_mac * computed_macs


def prompt_batches(prompts: list[str], batch: int, pipe=None, guidance: float | None = None) -> list[dict]:
    """Calibration calls from prompts: one dict of varying call arguments per batch; with ``pipe``, its own
    conditioning (class labels on DiT, true CFG on undistilled FLUX: ``accel.pipelines.calls.condition``)."""
    if pipe is None:
        return [{"prompt": prompts[i : i + batch]} for i in range(0, len(prompts), batch)]
    from accel.pipelines.calls import condition

    return [condition(pipe, prompts[i : i + batch], guidance) for i in range(0, len(prompts), batch)]


def _call(pipe, call: dict, steps: int, guidance: float, seed: int, kwargs: dict):
    return pipe(num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                **kwargs, **call)


def record_statistics(pipe, calls: list[dict], steps: int, guidance: float, metric: str = "cosine", seed: int = 0,
                      call_kwargs: dict | None = None, forecast: bool = False
                      ) -> tuple[ComponentStatistics, list[int], torch.Tensor]:
    """Run the pipeline on the calibration calls with everything computed; return the statistics, the MACs of
    each component per denoiser call (at the first call's shapes) and the images."""
    kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="pt", **(call_kwargs or {}))
    accel.apply(pipe)  # count-only: all components compute
    h = handle_of(pipe)
    rec = FeatureRecorder(len(h.state.slots), steps, metric=metric, seed=seed, forecast=forecast)
    h.state.observers.append(rec.observe)
    macs, images = None, []
    try:
        for i, call in enumerate(tqdm(calls, desc="bac: recording")):
            images.append(output_frames(_call(pipe, call, steps, guidance, seed + i, kwargs)).cpu())
            rec.end_call()
            if macs is None:
                macs = [c.macs for c in accel.stats(pipe).components]
    finally:
        accel.remove(pipe)
    return rec.result(), macs, torch.cat(images)


def calibration_fidelity(pipe, sched: accel.CacheSchedule, calls: list[dict], steps: int, guidance: float,
                         plain: torch.Tensor, seed: int = 0, call_kwargs: dict | None = None,
                         fd: bool = True) -> dict[str, float]:
    """PSNR, SSIM and fd_plain (EfficientNet-Lite0 Frechet distance) of the schedule's images on the calibration
    calls against the all-compute images ``plain`` from the same seeds: what the schedule costs in fidelity."""
    from accel.metrics import fd_plain, psnr, ssim

    kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="pt", **(call_kwargs or {}))
    accel.apply(pipe, cache=sched)
    try:
        imgs = torch.cat([output_frames(_call(pipe, call, steps, guidance, seed + i, kwargs)).cpu()
                          for i, call in enumerate(tqdm(calls, desc="bac: checking"))])
    finally:
        accel.remove(pipe)
    out = {"psnr": psnr(imgs, plain), "ssim": ssim(imgs, plain)}
    if fd and len(imgs) >= 2:
        out["fd_plain"] = fd_plain(imgs, plain)
    return out


def measure_latency_model(pipe, call: dict, steps: int, guidance: float, comp_macs: list[int],
                          repeats: int = 2, call_kwargs: dict | None = None) -> LatencyModel:
    """Time the all-compute call and the call that computes components only at step 0 (with the block fast path
    and without it), and fit ``LatencyModel``."""
    kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="pt", **(call_kwargs or {}))
    full = accel.CacheSchedule.full(pipe, steps)
    minimal = accel.CacheSchedule.full(pipe, steps)
    minimal.table[1:] = False
    times, macs = {}, {}
    for name, sched, fast_path in (("full", full, True), ("min", minimal, True), ("min_hooked", minimal, False)):
        accel.apply(pipe, cache=sched)
        state = handle_of(pipe).state
        state.fast_blocks = fast_path
        fast = tuple(state.fast_block_ids)  # the same blocks in every call
        _call(pipe, call, steps, guidance, 0, kwargs)  # warm-up
        ts = []
        for _ in range(repeats):
            _call(pipe, call, steps, guidance, 0, kwargs)
            ts.append(accel.stats(pipe, count_macs_now=False).denoise_seconds)
        st = accel.stats(pipe)
        macs[name] = sum(c.computed * m for c, m in zip(st.components, comp_macs))
        times[name] = statistics.median(ts)
        accel.remove(pipe)
    # fast path off: every block runs at every step; on: the covered blocks run at step 0 only
    n_blocks = full.table.shape[1]
    saved_runs = (steps - 1) * len(fast)
    per_block = max(times["min_hooked"] - times["min"], 0.0) / saved_runs if saved_runs else 0.0
    slope = (times["full"] - times["min_hooked"]) / max(macs["full"] - macs["min_hooked"], 1)
    t_fixed = times["full"] - slope * macs["full"] - per_block * steps * n_blocks
    return LatencyModel(t_fixed, slope, times["full"], per_block, fast)


def build_table(updates: list[set[int]], slots: list[tuple[int, int]], steps: int, blocks: int, comps: int) -> np.ndarray:
    table = np.ones((steps, blocks, comps), dtype=bool)
    for (b, c), u in zip(slots, updates):
        table[:, b, c] = False
        table[sorted(u), b, c] = True
    return table


def calibrate_bac(pipe, calls: list[dict], steps: int = 20, guidance: float = 4.5, speedup: float | None = None,
                  macs_fraction: float | None = None, metric: str = "cosine", top_k: int = 3, seed: int = 0,
                  call_kwargs: dict | None = None, allocation: str = "uniform", warmup: int = 0,
                  reuse: str = "hold", max_gap: int | None = None, check: bool = False) -> accel.CacheSchedule:
    """Calibrate a BAC schedule within a budget: a fraction of the component MACs (default 0.5: the budget
    does not depend on timings), or a target speed-up of the denoising loop predicted by a latency model timed
    on this machine. Blocks the family must always compute (the UNet's shallowest level) are never reused.

    ``reuse="taylor"`` (an accel extension) plans for forecast reuse: the scheduler scores reused steps by the
    similarity of the first-order forecast (``acs_all_forecast``) and the schedule is saved with that reuse mode.
    ``max_gap`` (an accel extension, like cache-dit's ``max_continuous_cached_steps``): no component reuses more
    than that many consecutive steps; the scheduler plans within that bound.
    ``check``: also run the schedule on the calibration calls and record its fidelity to the all-compute images
    (``calibration_fidelity``: PSNR, SSIM, fd_plain) in the metadata.

    Example:
        >>> import accel
        >>> from accel.pipelines.reference import load_reference
        >>> from accel.calibrate.bac import calibrate_bac, prompt_batches
        >>> pipe = load_reference("pixart-eps")  # doctest: +SKIP
        >>> calls = prompt_batches(["a photo of a sneaker", "an ankle boot"] * 8, batch=16)
        >>> sched = calibrate_bac(pipe, calls, steps=20, speedup=2.5)  # doctest: +SKIP
        >>> sched.save("bac.json"); accel.apply(pipe, cache=sched)  # doctest: +SKIP
    """
    if speedup is not None and macs_fraction is not None:
        raise ValueError("give one budget: speedup or macs_fraction")
    if speedup is None and macs_fraction is None:
        macs_fraction = 0.5
    if macs_fraction is not None and not 0 < macs_fraction <= 1:
        raise ValueError(f"macs_fraction must be in (0, 1], got {macs_fraction}")
    if allocation not in ("uniform", "greedy"):
        raise ValueError(f"allocation must be 'uniform' (the paper's one M) or 'greedy', not {allocation!r}")
    accel.schedule.check_reuse(reuse)
    if not 0 <= warmup < steps:
        raise ValueError(f"warmup must be in [0, steps), got {warmup}")
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 (consecutive reused steps), got {max_gap}")
    layout = experts_layout(pipe)
    if not calls:
        raise ValueError("BAC needs at least one calibration call (prompts)")
    stats, comp_macs, plain = record_statistics(pipe, calls, steps, guidance, metric, seed, call_kwargs,
                                         forecast=reuse == "taylor")
    blocks = experts_blocks(pipe, layout)
    h_slots = [(r.block, r.component) for blk in blocks for r in blk]
    ffn = {layout.component_names.index(c) for c in layout.ffn_components if c in layout.component_names}
    n_blocks, n_comps = len(blocks), len(layout.component_names)
    always = set(layout.always_compute_blocks)  # e.g. the UNet level carrying the fresh skip connection
    full_macs = steps * sum(comp_macs)  # component MACs per denoiser call x steps; only the ratio matters
    sims = stats.similarity[:, warmup:, warmup:]  # the scheduler plans the steps after the warm-up

    def placed(rel: list[int]) -> set[int]:
        return set(range(warmup)) | {t + warmup for t in rel}
    model = None
    if speedup is not None:
        model = measure_latency_model(pipe, calls[0], steps, guidance, comp_macs, call_kwargs=call_kwargs)

    def curve(s: int) -> tuple[np.ndarray, list[set[int]]]:
        """Value and update steps (warm-up included) of component s for every update count after the warm-up."""
        if reuse == "taylor":
            v, ups = acs_all_forecast(stats.similarity[s], stats.forecast[s], warmup, max_gap)
            return v[warmup:], [set(u) for u in ups[warmup:]]
        v, ups = acs_all(sims[s], max_gap)
        return v, [placed(u) if u else set() for u in ups]

    curves = [curve(s) for s in range(len(h_slots))]  # one DP per component gives every update count

    def realise(counts) -> tuple[list[set[int]], float, float | None]:
        """Update steps for per-component counts after the Bubbling Union, their MACs and predicted speed-up."""
        ups = bubbling_union([curves[s][1][c - 1] for s, c in enumerate(counts)], stats.error, h_slots, ffn,
                             top_k)
        ups = [set(range(steps)) if h_slots[s][0] in always else u for s, u in enumerate(ups)]
        macs = sum(len(u) * comp_macs[s] for s, u in enumerate(ups))
        if model is None:
            return ups, macs, None
        runs = model.block_steps(build_table(ups, h_slots, steps, n_blocks, n_comps))
        return ups, macs, model.t_full / model.predict(macs, runs)

    if allocation == "greedy":
        values = np.stack([c[0] for c in curves])
        cm = np.asarray(comp_macs, dtype=float)
        if speedup is not None:
            # an upper bound: as if only the warm-up steps ran the covered blocks
            fewest = model.block_steps(build_table([set(range(max(warmup, 1)))] * len(h_slots), h_slots, steps,
                                                   n_blocks, n_comps))
            target = (model.t_full / speedup - model.t_fixed - model.sec_per_block_step * fewest) / max(
                model.sec_per_mac, 1e-30)
        else:
            target = macs_fraction * full_macs
        # the union adds updates: shrink the allocation until it fits
        candidates = ([int(c) for c in allocate_updates(values, cm, max(shrink * target - warmup * cm.sum(), 0.0))]
                      for shrink in np.linspace(1.0, 0.0, 101))

        def fits(macs, pred):
            return pred >= speedup if speedup is not None else macs <= target + 1e-6
    else:
        # update counts some component cannot reach within max_gap are skipped
        candidates = ([m] * len(h_slots) for m in range(steps - warmup, 0, -1)
                      if all(np.isfinite(c[0][m - 1]) for c in curves))

        def fits(macs, pred):
            return pred >= speedup if speedup is not None else macs <= macs_fraction * full_macs

    chosen = None
    for counts in candidates:
        ups, macs, pred = realise(counts)
        if fits(macs, pred):
            chosen = (counts if allocation == "greedy" else counts[0], ups, macs, pred)
            break
    if chosen is None:  # the last candidate is the smallest: one update per component (or the fewest max_gap allows)
        best = f"{pred:.2f}x predicted" if pred else f"{macs / full_macs:.1%} of the MACs"
        raise ValueError(f"budget not reachable with BAC on this pipeline: at the fewest updates per component {best}"
                         + (f" (max_gap {max_gap})" if max_gap is not None else "")
                         + (" (the UNet's shallowest level always computes)" if always else "")
                         + "; give a larger budget")
    m, ups, macs, pred = chosen
    table = build_table(ups, h_slots, steps, n_blocks, n_comps)
    meta = {"updates_per_component": m, "allocation": allocation, "warmup": warmup, "max_gap": max_gap, "top_k": top_k,
            "metric": metric, "calibration_calls": len(calls),
            "guidance": guidance, "target_speedup": speedup, "target_macs_fraction": macs_fraction,
            "component_macs_fraction": macs / full_macs if full_macs else 1.0, "predicted_speedup": pred,
            "latency_model": vars(model) if model else None}
    sched = accel.CacheSchedule(table, layout.name, layout.component_names, experts_fingerprint(pipe), None, "bac", meta,
                                reuse)
    if check:
        sched.metadata["calibration_fidelity"] = calibration_fidelity(pipe, sched, calls, steps, guidance, plain, seed,
                                                            call_kwargs)
    return sched


def best_defaults(steps: int) -> tuple[int, str]:
    """The CLI's defaults: forecast reuse and a warm-up of a tenth of the steps (2 at 20). At 20 steps and 2x on
    both reference pipelines they beat the paper's held reuse without warm-up, which lost to FirstBlockCache
    (docs/results/bac-vs-peers.md); ``--paper`` restores the paper's form."""
    return steps // 10, "taylor"


def _cli_args(p) -> None:
    p.add_argument("--speedup", type=float, help="budget as a target speed-up of the denoising loop, predicted by a "
                                                 "latency model timed on this machine")
    p.add_argument("--macs-fraction", type=float, help="budget as the fraction of component MACs computed (default "
                                                       "0.5 when --speedup is not given)")
    p.add_argument("--metric", default="cosine", choices=("cosine", "l1", "mse"))
    p.add_argument("--top-k", type=int, default=3, help="Bubbling Union: components refreshed with downstream FFNs")
    p.add_argument("--max-gap", type=int, default=None,
                   help="never reuse a component for more than this many consecutive steps (an accel extension; "
                        "default: no bound, the paper)")
    p.add_argument("--allocation", default="uniform", choices=("uniform", "greedy"),
                   help="uniform: one update count M for every component (the paper); greedy: per-component counts "
                        "maximising the summed similarity per MAC")
    p.add_argument("--paper", action="store_true",
                   help="the paper's exact form: held outputs, no warm-up (the defaults are forecast reuse and a "
                        "warm-up of a tenth of the steps, which measured better on both reference pipelines: "
                        "docs/results/bac-vs-peers.md)")
    p.add_argument("--no-check", action="store_true",
                   help="skip scoring the schedule on the calibration prompts (PSNR, SSIM, fd_plain against the "
                        "all-compute images; one more pass over them)")


def _cli_run(a) -> None:
    from accel.devices import load_from_args
    from accel.errors import InputError


    from .cli_common import read_prompts, size_args, warmup_reuse

    if a.paper and (a.warmup or a.reuse == "taylor"):
        raise InputError("--paper is held reuse with no warm-up: leave out --warmup / --reuse taylor")
    warmup, reuse = warmup_reuse(a, (0, "hold") if a.paper else best_defaults(a.steps))
    pipe = load_from_args(a)
    pipe.set_progress_bar_config(disable=True)
    prompts = read_prompts(a, pipe)
    try:
        sched = calibrate_bac(pipe, prompt_batches(prompts, a.batch, pipe, a.guidance), steps=a.steps,
                              guidance=a.guidance, speedup=a.speedup, macs_fraction=a.macs_fraction, metric=a.metric,
                              top_k=a.top_k, seed=a.seed, allocation=a.allocation, warmup=warmup, reuse=reuse,
                              max_gap=a.max_gap, call_kwargs=size_args(a, pipe), check=not a.no_check)
    except ValueError as e:
        raise InputError(str(e)) from None
    path = sched.save(a.out)
    m = sched.metadata
    pred = f", predicted speed-up {m['predicted_speedup']:.2f}x" if m.get("predicted_speedup") else ""
    ups = m["updates_per_component"]
    ups = f"{min(ups)}-{max(ups)}" if isinstance(ups, list) else ups
    print(f"BAC schedule ({'held' if reuse == 'hold' else 'forecast'} reuse, warm-up {warmup}): {ups} updates per "
          f"component of {a.steps} steps, {m['component_macs_fraction']:.1%} of component MACs{pred} -> {path}")
    if "calibration_fidelity" in m:
        f = m["calibration_fidelity"]
        fd = f", fd_plain {f['fd_plain']:.3g}" if "fd_plain" in f else ""
        print(f"on the calibration prompts against the all-compute images: PSNR {f['psnr']:.1f} dB, "
              f"SSIM {f['ssim']:.3f}{fd}")


from .registry import CalibrationMethod, register  # noqa: E402

register(CalibrationMethod("bac", "block-wise adaptive caching (similarity DP + bubbling union)", _cli_args, _cli_run))
