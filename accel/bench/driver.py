"""The bench driver: same prompts, seeds and resolution for every row, one run, quality next to latency.

It only drives pipelines and metrics; all method logic lives in the rows (``rows.py``).
"""
from __future__ import annotations

import json
import os
import random
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..pipelines.calls import (call_kwargs, condition, default_prompts, frame_rate, is_class_conditional, makes_clips,
                               output_tensor, repeat_to, size_kwargs)
from ..pipelines.prompt_sets import prompt_set
from .metrics import MetricInputs, METRICS, check_metrics, compute, default_metrics
from ..timing import Span, clock as machine_clock, device_of
from ..pipelines.families import find_denoiser
from ..dist import gather, rank_world
from .rows import Row, make_row

TIMER_HOOK = "accel.bench.timer"


class _DenoiseTimer(ModelHook):
    """Wall time from the first denoiser call's start to the last one's end, per pipeline call (on ``clock``: see
    ``accel.timing.Span``)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.span = Span(clock)

    def new_forward(self, module, *args, **kwargs):
        if not self.span.started:
            self.span.start(device_of(args, kwargs))
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.span.stop()
        return out

    def start(self) -> None:
        self.span.reset()

    @property
    def seconds(self) -> float:
        return self.span.seconds


@contextmanager
def denoise_timer(pipe, clock: Callable[[], float] | None = None):
    """A denoising-loop timer on the pipeline's current denoiser (a row may swap it), removed on exit. ``clock``:
    what it reads (None: CUDA events on a CUDA device, else ``time.perf_counter``; see ``accel.timing.Span``)."""
    _, den = find_denoiser(pipe)
    timer = _DenoiseTimer(clock)
    HookRegistry.check_if_exists_or_initialize(den).register_hook(timer, TIMER_HOOK)
    try:
        yield timer
    finally:
        HookRegistry.check_if_exists_or_initialize(den).remove_hook(TIMER_HOOK, recurse=False)


@dataclass
class BenchConfig:
    pipeline: str = "pixart-eps"
    methods: tuple[str, ...] = ("plain", "uniform:2", "uniform:3", "fbcache:0.3")
    prompts: list[str] | None = None
    num_images: int = 100
    steps: int = 20
    guidance: float = 4.5
    seed: int = 0
    batch: int = 25
    out: str = "outputs/bench"
    fd_effnet: bool = True
    quality_only: bool = False  # the table leaves out latency (e.g. when other jobs share the machine)
    full_size: bool = False  # also time every row on a full-size PixArt-alpha-shaped transformer
    full_size_repeats: int = 1
    timing_rounds: int = 3  # interleaved timing passes over all rows after generation (0: time the generation)
    max_timing_rounds: int = 9  # more passes, while a row's speed-up spread exceeds timing_spread
    timing_spread: float = 0.1  # relative half-range of per-pass speed-ups above which a row is flagged unsteady
    metrics: tuple[str, ...] | None = None  # None: the pipeline's defaults (accel.bench.metrics.default_metrics)
    ref_images: str | None = None  # a folder of the user's reference images (fd_ref, fid)
    ref_stats: str | None = None  # EfficientNet statistics of the user's reference data (fd_ref)
    clip: str | None = None  # a local CLIP model folder (the clip metric)
    command: str | None = None  # the command line results.json records (default: this process's)
    calibration_prompts: list[str] | None = None  # what calibrated rows use (split from ``prompts``; None: defaults)
    score_all_prompts: bool = False  # score every one of ``prompts`` (no row calibrates: nothing is split off)
    height: int | None = None  # image size of every call (None: the pipeline's own)
    width: int | None = None
    num_frames: int | None = None  # video pipelines: frames per clip (None: the pipeline's own)
    fps: int | None = None  # video pipelines: the frame rate, where the pipeline is conditioned on it (LTX)
    device: str = "cpu"  # where the pipeline (and the full-size one) runs
    dtype: str = "float32"  # the pipeline's weights: float32, float16 or bfloat16
    context_parallel: str | None = None  # diffusers' context parallelism over the launched processes ("ulysses:2")
    extra: dict = field(default_factory=dict)

    def size(self) -> dict:
        """The size arguments of every call (``accel.pipelines.calls.call_kwargs`` / ``size_kwargs``)."""
        return {"height": self.height, "width": self.width, "num_frames": self.num_frames, "fps": self.fps}


def _call_args(pipe, row: Row, cfg: BenchConfig, prompts: list[str]) -> dict:
    """The call on ``prompts``: the bench's steps, guidance and size; a one-step pipeline's defaults fix its steps
    and guidance; the row's own arguments last."""
    defaults = getattr(pipe, "accel_defaults", {})
    # the scale the call runs at, known before conditioning: an undistilled FLUX's true CFG follows it
    scale = row.call_kwargs.get("guidance_scale", defaults.get("guidance_scale", cfg.guidance))
    kw = call_kwargs(pipe, prompts, defaults.get("num_inference_steps", cfg.steps), scale, **cfg.size())
    kw.update(row.call_kwargs)
    return kw


