"""``accel tune``: one calibrated stack (solver, NFE, step placement, cache schedule, guidance) for a speed or quality
target, chosen by measurement, written as one ``accel.stack.Stack`` file.

The search runs in stages, each on the calibration prompts and against the plain pipeline's images from the same
prompts and seeds, with the measured denoising time (not MACs) as the speed objective:

1. grid: every solver x NFE x guidance method (CFG at the call scale, APG);
2. steps: learned step placements (``calibrate.steps``, LD3) for the best configuration at each of the lowest NFEs;
3. cache: a short ECAD search (``calibrate.ecad``: block genes, latency cost) inside the fastest configurations that
   keep the quality bound, whose front schedules become candidates;
4. validation: the candidates near the calibration front, run by the bench (``accel.bench``) on prompts split off
   before the search (each repeated with new noises as far as the budget allows), with interleaved timing; the validated Pareto set is written, and the chosen config is the
   fastest inside the quality bound (``max_quality_loss``) or the best quality at a speed-up (``target_speedup``).

Quality is measured as the pipeline's kind allows: on the image reference pipelines ``fd_domain`` relative to the plain
pipeline's and ``alignment`` points lost (the bound: ``fd_domain`` at most ``max_quality_loss`` above, alignment at most
``max_alignment_drop`` points below); on any other model 1 - SSIM to the plain pipeline's images.

Every measured candidate is appended to ``candidates.jsonl`` at once, learned steps and ECAD checkpoint themselves,
and the time spent is kept in ``state.json``, so a run killed at any moment continues with the same command. Under
``accelerate launch`` each process measures a shard of every stage's candidates (its speed-ups against its own
plain timing), learns a shard of the step files, and ECAD and the bench spread their work as they do alone.

Example:
    >>> from accel.pipelines.reference import load_reference
    >>> from calibrate.tune import TuneConfig, tune  # doctest: +SKIP
    >>> pipe = load_reference("pixart-eps")  # doctest: +SKIP
    >>> result = tune(pipe, "pixart-eps", TuneConfig(max_quality_loss=0.1, budget_minutes=60), "outputs/tune")  # doctest: +SKIP
    >>> result.chosen  # the path of the chosen config (accel.apply(pipe, config=...))  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

import accel
from accel.dist import gather, rank_world
from accel.guidance.spec import guidance_from_spec
from accel.stack import CacheSpec, SolverSpec, Stack

# the share of the budget by which each stage ends (the time a stage leaves goes to the next); validation takes
# what remains and is never cut short
STAGE_ENDS = {"grid": 0.25, "steps": 0.5, "cache": 0.85}
LD3_PROMPTS = 64  # prompts the step learner uses (half learn, half validate): its teacher solve costs 200 steps each


@dataclass(frozen=True)
class TuneConfig:
    """What the tune searches and for what. ``max_quality_loss`` and ``target_speedup``: give one (default: a
    quality loss of 0.1)."""

    steps: int = 20  # the plain pipeline's steps: the baseline every candidate is measured against
    guidance: float = 4.5  # the plain pipeline's CFG scale
    solvers: tuple[str, ...] = ("dpm++", "unipc", "v3", "dc")
    nfes: tuple[int, ...] = (3, 4, 5, 6, 8)
    guidance_methods: tuple[str, ...] = ("cfg", "apg:4.5", "apg:7.5")  # "cfg": the pipeline's CFG at ``guidance``
    max_quality_loss: float | None = None
    max_alignment_drop: float = 2.0  # reference pipelines: alignment points the chosen config may lose
    target_speedup: float | None = None
    budget_minutes: float = 60.0
    learned_steps: int = 2  # configurations that get learned steps (the lowest NFEs)
    cache_searches: int = 2  # configurations that get an ECAD schedule
    ecad_pop: int = 16
    validation_rows: int = 12  # candidates the validation benches at most
    validation_repeats: int = 8  # images per held-out prompt the validation may make (new noises), time allowing
    batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_quality_loss is not None and self.target_speedup is not None:
            raise ValueError("give one target: max_quality_loss or target_speedup")
        if self.max_quality_loss is None and self.target_speedup is None:
            object.__setattr__(self, "max_quality_loss", 0.1)
        if self.max_quality_loss is not None and not self.max_quality_loss >= 0:
            raise ValueError(f"max_quality_loss must be >= 0, got {self.max_quality_loss}")
        if self.target_speedup is not None and not self.target_speedup > 1:
            raise ValueError(f"target_speedup must be above 1, got {self.target_speedup}")
        if not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes must be positive, got {self.budget_minutes}")
        if not self.solvers or not self.nfes or not self.guidance_methods:
            raise ValueError("the grid needs at least one solver, one NFE and one guidance method")
        if any(n < 1 for n in self.nfes) or self.steps < 2 or self.batch < 1 or self.validation_repeats < 1:
            raise ValueError("NFEs must be >= 1, steps >= 2, batch >= 1 and validation_repeats >= 1")
        for s in self.solvers:
            SolverSpec.parse(s)  # a clear error for an unknown solver
        for g in self.guidance_methods:
            if g != "cfg":
                guidance_from_spec(g)


@dataclass
class TuneResult:
    out_dir: str
    pareto: list[dict] = field(default_factory=list)  # the validated Pareto set, fastest last
    chosen: str | None = None  # the chosen config's path, None when no candidate met the target
    message: str = ""


# -- quality against the plain pipeline ---------------------------------------------------------------------------------
class Scorer:
    """A candidate's images measured against the plain pipeline's on the same prompts and seeds."""

    def __init__(self, plain: torch.Tensor, labels: list[int] | None):
        from accel.metrics import alignment, fd_domain

        self.plain, self.labels = plain, labels
        if labels is not None:
            self.plain_fd, self.plain_alignment = fd_domain(plain), alignment(plain, labels)

    def __call__(self, images: torch.Tensor) -> dict:
        from accel.metrics import alignment, fd_domain, ssim

        m = {"ssim": ssim(images, self.plain)}
        if self.labels is None:
            m["quality_loss"] = 1.0 - m["ssim"]
            return m
        m["fd_domain"], m["alignment"] = fd_domain(images), alignment(images, self.labels)
        return {**m, **relative(m["fd_domain"], m["alignment"], self.plain_fd, self.plain_alignment)}


def relative(fd: float, align: float, plain_fd: float, plain_align: float) -> dict:
    """``fd_domain`` relative to the plain pipeline's, alignment points lost, and the scalar the fronts rank by (2
    alignment points weigh as much as 10% of fd_domain)."""
    fd_rel = fd / max(plain_fd, 1e-8) - 1.0
    drop = 100.0 * (plain_align - align)
    return {"fd_rel": fd_rel, "alignment_drop": drop, "quality_loss": fd_rel + drop / 20.0}


def within(m: dict, cfg: TuneConfig) -> bool:
    """Inside the quality bound (always, in target-speed-up mode)."""
    if cfg.max_quality_loss is None:
        return True
    if "fd_rel" in m:
        return m["fd_rel"] <= cfg.max_quality_loss and m["alignment_drop"] <= cfg.max_alignment_drop
    return m["quality_loss"] <= cfg.max_quality_loss


# -- measuring a candidate ----------------------------------------------------------------------------------------------
class Runner:
    """Generates the calibration prompts' images under a stack (None: the plain pipeline) and times the denoising
    (on ``clock``; None: the machine's, as ``accel.bench``'s timer)."""

    def __init__(self, pipe, prompts: list[str], cfg: TuneConfig, call_kwargs: dict | None = None,
                 clock: Callable[[], float] | None = None):
        self.pipe, self.prompts, self.cfg, self.clock = pipe, prompts, cfg, clock
        self.kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="pt", **(call_kwargs or {}))

    def run(self, stack: Stack | None, warm: bool = False) -> tuple[torch.Tensor, float]:
        """Images and the median denoising seconds per image over the batches after the first (its one-time costs
        are not the stack's speed; with one batch, that one)."""
        from accel.bench.driver import denoise_timer
        from accel.pipelines.calls import condition, output_frames

        cfg = self.cfg
        call = {**self.kwargs, "num_inference_steps": cfg.steps, "guidance_scale": cfg.guidance}
        if stack is not None:
            call.update(stack.call_defaults())
            accel.apply(self.pipe, **stack.apply_kwargs(self.pipe, call["num_inference_steps"], cfg.guidance))
        images, per = [], []
        try:
            if warm and len(self.prompts) <= cfg.batch:  # one batch: an untimed call first
                self.pipe(**{**call, **condition(self.pipe, self.prompts[:1], call["guidance_scale"])})
            with denoise_timer(self.pipe, self.clock) as timer:
                for i, b in enumerate(range(0, len(self.prompts), cfg.batch)):
                    chunk = self.prompts[b: b + cfg.batch]
                    timer.start()
                    out = output_frames(self.pipe(generator=torch.Generator().manual_seed(cfg.seed + i),
                                                  **{**call, **condition(self.pipe, chunk, call["guidance_scale"])}))
                    per.append(timer.seconds / len(chunk))
                    images.append(out.float().cpu())
        finally:
            if stack is not None:
                accel.remove(self.pipe)
        return torch.cat(images), statistics.median(per[1:] or per)


class _Clock:
    """Seconds spent by the run, across restarts (``state.json``), read on ``now``."""

    def __init__(self, path: Path, budget_s: float, rank: int, now: Callable[[], float] = time.time):
        self.path, self.budget, self.rank, self.now = path, budget_s, rank, now
        state = json.loads(path.read_text()) if path.exists() else {}
        self.base, self.plain = state.get("elapsed", 0.0), state.get("plain_seconds")
        self.t0 = now()

    def plain_seconds(self, measured: float) -> float:
        """The plain pipeline's seconds per image the run's speed-ups divide: rank 0's first measurement (other
        processes time their own)."""
        if self.rank > 0 or self.plain is None:
            self.plain = measured
        return self.plain

    def elapsed(self) -> float:
        return self.base + self.now() - self.t0

    def save(self) -> None:
        if self.rank == 0:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"elapsed": round(self.elapsed(), 1), "plain_seconds": self.plain}))
            tmp.replace(self.path)

    def deadline(self, stage: str) -> float:
        """The reading of ``now`` at which ``stage`` must end."""
        return self.now() + STAGE_ENDS[stage] * self.budget - self.elapsed()


