"""Presets for known one-step and few-step checkpoints: the scheduler, steps, timesteps and guidance
their model cards prescribe, so ``accel.apply(pipe, solver="onestep:sdxl-turbo")`` is all a user writes.

The preset installs the scheduler (built from the pipeline's own scheduler config with the card's
overrides) and merges the call arguments into ``pipe.accel_defaults``; call
``pipe(prompt, **pipe.accel_defaults)``. ``accel.remove`` restores both.

Example:
    >>> accel.apply(pipe, solver="onestep:dmd2")  # doctest: +SKIP
    >>> image = pipe("a cat", **pipe.accel_defaults).images[0]  # 1 step at timestep 399, no CFG  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import LCMScheduler
from diffusers.configuration_utils import register_to_config


class TimestepShiftLCMScheduler(LCMScheduler):
    """NitroFusion's LCM variant: the model sees timesteps scaled by ``shifted_timestep / num_train_timesteps``
    (truncated), while each step re-noises to the next unshifted timestep."""

    @register_to_config
    def __init__(self, *args, shifted_timestep: int = 250, **kwargs):
        super().__init__(*args, **kwargs)

    def set_timesteps(self, *args, **kwargs):
        super().set_timesteps(*args, **kwargs)
        self.origin_timesteps = self.timesteps.clone()
        self.shifted_timesteps = (self.timesteps * self.config.shifted_timestep
                                  / self.config.num_train_timesteps).long()
        self.timesteps = self.shifted_timesteps

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, *args, **kwargs):
        if self.step_index is None:
            self._init_step_index(timestep)
        self.timesteps = self.origin_timesteps
        try:
            return super().step(model_output, timestep, sample, *args, **kwargs)
        finally:
            self.timesteps = self.shifted_timesteps


@dataclass(frozen=True)
class Preset:
    scheduler: str  # diffusers scheduler class name (or accel's TimestepShiftLCMScheduler)
    call: dict  # num_inference_steps, guidance_scale, timesteps, eta ...
    scheduler_kwargs: dict = field(default_factory=dict)
    pipelines: tuple[str, ...] = ()  # the pipeline classes the checkpoint ships with
    source: str = ""


_SD = ("StableDiffusionPipeline",)
_SDXL = ("StableDiffusionXLPipeline",)
PRESETS: dict[str, Preset] = {
    "sd-turbo": Preset("EulerDiscreteScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0},
                       {"timestep_spacing": "trailing"}, _SD, "stabilityai/sd-turbo model card and scheduler config"),
    "sdxl-turbo": Preset("EulerAncestralDiscreteScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0},
                         {"timestep_spacing": "trailing"}, _SDXL, "diffusers docs, SDXL Turbo"),
    "lcm": Preset("LCMScheduler", {"num_inference_steps": 4, "guidance_scale": 8.0}, {}, _SD + _SDXL,
                  "SimianLuo/LCM_Dreamshaper_v7 and latent-consistency/lcm-sdxl model cards"),
    "lcm-lora": Preset("LCMScheduler", {"num_inference_steps": 4, "guidance_scale": 1.0}, {}, _SD + _SDXL,
                       "latent-consistency/lcm-lora-sdv1-5 and lcm-lora-sdxl cards; diffusers LCM-LoRA docs"),
    "hyper-sd": Preset("LCMScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0, "timesteps": [800]}, {},
                       _SDXL, "ByteDance/Hyper-SD card, 1-step SDXL UNet"),
    "hyper-sd-lora": Preset("TCDScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0, "eta": 1.0}, {},
                            _SD + _SDXL, "ByteDance/Hyper-SD card, 1-step unified LoRA"),
    "dmd2": Preset("LCMScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0, "timesteps": [399]}, {}, _SDXL,
                   "tianweiy/DMD2 README, 1-step SDXL UNet"),
    "dmd2-4step": Preset("LCMScheduler", {"num_inference_steps": 4, "guidance_scale": 0.0,
                                          "timesteps": [999, 749, 499, 249]}, {}, _SDXL,
                         "tianweiy/DMD2 README, 4-step SDXL UNet / LoRA"),
    "nitrofusion-realism": Preset("TimestepShiftLCMScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0},
                                  {"shifted_timestep": 250, "original_inference_steps": 4}, _SDXL,
                                  "ChenDarYen/NitroFusion README (1-4 steps)"),
    "nitrofusion-vibrant": Preset("TimestepShiftLCMScheduler", {"num_inference_steps": 1, "guidance_scale": 0.0},
                                  {"shifted_timestep": 500, "original_inference_steps": 4}, _SDXL,
                                  "ChenDarYen/NitroFusion README (1-4 steps)"),
}
PRESETS["nitrofusion"] = PRESETS["nitrofusion-realism"]


def preset_scheduler(pipe, name: str):
    """The preset's scheduler for ``pipe`` carrying its call defaults (``accel_call_defaults``)."""
    import warnings

    import diffusers

    if name not in PRESETS:
        raise ValueError(f"unknown one-step preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    p = PRESETS[name]
    if p.pipelines and type(pipe).__name__ not in p.pipelines:
        warnings.warn(f"preset {name!r} is made for {' / '.join(p.pipelines)}, not {type(pipe).__name__}", stacklevel=3)
    klass = TimestepShiftLCMScheduler if p.scheduler == "TimestepShiftLCMScheduler" else getattr(diffusers, p.scheduler)
    sched = klass.from_config(pipe.scheduler.config, **p.scheduler_kwargs)
    sched.accel_call_defaults = dict(p.call)
    return sched
