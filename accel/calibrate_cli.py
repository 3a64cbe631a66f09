"""``accel calibrate``: dispatch to the registered calibration methods."""
from __future__ import annotations

import argparse


def add_calibrate_parser(sub) -> None:
    from .calibrate.registry import methods
    from .calibrate.cli_common import add_shared_args
    from .cli_args import add_call_args, add_device_args, check_call_args

    METHODS = methods()
    s = sub.add_parser("calibrate", help="calibrate a cache schedule or solver statistics for a pipeline")
    s.add_argument("--method", required=True, choices=sorted(METHODS), help="; ".join(f"{m.name}: {m.help}" for m in METHODS.values()))
    s.add_argument("--pipeline", default="pixart-eps", help="reference name or local pipeline folder")
    s.add_argument("--steps", type=int, default=20, help="num_inference_steps the artefact is made for")
    s.add_argument("--out", required=True, help="output file (or directory, for methods that write several)")
    add_shared_args(s)
    add_call_args(s)
    add_device_args(s)
    for m in METHODS.values():
        m.add_args(s)

    def run(a) -> None:
        check_call_args(a)
        METHODS[a.method].run(a)

    s.set_defaults(fn=run)
