"""Calibration methods by name: each adds its own CLI arguments and writes its artefact."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class CalibrationMethod:
    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


METHODS: dict[str, CalibrationMethod] = {}


def register(method: CalibrationMethod) -> CalibrationMethod:
    METHODS[method.name] = method
    return method
