"""Cache policies: each answers, per (step, block, component), compute or reuse.

The hooks never know which policy they serve. A policy sees the start of every pipeline call
(``begin_call``) and is then asked row by row (``row(step)``) for a [block][component] table.
"""
from __future__ import annotations

from typing import Protocol

from ..schedule import CacheSchedule


class CachePolicy(Protocol):
    def begin_call(self, num_steps: int) -> None: ...

    def row(self, step: int) -> list[list[bool]]:
        """Decisions for one step: ``row[block][component]`` (True = compute)."""
        ...


class SchedulePolicy:
    """A static ``CacheSchedule``, resampled (with a warning) when the call uses another step count."""

    def __init__(self, schedule: CacheSchedule) -> None:
        self.schedule = schedule
        self.reuse = schedule.reuse  # "hold" or "taylor" (read by RunState)
        self._rows: list[list[list[bool]]] = []
        self._n: int | None = None

    def begin_call(self, num_steps: int) -> None:
        if num_steps != self._n:
            table = self.schedule.resampled(num_steps).table
            self._rows = table.tolist()
            self._n = num_steps

    def row(self, step: int) -> list[list[bool]] | None:
        # steps past the schedule (a pipeline calling the denoiser more often than it said) compute
        return self._rows[step] if 0 <= step < len(self._rows) else None