def _generate(pipe, row: Row, cfg: BenchConfig, prompts: list[str], timer: _DenoiseTimer, bar, rank: int = 0,
              world: int = 1, clock: Callable[[], float] | None = None) -> tuple[torch.Tensor, list, list]:
    """Images (a video pipeline's clips) of every prompt (batch i seeded with seed + i); with several processes each
    generates the batches i = rank (mod world) and all get every image, so the numbers equal one process's. Whole
    calls are timed on ``clock`` (None: ``accel.timing.clock``), the denoising loop by ``timer``."""
    now = clock or machine_clock
    mine = []
    for i, b in enumerate(range(0, len(prompts), cfg.batch)):
        if i % world != rank:
            continue
        chunk = prompts[b : b + cfg.batch]
        try:
            row.before_call(pipe)
            timer.start()
            t = now()
            out = output_tensor(pipe(output_type="pt", generator=torch.Generator().manual_seed(cfg.seed + i),
                                     **_call_args(pipe, row, cfg, chunk)))
        except Exception as e:  # noqa: BLE001 - shared below, so every process drops the row together
            if world == 1:
                raise
            mine.append((i, e, 0.0, 0.0))
            break
        mine.append((i, out.float().cpu(), (now() - t) / len(chunk), timer.seconds / len(chunk)))
        bar.update(len(chunk) * world)
    parts = sorted((p for part in gather(mine, world) for p in part), key=lambda p: p[0])
    failed = [p[1] for p in parts if isinstance(p[1], Exception)]
    if failed:  # a batch that failed on one process fails the row on all of them
        raise failed[0]
    return torch.cat([p[1] for p in parts]), [p[2] for p in parts], [p[3] for p in parts]


def check_context_parallel_rows(rows: list[Row], full_size: bool) -> None:
    """``ValueError`` for what a context-parallel run cannot bench: rows that decide from the values they see
    (``Row.per_rank_decisions``: each rank would decide on its own shard) and the one-process full-size section."""
    if full_size:
        raise ValueError("--full-size times a one-process model: leave it out under --context-parallel")
    for row in rows:
        if row.per_rank_decisions:
            raise ValueError(f"bench method {row.name!r} decides from the values it sees, and under context "
                             "parallelism each rank sees its own shard (the ranks could disagree): leave it out")


def _enable_context_parallel(pipe, rows: list[Row], cfg: BenchConfig, prompts: list[str],
                             clock: Callable[[], float] | None = None) -> tuple[int, int, dict]:
    """Time the plain pipeline in one process per rank (each as alone on its own accelerator), then turn on
    diffusers' context parallelism ``cfg.context_parallel``; returns (rank, world, the one-process timing).
    ``clock``: what the timing reads (None: the machine's, as in ``run_bench``).

    Rows that decide from the values they see (``Row.per_rank_decisions``) are refused beforehand: each rank
    would decide on its own shard."""
    from ..parallel import ContextParallel, enable_context_parallel

    check_context_parallel_rows(rows, cfg.full_size)
    spec = ContextParallel.parse(cfg.context_parallel)
    plain = make_row("plain")
    e2e, dn = [], []
    now = clock or machine_clock
    with denoise_timer(pipe, clock) as timer:
        for i in range(max(1, cfg.timing_rounds) + 1):  # the first call warms up
            timer.start()
            t = now()
            pipe(output_type="pt", generator=torch.Generator().manual_seed(cfg.seed), **_call_args(pipe, plain, cfg, prompts))
            if i:
                e2e.append((now() - t) / len(prompts))
                dn.append(timer.seconds / len(prompts))
    enable_context_parallel(pipe, spec)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    single = {"plain_denoise": statistics.median(dn), "plain_e2e": statistics.median(e2e),
              "plain_denoise_per_rank": gather(statistics.median(dn), world)}
    return rank, world, single


