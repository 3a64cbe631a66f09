"""APG and FA-CFG as guiders for diffusers' modular pipelines (subclasses of ``BaseGuidance``).

Modular guiders receive only the cond/uncond predictions, not x_t, so this APG acts on the
prediction itself (noise or velocity), as diffusers' own guider does; the paper (and
``accel.APG`` on classic pipelines) acts on the denoised x0. The paper's defaults are kept
(eta 0, momentum -0.5), unlike diffusers' ``AdaptiveProjectedGuidance`` (eta 1, no momentum).
"""
from __future__ import annotations

from diffusers.configuration_utils import register_to_config
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.guiders.guider_utils import GuiderOutput

from . import functional as G


class AccelAPGGuider(ClassifierFreeGuidance):
    """Adaptive projected guidance for modular pipelines: D = cond + (w - 1)(orth + eta * par) of the
    momentum-averaged, norm-clamped update (Sadat et al. 2024); momentum resets at step 0."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.5, eta: float = 0.0, momentum: float = -0.5,
                 norm_threshold: float | None = 15.0, start: float = 0.0, stop: float = 1.0, enabled: bool = True):
        super().__init__(guidance_scale=guidance_scale, start=start, stop=stop, enabled=enabled)
        self.eta, self.momentum, self.norm_threshold = eta, momentum, norm_threshold
        self._running = None

    def forward(self, pred_cond, pred_uncond=None) -> GuiderOutput:
        if not self._is_cfg_enabled():
            return GuiderOutput(pred=pred_cond, pred_cond=pred_cond, pred_uncond=pred_uncond)
        if self._step in (0, None):
            self._running = None
        pred, self._running, _ = G.apg(pred_cond, pred_uncond, self.guidance_scale, self.eta, self.momentum,
                                       self._running, self.norm_threshold)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)


class AccelFrequencyAwareGuider(ClassifierFreeGuidance):
    """Frequency-aware CFG (FreCaS) for modular pipelines: separate scales for the low band (resize by
    ``cutoff`` down and back up) and the high band of the prediction."""

    @register_to_config
    def __init__(self, guidance_scale_low: float = 4.5, guidance_scale_high: float = 7.5, cutoff: float = 0.5,
                 start: float = 0.0, stop: float = 1.0, enabled: bool = True):
        super().__init__(guidance_scale=max(guidance_scale_low, guidance_scale_high), start=start, stop=stop,
                         enabled=enabled)
        self.scale_low, self.scale_high, self.cutoff = guidance_scale_low, guidance_scale_high, cutoff

    def forward(self, pred_cond, pred_uncond=None) -> GuiderOutput:
        if not self._is_cfg_enabled():
            return GuiderOutput(pred=pred_cond, pred_cond=pred_cond, pred_uncond=pred_uncond)
        pred = G.frequency_aware_cfg(pred_cond, pred_uncond, self.scale_low, self.scale_high, self.cutoff)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)
