"""Train the reference pipelines: ``python -m accel.pipelines.training [stage ...]``.

Stages run in order and skip what is done; every stage is seeded and resumable (checkpoints in
``ACCEL_RUNS``, default ~/.cache/accel/runs). Weights are written to accel/pipelines/weights.
"""
from __future__ import annotations

import argparse

STAGES = ("classifier", "vae", "eps", "flow")
# the video reference wan-motion: its frame classifier, its Wan VAE (and cached latents), its transformer
VIDEO_STAGES = ("clip-classifier", "video-vae", "wan-motion")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m accel.pipelines.training", description=__doc__)
    p.add_argument("stages", nargs="*", default=list(STAGES), choices=STAGES + VIDEO_STAGES,
                   help="default: the image stages")
    p.add_argument("--steps", type=int, default=None,
                   help="denoiser training steps (default: 6000 of batch 128; wan-motion: 3000 of batch 64)")
    p.add_argument("--vae-steps", type=int, default=None, help="default: 700 (vae), 600 (video-vae)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for stage in STAGES + VIDEO_STAGES:
        if stage not in a.stages:
            continue
        if stage == "classifier":
            from .classifier import train_classifier
            from ..components import WEIGHTS_DIR
            if not (WEIGHTS_DIR / "fmnist-classifier.safetensors").exists():
                train_classifier(seed=a.seed)
        elif stage == "vae":
            from .vae import cache_latents, train_vae
            train_vae(steps=700 if a.vae_steps is None else a.vae_steps, seed=a.seed)
            cache_latents()
        elif stage == "clip-classifier":
            from ..components import WEIGHTS_DIR
            from .video import CLIP_CLASSIFIER, train_clip_classifier
            if not (WEIGHTS_DIR / CLIP_CLASSIFIER).exists():
                train_clip_classifier(seed=a.seed)
        elif stage == "video-vae":
            from .video import cache_video_latents, train_video_vae
            train_video_vae(steps=600 if a.vae_steps is None else a.vae_steps, seed=a.seed)
            cache_video_latents()
        elif stage == "wan-motion":
            from .video import train_video_denoiser
            train_video_denoiser(steps=3000 if a.steps is None else a.steps, seed=a.seed)
        else:
            from .denoiser import train_denoiser
            train_denoiser(stage, steps=6000 if a.steps is None else a.steps, seed=a.seed)


if __name__ == "__main__":
    main()