def _denoiser_macs(pipe, row: Row, cfg: BenchConfig, prompts: list[str], warm: bool = False) -> float:
    """Denoiser MACs per image actually executed, counted over one whole call (any row, peers included); ``warm``:
    one uncounted call at that batch size first (under context parallelism accel counts its own MACs inside the
    first call of a new input shape, which must not fall under this count)."""
    _, den = find_denoiser(pipe)
    if warm:
        row.before_call(pipe)
        pipe(output_type="pt", generator=torch.Generator().manual_seed(cfg.seed), **_call_args(pipe, row, cfg, prompts))
    row.before_call(pipe)
    with FlopCounterMode(display=False) as fc:
        pipe(output_type="pt", generator=torch.Generator().manual_seed(cfg.seed), **_call_args(pipe, row, cfg, prompts))
    counts = fc.get_flop_counts()
    key = type(den).__name__
    return sum(counts.get(key, {}).values()) / 2 / len(prompts)


def run_bench(cfg: BenchConfig, clock: Callable[[], float] | None = None) -> list[dict]:
    """Run every row of ``cfg``; write results.json, results.md, pareto.png and grid.png to ``cfg.out``.

    ``clock``: what every timing reads, the whole calls' and the denoising loops' (e.g. a fixed clock in tests, so
    that latencies, speed-ups and the number of timing rounds do not depend on the machine); None: the machine's
    (``accel.timing.clock`` for whole calls; CUDA events, else ``time.perf_counter``, for the denoising loop)."""
    from ..pipelines.reference import load_pipeline

    rows = [make_row(m) for m in cfg.methods]
    if not rows or rows[0].name != "plain":
        rows.insert(0, make_row("plain"))  # speed-ups and fidelity are relative to the plain row
    pipe = load_pipeline(cfg.pipeline, dtype=getattr(torch, cfg.dtype), device=cfg.device)
    pipe.set_progress_bar_config(disable=True)
    reference = getattr(pipe, "accel_reference", None) is not None
    ref_stats, ref_images = _reference_data(cfg)
    clips = makes_clips(pipe)
    names = cfg.metrics or default_metrics(reference, ref_stats is not None, cfg.fd_effnet, cfg.clip is not None, clips)
    check_metrics(names, reference, ref_stats is not None, clips)
    if cfg.prompts:
        scored, cfg.calibration_prompts = (list(cfg.prompts), None) if cfg.score_all_prompts else \
            split_prompts(cfg.prompts)
        prompts = repeat_to(scored, cfg.num_images)
        labels = [prompt_set(pipe).label(p) if reference else None for p in prompts]
    elif is_class_conditional(pipe) or not reference:
        prompts = default_prompts(pipe, cfg.num_images, seed=cfg.seed)
        labels = [None] * len(prompts)
    else:
        prompts, labels = prompt_set(pipe).evaluation(cfg.num_images, cfg.seed)
    condition(pipe, prompts[:1] + prompts[-1:])  # a prompt a class-conditional pipeline lacks: refused before any row
    size_kwargs(pipe, **cfg.size())  # and a size it cannot take (frames on an image pipeline)
    dist = torch.distributed
    launched = dist.get_world_size() if dist.is_available() and dist.is_initialized() else \
        int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // launched))  # the processes share the machine
    cp, single = cfg.context_parallel, None
    if cp is not None:
        rank, world, single = _enable_context_parallel(pipe, rows, cfg, prompts[: cfg.batch], clock)
        spread_rank, spread_world = 0, 1  # every rank runs every image; CP splits each one
    else:
        rank, world = rank_world()
        spread_rank, spread_world = rank, world
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, all_images = [], {}
    bar = tqdm(total=len(rows) * (len(prompts) + cfg.batch), desc="bench", unit="img", disable=rank > 0)
    skipped: list[dict] = []
    meta = _meta(cfg, prompts, world, skipped, names)
    for row in list(rows):
        bar.set_postfix(row=row.name)
        _, den = find_denoiser(pipe)
        order = _module_order(den)
        try:
            row.attach(pipe, cfg)
            try:
                with denoise_timer(pipe, clock) as timer:
                    row.before_call(pipe)  # warm-up call, excluded from the timings
                    pipe(output_type="pt", generator=torch.Generator().manual_seed(cfg.seed),
                         **_call_args(pipe, row, cfg, prompts[: cfg.batch]))
                    bar.update(cfg.batch)
                    imgs, e2e, dn = _generate(pipe, row, cfg, prompts, timer, bar, spread_rank, spread_world, clock)
                    if cp is None:
                        macs = _denoiser_macs(pipe, row, cfg, prompts[: min(4, len(prompts))]) if rank == 0 else 0.0
                    else:  # every rank counts its shard's MACs (the forward exchanges shards); the call's are the sum
                        macs = sum(gather(_denoiser_macs(pipe, row, cfg, prompts[: min(4, len(prompts))], warm=True),
                                          world))
            finally:
                row.detach(pipe)
                _restore_order(den, order)
            if rank == 0:
                inputs = MetricInputs.of(imgs, all_images.get("plain", imgs), row.name == "plain", labels, prompts,
                                         ref_stats=ref_stats, ref_images=ref_images, clip=cfg.clip)
                result = _row_result(row, inputs, names, e2e, dn, macs)
        except Exception as e:  # noqa: BLE001 - a row that cannot run here is recorded with its reason
            if row.name == "plain":
                raise
            try:
                row.detach(pipe)  # undo whatever the failed row had set up
            except Exception:  # noqa: BLE001 - nothing was attached
                pass
            _restore_order(den, order)
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
            tqdm.write(f"bench: row {row.name} skipped: {reason}")
            skipped.append({"method": row.name, "reason": reason})
            rows.remove(row)  # the rows measured so far, and the ones after, are kept
            bar.update(len(prompts) + cfg.batch)
            continue
        if rank > 0:
            continue  # metrics and outputs are rank 0's
        all_images[row.name] = imgs
        if clips and row.name == "plain":
            meta["clips"] = clip_shape(imgs, frame_rate(pipe, cfg.fps))
        results.append(result)
        _write_partial(out_dir, meta, results)  # a later failure or kill loses nothing measured
    bar.close()
    if cp is not None:  # a row dropped on any rank (rank 0's metrics, say) is dropped on all before timing
        kept = set.intersection(*(set(names) for names in gather([r.name for r in rows], world)))
        rows = [r for r in rows if r.name in kept]
        results = [r for r in results if r["method"] in kept]
    elif rank > 0:
        return []
    if cfg.timing_rounds > 0 and not cfg.quality_only and (world == 1 or cp is not None):
        timed = interleaved_latency(pipe, rows, cfg, prompts[: cfg.batch], quiet=rank > 0,
                                    world=world if cp is not None else 1, clock=clock)
        if cp is not None:
            per_rank = gather([statistics.median(dn) for _, dn in timed], world)
            if rank > 0:
                return []
            for r, *ranks in zip(results, *per_rank):
                r["latency_denoise_per_rank"] = list(ranks)
        plain_dn = timed[0][1]
        for r, (e2e, dn) in zip(results, timed):
            r["latency_e2e"], r["latency_denoise"] = statistics.median(e2e), statistics.median(dn)
            r["latency_samples"] = len(dn)
            # the plain row's time over this row's, round by round (the same round: the same state of the machine)
            r["speedup_denoise_rounds"] = [p / d if d else None for p, d in zip(plain_dn, dn)]
            r["speedup_spread"] = spread(r["speedup_denoise_rounds"])
            r["unsteady"] = r["speedup_spread"] > cfg.timing_spread
    elif rank > 0:
        return []
    base = results[0]
    for r in results:
        r["speedup_denoise"] = base["latency_denoise"] / r["latency_denoise"] if r["latency_denoise"] else None
        r["speedup_e2e"] = base["latency_e2e"] / r["latency_e2e"]
    if single is not None:
        meta["context_parallel"] = {"layout": cp, "ranks": world, **single,
                                    "speedup_denoise": single["plain_denoise"] / base["latency_denoise"],
                                    "speedup_e2e": single["plain_e2e"] / base["latency_e2e"]}
    full = None
    if cfg.full_size:
        (out_dir / "results.json").write_text(json.dumps({"config": meta, "rows": results, "full_size": None},
                                                         indent=1, default=str))  # kept if the full-size section fails
        full = full_size_latency(rows, cfg, clock)
    (out_dir / "results.json").write_text(json.dumps({"config": meta, "rows": results, "full_size": full}, indent=1,
                                                     default=str))
    md = to_markdown(results, meta, cfg.quality_only)
    if full is not None:
        md += "\n" + full_size_markdown(full, cfg)
    (out_dir / "results.md").write_text(md)
    from .plots import grid_png, pareto_png

    pareto_png(results, out_dir / "pareto.png")
    grid_png(all_images, out_dir / "grid.png")
    return results


