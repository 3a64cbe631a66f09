"""Cache policies: each answers, per (step, block, component), how much of the component to compute.

The hooks never know which policy they serve. ``accel.apply`` binds a policy to the denoiser's shape
(``bind``); the policy then sees the start of every pipeline call (``begin_call``) and is asked row by row
(``row(step)``) for a [block][component] table of compute shares: 1.0 computes, 0.0 reuses the stored
output, a share in between recomputes that share of the tokens (token refresh).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np

from ..schedule import CacheSchedule

Row = list[list[float]]  # [block][component] -> compute share in [0, 1]
Reuse = Literal["hold", "taylor"]

COMPUTE = 1.0
REUSE = 0.0


class CachePolicy(ABC):
    """The whole contract between a cache policy and accel's run state.

    - ``reuse``: what a reused entry returns: ``"hold"`` (the stored output) or ``"taylor"`` (a first-order
      forecast from the last two computed outputs);
    - ``keeps_inputs``: entries also keep the component's input and attention's pre-projection buffer (token
      refresh needs both; other policies keep neither);
    - ``fast_path``: a block whose components are all reused may be served without running it.
    """

    reuse: Reuse = "hold"
    keeps_inputs: ClassVar[bool] = False
    fast_path: ClassVar[bool] = True

    def bind(self, num_blocks: int, num_components: int) -> None:
        """Called once by ``accel.apply`` with the denoiser's cache table shape."""

    def begin_call(self, num_steps: int) -> None:
        """Called at the start of every pipeline call with its step count."""

    @abstractmethod
    def row(self, step: int) -> Row | None:
        """Compute shares for one step (``row[block][component]``); None computes everything."""

    def keeps(self, step: int) -> list[list[bool]] | None:
        """Which outputs computed at ``step`` a later step of the call may read (``[block][component]``); the
        run state stores only those. None: store every output (a policy that cannot tell in advance)."""
        return None


class SchedulePolicy(CachePolicy):
    """A static ``CacheSchedule``, resampled (with a warning) when the call uses another step count."""

    def __init__(self, schedule: CacheSchedule) -> None:
        self.schedule = schedule
        self.reuse = schedule.reuse
        self._rows: list[Row] = []
        self._keeps: list[list[list[bool]]] = []
        self._n: int | None = None

    def begin_call(self, num_steps: int) -> None:
        if num_steps != self._n:
            table = self.schedule.resampled(num_steps).table
            self._rows = table.astype(float).tolist()
            self._keeps = self._kept(table).tolist()
            self._n = num_steps

    def _kept(self, table: np.ndarray) -> np.ndarray:
        """Per step, the outputs some later step reads: held outputs are read only by the reuses right after
        them (a step that computes replaces them), a forecast reads the last two computed ones, so those are
        kept while any later step reuses (the schedule is known before the call)."""
        reused = ~table.astype(bool)
        later = np.zeros_like(reused)
        if self.reuse == "taylor":
            later[:-1] = np.flip(np.logical_or.accumulate(np.flip(reused[1:], 0), 0), 0)
        else:
            later[:-1] = reused[1:]
        return later

    def row(self, step: int) -> Row | None:
        # steps past the schedule (a pipeline calling the denoiser more often than it said) compute
        return self._rows[step] if 0 <= step < len(self._rows) else None

    def keeps(self, step: int) -> list[list[bool]] | None:
        return self._keeps[step] if 0 <= step < len(self._keeps) else None
