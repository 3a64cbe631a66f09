"""accel: inference acceleration for diffusers pipelines.

>>> import accel
>>> accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 20, interval=2))  # doctest: +SKIP
>>> accel.stats(pipe); accel.remove(pipe)  # doctest: +SKIP
"""
from __future__ import annotations

from . import pipelines  # noqa: F401  (accel.pipelines: families and reference pipelines)
from .api import apply, is_applied, remove, stats
from .guidance import APG, FrequencyAwareCFG
from .cache.token_refresh import TokenRefresh
from .schedule import CacheSchedule, ScheduleMismatchError
from .stats import Stats

__version__ = "0.1.0"
__all__ = ["apply", "remove", "stats", "is_applied", "APG", "FrequencyAwareCFG", "CacheSchedule", "TokenRefresh", "ScheduleMismatchError", "Stats", "__version__"]