def _module_order(root: torch.nn.Module) -> dict[str, tuple[list[str], list[str]]]:
    """The registration order of every submodule's children and parameters."""
    return {name: (list(m._modules), list(m._parameters)) for name, m in root.named_modules()}


def _restore_order(root: torch.nn.Module, order: dict) -> None:
    """Put children and parameters back in their registration order: a peer (cache-dit) re-registers blocks at
    the end, which reorders ``named_parameters`` and so the weights signature later rows check files against."""
    for name, m in root.named_modules():
        if name not in order:
            continue
        children, params = order[name]
        if list(m._modules) != children and set(m._modules) == set(children):
            m._modules = type(m._modules)((k, m._modules[k]) for k in children)
        if list(m._parameters) != params and set(m._parameters) == set(params):
            m._parameters = type(m._parameters)((k, m._parameters[k]) for k in params)


def split_prompts(prompts: list[str]) -> tuple[list[str], list[str]]:
    """The prompts a run scores and those its calibrated rows (BAC, MagCache) calibrate on: every fourth distinct
    prompt calibrates (at least one), the rest are scored; a single prompt serves both (then the seeds differ)."""
    distinct = list(dict.fromkeys(prompts))
    if len(distinct) < 2:
        return list(prompts), list(prompts)
    calib = distinct[3::4] or distinct[-1:]
    return [p for p in prompts if p not in calib], calib


