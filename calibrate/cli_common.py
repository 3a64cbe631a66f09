"""Arguments shared by the calibration methods that run the pipeline on prompts."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", help="calibration prompts, one per line (default: reference training-template prompts)")
    p.add_argument("--num-prompts", type=int, default=32, help="how many default prompts when --prompts is not given")
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)


def read_prompts(a: argparse.Namespace) -> list[str]:
    from accel.cli import CLIError
    from accel.pipelines.data import calibration_prompts

    if a.prompts:
        path = Path(a.prompts)
        if not path.exists():
            raise CLIError(f"prompt file {a.prompts!r} not found")
        prompts = [l.strip() for l in path.read_text().splitlines() if l.strip()]
        if not prompts:
            raise CLIError(f"prompt file {a.prompts!r} has no prompts")
        return prompts
    return calibration_prompts(a.num_prompts, seed=a.seed + 1)
