"""Quality of the video reference's clips (``wan-motion``): is the prompted item there, does it move as prompted,
and how far are the frames from real clips' frames.

- ``item_accuracy``: share of clips whose frames the clip classifier (the image references' CNN trained on items
  placed as the clips place them) assigns, on average over frames (mean log-probability), to the prompted item;
- ``motion_accuracy``: share of clips whose measured motion (``accel.pipelines.motion.measured_motion``: the
  least-squares speed of the brightness centroid) is the prompted one;
- ``fd_frames``: Frechet distance on the clip classifier's 256-d features between all frames of the clips and all
  frames of real test-set clips (every motion of 1,000 test items; shipped statistics). Not FVD: frames, not clips.

Clips are float tensors in [0, 1], (N, F, C, H, W).

Example:
    >>> import torch
    >>> from accel.pipelines.motion import make_clips, MOTIONS
    >>> from accel.pipelines.data import load_fashion_mnist
    >>> from accel.metrics.motion import motion_accuracy
    >>> x, y = load_fashion_mnist("test")  # doctest: +SKIP
    >>> clips = (make_clips(x[:10], torch.arange(10) % 5) + 1) / 2  # doctest: +SKIP
    >>> motion_accuracy(clips, (torch.arange(10) % 5).tolist())  # doctest: +SKIP
    1.0
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from ..pipelines.components import WEIGHTS_DIR
from .domain_net import FashionClassifier
from .features import _to_domain_input
from .frechet import FeatureStats, frechet_between

CLIP_CLASSIFIER_PATH = WEIGHTS_DIR / "fmnist-clip-classifier.safetensors"
FRAME_STATS = WEIGHTS_DIR / "stats-fmnist-clips-frames.safetensors"
EXTRACTOR = "fmnist-clip-classifier-256"


@lru_cache(maxsize=1)
def clip_classifier() -> FashionClassifier:
    from safetensors.torch import load_file

    if not CLIP_CLASSIFIER_PATH.exists():
        raise FileNotFoundError(f"{CLIP_CLASSIFIER_PATH} missing: train it with "
                                "`python -m accel.pipelines.training clip-classifier`")
    net = FashionClassifier()
    net.load_state_dict(load_file(CLIP_CLASSIFIER_PATH))
    return net.eval()


def _frames(clips: torch.Tensor) -> torch.Tensor:
    return _to_domain_input(clips.flatten(0, 1))  # the frames, as the classifier takes images


@torch.no_grad()
def frame_features(clips: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The clip classifier's 256-d features of every frame, (N * F, 256)."""
    x, net = _frames(clips), clip_classifier()
    return torch.cat([net.features(x[i : i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def item_log_probs(clips: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Mean over frames of the clip classifier's log-probabilities, (N, 10)."""
    x, net = _frames(clips), clip_classifier()
    logp = torch.cat([net(x[i : i + batch]).log_softmax(1) for i in range(0, len(x), batch)])
    return logp.view(clips.shape[0], clips.shape[1], -1).mean(1)


def item_accuracy(clips: torch.Tensor, labels: list[int]) -> float:
    return item_log_probs(clips).argmax(1).eq(torch.as_tensor(labels)).float().mean().item()


def motion_accuracy(clips: torch.Tensor, motions: list[int]) -> float:
    from ..pipelines.motion import measured_motion

    return float(sum(int(a == b) for a, b in zip(measured_motion(clips), motions)) / len(motions))


def frame_stats(clips: torch.Tensor) -> FeatureStats:
    return FeatureStats.of(frame_features(clips), EXTRACTOR)


def fd_frames(clips: torch.Tensor, ref: FeatureStats | str | Path | None = None) -> float:
    """Frechet distance of the clips' frames to real clips' frames on the clip classifier's features."""
    if not isinstance(ref, FeatureStats):
        path = Path(ref) if ref is not None else FRAME_STATS
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: compute it with `python -m accel.metrics.motion`")
        ref = FeatureStats.load(path)
    return frechet_between(frame_stats(clips), ref)


def main(argv: list[str] | None = None) -> None:
    """Write the shipped frame statistics: every motion of the first 1,000 test items (5,000 clips, 45,000 frames)."""
    import argparse

    from ..pipelines.data import load_fashion_mnist
    from ..pipelines.motion import MOTIONS, make_clips

    p = argparse.ArgumentParser(prog="python -m accel.metrics.motion", description=main.__doc__)
    p.add_argument("--items", type=int, default=1000)
    a = p.parse_args(argv)
    x, _ = load_fashion_mnist("test")
    idx = torch.arange(a.items).repeat_interleave(len(MOTIONS))
    motion = torch.arange(len(MOTIONS)).repeat(a.items)
    feats = torch.cat([frame_features((make_clips(x[idx[i : i + 500]], motion[i : i + 500]) + 1) / 2)
                       for i in range(0, len(idx), 500)])
    FeatureStats.of(feats, EXTRACTOR).save(FRAME_STATS)
    print(f"wrote {FRAME_STATS} ({len(feats)} frames)")


if __name__ == "__main__":
    main()