def _meta(cfg: BenchConfig, prompts: list[str], world: int, skipped: list[dict], names: tuple[str, ...]) -> dict:
    """The run's configuration and machine, as results.json records them."""
    import platform
    import sys

    import diffusers
    import transformers

    from .page import command_line

    return {"pipeline": cfg.pipeline, "num_images": len(prompts), "steps": cfg.steps, "guidance": cfg.guidance,
            "seed": cfg.seed, "batch": cfg.batch, "threads": torch.get_num_threads(), "processes": world,
            "skipped": skipped, "device": _device_name(cfg.device), "dtype": cfg.dtype,
            "height": cfg.height, "width": cfg.width, "num_frames": cfg.num_frames, "fps": cfg.fps,
            "command": cfg.command or command_line(sys.argv),
            "metrics": list(names), "calibration_prompts": cfg.calibration_prompts,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__}}


def clip_shape(clips: torch.Tensor, fps: int) -> dict:
    """The shape of a run's clips (N, F, C, H, W) as results.json records it."""
    return {"frames": clips.shape[1], "height": clips.shape[-2], "width": clips.shape[-1], "fps": fps}


def _write_partial(out_dir: Path, meta: dict, results: list[dict]) -> None:
    """results.json with the rows finished so far (``"partial": true``), rewritten as each row finishes."""
    (out_dir / "results.json").write_text(json.dumps({"config": meta, "rows": results, "partial": True}, indent=1,
                                                     default=str))


