"""One-step pipelines: caching and guidance are left out with a warning and nothing is attached."""
import pytest
import torch

import accel
from tiny import BUILDERS, images


def test_cache_and_guidance_on_a_one_step_pipeline_warn_and_attach_nothing():
    build, inputs = BUILDERS["unet"]  # PixArtAlphaPipeline needs an LCM-like scheduler at 1 step
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    pipe.accel_defaults = {"num_inference_steps": 1, "guidance_scale": 1.0}
    ref = images(pipe, **inputs(steps=1, guidance=1.0))
    with pytest.warns(UserWarning, match="caching and guidance on a one-step pipeline is pointless"):
        accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 1, 2), guidance=accel.APG(scale=4.0))
    assert not any(hasattr(m, "_diffusers_hook") for m in pipe.unet.modules())
    assert torch.equal(images(pipe, **inputs(steps=1, guidance=1.0)), ref)
    accel.remove(pipe)
    assert pipe.accel_defaults == {"num_inference_steps": 1, "guidance_scale": 1.0}


PRESET_CASES = [  # preset, tiny pipeline, timesteps the denoiser must see (model cards), CFG batch doubling
    ("sd-turbo", "unet", [999], False),
    ("sdxl-turbo", "sdxl", [999], False),
    ("lcm", "unet", [999, 759, 499, 259], True),
    ("lcm-lora", "sdxl", [999, 759, 499, 259], False),
    ("hyper-sd", "sdxl", [800], False),
    ("hyper-sd-lora", "unet", [999], False),
    ("dmd2", "sdxl", [399], False),
    ("dmd2-4step", "sdxl", [999, 749, 499, 249], False),
    ("nitrofusion-realism", "sdxl", [249], False),
    ("nitrofusion-vibrant", "sdxl", [499], False),
]


@pytest.mark.parametrize("name,fam,timesteps,cfg", PRESET_CASES)
def test_one_step_presets_schedule_what_the_model_cards_prescribe(name, fam, timesteps, cfg):
    from tiny import sdxl_inputs, tiny_sdxl, unet_inputs, tiny_unet

    pipe, inputs = (tiny_sdxl(), sdxl_inputs) if fam == "sdxl" else (tiny_unet(), unet_inputs)
    pipe.set_progress_bar_config(disable=True)
    old_sched = pipe.scheduler
    seen = []
    pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0].shape[0], int(a[1] if len(a) > 1 else kw["timestep"]))),
                                        with_kwargs=True)
    accel.apply(pipe, solver=f"onestep:{name}")
    kw = inputs(batch=1)
    for k in ("num_inference_steps", "guidance_scale", "negative_prompt_embeds", "negative_pooled_prompt_embeds"):
        kw.pop(k, None)
    if cfg:
        kw["negative_prompt_embeds"] = torch.zeros_like(kw["prompt_embeds"])
    out = pipe(**kw, **pipe.accel_defaults).images
    assert torch.isfinite(torch.as_tensor(out)).all()
    assert [t for _, t in seen] == timesteps
    assert all(b == (2 if cfg else 1) for b, _ in seen)
    accel.remove(pipe)
    assert pipe.scheduler is old_sched and "accel_defaults" not in pipe.__dict__


def test_unknown_preset_and_wrong_pipeline_class():
    from tiny import tiny_unet

    pipe = tiny_unet()
    with pytest.raises(ValueError, match="unknown one-step preset 'sd-turbo-x'; known: dmd2"):
        accel.apply(pipe, solver="onestep:sd-turbo-x")
    with pytest.warns(UserWarning, match="made for StableDiffusionXLPipeline, not StableDiffusionPipeline"):
        accel.apply(pipe, solver="onestep:dmd2")
    accel.remove(pipe)


def test_applying_again_builds_on_the_pipeline_as_it_was_before_accel():
    """A second apply replaces the first: its solver comes from the pipeline's own scheduler config and its
    cache is not refused because of the first apply's one-step defaults."""
    import warnings

    from tiny import tiny_sdxl

    pipe = tiny_sdxl()
    own = pipe.scheduler
    fresh = accel.apply(tiny_sdxl(), solver="unipc").scheduler.config
    accel.apply(pipe, solver="onestep:sdxl-turbo")
    assert pipe.scheduler.config.timestep_spacing == "trailing" and pipe.accel_defaults["num_inference_steps"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "pointless on a one-step pipeline" warning
        accel.apply(pipe, solver="unipc", cache=accel.CacheSchedule.uniform(pipe, 4, 2))
    assert dict(pipe.scheduler.config) == dict(fresh)
    assert "accel_defaults" not in pipe.__dict__
    assert any(hasattr(m, "_diffusers_hook") for m in pipe.unet.modules())
    with pytest.raises(ValueError):
        accel.apply(pipe, solver="onestep:no-such-preset")  # a refused apply keeps the second one
    assert dict(pipe.scheduler.config) == dict(fresh)
    accel.remove(pipe)
    assert pipe.scheduler is own
