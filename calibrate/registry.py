"""Calibration methods by name: each adds its own CLI arguments and writes its artefact."""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class CalibrationMethod:
    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


METHODS: dict[str, CalibrationMethod] = {}
BUILTIN = ("bac", "dc", "ecad", "ems", "steps", "uniform")  # modules of this package that register a method


def register(method: CalibrationMethod) -> CalibrationMethod:
    METHODS[method.name] = method
    return method


def methods() -> dict[str, CalibrationMethod]:
    """Every calibration method by name, the built-in ones imported (and so registered) on first use."""
    for name in BUILTIN:
        importlib.import_module(f"{__package__}.{name}")
    return METHODS
