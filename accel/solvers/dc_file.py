"""The DC-Solver ratio file: written by ``accel calibrate --method dc``, read by ``DCSolverScheduler``."""
from __future__ import annotations

import json
from pathlib import Path


def save_dc(path: str | Path, content: dict) -> None:
    """Write a ratio file (``calibrate_dc``'s result: provenance, searched ratios, ``cpr_coefficients``)."""
    Path(path).write_text(json.dumps(content, indent=1))


def load_dc(path: str | Path) -> dict:
    """Read a ratio file, or a clear error when it is missing or is not one."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"DC ratio file {path} not found; make one with `accel calibrate --method dc`")
    content = json.loads(p.read_text())
    if "cpr_coefficients" not in content:
        raise ValueError(f"{path} is not a DC ratio file (no cpr_coefficients)")
    return content
