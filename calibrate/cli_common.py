"""Arguments shared by the calibration methods that run the pipeline on prompts."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_shared_args(p: argparse.ArgumentParser) -> None:
    """Arguments of several methods, declared once (a method adds only its own)."""
    p.add_argument("--prompts", help="calibration prompts, one per line (default: reference training-template "
                                     "prompts; ems: for --data samples/paths)")
    p.add_argument("--num-prompts", type=int, default=32, help="how many default prompts when --prompts is not given")
    p.add_argument("--guidance", type=float, default=4.5, help="CFG scale of the calibration calls (dc: --guidances)")
    p.add_argument("--batch", type=int, default=64, help="prompts per pipeline call; ems: samples per chunk (memory), "
                                                        "the statistics use them all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0, help="uniform, bac: first steps that always compute")
    p.add_argument("--reuse", default="hold", choices=("hold", "taylor"),
                   help="uniform, bac, ecad: what reused outputs return: hold (as computed, the papers) or taylor "
                        "(forecast from the last two updates, and bac plans the updates for it; an accel option)")


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
