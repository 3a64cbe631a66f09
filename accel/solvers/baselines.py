"""diffusers' DPM-Solver++ and UniPC, taking their flow timesteps from the pipeline's own scheduler.

The update rules are diffusers' own, untouched; ``PipelineTimesteps`` only makes them follow the
timesteps the pipeline's scheduler would use (FLUX's dynamic shift, SD3's shift, custom sigmas).
"""
from __future__ import annotations

from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from .noise_schedule import PipelineTimesteps


class DPMSolverPlusPlus(PipelineTimesteps, DPMSolverMultistepScheduler):
    """``DPMSolverMultistepScheduler`` that follows the pipeline's flow timesteps (``accel.solvers.noise_schedule``)."""


class UniPC(PipelineTimesteps, UniPCMultistepScheduler):
    """``UniPCMultistepScheduler`` that follows the pipeline's flow timesteps (``accel.solvers.noise_schedule``)."""