class _Search:
    """The candidates measured so far (``candidates.jsonl``) and the measuring of new ones, sharded over processes."""

    def __init__(self, runner: Runner, scorer: Scorer, plain_seconds: float, out: Path, clock: _Clock,
                 rank: int, world: int):
        self.runner, self.scorer, self.plain_seconds = runner, scorer, plain_seconds
        self.path, self.clock, self.rank, self.world = out / "candidates.jsonl", clock, rank, world
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                st = d["stack"]
                if st.get("guidance") is None and st.get("guidance_scale") is None:  # a record from before configs
                    st["guidance_scale"] = runner.cfg.guidance  # carried CFG's scale: measured at the tune's
                    d["key"] = Stack.from_dict(st).shorthand()
                self.records[d["key"]] = d

    def measure(self, stage: str, stacks: list[Stack], deadline: float | None = None) -> list[dict]:
        """The records of ``stacks`` (measuring those not yet measured, until ``deadline``)."""
        keys = [s.shorthand() for s in stacks]
        todo = [keys.index(k) for k in dict.fromkeys(keys) if k not in self.records]
        rounds = -(-len(todo) // self.world)  # each round: one candidate per process, then every record is shared
        for r in tqdm(range(rounds), desc=f"tune: {stage}", disable=self.rank > 0):
            if gather(deadline is not None and self.clock.now() >= deadline, self.world)[0]:  # rank 0 decides for all
                break
            j, mine = r * self.world + self.rank, {}
            if j < len(todo):
                mine[keys[todo[j]]] = self._one(stage, keys[todo[j]], stacks[todo[j]])
            got = {k: v for part in gather(mine, self.world) for k, v in part.items()}  # rank order on every rank
            if self.rank == 0:
                self._append(list(got.values()))
            self.records.update(got)
            self.clock.save()
        return [self.records[k] for k in keys if k in self.records]

    def _one(self, stage: str, key: str, stack: Stack) -> dict:
        rec = {"key": key, "stage": stage, "stack": stack.to_dict()}
        try:  # a candidate that cannot run here is recorded with its reason, as the bench records a row
            images, seconds = self.runner.run(stack)
            if not torch.isfinite(images).all():
                raise FloatingPointError("non-finite images")
            m = self.scorer(images)
        except Exception as e:  # noqa: BLE001
            return {**rec, "error": _reason(e)}
        return {**rec, **m, "seconds_per_image": seconds, "speedup": self.plain_seconds / seconds}

    def _append(self, recs: list[dict]) -> None:
        cut = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
        with open(self.path, "a") as f:
            f.write("\n" if cut else "")  # a line cut by a kill stays on its own
            for r in recs:
                f.write(json.dumps(r) + "\n")

    def measured(self) -> list[dict]:
        return [r for r in self.records.values() if "error" not in r]


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


# -- the stages ---------------------------------------------------------------------------------------------------------
def grid(cfg: TuneConfig) -> list[Stack]:
    """Every solver x NFE x guidance method, lowest NFE first."""
    out = []
    for nfe in sorted(cfg.nfes):
        for s in cfg.solvers:
            spec = SolverSpec.parse(s)
            if spec.name == "dc" and spec.guidance is None:  # ratios for the plain CFG scale, written in the config
                spec = replace(spec, guidance=cfg.guidance)
            for g in cfg.guidance_methods:
                out.append(Stack(spec, nfe, None, guidance_from_spec(g)) if g != "cfg" else
                           Stack(spec, nfe, None, None, guidance_scale=cfg.guidance))  # the config carries its scale
    return out


def _call_guidance(stack: Stack, cfg: TuneConfig) -> float:
    return stack.call_defaults().get("guidance_scale", cfg.guidance)


def steps_jobs(records: list[dict], cfg: TuneConfig) -> list[Stack]:
    """The configurations that get learned steps: the best quality at each of the ``learned_steps`` lowest NFEs."""
    base = [r for r in records if r["stage"] == "grid" and r["stack"]["solver"] and r["stack"]["steps"] >= 2]
    jobs = []
    for nfe in sorted({r["stack"]["steps"] for r in base})[: cfg.learned_steps]:
        best = min((r for r in base if r["stack"]["steps"] == nfe), key=lambda r: r["quality_loss"])
        jobs.append(Stack.from_dict(best["stack"]))
    return jobs


def cache_jobs(records: list[dict], cfg: TuneConfig) -> list[Stack]:
    """The configurations an ECAD schedule is searched in: the fastest inside the quality bound, one per solver and
    NFE (target mode: the best quality at half the target speed-up or more)."""
    if cfg.cache_searches <= 0:
        return []
    pool = [r for r in records if r["stage"] in ("grid", "steps") and r["stack"]["cache"] is None]
    if cfg.target_speedup is None:
        pool = sorted((r for r in pool if within(r, cfg)), key=lambda r: -r["speedup"])
    else:
        pool = sorted((r for r in pool if r["speedup"] >= cfg.target_speedup / 2), key=lambda r: r["quality_loss"])
    jobs, seen = [], set()
    for r in pool:
        s = Stack.from_dict(r["stack"])
        if (s.solver.name, s.steps) not in seen and s.steps >= 3:  # over 2 steps a cache reuses one at most
            seen.add((s.solver.name, s.steps))
            jobs.append(s)
        if len(jobs) == cfg.cache_searches:
            break
    return jobs


def _label(stack: Stack) -> str:
    g = "cfg" if stack.guidance is None else f"apg{stack.guidance.scale:g}" if hasattr(stack.guidance, "eta") \
        else "facfg"
    return f"{stack.solver.name.replace('+', 'p')}-{stack.steps}-{g}" + ("-learned" if stack.solver.steps else "")


def teacher_seconds(plain_seconds: float, cfg: TuneConfig, n_prompts: int) -> float:
    """About what LD3's teacher solve costs before its deadline can stop it: 200 steps of the guided denoiser
    (the plain pipeline's at ``cfg.steps``, ``plain_seconds`` per image) on each of its prompts (one prompt serves
    both its halves)."""
    from .steps import LD3Config

    return plain_seconds * LD3Config().teacher_steps / cfg.steps * max(2, min(LD3_PROMPTS, n_prompts))


def first_generation_seconds(plain_seconds: float, speedup: float, cfg: TuneConfig, n_prompts: int,
                             world: int) -> float:
    """About what an ECAD search costs before its deadline can stop it: its latency model (9 calls of one batch),
    reference and first population (a run over the prompts each, the population shared by ``world`` processes), all
    at most as slow as the configuration searched in (``speedup``)."""
    images = (1 + -(-cfg.ecad_pop // world)) * n_prompts + 9 * min(cfg.batch, n_prompts)
    return plain_seconds * images / max(speedup, 1e-6)


def learn_job(pipe, stack: Stack, prompts: list[str], cfg: TuneConfig, out: Path, deadline: float,
              call_kwargs: dict | None, clock: Callable[[], float] = time.time) -> Stack:
    """``stack`` with a learned step file (learned now, or read back from an earlier run); ``deadline`` is a reading
    of ``clock``."""
    from .steps import learn_steps

    path = out / "steps" / f"{_label(stack)}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        lp = prompts[:LD3_PROMPTS]
        half = max(1, len(lp) // 2)
        # departure: APG stacks learn their steps on the CFG ODE at the APG scale (the learner's guided denoiser
        # is CFG's; APG's projection and momentum are not in it)
        learned = learn_steps(pipe, replace(stack.solver, steps=None).name_for(), stack.steps,
                              lp[:half], lp[half:] or lp[:half], _call_guidance(stack, cfg), seed=cfg.seed,
                              batch=cfg.batch, call_kwargs=call_kwargs, checkpoint=str(path) + ".partial",
                              progress=False, deadline=deadline, clock=clock)
        learned.save(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)  # a file cut by a kill is never taken for a learned one
    return replace(stack, solver=replace(stack.solver, steps=str(path)))


def ecad_job(pipe, stack: Stack, prompts: list[str], cfg: TuneConfig, out: Path, deadline: float, reference: bool,
             call_kwargs: dict | None, clock: Callable[[], float] = time.time) -> list[Stack]:
    """``stack`` with each schedule of an ECAD front searched inside it; ``deadline`` is a reading of ``clock``."""
    from .bac import prompt_batches
    from .ecad import ECADConfig, run_ecad

    g = stack.guidance
    spec = None if g is None else (f"apg:{g.scale}:{g.eta}:{g.momentum}:{g.norm_threshold or 0.0}"
                                   if hasattr(g, "eta") else f"facfg:{g.scale_low}:{g.scale_high}:{g.cutoff}")
    ecfg = ECADConfig(steps=stack.steps, guidance=cfg.guidance, pop_size=cfg.ecad_pop, generations=60,
                      quality="fd_domain+5*alignment" if reference else "fidelity+fd_plain", seed=cfg.seed,
                      seed_intervals=tuple(k for k in (2, 3) if k < stack.steps), solver=stack.solver.name_for(),
                      guidance_method=spec, cost="latency", granularity="block", max_cost=0.95)
    folder = out / "ecad" / _label(stack)
    res = run_ecad(pipe, prompt_batches(prompts, cfg.batch, pipe, _call_guidance(stack, cfg)), folder, ecfg,
                   call_kwargs=call_kwargs, progress=False, deadline=deadline, clock=clock)
    rank, world = rank_world()
    gather(None, world)  # rank 0 has written the front's files
    # each schedule under a name of its content: a resumed search that rewrites schedule_NN.json with another
    # front cannot pair a measured record with a schedule it was not measured on
    paths = []
    for f in res.front:
        data = (folder / f["file"]).read_bytes()
        path = folder / "front" / f"{hashlib.sha1(data).hexdigest()[:16]}.json"
        if rank == 0 and not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.with_suffix(".tmp").write_bytes(data)
            path.with_suffix(".tmp").replace(path)
        paths.append(path)
    gather(None, world)
    return [replace(stack, cache=CacheSpec(file=str(p))) for p in paths]


def pareto(records: list[dict], speed: str = "speedup") -> list[dict]:
    """The records no other beats on both speed and quality loss, fastest last."""
    front = [r for r in records if not any(
        o[speed] >= r[speed] and o["quality_loss"] <= r["quality_loss"]
        and (o[speed] > r[speed] or o["quality_loss"] < r["quality_loss"]) for o in records)]
    return sorted(front, key=lambda r: r[speed])


def for_validation(records: list[dict], cfg: TuneConfig) -> list[dict]:
    """The candidates the validation runs: the calibration front and the fastest inside the bound (target mode: the
    best quality near the target), at most ``validation_rows``, fastest first."""
    front = pareto(records)
    if cfg.target_speedup is None:
        near = sorted((r for r in records if within(r, cfg)), key=lambda r: -r["speedup"])
        front = [r for r in front if r["speedup"] >= 1.0]
    else:
        near = sorted((r for r in records if r["speedup"] >= 0.8 * cfg.target_speedup), key=lambda r: r["quality_loss"])
    picked = {}
    # the best of the front first: its fastest members are the ones furthest outside the bound
    for r in near[: cfg.validation_rows // 2] + sorted(front, key=lambda r: r["quality_loss"]):
        if len(picked) < cfg.validation_rows:
            picked.setdefault(r["key"], r)
    return sorted(picked.values(), key=lambda r: -r["speedup"])


def validation_images(held: int, plain_seconds: float, speedups: list[float], seconds_left: float,
                      repeats: int) -> int:
    """Images the validation makes: the held-out prompts, repeated with new noises as far as half the budget's
    remaining time allows (up to ``repeats`` each), since a relative Frechet distance on a hundred images moves by
    several percent from one draw of noises to the next. ``plain_seconds``: the plain pipeline's denoising seconds
    per image; calls cost about 1.5x that (encoding, decoding, metrics)."""
    per_image = 1.5 * plain_seconds * (1.0 + sum(1.0 / s for s in speedups if s > 0))
    fit = int(0.5 * seconds_left / per_image) if per_image > 0 else held
    return max(held, min(repeats * held, fit))


def write_config(stack: Stack, folder: Path, **meta) -> Path:
    """``folder/config.json`` with copies of the stack's files beside it (a folder that moves as one)."""
    folder.mkdir(parents=True, exist_ok=True)

    def copy(p: str | None, name: str) -> str | None:
        if p is None:
            return None
        dest = folder / f"{name}{Path(p).suffix}"
        shutil.copyfile(p, dest)
        return dest.name

    solver = stack.solver and replace(stack.solver, file=copy(stack.solver.file, "solver-statistics"),
                                      steps=copy(stack.solver.steps, "steps"))
    cache = stack.cache and (replace(stack.cache, file=copy(stack.cache.file, "schedule")) if stack.cache.file
                             else stack.cache)
    return replace(stack, solver=solver, cache=cache, metadata={**stack.metadata, **meta}).save(folder / "config.json")


def _plot(rows: list[dict], front: list[dict], chosen: dict | None, path: Path, bound: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.scatter([r["validation"]["speedup"] for r in rows], [r["validation"]["quality_loss"] for r in rows],
               color="tab:gray", s=14, label="validated candidates")
    ax.plot([r["validation"]["speedup"] for r in front], [r["validation"]["quality_loss"] for r in front], "o-",
            label="Pareto set")
    if chosen is not None:
        ax.scatter([chosen["validation"]["speedup"]], [chosen["validation"]["quality_loss"]], marker="*", s=160,
                   color="tab:red", label="chosen", zorder=3)
    ax.scatter([1.0], [0.0], marker="x", color="black", label="plain pipeline")
    if bound is not None:
        ax.axhline(bound, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel("speed-up of the denoising loop (validation, measured)")
    ax.set_ylabel("quality loss (validation, lower is better)")
    ax.set_title("accel tune: validated candidates")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the run ------------------------------------------------------------------------------------------------------------
def has_cfg_batch(pipe) -> bool:
    """False for a pipeline whose calls have no CFG for a guidance method to act on (guidance-distilled FLUX)."""
    from accel.pipelines.calls import uses_true_cfg

    return not ("true_cfg_scale" in inspect.signature(type(pipe).__call__).parameters and not uses_true_cfg(pipe))


def split_prompts(prompts: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """(search, validation): a seeded half of the distinct prompts is held out for the validation, so no prompt is
    in both (drawn at random, not alternately: an ordered list, e.g. classes in turn, would split by kind)."""
    import random

    distinct = list(dict.fromkeys(prompts))
    if len(distinct) < 2:
        raise ValueError("the tune needs at least 2 distinct prompts (half search, half validate)")
    random.Random(seed).shuffle(distinct)
    held = set(distinct[::2])
    return [p for p in prompts if p not in held], [p for p in prompts if p in held]


def tune(pipe, pipeline: str, prompts: list[str], cfg: TuneConfig, out_dir: str | Path, call_kwargs: dict | None = None,
         device: str = "cpu", dtype: str = "float32", clock: Callable[[], float] | None = None) -> TuneResult:
    """Search, validate and choose (module docstring); ``pipeline`` is what the validation bench loads (the name or
    folder ``pipe`` came from). Resumable with the same arguments.

    ``clock``: what the run reads for its budget (the stages' deadlines, those of the step learning and of ECAD's
    generations) and for every timing (the denoising seconds the speed-ups divide, the validation bench's), e.g. a
    fixed clock in tests, so that where the stages stop and the speed-ups the choice rests on do not depend on the
    machine's speed; None: the machine's (``time.time`` for the budget, ``accel.bench``'s timers for the timings).
    ECAD's latency model (the cost its search ranks schedules by) is timed on the machine either way."""
    from accel.bench import BenchConfig, run_bench
    from accel.pipelines.data import label_of_caption
    from accel.pipelines.prompt_sets import is_image_reference
    from accel.pipelines.families import find_denoiser, fingerprint

    rank, world = rank_world()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(cfg), "prompts": prompts, "pipeline": pipeline, "call_kwargs": call_kwargs or {},
                "device": device, "dtype": dtype}
    settings = json.loads(json.dumps(settings))
    path = out / "tune.json"
    same = True
    if rank == 0:
        same = not path.exists() or json.loads(path.read_text()) == settings
        if same:
            path.with_suffix(".tmp").write_text(json.dumps(settings, indent=1))
            path.with_suffix(".tmp").replace(path)
    if not gather(same, world)[0]:  # every process stops, or none
        raise ValueError(f"{out} holds a tune with other settings; use another --out or the same settings")
    if world > 1:
        torch.set_num_threads(1)
    now = clock or time.time
    budget = _Clock(out / "state.json", 60.0 * cfg.budget_minutes, rank, now)
    search_prompts, valid_prompts = split_prompts(prompts, cfg.seed)
    reference = is_image_reference(pipe)  # the Fashion-MNIST image measures apply (not on clips)
    every = [label_of_caption(p) for p in prompts] if reference else [None]
    # prompts that are not all reference captions (both halves): the generic measure
    labels = [label_of_caption(p) for p in search_prompts] if None not in every else None
    runner = Runner(pipe, search_prompts, cfg, call_kwargs, clock)
    plain, plain_seconds = runner.run(None, warm=True)
    plain_seconds = budget.plain_seconds(plain_seconds)  # a resumed run keeps its first baseline
    search = _Search(runner, Scorer(plain, labels), plain_seconds, out, budget, rank, world)
    kinds = "fd_domain and alignment" if labels is not None else "1 - SSIM"
    if rank == 0:
        tqdm.write(f"tune: {len(search_prompts)} search prompts, {len(valid_prompts)} validation prompts; quality: "
                   f"{kinds} against the plain pipeline ({cfg.steps} steps, guidance_scale {cfg.guidance})")

    # 1. the grid: solvers a pipeline cannot take (v3 without statistics, ...) are measured once and dropped
    if not has_cfg_batch(pipe) and cfg.guidance_methods != ("cfg",):
        if rank == 0:
            tqdm.write("tune: guidance methods left out: this pipeline has no CFG batch to guide (guidance-distilled)")
        cfg = replace(cfg, guidance_methods=("cfg",))
    stacks, dropped = grid(cfg), {}
    for s in list(stacks):
        name = s.solver.name_for(cfg.guidance)  # as the runner applies it (DC: ratios for the plain CFG scale)
        if name.split(":")[0] in dropped:
            continue
        try:
            from accel.solvers.named import solver_from_name

            solver_from_name(pipe, name)
        except (ValueError, FileNotFoundError, KeyError) as e:
            dropped[name.split(":")[0]] = str(e).splitlines()[0]
    stacks = [s for s in stacks if s.solver.name not in dropped]
    if rank == 0:
        for k, why in dropped.items():
            tqdm.write(f"tune: solver {k} left out: {why}")
    if not stacks:
        raise ValueError(f"no solver of --solvers runs on this pipeline ({'; '.join(dropped.values())})")
    search.measure("grid", stacks, budget.deadline("grid"))

    # 2. learned steps
    mine, learned = steps_jobs(search.measured(), cfg)[rank::world], []
    end = budget.deadline("steps")
    need = teacher_seconds(plain_seconds, cfg, len(search_prompts))
    for k, job in enumerate(mine):  # each job gets an equal share of what the stage has left
        done = out / "steps" / f"{_label(job)}.json"
        started = done.exists() or Path(f"{done}.partial").exists()
        if now() >= end and not started:
            break  # no time left for a job not yet started (a started one returns its best points at once)
        share = (end - now()) / (len(mine) - k)
        if not started and need > share:  # the deadline cannot cut a teacher solve short
            tqdm.write(f"tune: learned steps for {job.shorthand()} left out: its teacher solve needs about "
                       f"{need:.0f} s, more than the {share:.0f} s left for it (a larger --budget-minutes makes room)")
            budget.save()
            continue
        try:
            learned.append(learn_job(pipe, job, search_prompts, cfg, out, now() + share, call_kwargs, now))
        except Exception as e:  # noqa: BLE001 - one configuration that cannot learn leaves the others
            tqdm.write(f"tune: learned steps for {job.shorthand()} left out: {_reason(e)}")
        budget.save()
    learned = [s for part in gather(learned, world) for s in part]
    search.measure("steps", learned)

    # 3. cache schedules inside the fastest configurations
    has_pymoo = True
    try:
        import pymoo  # noqa: F401
    except ImportError:
        has_pymoo = False
        if rank == 0:
            tqdm.write("tune: cache stage left out: ECAD needs pymoo (pip install 'accel[calibrate]')")
    jobs = cache_jobs(search.measured(), cfg) if has_pymoo else []
    end = budget.deadline("cache")
    for k, job in enumerate(jobs):
        fresh = not (out / "ecad" / _label(job)).exists()
        if gather(now() >= end and fresh, world)[0]:
            break  # no time left for a search not yet started (rank 0 decides for all)
        share = (end - now()) / (len(jobs) - k)
        need = first_generation_seconds(plain_seconds, search.records.get(job.shorthand(), {}).get("speedup", 1.0), cfg,
                                        len(search_prompts), world)
        if gather(fresh and need > share, world)[0]:  # the deadline cannot cut a first generation short
            if rank == 0:
                tqdm.write(f"tune: cache search in {job.shorthand()} left out: its first generation needs about "
                           f"{need:.0f} s, more than the {share:.0f} s left for it (a larger --budget-minutes makes "
                           "room)")
            continue
        try:
            cached = ecad_job(pipe, job, search_prompts, cfg, out, now() + share, labels is not None, call_kwargs,
                              now)
        except Exception as e:  # noqa: BLE001 - raised on every process alike (ECAD shares its failures)
            if rank == 0:
                tqdm.write(f"tune: cache search in {job.shorthand()} left out: {e}")
            continue
        search.measure("cache", cached)
        budget.save()

    # 4. validation on the held-out split, by the bench
    cands = for_validation(search.measured(), cfg)
    fp = fingerprint(find_denoiser(pipe)[1])
    if not cands:
        why = "no candidate ran on this pipeline (candidates.jsonl has the errors)" if not search.measured() else \
            "no candidate stayed inside the quality bound on the search prompts"
        return _finish(out, [], cfg, rank, why, fp)
    folder = out / "validation" / "configs"
    methods = ["plain"]
    for i, r in enumerate(cands):
        if rank == 0:
            write_config(replace(Stack.from_dict(r["stack"]), fingerprint=fp), folder / f"c{i:02d}")
        methods.append(f"config:{folder / f'c{i:02d}' / 'config.json'}")
    gather(None, world)  # the files exist before any process reads them
    metrics = ("fd_domain", "alignment", "ssim") if labels is not None else ("ssim", "psnr")
    n_valid = gather(validation_images(len(valid_prompts), plain_seconds, [r["speedup"] for r in cands],
                                       60.0 * cfg.budget_minutes - budget.elapsed(), cfg.validation_repeats), world)[0]
    if rank == 0:
        tqdm.write(f"tune: validating {len(cands)} candidates on {n_valid} images of {len(valid_prompts)} held-out "
                   "prompts")
    size = dict(call_kwargs or {})  # the size the search ran at (``size_kwargs``: a video pipeline's frames too)
    bench = BenchConfig(pipeline=pipeline, methods=tuple(methods), prompts=valid_prompts,
                        num_images=n_valid, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed,
                        batch=cfg.batch, out=str(out / "validation"), fd_effnet=False, metrics=metrics,
                        score_all_prompts=True, device=device, dtype=dtype, height=size.get("height"),
                        width=size.get("width"), num_frames=size.get("num_frames"),
                        fps=size.get("frame_rate", size.get("fps")))
    bench_rows = run_bench(bench, clock)
    budget.save()
    if rank > 0:
        return TuneResult(str(out))
    by_method = {r["method"]: r for r in bench_rows}
    base = bench_rows[0]
    rows = []
    for i, r in enumerate(cands):
        b = by_method.get(methods[i + 1])
        if b is None or not b.get("speedup_denoise") or (labels is not None and b.get("alignment") is None):
            continue  # the bench recorded why (validation/results.json)
        v = {"speedup": b["speedup_denoise"], "ssim": b.get("ssim")}
        if labels is not None:
            v.update(fd_domain=b["fd_domain"], alignment=b["alignment"],
                     **relative(b["fd_domain"], b["alignment"], base["fd_domain"], base["alignment"]))
        else:
            v["quality_loss"] = 1.0 - b["ssim"]
        calib = {k: r[k] for k in ("speedup", "quality_loss", "fd_rel", "alignment_drop", "ssim") if k in r}
        rows.append({"key": r["key"], "stack": r["stack"], "stage": r["stage"], "calibration": calib,
                     "validation": v, "within": within(v, cfg)})
    return _finish(out, rows, cfg, rank, "", fp, base, budget, n_valid)


def _finish(out: Path, rows: list[dict], cfg: TuneConfig, rank: int, message: str, fp: str,
            base: dict | None = None, clock: _Clock | None = None, n_valid: int | None = None) -> TuneResult:
    """The validated Pareto set (``pareto/``), the chosen config (``chosen/``), ``index.json`` and ``pareto.png``."""
    flat = [{**r, "speedup": r["validation"]["speedup"], "quality_loss": r["validation"]["quality_loss"]} for r in rows]
    front = pareto(flat)
    if cfg.target_speedup is None:
        ok = [r for r in flat if r["within"] and r["speedup"] > 1.0]
        chosen = max(ok, key=lambda r: r["speedup"]) if ok else None
        if chosen is None and not message:
            best = min(flat, key=lambda r: r["quality_loss"]) if flat else None
            message = ("no validated candidate is faster than the plain pipeline inside the quality bound" +
                       (f" (the closest: quality loss {best['quality_loss']:.3f} at {best['speedup']:.2f}x)" if best
                        else ""))
    else:
        ok = [r for r in flat if r["speedup"] >= cfg.target_speedup]
        chosen = min(ok, key=lambda r: r["quality_loss"]) if ok else None
        if chosen is None and not message:
            fastest = max(flat, key=lambda r: r["speedup"]) if flat else None
            message = (f"no validated candidate reaches {cfg.target_speedup:g}x" +
                       (f" (the fastest: {fastest['speedup']:.2f}x)" if fastest else ""))
    for d in (out / "pareto", out / "chosen"):
        if rank == 0:
            shutil.rmtree(d, ignore_errors=True)
    entries = []
    for j, r in enumerate(front):
        entries.append({**{k: r[k] for k in ("stage", "calibration", "validation", "within")},
                        "shorthand": Stack.from_dict(r["stack"]).shorthand(), "folder": f"pareto/config_{j:02d}"})
        if rank == 0:
            write_config(replace(Stack.from_dict(r["stack"]), fingerprint=fp), out / "pareto" / f"config_{j:02d}",
                         calibration=r["calibration"], validation=r["validation"])
    chosen_path = None
    if chosen is not None:
        chosen_path = str(out / "chosen" / "config.json")
        if rank == 0:
            write_config(replace(Stack.from_dict(chosen["stack"]), fingerprint=fp), out / "chosen",
                         calibration=chosen["calibration"], validation=chosen["validation"], tune=asdict(cfg))
        message = (f"chosen: {Stack.from_dict(chosen['stack']).shorthand()} at {chosen['speedup']:.2f}x "
                   f"(validation), quality loss {chosen['quality_loss']:.3f}")
    index = {"config": asdict(cfg), "seconds": round(clock.elapsed(), 1) if clock else None,
             "validation_images": n_valid,
             "plain_validation": {k: base.get(k) for k in ("fd_domain", "alignment", "latency_denoise")} if base else None,
             "pareto": entries, "validated": [{k: r[k] for k in ("key", "stage", "calibration", "validation", "within")}
                                               for r in rows],
             "chosen": chosen_path and "chosen/config.json", "message": message,
             "note": "the chosen config's validation numbers are those of the run it was chosen on (the best of the "
                     "validated candidates, so favourable); judge it on other prompts with accel bench"}
    if rank == 0:
        (out / "index.json").write_text(json.dumps(index, indent=1))
        if rows:
            # the bound is one line on the plot's axis only where it bounds that number (not fd_domain + alignment)
            generic = all("fd_rel" not in r["validation"] for r in rows)
            _plot(flat, front, chosen, out / "pareto.png", cfg.max_quality_loss if generic else None)
    return TuneResult(str(out), entries, chosen_path, message)
