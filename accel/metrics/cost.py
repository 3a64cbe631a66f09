"""Cost metrics: denoiser MACs per image and wall-clock latency."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from ..stats import Stats


def macs_per_image(stats: Stats, images: int) -> float:
    """Denoiser MACs actually computed per image in the call ``stats`` describes."""
    return stats.macs_computed / max(images, 1)


@dataclass
class Latency:
    median: float
    samples: list[float]


def latency(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Latency:
    """Wall-clock seconds of ``fn()``: warm-up calls excluded, median of ``repeats``."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return Latency(statistics.median(samples), samples)
