"""Quality of the reference pipelines and their sample grids.

    python -m accel.pipelines.evaluate pixart-eps --num-images 500      # the quality bar figures
    python -m accel.pipelines.evaluate pixart-eps --grid-only           # regenerate the committed grid

Grids are written to ``accel/pipelines/samples/<name>.png``: one row per class, same seeds (``wan-motion``: one
row per clip, its frames left to right, every item once, the motions in turn).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import CLASS_NAMES, caption, eval_prompts
from .reference import REFERENCES, is_video_reference, load_reference

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@torch.no_grad()
def generate(pipe, prompts: list[str], steps: int = 20, guidance: float = 4.5, seed: int = 0, batch: int = 50,
             progress: bool = True) -> torch.Tensor:
    """Images (N, 1, 32, 32) in [0, 1], or a video reference's clips (N, F, 1, 32, 32); batch b uses the generator
    seed ``seed + b``."""
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i, b in enumerate(tqdm(range(0, len(prompts), batch), desc="generate", disable=not progress)):
        # a one-step pipeline's defaults fix its steps and guidance
        kw = {"num_inference_steps": steps, "guidance_scale": guidance, **pipe.accel_defaults}
        res = pipe(prompts[b : b + batch], output_type="pt", generator=torch.Generator().manual_seed(seed + i), **kw)
        out.append((res.frames if hasattr(res, "frames") else res.images).float())
    return torch.cat(out)


def clip_grid(pipe, path: Path, steps: int = 20, guidance: float = 4.5, seed: int = 0) -> Path:
    from PIL import Image

    from .motion import MOTIONS, TRAIN_TEMPLATES, clip_caption

    prompts = [clip_caption(c, c % len(MOTIONS), TRAIN_TEMPLATES[1]) for c in range(len(CLASS_NAMES))]
    clips = generate(pipe, prompts, steps, guidance, seed, batch=len(prompts), progress=False)[:, :, 0]
    grid = torch.cat([torch.cat(list(c), 1) for c in clips], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy(), "L").resize(
        (grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)
    return path


def sample_grid(pipe, path: Path, per_class: int = 10, steps: int = 20, guidance: float = 4.5, seed: int = 0) -> Path:
    from PIL import Image

    prompts = [caption(c, "a photo of {a}") for c in range(len(CLASS_NAMES)) for _ in range(per_class)]
    imgs = generate(pipe, prompts, steps, guidance, seed, batch=len(prompts), progress=False)
    rows = imgs[:, 0].reshape(len(CLASS_NAMES), per_class, 32, 32)
    grid = torch.cat([torch.cat(list(r), 1) for r in rows], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy(), "L").resize(
        (grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)
    return path


def evaluate_clips(name: str, num_clips: int = 500, steps: int = 20, guidance: float = 4.5, seed: int = 0) -> dict:
    """Item and motion accuracy and fd_frames of a video reference on held-out prompts."""
    from accel.metrics.motion import fd_frames, item_accuracy, motion_accuracy

    from .motion import clip_prompts

    pipe = load_reference(name)
    prompts, items, motions = clip_prompts(num_clips, seed=seed)
    t = time.perf_counter()
    clips = generate(pipe, prompts, steps, guidance, seed)
    secs = time.perf_counter() - t
    return {"pipeline": name, "num_clips": num_clips, "steps": steps, "guidance": guidance,
            "item_acc": item_accuracy(clips, items), "motion_acc": motion_accuracy(clips, motions),
            "fd_frames": fd_frames(clips), "seconds_per_clip": secs / num_clips}


def evaluate(name: str, num_images: int = 500, steps: int = 20, guidance: float = 4.5, seed: int = 0) -> dict:
    from accel import metrics

    if is_video_reference(name):
        return evaluate_clips(name, num_images, steps, guidance, seed)

    pipe = load_reference(name)
    prompts, labels = eval_prompts(num_images, seed=seed)
    t = time.perf_counter()
    imgs = generate(pipe, prompts, steps, guidance, seed)
    secs = time.perf_counter() - t
    return {"pipeline": name, "num_images": num_images, "steps": steps, "guidance": guidance,
            "alignment": metrics.alignment(imgs, labels), "fd_domain": metrics.fd_domain(imgs),
            "fd_effnet": metrics.fd_effnet(imgs), "clipping_high": metrics.clipping(imgs)["clipped_high"],
            "seconds_per_image": secs / num_images}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m accel.pipelines.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", default=list(REFERENCES))
    p.add_argument("--num-images", type=int, default=500)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid-only", action="store_true")
    a = p.parse_args(argv)
    for name in a.names:
        make = clip_grid if is_video_reference(name) else sample_grid
        grid = make(load_reference(name), SAMPLES_DIR / f"{name}.png", steps=a.steps, guidance=a.guidance)
        print(f"{name}: sample grid -> {grid}")
        if not a.grid_only:
            print(json.dumps(evaluate(name, a.num_images, a.steps, a.guidance, a.seed)))


if __name__ == "__main__":
    main()
