"""ECAD: evolutionary cache schedules (arXiv 2506.15682) with NSGA-II from pymoo, as the authors did.

Genome: the boolean schedule [step, block, component] (True = compute). Objectives, both minimised:
F1 = quality loss on the calibration prompts (default ``fd_domain`` relative to the uncached
pipeline plus 1 - SSIM to the uncached images; on other models, 1 - SSIM plus ``fd_plain``, the Frechet distance on
EfficientNet-Lite0 features to the uncached images relative to their spread; ``alignment``, an accel option, adds the prompted class's
classifier probability lost against the uncached images), F2 = the schedule's static component MACs relative
to all-compute (``cost="latency"``, an accel option: the denoising time predicted by BAC's latency model,
which also charges each block run a step, so schedules the block fast path serves cost less; measured once
per run and kept in ``latency_model.json``). Constraint: at least one reuse (Hamming distance to
all-compute >= 1; step 0 always computes, so reuse bits there do not count), and with ``max_cost`` (an
accel option) a cost at most that bound.

Resumable: every evaluated candidate is appended to ``candidates.jsonl`` at once and the pymoo
algorithm is pickled after every generation, so a run killed at any moment and started again with
the same command continues and re-evaluates nothing. Distributed: under ``accelerate launch`` each
process evaluates a shard of the new candidates and the results are all-gathered; every process
runs the same seeded NSGA-II, so the front does not depend on the number of processes.

``reuse="taylor"`` (an accel option, not in the paper) searches schedules whose reused entries are forecast
(``CacheSchedule.reuse``) instead of held. ``granularity="block"`` (an accel option) searches one gene per
[step, block] instead of the paper's [step, block, component]: on small models a block run for one component
costs its norms and modulations too, and a block whose every component is reused is served by the fast path.

Departures: quality uses the reference metrics instead of ImageReward (no such weights offline);
the official mutation rate p = 0.05 is read as a per-bit flip probability [unverified].
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from accel.dist import gather, rank_world

import accel
from accel.pipelines.calls import output_frames
from accel.pipelines.prompt_sets import is_image_reference
from accel.pipelines.families import experts_fingerprint, experts_layout

if TYPE_CHECKING:
    from .bac import LatencyModel

QUALITY_TERMS = ("fd_domain", "fidelity", "fd_plain", "alignment")  # the terms a quality objective sums


@dataclass(frozen=True)
class ECADConfig:
    """Search settings; the defaults are the paper's (pop 72, 4-point crossover 0.9, bit flip 0.05, seed 0)."""

    steps: int = 20
    guidance: float = 4.5
    pop_size: int = 72
    generations: int = 50
    crossover_prob: float = 0.9
    crossover_points: int = 4
    mutation_prob: float = 0.05
    seed: int = 0
    quality: str = "fd_domain+fidelity"  # "+"-joined terms of QUALITY_TERMS, each optionally weighted: "fd_domain+5*alignment"
    seed_intervals: tuple[int, ...] = (2, 3, 4, 5)  # uniform schedules put in the first population
    seed_schedules: tuple[str, ...] = ()  # schedule files (e.g. BAC) put in the first population
    spread_init: bool = True  # random members at densities 0.3-0.95 (False: all at 0.5, the paper's init)
    solver: str | None = None  # a solver name (accel.solvers.named); ``steps`` is then its NFE
    guidance_method: str | None = None  # "apg:W..." or "facfg:..." (accel.guidance.spec); None: the pipeline's CFG
    reuse: str = "hold"  # what reused entries return (CacheSchedule.reuse); "taylor" is an accel option
    cost: str = "macs"  # second objective: "macs" (the paper) or "latency" (predicted time, an accel option)
    max_cost: float = 1.0  # candidates whose cost exceeds it are infeasible: the search spends its population below it
    # one gene per (step, component) (the paper) or per (step, block), all of a block's components together (an accel
    # option: a block is then computed whole or served whole by the block fast path, never run for part of it)
    granularity: str = "component"

    def apply_kwargs(self) -> dict:
        """What accel.apply gets besides the cache: the schedule is searched in the configuration it runs in."""
        from accel.guidance.spec import guidance_from_spec
        from accel.solvers.named import with_guidance

        kw: dict = {}
        if self.solver:
            kw["solver"] = with_guidance(self.solver, self.guidance)  # DC-Solver ratios for the calls' guidance
        if self.guidance_method:
            kw["guidance"] = guidance_from_spec(self.guidance_method)
        return kw

    def call_guidance(self) -> float:
        from accel.guidance.spec import call_scale, guidance_from_spec

        return call_scale(guidance_from_spec(self.guidance_method)) if self.guidance_method else self.guidance

    @property
    def weights(self) -> dict[str, float]:
        """The quality objective's terms and their weights (``quality`` split at "+", a term ``W*name`` weighs W)."""
        out: dict[str, float] = {}
        for part in self.quality.split("+"):
            w, _, name = part.rpartition("*")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                weight = 0.0  # not a number: refused below with the other bad weights
            if name not in QUALITY_TERMS or name in out or not 0.0 < weight < float("inf"):  # also refuses nan
                raise ValueError(f"unknown quality objective {self.quality!r}: '+'-joined terms of "
                                 f"{', '.join(QUALITY_TERMS)}, each optionally weighted by a positive W* (e.g. 5*alignment)")
            out[name] = weight
        return out

    @property
    def terms(self) -> tuple[str, ...]:
        """The quality objective's term names, without their weights."""
        return tuple(self.weights)

    def __post_init__(self) -> None:
        self.weights  # raises on an unknown or repeated term or a bad weight
        accel.schedule.check_reuse(self.reuse)
        if self.cost not in ("macs", "latency"):
            raise ValueError(f"cost must be 'macs' or 'latency', not {self.cost!r}")
        if self.granularity not in ("component", "block"):
            raise ValueError(f"granularity must be 'component' or 'block', not {self.granularity!r}")
        if not 0.0 < self.max_cost <= 1.0:
            raise ValueError(f"max_cost is a fraction in (0, 1], not {self.max_cost}")
        if self.pop_size < 4 or self.generations < 1:
            raise ValueError("pop_size >= 4 and generations >= 1")
        missing = [p for p in self.seed_schedules if not Path(p).is_file()]
        if missing:  # checked before any work: a typo must not cost the reference images
            raise ValueError(f"seed schedule not found: {', '.join(missing)}")


