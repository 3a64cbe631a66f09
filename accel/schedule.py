"""``CacheSchedule``: a boolean table [step, block, component] (True = compute, False = reuse) with metadata."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .pipelines.families import experts_blocks, experts_fingerprint, experts_layout


REUSE_MODES = ("hold", "taylor")


def check_reuse(reuse: str) -> str:
    """``reuse`` if it is a reuse mode (``CacheSchedule.reuse``), else a ValueError naming the modes."""
    if reuse not in REUSE_MODES:
        raise ValueError(f"reuse must be one of {REUSE_MODES}, not {reuse!r}")
    return reuse


class ScheduleMismatchError(ValueError):
    """A schedule made for another model than the one it is applied to."""


@dataclass
class CacheSchedule:
    """Which component of which block is computed at which step; the rest reuse their last output.

    ``reuse`` says what a reused entry returns: ``"hold"`` (the papers: the last computed output as is) or
    ``"taylor"`` (an accel option: the first-order extrapolation, in step index, through the last two computed
    outputs of that component, as TaylorSeer forecasts; it falls back to hold until two exist).

    Example:
        >>> import accel
        >>> sched = accel.CacheSchedule.uniform(pipe, num_inference_steps=20, interval=2)  # doctest: +SKIP
        >>> accel.apply(pipe, cache=sched)  # doctest: +SKIP
        >>> image = pipe("a photo of a sneaker", num_inference_steps=20,
        ...              **getattr(pipe, "accel_defaults", {})).images[0]  # doctest: +SKIP
        >>> sched.save("sneaker.json"); accel.CacheSchedule.load("sneaker.json")  # doctest: +SKIP
    """

    table: np.ndarray  # bool [steps, blocks, components]
    family: str
    components: tuple[str, ...]
    fingerprint: str
    resolution: tuple[int, int] | None = None
    method: str = "custom"
    metadata: dict[str, Any] = field(default_factory=dict)
    reuse: str = "hold"

    def __post_init__(self) -> None:
        check_reuse(self.reuse)
        self.table = np.asarray(self.table, dtype=bool)
        self.components = tuple(self.components)
        if self.table.ndim != 3 or self.table.shape[2] != len(self.components):
            raise ValueError(f"table must be [steps, blocks, {len(self.components)} components], got {self.table.shape}")
        if self.table.shape[0] < 1:
            raise ValueError("a schedule needs at least one step")

    # -- shape ---------------------------------------------------------------------------------
    @property
    def num_inference_steps(self) -> int:
        return self.table.shape[0]

    @property
    def num_blocks(self) -> int:
        return self.table.shape[1]

    def compute_fraction(self, present: np.ndarray | None = None) -> float:
        """Share of (step, block, component) entries computed, over the components present."""
        t = self.table if present is None else self.table[:, present]
        return float(t.mean())

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def full(cls, pipe, num_inference_steps: int, **kw) -> "CacheSchedule":
        """The all-compute schedule (output identical to the uncached pipeline).

        Every constructor takes ``layout=``: None, the denoiser's own layout; ``"generic:<class>"``, the generic
        one (whole blocks) of a family that has its own, to compare the two."""
        return cls._for(pipe, np.ones((num_inference_steps, 1, 1), bool), method="full", **kw)

    @classmethod
    def uniform(cls, pipe, num_inference_steps: int, interval: int, warmup: int = 0, reuse: str = "hold",
                **kw) -> "CacheSchedule":
        """FORA-style static schedule: every component is computed every ``interval`` steps and reused between.

        The first ``warmup`` steps always compute; blocks the family marks as always-compute (the shallow
        UNet level, as in DeepCache) never reuse.
        """
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        steps = np.arange(num_inference_steps)
        on = ((steps % interval) == 0) | (steps < warmup)
        return cls._for(pipe, on[:, None, None], method=f"uniform(interval={interval}, warmup={warmup})", reuse=reuse,
                        **kw)

    @classmethod
    def at_steps(cls, pipe, num_inference_steps: int, compute_steps, reuse: str = "hold", **kw) -> "CacheSchedule":
        """Every component computed at the listed steps (0-based) and reused at the others.

        Step 0 must be listed (nothing is stored before it). Diffusers' TaylorSeer with warm-up 3 and
        interval 6 computes steps 0, 1, 2, 4, 10, 16 of 20: ``at_steps(pipe, 20, [0, 1, 2, 4, 10, 16],
        reuse="taylor")`` runs the same computation through accel's cache.
        """
        idx = sorted({int(i) for i in compute_steps})
        if not idx or idx[0] != 0 or idx[-1] >= num_inference_steps:
            raise ValueError(f"compute_steps must include step 0 and lie in [0, {num_inference_steps}), got {idx}")
        on = np.zeros(num_inference_steps, bool)
        on[idx] = True
        return cls._for(pipe, on[:, None, None], method=f"steps({','.join(map(str, idx))})", reuse=reuse, **kw)

    @classmethod
    def _for(cls, pipe, steps_on: np.ndarray, method: str, resolution: tuple[int, int] | None = None,
             reuse: str = "hold", layout: str | None = None, **metadata) -> "CacheSchedule":
        layout = experts_layout(pipe, layout)
        blocks = experts_blocks(pipe, layout)
        table = np.broadcast_to(steps_on, (steps_on.shape[0], len(blocks), len(layout.component_names))).copy()
        for b in layout.always_compute_blocks:
            table[:, b] = True
        return cls(table, layout.name, layout.component_names, experts_fingerprint(pipe), resolution, method, metadata,
                   reuse)

    # -- checks and resampling -----------------------------------------------------------------
    def check_compatible(self, model) -> None:
        """Raise ``ScheduleMismatchError`` naming what differs between this schedule and ``model`` (a pipeline, whose
        experts all count, or a denoiser)."""
        layout = experts_layout(model)
        if self.family.startswith("generic:") and self.family != layout.name:  # made with the generic layout
            try:
                layout = experts_layout(model, self.family)
            except NotImplementedError:
                pass
        blocks = experts_blocks(model, layout)
        problems = []
        if layout.name != self.family:
            problems.append(f"family {self.family!r} vs model {layout.name!r}")
        if len(blocks) != self.num_blocks:
            problems.append(f"{self.num_blocks} blocks vs model {len(blocks)}")
        if layout.component_names != self.components:
            problems.append(f"components {self.components} vs model {layout.component_names}")
        fp = experts_fingerprint(model)
        if not problems and fp != self.fingerprint:
            problems.append(f"config fingerprint {self.fingerprint} vs model {fp}")
        if problems:
            raise ScheduleMismatchError("cache schedule was made for another model: " + "; ".join(problems))

    def resampled(self, num_inference_steps: int, warn: bool = True) -> "CacheSchedule":
        """The schedule for another step count: step i takes the row of step floor(i * n_old / n_new).

        Proportional resampling keeps the computed share roughly constant; step 0 always computes.
        """
        n_old = self.num_inference_steps
        if num_inference_steps == n_old:
            return self
        if warn:
            warnings.warn(f"cache schedule made for {n_old} steps resampled to {num_inference_steps} steps", stacklevel=3)
        src = (np.arange(num_inference_steps) * n_old) // num_inference_steps
        table = self.table[src].copy()
        table[0] = True
        meta = dict(self.metadata, resampled_from=n_old)
        return CacheSchedule(table, self.family, self.components, self.fingerprint, self.resolution, self.method, meta,
                             self.reuse)

    # -- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "accel.CacheSchedule/1",
            "family": self.family,
            "components": list(self.components),
            "num_inference_steps": self.num_inference_steps,
            "num_blocks": self.num_blocks,
            "fingerprint": self.fingerprint,
            "resolution": list(self.resolution) if self.resolution else None,
            "method": self.method,
            "metadata": self.metadata,
            "reuse": self.reuse,
            # one string per step, per block: "1" compute / "0" reuse for each component
            "table": [["".join("1" if c else "0" for c in blk) for blk in step] for step in self.table],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CacheSchedule":
        if d.get("format") != "accel.CacheSchedule/1":
            raise ValueError(f"not an accel cache schedule (format={d.get('format')!r})")
        table = np.array([[[ch == "1" for ch in blk] for blk in step] for step in d["table"]], dtype=bool)
        if table.shape[:2] != (d["num_inference_steps"], d["num_blocks"]):
            raise ValueError("schedule table does not match its declared steps and blocks")
        res = tuple(d["resolution"]) if d.get("resolution") else None
        return cls(table, d["family"], tuple(d["components"]), d["fingerprint"], res, d.get("method", "custom"),
                   d.get("metadata", {}), d.get("reuse", "hold"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CacheSchedule":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path} is not a valid accel cache schedule: {e}") from e