def interleaved_latency(pipe, rows: list[Row], cfg: BenchConfig, prompts: list[str], quiet: bool = False,
                        world: int = 1, clock: Callable[[], float] | None = None) -> list[tuple[list, list]]:
    """Per row, end-to-end and denoising-loop seconds per image from ``cfg.timing_rounds`` passes that visit every
    row in turn (attach, one warm-up call, one timed call, detach), so slow drifts of the machine's speed fall
    on all rows alike and the speed-ups are ratios taken side by side. Each pass visits the rows in its own
    order (shuffled with ``cfg.seed``), so no row always follows the same neighbour. Rows that calibrate on
    attach keep their first calibration (see ``rows.py``). ``clock``: what the timings read (None: the machine's,
    as in ``run_bench``)."""
    now = clock or machine_clock
    times: list[tuple[list, list]] = [([], []) for _ in rows]
    cap = max(cfg.timing_rounds, cfg.max_timing_rounds)
    bar = tqdm(total=cfg.timing_rounds * len(rows), desc="bench: timing rounds", unit="row", disable=quiet)
    order = list(range(len(rows)))
    rng = random.Random(cfg.seed)
    _, den = find_denoiser(pipe)
    layout = _module_order(den)
    for done in range(cap):
        if done >= cfg.timing_rounds:  # past the minimum: go on only while some speed-up is still unsteady
            steady = max((spread([p / d for p, d in zip(times[0][1], dn) if d]) for _, dn in times[1:]),
                         default=0.0) <= cfg.timing_spread
            if world > 1:  # context parallelism: the ranks run every call together, so rank 0 decides for all
                steady = gather(steady, world)[0]
            if steady:
                break
            bar.total += len(rows)
        rng.shuffle(order)
        for row, (e2e, dn) in ((rows[i], times[i]) for i in order):
            row.attach(pipe, cfg)
            try:
                with denoise_timer(pipe, clock) as timer:
                    for timed in (False, True):
                        row.before_call(pipe)
                        timer.start()
                        t = now()
                        pipe(output_type="pt", generator=torch.Generator().manual_seed(cfg.seed),
                             **_call_args(pipe, row, cfg, prompts))
                        if timed:
                            e2e.append((now() - t) / len(prompts))
                            dn.append(timer.seconds / len(prompts))
            finally:
                row.detach(pipe)
                _restore_order(den, layout)
            bar.update(1)
    bar.close()
    return times


def spread(values: list[float]) -> float:
    """Relative half-range of per-round speed-ups, (max - min) / (2 median); 0 for fewer than two rounds."""
    vals = [v for v in values if v]
    if len(vals) < 2:
        return 0.0
    return (max(vals) - min(vals)) / (2 * statistics.median(vals))


def _row_result(row: Row, inputs: MetricInputs, names: tuple[str, ...], e2e, dn, macs) -> dict:
    r = {"method": row.name, "label": row.label, "peer": row.peer, "config": row.config,
         "latency_e2e": statistics.median(e2e), "latency_denoise": statistics.median(dn), "macs_per_image": macs}
    values, reasons = compute(names, inputs)
    r.update(values)
    if reasons:
        r["metric_errors"] = reasons
    if "clipping" in names:
        from .. import metrics

        clip = metrics.clipping(inputs.images)
        # the saturated share (>= 0.995): Fashion-MNIST's black background fills the low end in every row
        r["clipping_both_ends"], r["mean_intensity"] = clip["clipped"], clip["mean"]
    return r


def _reference_data(cfg: BenchConfig):
    """The user's reference statistics (EfficientNet) and images, from ``cfg.ref_stats`` / ``cfg.ref_images``."""
    from ..metrics import FeatureStats

    images = stats = None
    if cfg.ref_images:
        from ..metrics.reference_stats import compute as compute_stats, load_folder

        images = load_folder(cfg.ref_images)
        stats = compute_stats(images, kinds=("effnet",))["effnet"]
    if cfg.ref_stats:
        if not Path(cfg.ref_stats).exists():
            raise FileNotFoundError(f"reference statistics {cfg.ref_stats!r} not found (make them with "
                                    "`python -m accel.metrics.reference_stats --folder DIR --only effnet`)")
        stats = FeatureStats.load(cfg.ref_stats)
    return stats, images


