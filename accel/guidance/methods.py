"""Guidance methods as frozen, self-validating configs: ``accel.APG`` and ``accel.FrequencyAwareCFG``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class APG:
    """Adaptive projected guidance (Sadat, Hilliges, Weber 2024) on the denoised x0.

    Args:
        scale: guidance scale w (the pipeline's own ``guidance_scale`` only has to be > 1 so that it
            batches cond and uncond; accel applies this scale).
        eta: weight of the component parallel to D_cond (0 in the paper; 1 with no momentum and no
            threshold is plain CFG).
        momentum: reverse momentum beta (< 0 in the paper); 0 disables it.
        norm_threshold: rescale radius r of the update (L2 norm per sample of the x0 difference, so it
            scales with the latent size); None disables it.

    Defaults tuned on the reference pipelines (500 images, scale 10, docs/results/guidance.md): r = 1 for their
    8x8x4 latents; momentum 0 instead of the paper's -0.5, which cost 1-3 alignment points there for
    little Frechet-distance gain. Larger latents need a larger r (the paper's SD settings: r up to 15).

    Example:
        >>> accel.apply(pipe, guidance=accel.APG(scale=10.0))  # doctest: +SKIP
        >>> pipe(prompt, guidance_scale=10.0)  # doctest: +SKIP
    """

    scale: float
    eta: float = 0.0
    momentum: float = 0.0
    norm_threshold: float | None = 1.0

    def validate(self, pipe) -> None:
        """Raise before anything is attached when the pipeline cannot take APG."""
        from ..solvers.noise_schedule import NoiseSchedule

        if not hasattr(pipe, "scheduler"):
            raise ValueError("guidance needs a pipeline (with a scheduler), not a bare denoiser")
        NoiseSchedule.of(pipe.scheduler)  # raises on a scheduler whose prediction type guidance cannot use

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"APG scale must be >= 1, got {self.scale}")
        if self.norm_threshold is not None and self.norm_threshold <= 0:
            raise ValueError("norm_threshold must be positive or None")


@dataclass(frozen=True)
class FrequencyAwareCFG:
    """Frequency-aware CFG (FreCaS, ICLR 2025): separate scales for the low and high frequency bands of
    the model output; ``cutoff`` is the resize factor that defines the low band (0.5: half resolution).

    Example:
        >>> accel.apply(pipe, guidance=accel.FrequencyAwareCFG(scale_low=4.5, scale_high=7.5))  # doctest: +SKIP
    """

    scale_low: float
    scale_high: float
    cutoff: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.cutoff < 1:
            raise ValueError(f"cutoff must be in (0, 1), got {self.cutoff}")
        if self.scale_low < 0 or self.scale_high < 0:
            raise ValueError("band scales must be >= 0")