def _key(bits: np.ndarray) -> str:
    return hashlib.sha1(np.packbits(bits.astype(np.uint8)).tobytes()).hexdigest()


class ScheduleEvaluator:
    """Generates the calibration images under a schedule and scores quality and MACs."""

    def __init__(self, pipe, calls: list[dict], cfg: ECADConfig, call_kwargs: dict | None = None):
        self.pipe, self.calls, self.cfg = pipe, calls, cfg
        self.kwargs = dict(getattr(pipe, "accel_defaults", {}), output_type="pt", **(call_kwargs or {}))
        # solver and guidance the schedule will run with (the reference is the same configuration, uncached)
        self.apply_kwargs = cfg.apply_kwargs()
        self.layout = experts_layout(pipe)
        self.fingerprint = experts_fingerprint(pipe)
        self.template = accel.CacheSchedule.full(pipe, cfg.steps)
        accel.apply(pipe, **self.apply_kwargs)
        self.ref = self._generate()
        st = accel.stats(pipe)
        accel.remove(pipe)
        self.slot_macs = np.zeros(self.template.table.shape[1:])
        for c in st.components:
            self.slot_macs[c.block, self.layout.component_names.index(c.component)] += c.macs
        self.present = self.slot_macs > 0
        self.present[:, list(self.layout.always_compute_blocks)] = False  # computed at every step, never a gene
        # the gene deciding each present slot, in the order of ``table[:, present]``: its own, or its block's
        blocks_of_slots = np.nonzero(self.present)[0]
        self.gene_of_slot = (np.searchsorted(np.unique(blocks_of_slots), blocks_of_slots) if cfg.granularity == "block"
                             else np.arange(len(blocks_of_slots)))
        self.comp_macs = [c.macs for c in st.components]  # per cache slot, for the latency model
        self.latency = None  # a calibrate.bac.LatencyModel when cfg.cost == "latency"
        self.ref_fd = self._fd(self.ref) if "fd_domain" in cfg.terms else None
        self.plain_stats = None  # EfficientNet statistics of the uncached images, for the fd_plain term
        if "fd_plain" in cfg.terms:
            from accel.metrics.quality import effnet_stats

            self.plain_stats = effnet_stats(self.ref)
            # the unit: the plain set's total feature variance (a set of independent images of the same spread lies
            # about twice that far), so the term is on the scale of the others whatever the network's feature norms
            self.plain_spread = max(float(np.trace(self.plain_stats.sigma)), 1e-8)
        self.labels = self._labels() if "alignment" in cfg.terms else None
        self.ref_prob = self._prob(self.ref) if self.labels is not None else None

    @property
    def n_var(self) -> int:
        return (int(self.gene_of_slot.max()) + 1 if len(self.gene_of_slot) else 0) * self.cfg.steps

    def table(self, bits: np.ndarray) -> np.ndarray:
        """The schedule a candidate runs: step 0 always computes (a reuse with nothing stored computes at run time,
        so a step-0 reuse bit would be counted as saved MACs that are in fact spent)."""
        t = np.ones(self.template.table.shape, dtype=bool)
        t[:, self.present] = bits.reshape(self.cfg.steps, -1).astype(bool)[:, self.gene_of_slot]
        t[0] = True
        return t

    def bits(self, table: np.ndarray) -> np.ndarray:
        """A table's genes; with block genes, a block computes where any of its components does."""
        slots = table[:, self.present].astype(bool)
        genes = np.zeros((table.shape[0], self.n_var // self.cfg.steps), dtype=bool)
        for g in range(genes.shape[1]):
            genes[:, g] = slots[:, self.gene_of_slot == g].any(axis=1)
        return genes.reshape(-1)

    def schedule(self, bits: np.ndarray, **meta) -> accel.CacheSchedule:
        return accel.CacheSchedule(self.table(bits), self.layout.name, self.layout.component_names, self.fingerprint,
                                   None, "ecad", meta, self.cfg.reuse)

    def _generate(self) -> torch.Tensor:
        out = []
        for i, call in enumerate(self.calls):
            out.append(output_frames(self.pipe(num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.call_guidance(),
                                               generator=torch.Generator().manual_seed(self.cfg.seed + i),
                                               **self.kwargs, **call)))
        return torch.cat(out)

    @staticmethod
    def _fd(images: torch.Tensor) -> float:
        from accel.metrics import fd_domain

        return fd_domain(images)

    def _labels(self) -> torch.Tensor:
        from accel.pipelines.data import label_of_caption

        prompts = [p for call in self.calls for p in ([call["prompt"]] if isinstance(call.get("prompt"), str)
                                                      else call.get("prompt") or [])]
        labels = [label_of_caption(p) for p in prompts]
        if not labels or None in labels:
            raise ValueError("the alignment term needs calibration prompts that are each a reference caption "
                             "(e.g. 'a photo of a sneaker')")
        return torch.tensor(labels)

    def _prob(self, images: torch.Tensor) -> float:
        from accel.metrics import class_probability

        return class_probability(images, self.labels)

    def macs_fraction(self, bits: np.ndarray) -> float:
        t = self.table(bits)
        return float((t * self.slot_macs).sum() / (self.cfg.steps * self.slot_macs.sum()))

    def cost(self, bits: np.ndarray) -> float:
        """The second objective: the MACs fraction, or the predicted fraction of the all-compute denoising time."""
        if self.latency is None:
            return self.macs_fraction(bits)
        t = self.table(bits)
        lm = self.latency
        return float(lm.predict(float((t * self.slot_macs).sum()), lm.block_steps(t)) / lm.t_full)

    def evaluate(self, bits: np.ndarray) -> dict:
        from accel.metrics import ssim

        accel.apply(self.pipe, cache=self.schedule(bits), **self.apply_kwargs)
        try:
            imgs = self._generate()
        finally:
            accel.remove(self.pipe)
        m = {"macs_fraction": self.macs_fraction(bits), "ssim": ssim(imgs, self.ref)}
        w = self.cfg.weights
        loss = 0.0
        if self.ref_fd is not None:
            m["fd_domain"] = self._fd(imgs)
            loss += w["fd_domain"] * (m["fd_domain"] / max(self.ref_fd, 1e-8) - 1.0)
        if "fidelity" in w:
            loss += w["fidelity"] * (1.0 - m["ssim"])
        if self.plain_stats is not None:
            from accel.metrics import fd_plain

            m["fd_plain"] = fd_plain(imgs, self.plain_stats)
            loss += w["fd_plain"] * m["fd_plain"] / self.plain_spread
        if self.labels is not None:  # an accel option: the prompted class's probability lost against the uncached
            m["class_probability"] = self._prob(imgs)
            loss += w["alignment"] * (self.ref_prob - m["class_probability"])
        m["quality_loss"] = round(float(loss), 6)  # rounded: fronts must not depend on the last float bits
        return m


def _seeds(ev: ScheduleEvaluator, cfg: ECADConfig) -> list[tuple[str, str, np.ndarray]]:
    """(kind, label, bits) of the seed schedules, in population order: the uniform intervals, then the files."""
    out = [("uniform", f"uniform {k}", ev.bits(accel.CacheSchedule.uniform(ev.pipe, cfg.steps, k).table))
           for k in cfg.seed_intervals]
    return out + [("file", Path(p).stem, ev.bits(accel.CacheSchedule.load(p).resampled(cfg.steps, warn=False).table))
                  for p in cfg.seed_schedules]  # ECADConfig checked that the files exist


def _initial_population(ev: ScheduleEvaluator, cfg: ECADConfig, rng: np.random.Generator) -> np.ndarray:
    seeds = [bits for _, _, bits in _seeds(ev, cfg)][: cfg.pop_size]
    # departure: random members drawn at compute densities spread over [0.3, 0.95] instead of all at 0.5,
    # so a short search also covers the low-speed-up end of the front (the paper runs ~50 generations)
    n_rand = cfg.pop_size - len(seeds)
    hi = min(0.95, cfg.max_cost)  # a compute density is about a MACs fraction: draw members below max_cost
    density = np.linspace(min(0.3, 0.7 * hi), hi, n_rand)[:, None] if cfg.spread_init else 0.5
    rand = rng.random((n_rand, ev.n_var)) < density
    return np.concatenate([np.array(seeds, dtype=bool).reshape(len(seeds), ev.n_var), rand]) if seeds else rand


@dataclass
class ECADResult:
    front: list[dict] = field(default_factory=list)
    out_dir: str = ""


def run_ecad(pipe, calls: list[dict], out_dir: str | Path, cfg: ECADConfig = ECADConfig(),
             call_kwargs: dict | None = None, progress: bool = True, deadline: float | None = None,
             clock: Callable[[], float] = time.time, latency_model: LatencyModel | None = None) -> ECADResult:
    """Search, checkpointing in ``out_dir``; writes the Pareto front (schedule files, index.json, front.png).
    ``deadline``: a reading of ``clock`` (default ``time.time``) after which no new generation starts (the front so
    far is written). ``latency_model``: with ``cfg.cost == "latency"``, a ``calibrate.bac.LatencyModel`` the run
    scores with instead of timing one on this machine (a model timed elsewhere, or a fixed one in tests); it is
    kept in ``latency_model.json`` as a timed one is, and a resumed run keeps the model it started with.

    With ``cfg.solver`` / ``cfg.guidance_method`` (e.g. ``"dc"``, ``"apg:7.5"``) every candidate runs with that solver
    and guidance, so the schedule is searched for the configuration it will be used in (``cfg.steps`` = NFE).
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.population import Population
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.pntx import PointCrossover
    from pymoo.operators.mutation.bitflip import BitflipMutation
    from pymoo.problems.static import StaticProblem

    rank, world = rank_world()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    same = True
    if rank == 0:
        # settings added since a run started take their defaults, so older runs still resume
        old = {**json.loads(json.dumps(asdict(ECADConfig()))), **json.loads(cfg_path.read_text())} \
            if cfg_path.exists() else None
        same = old is None or old == json.loads(json.dumps(asdict(cfg)))
        if same:
            cfg_path.write_text(json.dumps(asdict(cfg), indent=1))
    if not gather(same, world)[0]:  # every process stops, or none
        raise ValueError(f"{out} holds a run with other settings; use another --out or the same settings")
    torch.set_num_threads(1) if world > 1 else None
    ev = ScheduleEvaluator(pipe, calls, cfg, call_kwargs)
    if cfg.cost == "latency":
        ev.latency = _latency_model(ev, out / "latency_model.json", rank, world, call_kwargs, latency_model)
    cand_path = out / "candidates.jsonl"
    cache: dict[str, dict] = {}
    if cand_path.exists():
        for line in cand_path.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            cache[d["key"]] = d
    problem = Problem(n_var=ev.n_var, n_obj=2, n_ieq_constr=1, xl=0, xu=1, vtype=bool)
    state_path = out / "algorithm.pkl"
    if state_path.exists():
        algorithm = pickle.loads(state_path.read_bytes())
    else:
        rng = np.random.default_rng(cfg.seed)
        init = _initial_population(ev, cfg, rng)
        algorithm = NSGA2(pop_size=cfg.pop_size, sampling=Population.new("X", init),
                          crossover=PointCrossover(n_points=cfg.crossover_points, prob=cfg.crossover_prob),
                          mutation=BitflipMutation(prob=1.0, prob_var=cfg.mutation_prob), eliminate_duplicates=True)
        algorithm.setup(problem, seed=cfg.seed, termination=("n_gen", cfg.generations))

    def score(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = [_key(x) for x in X]
        reused = [int((~ev.table(x)).sum()) for x in X]  # reuses the run makes (``table``: step 0 computes)
        todo = [i for i, k in enumerate(keys) if k not in cache and reused[i]]
        mine = todo[rank::world]
        results = {}
        for i in tqdm(mine, desc=f"gen {algorithm.n_gen or 0}: evaluating", leave=False, disable=not progress or rank):
            try:
                m = ev.evaluate(X[i])
            except Exception as e:  # noqa: BLE001 - e.g. a solver refusing non-finite latents under heavy reuse
                # recorded with a loss no schedule that runs reaches, so a resumed search does not retry it
                m = {"macs_fraction": ev.macs_fraction(X[i]), "quality_loss": 1e6,
                     "error": f"{type(e).__name__}: {str(e).strip()[:200]}"}
            rec = {"key": keys[i], "bits": np.packbits(X[i].astype(np.uint8)).tolist(), **m}
            results[keys[i]] = rec
            if world == 1:
                with open(cand_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, results)
            for g in gathered:
                results.update(g)
            if rank == 0:
                with open(cand_path, "a") as f:
                    for rec in results.values():
                        f.write(json.dumps(rec) + "\n")
        cache.update(results)
        F = np.zeros((len(X), 2))
        G = np.zeros((len(X), 1))
        for i, (x, k) in enumerate(zip(X, keys)):
            if not reused[i]:  # the all-compute schedule is excluded by the constraint
                F[i] = (0.0, 1.0)
                G[i] = 1.0
                continue
            F[i] = (cache[k]["quality_loss"], round(ev.cost(x), 6))
            G[i] = max(1 - reused[i], F[i, 1] - cfg.max_cost)
        return F, G

    bar = tqdm(total=cfg.generations, initial=algorithm.n_gen - 1 if algorithm.n_gen else 0, desc="ecad",
               disable=not progress or rank)
    while algorithm.has_next():
        if deadline is not None and algorithm.n_gen and gather(clock() >= deadline, world)[0]:
            break  # rank 0 decides, so every process stops at the same generation
        pop = algorithm.ask()
        if pop is None:  # no offspring left that is not a duplicate: a small schedule space is exhausted
            if algorithm.opt is None:
                raise ValueError(f"ECAD: this model's schedule space at {cfg.steps} steps has too few distinct "
                                 f"schedules for a population of {cfg.pop_size}; give a smaller --pop-size")
            break
        X = pop.get("X").astype(bool)
        F, G = score(X)
        Evaluator().eval(StaticProblem(problem, F=F, G=G), pop)
        algorithm.tell(infills=pop)
        if rank == 0:
            tmp = state_path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(algorithm))
            os.replace(tmp, state_path)
        opt = algorithm.opt.get("F")
        bar.update(1)
        bar.set_postfix(front=len(opt), best=f"{opt[:, 0].min():.3f}@{opt[opt[:, 0].argmin(), 1]:.2f}")
    bar.close()
    return _write_front(algorithm, ev, out, cfg, rank, cache, world)


def _write_front(algorithm, ev: ScheduleEvaluator, out: Path, cfg: ECADConfig, rank: int, cache: dict,
                 world: int = 1) -> ECADResult:
    opt = algorithm.opt
    X, F = opt.get("X").astype(bool), opt.get("F")
    order = np.argsort(F[:, 1])
    front = []
    for j, i in enumerate(order):
        name = f"schedule_{j:02d}.json"
        entry = {"file": name, "quality_loss": float(F[i, 0]), "macs_fraction": round(ev.macs_fraction(X[i]), 6),
                 "compute_fraction": float(X[i].mean())}
        if ev.latency is not None:
            entry["predicted_time_fraction"] = float(F[i, 1])
        front.append(entry)
        if rank == 0:
            ev.schedule(X[i], quality_loss=entry["quality_loss"], macs_fraction=entry["macs_fraction"],
                        predicted_time_fraction=entry.get("predicted_time_fraction"),
                        guidance=cfg.guidance, generations=cfg.generations, pop_size=cfg.pop_size, solver=cfg.solver,
                        guidance_method=cfg.guidance_method).save(out / name)
    if rank == 0:
        seeds = []
        for kind, label, bits in _seeds(ev, cfg):
            rec = cache.get(_key(bits))
            if rec is not None:  # seeds beyond the population size were never evaluated
                seeds.append({"kind": kind, "label": label, "macs_fraction": rec["macs_fraction"],
                              "quality_loss": rec["quality_loss"], "cost": round(ev.cost(bits), 6)})
        (out / "index.json").write_text(json.dumps({"config": asdict(cfg), "processes": world, "front": front,
                                                  "seeds": seeds}, indent=1))
        _plot(front, out / "front.png", seeds, cfg.reuse, cfg.cost)
    return ECADResult(front, str(out))


def _plot(front: list[dict], path: Path, seeds: list[dict], reuse: str = "hold", cost: str = "macs") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    key = "predicted_time_fraction" if cost == "latency" else "macs_fraction"
    ax.plot([f[key] for f in front], [f["quality_loss"] for f in front], "o-", label="ECAD front")
    ax.set_xlabel("predicted denoising time (fraction)" if cost == "latency" else "component MACs computed (fraction)")
    ax.set_ylabel("quality loss (lower is better)")
    files = False
    for s in seeds:
        x = s.get("cost", s["macs_fraction"]) if cost == "latency" else s["macs_fraction"]
        if s.get("kind", "uniform") == "uniform":
            ax.scatter(x, s["quality_loss"], marker="x", color="tab:red")
            ax.annotate(s["label"], (x, s["quality_loss"]), fontsize=7)
        else:  # seed files: one legend entry, their names are in index.json (labels would pile up)
            ax.scatter(x, s["quality_loss"], marker="+", color="tab:gray", label=None if files else "seed files")
            files = True
    ax.set_title("ECAD Pareto front vs seed schedules (x)" + (f", {reuse} reuse" if reuse != "hold" else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _latency_model(ev: ScheduleEvaluator, path: Path, rank: int, world: int, call_kwargs: dict | None,
                   given: LatencyModel | None = None) -> LatencyModel:
    """The run's latency model: read from ``path`` (a resumed run), else ``given`` or timed once on rank 0, shared
    with every process and saved, so every candidate of a run (and every process) is scored with the same model."""
    from .bac import LatencyModel, measure_latency_model

    d = json.loads(path.read_text()) if path.exists() else None
    if d is None and rank == 0:
        cfg = ev.cfg
        m = given if given is not None else measure_latency_model(ev.pipe, ev.calls[0], cfg.steps, cfg.call_guidance(),
                                                                  ev.comp_macs, call_kwargs=call_kwargs)
        d = {**vars(m), "fast_blocks": list(m.fast_blocks)}
        path.write_text(json.dumps(d, indent=1))
    d = gather(d, world)[0]
    return LatencyModel(**{**d, "fast_blocks": tuple(d["fast_blocks"])})


def _cli_args(p) -> None:
    p.add_argument("--pop-size", type=int, default=72)
    p.add_argument("--generations", type=int, default=50)
    p.add_argument("--crossover-prob", type=float, default=0.9)
    p.add_argument("--mutation-prob", type=float, default=0.05)
    p.add_argument("--quality", default=None,
                   help="default: fd_domain+fidelity on the reference pipelines, fidelity+fd_plain on any other model. "
                        "'+'-joined terms: fd_domain (relative to the uncached), fidelity (1 - SSIM to the uncached), "
                        "fd_plain (Frechet distance on EfficientNet-Lite0 features to the uncached images, over their "
                        "total feature variance), "
                        "alignment (an accel option: the prompted class's classifier probability lost against the "
                        "uncached; prompts must name a reference class); a term W*name is weighed W, e.g. "
                        "fd_domain+5*alignment")
    p.add_argument("--seed-schedule", action="append", default=[], help="a schedule JSON (e.g. BAC) for the first population")
    p.add_argument("--solver", help="ecad: search the schedule for this solver (a name as in accel.apply(solver=...)); "
                                    "--steps is then its NFE. steps: the solver whose steps are learned (dpm++, "
                                    "unipc (default), v3, dc; with its file, e.g. v3:ems.safetensors)")
    p.add_argument("--guidance-method", help="search it under this guidance: apg:W[:ETA:MOMENTUM:R] or facfg:WL:WH[:CUT]")
    p.add_argument("--cost", default="macs", choices=("macs", "latency"),
                   help="second objective: MACs (the paper) or the denoising time predicted by a latency model timed "
                        "once per run (an accel option; it sees the block fast path)")
    p.add_argument("--granularity", default="component", choices=("component", "block"),
                   help="one gene per step and component (the paper) or per step and block, its components together "
                        "(an accel option: no block runs for part of its components)")
    p.add_argument("--max-cost", type=float, default=1.0,
                   help="search only schedules whose cost (MACs or predicted time fraction, see --cost) is at most this "
                        "(an accel option: the whole population then works on that end of the front)")


def _cli_run(a) -> None:
    from accel.devices import load_from_args
    from accel.errors import InputError


    from .bac import prompt_batches
    from .cli_common import read_prompts, size_args, warmup_reuse

    try:
        import pymoo  # noqa: F401
    except ImportError:
        raise InputError("ECAD searches with pymoo's NSGA-II: pip install 'accel[calibrate]'") from None
    pipe = load_from_args(a)
    pipe.set_progress_bar_config(disable=True)
    prompts = read_prompts(a, pipe)
    size = size_args(a, pipe)
    reference = is_image_reference(pipe)  # the Fashion-MNIST image measures apply (not on clips)
    quality = a.quality or ("fd_domain+fidelity" if reference else "fidelity+fd_plain")
    if not reference and any(t in quality for t in ("fd_domain", "alignment")):
        raise InputError(f"--quality {quality}: fd_domain and alignment measure against Fashion-MNIST and mean "
                       "something only on the reference pipelines; on your model use fidelity and fd_plain")
    try:
        cfg = ECADConfig(steps=a.steps, guidance=a.guidance, pop_size=a.pop_size, generations=a.generations,
                         crossover_prob=a.crossover_prob, mutation_prob=a.mutation_prob, seed=a.seed, quality=quality,
                         seed_schedules=tuple(a.seed_schedule), solver=a.solver, guidance_method=a.guidance_method,
                         reuse=warmup_reuse(a)[1], cost=a.cost, max_cost=a.max_cost, granularity=a.granularity)
        cfg.apply_kwargs()  # a bad guidance spec fails here, before any work
        res = run_ecad(pipe, prompt_batches(prompts, a.batch, pipe, cfg.call_guidance()), a.out, cfg,
                       call_kwargs=size or None)
    except ValueError as e:
        raise InputError(str(e)) from None
    print(f"ECAD front: {len(res.front)} schedules -> {a.out}/index.json, front.png")


from .registry import CalibrationMethod, register  # noqa: E402

register(CalibrationMethod("ecad", "evolutionary Pareto front of schedules (NSGA-II, resumable, accelerate launch)",
                           _cli_args, _cli_run))
