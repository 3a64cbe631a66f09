"""accel: inference acceleration for diffusers pipelines.

>>> import accel
>>> accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 20, interval=2))  # doctest: +SKIP
>>> accel.stats(pipe); accel.remove(pipe)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path as _Path

# accel.pipelines, accel.kernels and accel.calibrate are the folders pipelines/, kernels/ and calibrate/ beside
# accel/ (pyproject.toml's package-dir). They have no __init__.py, so that run from the checkout's root none of
# them can shadow an installed module of the same name (Hugging Face's `kernels`, say). A built wheel puts them
# inside accel/; in a checkout (an editable install) the package also looks for its subpackages at the root.
if not (_Path(__file__).parent / "pipelines").is_dir() and (_Path(__file__).parent.parent / "pipelines").is_dir():
    __path__.append(str(_Path(__file__).parent.parent))  # noqa: F821  (the package's own search path)

from .pipelines import families, reference  # noqa: F401  (accel.pipelines: family layouts, reference pipelines)
from .api import apply, is_applied, remove, stats
from .guidance import APG, FrequencyAwareCFG
from .cache.token_refresh import TokenRefresh
from .schedule import CacheSchedule, ScheduleMismatchError
from .stats import Stats

__version__ = "0.1.0"
__all__ = ["apply", "remove", "stats", "is_applied", "APG", "FrequencyAwareCFG", "CacheSchedule", "TokenRefresh", "ScheduleMismatchError", "Stats", "__version__"]