def full_size_latency(rows: list[Row], cfg: BenchConfig, clock: Callable[[], float] | None = None) -> list[dict]:
    """Per row, the wall clock of one call of a PixArt-alpha-shaped pipeline (28 x 1152, 256 tokens, bf16,
    random weights) at the bench's steps and guidance, after one warm-up call of the plain pipeline.
    Rows that need the real model (calibration on prompts, files made for it, students) are skipped. ``clock``: what
    the timings read (None: the machine's, as in ``run_bench``)."""
    from .shapes import pixart_alpha_shaped, pixart_alpha_shaped_inputs

    now = clock or machine_clock
    pipe = pixart_alpha_shaped().to(cfg.device)
    pipe(**pixart_alpha_shaped_inputs(steps=2, guidance=cfg.guidance, device=cfg.device))  # warm-up (allocations, kernels)
    out = []
    for row in tqdm(rows, desc="full-size latency"):
        entry = {"method": row.name, "label": row.label, "peer": row.peer}
        if not row.full_size:
            out.append({**entry, "skipped": "not applicable to a random-weight model"})
            continue
        try:
            row.attach(pipe, cfg)
        except Exception as e:  # noqa: BLE001 - a row that needs the real model: say which and why
            if row.latency_stand_in is None:
                out.append({**entry, "skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"})
                continue
            try:
                row = make_row(row.latency_stand_in)
                entry["timed_as"] = row.name
                row.attach(pipe, cfg)
            except Exception as e2:  # noqa: BLE001 - e.g. a stacked schedule made for the small model
                out.append({**entry, "skipped": f"{type(e2).__name__}: {str(e2).splitlines()[0][:120]}"})
                continue
        e2e, dn = [], []
        try:
            with denoise_timer(pipe, clock) as timer:
                for _ in range(cfg.full_size_repeats):
                    kw = {**pixart_alpha_shaped_inputs(steps=cfg.steps, guidance=cfg.guidance, device=cfg.device),
                          **row.call_kwargs}
                    row.before_call(pipe)
                    timer.start()
                    t = now()
                    pipe(**kw)
                    e2e.append(now() - t)
                    dn.append(timer.seconds)
        finally:
            row.detach(pipe)
        out.append({**entry, "latency_e2e": statistics.median(e2e), "latency_denoise": statistics.median(dn)})
    base = out[0]
    for r in out:
        if "latency_denoise" in r and "latency_denoise" in base:
            r["speedup_denoise"] = base["latency_denoise"] / r["latency_denoise"]
            r["speedup_e2e"] = base["latency_e2e"] / r["latency_e2e"]
    return out


def full_size_markdown(full: list[dict], cfg: BenchConfig) -> str:
    md = (f"Full-size latency: PixArt-alpha-shaped transformer (28 blocks, width 1152, 256 tokens, bf16, random "
          f"weights), batch 1, {cfg.steps} steps, guidance {cfg.guidance}, median of {cfg.full_size_repeats}\n\n"
          "| method | denoise s/call | speed-up (denoise) | e2e s/call | speed-up (e2e) |\n|---|---|---|---|---|\n")
    for r in full:
        name = r["label"] + (" (peer)" if r["peer"] else "") + (f" (timed as {r['timed_as']})" if "timed_as" in r else "")
        if "skipped" in r:
            md += f"| {name} | skipped: {r['skipped']} | | | |\n"
        else:
            md += (f"| {name} | {r['latency_denoise']:.2f} | {_f(r.get('speedup_denoise'), '{:.2f}x')} | "
                   f"{r['latency_e2e']:.2f} | {_f(r.get('speedup_e2e'), '{:.2f}x')} |\n")
    return md


def _f(x, fmt: str) -> str:
    return "-" if x is None else (fmt.format(x) if x != float("inf") else "inf")


def _device_name(device: str) -> str:
    """``cpu``, or the accelerator with its model name (``cuda:0 (NVIDIA ...)``)."""
    if torch.device(device).type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return str(device)


