"""accel.guidance: APG and frequency-aware CFG for pipelines that do their own CFG, and as diffusers guiders."""
from ..api import register_guidance_handler
from ..pipelines.families import FamilyLayout
from .hook import GUIDANCE_HOOK, GuidanceHook, merge_reports, prediction_type
from .methods import APG, FrequencyAwareCFG

_NO_LAYOUT = FamilyLayout("none", ())  # diffusers' conventions: the CFG batch uncond first, the prediction as is


@register_guidance_handler(APG)
@register_guidance_handler(FrequencyAwareCFG)
def _attach(handle, method) -> None:
    pipe = handle.state.pipe
    if pipe is None or not hasattr(pipe, "scheduler"):
        raise ValueError("guidance needs a pipeline (with a scheduler), not a bare denoiser")
    if isinstance(method, APG):
        prediction_type(pipe.scheduler)  # fail at apply time on unsupported predictions
    lay = handle.layout or _NO_LAYOUT  # a denoiser with no block layout: diffusers' conventions
    hooks = []
    for den in handle.experts or [handle.denoiser]:  # every expert (Wan 2.2: both), each guiding its own steps
        hooks.append(GuidanceHook(method, pipe, handle.state, lay.cfg_cond_first, lay.model_timestep_scale,
                                  lay.output_sign))
        handle.add_hook(den, hooks[-1], GUIDANCE_HOOK)
    handle.state.reporters["guidance"] = hooks[0].report if len(hooks) == 1 else lambda: merge_reports(hooks)


__all__ = ["APG", "FrequencyAwareCFG", "GuidanceHook"]
