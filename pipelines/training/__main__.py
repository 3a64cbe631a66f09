"""Train the reference pipelines: ``python -m accel.pipelines.training [stage ...]``.

Stages run in order and skip what is done; every stage is seeded and resumable (checkpoints in
``ACCEL_RUNS``, default ~/.cache/accel/runs). Weights are written to accel/pipelines/weights.
"""
from __future__ import annotations

import argparse

STAGES = ("classifier", "vae", "eps", "flow")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m accel.pipelines.training", description=__doc__)
    p.add_argument("stages", nargs="*", default=list(STAGES), choices=STAGES)
    p.add_argument("--steps", type=int, default=6000, help="denoiser training steps (batch 128)")
    p.add_argument("--vae-steps", type=int, default=700)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for stage in STAGES:
        if stage not in a.stages:
            continue
        if stage == "classifier":
            from .classifier import train_classifier
            from ..components import WEIGHTS_DIR
            if not (WEIGHTS_DIR / "fmnist-classifier.safetensors").exists():
                train_classifier(seed=a.seed)
        elif stage == "vae":
            from .vae import cache_latents, train_vae
            train_vae(steps=a.vae_steps, seed=a.seed)
            cache_latents()
        else:
            from .denoiser import train_denoiser
            train_denoiser(stage, steps=a.steps, seed=a.seed)


if __name__ == "__main__":
    main()