def to_markdown(results: list[dict], meta: dict, quality_only: bool = False) -> str:
    from .page import subject

    device = meta.get("device", "cpu")
    where = f"{meta['threads']} CPU threads" if device == "cpu" else f"{device}, {meta.get('dtype', 'float32')}"
    clips, unit = meta.get("clips"), "clip" if meta.get("clips") else "img"
    head = (f"{meta['pipeline']}, {subject(meta)}, {meta['steps']} steps, guidance {meta['guidance']}, "
            f"batch {meta['batch']}, {where}\n\n")
    metric_names = meta.get("metrics") or ["fd_domain", "fd_effnet", "alignment", "psnr", "ssim", "clipping"]
    names = ["method"] + [METRICS[n].header for n in metric_names] + [f"GMACs/{unit}"]
    if not quality_only:
        names += [f"denoise s/{unit}", "speed-up (denoise)", f"e2e s/{unit}", "speed-up (e2e)"]
    cols = "| " + " | ".join(names) + " |\n|" + "---|" * len(names) + "\n"
    for r in results:
        cells = [r["label"] + (" (peer)" if r["peer"] else "")]
        cells += [_f(r.get(n), METRICS[n].fmt) for n in metric_names] + [f"{r['macs_per_image'] / 1e9:.3f}"]
        if not quality_only:
            sp = _f(r["speedup_denoise"], "{:.2f}x")
            if r.get("speedup_spread") is not None and r is not results[0]:
                rounds = [x for x in r.get("speedup_denoise_rounds") or [] if x]
                sp += (f" ±{r['speedup_spread']:.0%}" if not r.get("unsteady") else
                       f" (unsteady: {min(rounds):.2f}-{max(rounds):.2f}x over {len(rounds)} rounds)")
            cells += [f"{r['latency_denoise']:.4f}", sp, f"{r['latency_e2e']:.4f}", f"{r['speedup_e2e']:.2f}x"]
        cols += "| " + " | ".join(cells) + " |\n"
    if clips:
        cols += ("\nOn clips psnr, ssim and LPIPS are means over frames, Frechet distances on frame features over "
                 "all frames; temporal_err and fvd_plain measure whole clips.\n")
    errors = {n: e for r in results for n, e in (r.get("metric_errors") or {}).items()}
    for n, e in errors.items():
        cols += f"\n`{n}` not computed: {e}\n"
    spread = [(r["label"], [x for x in r.get("speedup_denoise_rounds") or [] if x]) for r in results[1:]]
    if not quality_only and spread and all(len(x) >= 3 for _, x in spread):
        cols += ("\nDenoise speed-up in each timing round (plain / row in the same round), min-max: "
                 + "; ".join(f"{label} {min(x):.2f}-{max(x):.2f}x" for label, x in spread) + ".\n")
    for sk in meta.get("skipped", []):
        cols += f"\nSkipped `{sk['method']}`: {sk['reason']}\n"
    return head + cols + context_parallel_markdown(results, meta)


def context_parallel_markdown(results: list[dict], meta: dict) -> str:
    """Under context parallelism: the plain pipeline in one process against it spread over the ranks, and every
    row's denoising time on each rank."""
    cp = meta.get("context_parallel")
    if not cp:
        return ""
    md = (f"\nContext parallelism {cp['layout']} over {cp['ranks']} processes (diffusers' enable_parallelism). "
          f"The plain pipeline in one process per rank (the ranks at once, same threads each): "
          f"{cp['plain_denoise']:.4f} s/img denoising; spread over the ranks: {results[0]['latency_denoise']:.4f} "
          f"s/img, a parallel speed-up of {cp['speedup_denoise']:.2f}x (denoise), {cp['speedup_e2e']:.2f}x (e2e). "
          "Speed-ups in the table are against the plain pipeline spread over the same ranks; GMACs/img are summed "
          "over the ranks.\n\n| method | " + " | ".join(f"rank {i} denoise s/img" for i in range(cp["ranks"]))
          + " |\n|---|" + "---|" * cp["ranks"] + "\n")
    for r in results:
        ranks = r.get("latency_denoise_per_rank") or []
        md += f"| {r['label']} | " + " | ".join(f"{x:.4f}" for x in ranks) + " |\n"
    return md
