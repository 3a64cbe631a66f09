"""A whole accel configuration as one typed object and one JSON file: solver and step count, cache, guidance.

``accel.apply(pipe, config=stack)`` (or the path of its file) applies all of it; the bench's
``stack:PART+PART`` rows and ``config:FILE`` rows, and ``accel generate --config``, go through the same object.

Example:
    >>> from accel import APG
    >>> from accel.stack import CacheSpec, SolverSpec, Stack
    >>> s = Stack(solver=SolverSpec("dpm++"), steps=8, cache=CacheSpec(interval=2), guidance=APG(4.5))
    >>> Stack.from_shorthand(s.shorthand()) == s
    True
    >>> s.shorthand()
    'solver:8:dpm+++uniform:2+apg:4.5:0.0:0.0:1.0'
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .guidance.methods import APG, FrequencyAwareCFG
from .schedule import check_reuse

FORMAT = "accel.Stack/1"
SOLVERS = ("dpm++", "unipc", "v3", "dc")
PART_KINDS = ("solver", "uniform", "schedule", "apg", "facfg", "cfg")
Guidance = APG | FrequencyAwareCFG


@dataclass(frozen=True)
class SolverSpec:
    """A solver of ``accel.solvers.named``: ``name`` with its statistics ``file`` (v3: EMS, dc: ratios; None: the
    files shipped for the reference pipelines), for DC the CFG scale its ratios serve (None: the call's), and
    ``steps``: a learned step file (``accel calibrate --method steps``) placing its steps."""

    name: str
    file: str | None = None
    guidance: float | None = None
    steps: str | None = None

    def __post_init__(self) -> None:
        if self.name not in SOLVERS:
            raise ValueError(f"solver {self.name!r}: one of {', '.join(SOLVERS)}")
        if self.file is not None and self.name not in ("v3", "dc"):
            raise ValueError(f"solver {self.name!r} takes no file")
        if self.guidance is not None and self.name != "dc":
            raise ValueError(f"solver {self.name!r} takes no guidance scale (only dc does)")

    @classmethod
    def parse(cls, text: str) -> "SolverSpec":
        """``dpm++``, ``unipc``, ``v3[:EMS_FILE]``, ``dc[:RATIO_FILE][:GUIDANCE]``, each optionally ``:steps=FILE``."""
        from .solvers.named import split_steps

        text, steps = split_steps(text)
        name, _, rest = text.partition(":")
        parts = rest.split(":") if rest else []
        guidance = None
        if name == "dc" and parts:
            try:
                guidance = float(parts[-1])
                parts = parts[:-1]
            except ValueError:
                pass
        return cls(name, ":".join(parts) or None, guidance, steps)

    def name_for(self, call_guidance: float | None = None) -> str:
        """The solver name ``accel.apply`` takes; DC without its own scale serves ``call_guidance``."""
        text = self.name + (f":{self.file}" if self.file else "")
        g = self.guidance if self.guidance is not None else call_guidance
        text += f":{g}" if self.name == "dc" and g is not None else ""
        return text + (f":steps={self.steps}" if self.steps else "")


@dataclass(frozen=True)
class CacheSpec:
    """A uniform schedule (compute every ``interval`` steps, ``reuse`` hold or taylor) laid over the stack's
    steps, or a schedule ``file`` (``accel.CacheSchedule``)."""

    interval: int | None = None
    reuse: str = "hold"
    file: str | None = None

    def __post_init__(self) -> None:
        if (self.interval is None) == (self.file is None):
            raise ValueError("a cache is a uniform interval or a schedule file, exactly one of them")
        if self.interval is not None and self.interval < 1:
            raise ValueError(f"cache interval must be at least 1, got {self.interval}")
        check_reuse(self.reuse)
        if self.file is not None and self.reuse != "hold":
            raise ValueError("a schedule file carries its own reuse; give reuse only with an interval")

    def build(self, pipe, steps: int):
        """The ``cache=`` argument of ``accel.apply`` for calls of ``steps`` steps."""
        from .schedule import CacheSchedule

        if self.file is not None:
            return self.file
        return CacheSchedule.uniform(pipe, steps, self.interval, reuse=self.reuse)


def split_shorthand(text: str) -> list[str]:
    """The parts of a stack shorthand: split at a ``+`` that starts a part (``solver:``, ``uniform:``, ...), so a
    ``+`` inside a part (``dpm++``) stays in it."""
    return [p for p in re.split(r"\+(?=(?:%s):)" % "|".join(PART_KINDS), text) if p]


def _guidance_from_dict(d: dict) -> Guidance:
    d = dict(d)
    method = d.pop("method", None)
    cls = {"apg": APG, "facfg": FrequencyAwareCFG}.get(method)
    if cls is None:
        raise ValueError(f"guidance method {method!r}: apg or facfg")
    return cls(**d)


def _guidance_to_dict(g: Guidance) -> dict:
    return {"method": "apg" if isinstance(g, APG) else "facfg", **asdict(g)}


@dataclass(frozen=True)
class Stack:
    """Solver at ``steps`` steps, a cache laid over those steps, and a guidance method; every part optional.

    ``fingerprint``: the denoiser config it was made for (``accel.pipelines.families.fingerprint``; None: any).
    ``guidance_scale``: the call's ``guidance_scale`` (the pipeline's own CFG; guidance-distilled FLUX: its embedded
    guidance) for a stack without a guidance method, which carries its scale itself; None: the call's.
    """

    solver: SolverSpec | None = None
    steps: int | None = None
    cache: CacheSpec | None = None
    guidance: Guidance | None = None
    fingerprint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    guidance_scale: float | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.guidance_scale is not None:
            if self.guidance is not None:
                raise ValueError("a stack's guidance method carries its own scale: give guidance or guidance_scale")
            if isinstance(self.guidance_scale, bool) or not isinstance(self.guidance_scale, (int, float)) \
                    or not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
                raise ValueError(f"guidance_scale must be a number >= 0, got {self.guidance_scale!r}")
        if self.solver is None and self.cache is None and self.guidance is None and self.steps is None \
                and self.guidance_scale is None:
            raise ValueError("an empty stack: give a solver, steps, a cache, a guidance method or a guidance scale")

    # -- what accel.apply and a call take ----------------------------------------------------------
    def apply_kwargs(self, pipe, call_steps: int, call_guidance: float | None = None) -> dict:
        """``accel.apply`` arguments for ``pipe`` at ``call_steps`` (the stack's own steps win when set); a
        ``ValueError`` when the stack was made for another model (``check_model``)."""
        from .pipelines.families import find_denoiser

        self.check_model(find_denoiser(pipe)[1])
        kw: dict = {}
        if self.solver is not None:
            kw["solver"] = self.solver.name_for(call_guidance)
        if self.cache is not None:
            kw["cache"] = self.cache.build(pipe, self.steps or call_steps)
        if self.guidance is not None:
            kw["guidance"] = self.guidance
        return kw

    def call_defaults(self) -> dict:
        """What a call of this stack needs: its steps, and a guidance scale that builds the CFG batch."""
        from .guidance.spec import call_scale

        out = {}
        if self.steps is not None:
            out["num_inference_steps"] = self.steps
        if self.guidance is not None:
            out["guidance_scale"] = call_scale(self.guidance)
        elif self.guidance_scale is not None:
            out["guidance_scale"] = float(self.guidance_scale)
        return out

    def check_model(self, denoiser) -> None:
        """``ValueError`` when the stack was made for another model (its fingerprint)."""
        if self.fingerprint is None:
            return
        from .pipelines.families import fingerprint

        fp = fingerprint(denoiser)
        if fp != self.fingerprint:
            raise ValueError(f"stack config made for another model: fingerprint {self.fingerprint} vs model {fp}")

    # -- the bench shorthand ----------------------------------------------------------------------
    def shorthand(self) -> str:
        """``solver:NFE:NAME+uniform:K[:REUSE]|schedule:FILE+apg:...|facfg:...|cfg:W`` (see ``from_shorthand``)."""
        parts = []
        if self.solver is not None:
            if self.steps is None:
                raise ValueError("a stack's shorthand names the solver with its step count: set steps")
            parts.append(f"solver:{self.steps}:{self.solver.name_for()}")
        if self.cache is not None:
            parts.append(f"schedule:{self.cache.file}" if self.cache.file else
                         f"uniform:{self.cache.interval}" + (f":{self.cache.reuse}" if self.cache.reuse != "hold" else ""))
        if isinstance(self.guidance, APG):
            g = self.guidance
            parts.append(f"apg:{g.scale}:{g.eta}:{g.momentum}:{g.norm_threshold or 0.0}")
        elif isinstance(self.guidance, FrequencyAwareCFG):
            g = self.guidance
            parts.append(f"facfg:{g.scale_low}:{g.scale_high}:{g.cutoff}")
        elif self.guidance_scale is not None:
            parts.append(f"cfg:{float(self.guidance_scale)}")
        return "+".join(parts)

    @classmethod
    def from_shorthand(cls, text: str) -> "Stack":
        """``solver:8:dc+uniform:2+apg:4.5`` -> Stack. Parts are split at a ``+`` that starts a part
        (``solver:``, ``uniform:``, ``schedule:``, ``apg:``, ``facfg:``, ``cfg:``), so ``dpm++`` stays whole;
        ``cfg:W`` is the pipeline's own CFG at scale W."""
        from .guidance.spec import guidance_from_spec

        parts = split_shorthand(text)
        kinds = [p.partition(":")[0] for p in parts]
        usage = "write solver:NFE:NAME+uniform:K[:REUSE]+apg:W|cfg:W (one of each at most)"
        if not parts or any(k not in PART_KINDS for k in kinds) or kinds.count("solver") > 1 \
                or kinds.count("uniform") + kinds.count("schedule") > 1 \
                or kinds.count("apg") + kinds.count("facfg") + kinds.count("cfg") > 1:
            raise ValueError(f"stack {text!r}: {usage}")
        solver = steps = cache = guidance = scale = None
        for kind, part in zip(kinds, parts):
            arg = part.partition(":")[2]
            if kind == "solver":
                nfe, _, name = arg.partition(":")
                if not nfe.isdigit() or not name:
                    raise ValueError(f"stack part {part!r}: write solver:NFE:NAME, e.g. solver:6:unipc")
                solver, steps = SolverSpec.parse(name), int(nfe)
            elif kind == "uniform":
                k, _, reuse = arg.partition(":")
                if not k.isdigit():
                    raise ValueError(f"stack part {part!r}: write uniform:K[:REUSE] with an integer K")
                cache = CacheSpec(interval=int(k), reuse=reuse or "hold")
            elif kind == "schedule":
                cache = CacheSpec(file=arg)
            elif kind == "cfg":
                try:
                    scale = float(arg)
                except ValueError:
                    raise ValueError(f"stack part {part!r}: write cfg:W with a number W") from None
            else:
                guidance = guidance_from_spec(part)
        return cls(solver, steps, cache, guidance, guidance_scale=scale)

    # -- the file ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "solver": asdict(self.solver) if self.solver else None, "steps": self.steps,
                "cache": asdict(self.cache) if self.cache else None,
                "guidance": _guidance_to_dict(self.guidance) if self.guidance else None,
                **({"guidance_scale": self.guidance_scale} if self.guidance_scale is not None else {}),
                "fingerprint": self.fingerprint, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, d: dict) -> "Stack":
        if d.get("format") != FORMAT:
            raise ValueError(f"not an accel stack config (format {d.get('format')!r}, expected {FORMAT!r})")
        unknown = set(d) - {"format", "solver", "steps", "cache", "guidance", "guidance_scale", "fingerprint", "metadata"}
        if unknown:
            raise ValueError(f"unknown stack config keys: {', '.join(sorted(unknown))}")
        try:
            return cls(SolverSpec(**d["solver"]) if d.get("solver") else None, d.get("steps"),
                       CacheSpec(**d["cache"]) if d.get("cache") else None,
                       _guidance_from_dict(d["guidance"]) if d.get("guidance") else None,
                       d.get("fingerprint"), d.get("metadata") or {}, d.get("guidance_scale"))
        except TypeError as e:  # a misspelt field of a part
            raise ValueError(f"stack config: {e}") from None

    def beside(self, folder: str | Path) -> "Stack":
        """This stack with each relative file path that exists under ``folder`` made that path."""
        def near(p: str | None) -> str | None:
            return str(Path(folder) / p) if p and not Path(p).is_absolute() and (Path(folder) / p).exists() else p

        solver = replace(self.solver, file=near(self.solver.file), steps=near(self.solver.steps)) if self.solver else None
        cache = replace(self.cache, file=near(self.cache.file)) if self.cache else None
        return replace(self, solver=solver, cache=cache)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Stack":
        """The stack in ``path``; a ``ValueError`` naming the file and what is wrong with it. A relative file path
        in it (solver statistics, step file, schedule) is looked up beside the config first, then from the working
        directory, so a config and its files move together (``accel tune`` writes them so)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"stack config {str(path)!r} not found")
        try:
            return cls.from_dict(json.loads(path.read_text())).beside(path.parent)
        except json.JSONDecodeError as e:
            raise ValueError(f"stack config {str(path)!r} is not JSON: {e}") from None
        except ValueError as e:
            raise ValueError(f"stack config {str(path)!r}: {e}") from None
