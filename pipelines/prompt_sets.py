"""The prompts each reference pipeline is evaluated, calibrated and tuned on, and how a prompt's label is read.

Image references (``pixart-*``) name a Fashion-MNIST class; the video reference (``wan-motion``) names an item and
its motion, so its label is the pair (item, motion). Evaluation templates are held out from training; calibration
prompts use the training templates; tune prompts use templates of neither.

Example:
    >>> from accel.pipelines.prompt_sets import CLIPS
    >>> prompts, labels = CLIPS.evaluation(2, 0)
    >>> labels
    [(0, 0), (1, 1)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import data, motion


@dataclass(frozen=True)
class PromptSet:
    evaluation: Callable[[int, int], tuple[list[str], list]]  # (n, seed) -> prompts, labels
    calibration: Callable[[int, int], list[str]]  # (n, seed) -> prompts
    tune: Callable[[int, int], list[str]]
    label: Callable[[str], object]  # a prompt's label, None for a prompt that is no reference caption


def _clip_evaluation(n: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    prompts, items, motions = motion.clip_prompts(n, seed=seed)
    return prompts, list(zip(items, motions))


IMAGES = PromptSet(lambda n, seed: data.eval_prompts(n, seed=seed), lambda n, seed: data.calibration_prompts(n, seed=seed),
                   lambda n, seed: data.tune_prompts(n, seed=seed), data.label_of_caption)
CLIPS = PromptSet(_clip_evaluation, lambda n, seed: motion.calibration_clip_prompts(n, seed=seed),
                  lambda n, seed: motion.tune_clip_prompts(n, seed=seed), motion.parse_clip_caption)


def prompt_set(pipe) -> PromptSet | None:
    """The prompt set of a reference pipeline, None for any other pipeline."""
    from .reference import is_video_reference

    ref = getattr(pipe, "accel_reference", None)
    if ref is None:
        return None
    return CLIPS if is_video_reference(ref) else IMAGES


def is_image_reference(pipe) -> bool:
    """A reference pipeline whose outputs the Fashion-MNIST image metrics (fd_domain, alignment) apply to."""
    return prompt_set(pipe) is IMAGES
