"""``accel.stats``: what the last pipeline call computed and reused, its MACs and its denoising time."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ComponentStats:
    block: int
    component: str
    module: str
    computed: int
    reused: int
    macs: int  # MACs of one forward of this component at the last call's shapes (0 if not counted)
    partial: int = 0  # calls that recomputed only some tokens (token refresh)
    refreshed: float = 0.0  # sum of the token shares those calls recomputed


@dataclass
class Stats:
    """Report of the last pipeline call of an accelerated pipeline.

    ``macs_full`` is what the denoiser calls of that call would cost with nothing reused;
    ``macs_computed`` subtracts the MACs of every reused component call (for token refresh: an estimate,
    the refreshed token share of the component's MACs). ``denoise_seconds`` is the
    wall time from the first denoiser call's start to the last one's end.
    """

    family: str
    steps: int
    denoiser_calls: int
    components: list[ComponentStats] = field(default_factory=list)
    macs_full: int = 0
    macs_computed: int = 0
    denoise_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def computed(self) -> int:
        return sum(c.computed for c in self.components)

    @property
    def reused(self) -> int:
        return sum(c.reused for c in self.components)

    @property
    def macs_fraction(self) -> float:
        return self.macs_computed / self.macs_full if self.macs_full else 1.0

    def per_block(self) -> dict[int, dict[str, tuple[int, int]]]:
        """{block: {component: (computed, reused)}}."""
        out: dict[int, dict[str, tuple[int, int]]] = {}
        for c in self.components:
            out.setdefault(c.block, {})[c.component] = (c.computed, c.reused)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["macs_fraction"] = self.macs_fraction
        return d

    def __str__(self) -> str:
        lines = [
            f"accel stats ({self.family}): {self.steps} steps, {self.denoiser_calls} denoiser calls, "
            f"{self.denoise_seconds:.3f} s denoising",
            f"  component calls: {self.computed} computed, {self.reused} reused",
            f"  MACs: {self.macs_computed / 1e9:.3f} G of {self.macs_full / 1e9:.3f} G ({self.macs_fraction:.1%})",
        ]
        for k, v in self.extra.items():
            lines.append(f"  {k}: {v}")
        return "\n".join(lines)


@torch.no_grad()
def count_macs(denoiser: torch.nn.Module, args: tuple, kwargs: dict, module_names: list[str]) -> tuple[int, list[int]]:
    """MACs of one denoiser forward and of each named submodule in it (torch.utils.flop_counter; FLOPs / 2)."""
    with FlopCounterMode(display=False) as fc:
        denoiser(*args, **kwargs)
    counts = fc.get_flop_counts()
    total = sum(counts.get("Global", {}).values()) // 2
    per: dict[str, int] = {}
    for key, ops in counts.items():
        # keys are "<RootClass>.<fqn>"; strip the root class name
        fqn = key.split(".", 1)[1] if "." in key else key
        per[fqn] = sum(ops.values()) // 2
    return total, [per.get(n, 0) for n in module_names]
