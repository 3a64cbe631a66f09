"""Pipelines sharing modules (``Pipeline(**pipe.components)``, ``from_pipe``): a pipeline built from an
accelerated pipeline's components runs exactly as plain, and the accelerated one keeps its own state."""
import pytest
import torch
from diffusers import PixArtAlphaPipeline

import accel
from tiny import BUILDERS, images


@pytest.mark.parametrize("fam", ["pixart", "unet", "flux"])
def test_a_sibling_pipeline_runs_exactly_as_plain(fam):
    build, inputs = BUILDERS[fam]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    sibling = type(pipe)(**pipe.components)  # the same modules, scheduler included
    sibling.set_progress_bar_config(disable=True)
    plain = images(sibling, **inputs(steps=6))
    guidance = accel.APG(scale=4.5) if fam != "flux" else None  # (the tiny FLUX call has no CFG to guide)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 3), guidance=guidance)
    fast = images(pipe, **inputs(steps=6))
    before = accel.stats(pipe, count_macs_now=False)
    assert before.reused > 0 and not torch.equal(fast, plain)
    assert torch.equal(images(sibling, **inputs(steps=6)), plain)  # the sibling: no cache, no guidance change
    after = accel.stats(pipe, count_macs_now=False)
    assert (after.reused, after.steps, after.denoiser_calls) == (before.reused, before.steps, before.denoiser_calls)
    assert torch.equal(images(pipe, **inputs(steps=6)), fast)  # and the accelerated pipeline is unchanged by it
    accel.remove(pipe)
    assert torch.equal(images(pipe, **inputs(steps=6)), plain)


def test_from_pipe_runs_as_plain():
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 2))
    other = PixArtAlphaPipeline.from_pipe(pipe)
    other.set_progress_bar_config(disable=True)
    out = images(other, **inputs(steps=6))
    accel.remove(pipe)
    assert torch.equal(out, images(pipe, **inputs(steps=6)))


def test_accelerating_a_second_pipeline_on_the_same_denoiser_is_refused():
    build, _ = BUILDERS["pixart"]
    pipe = build()
    sibling = type(pipe)(**pipe.components)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 2))
    with pytest.raises(ValueError, match="already accelerated through another pipeline"):
        accel.apply(sibling, cache=accel.CacheSchedule.uniform(sibling, 6, 2))
    accel.remove(pipe)
    accel.apply(sibling, cache=accel.CacheSchedule.uniform(sibling, 6, 2))  # once it is free, it may
    accel.remove(sibling)


def test_state_is_reset_through_diffusers_stateful_hooks():
    """diffusers resets stateful hooks at the end of every call of a model with its cache mixin (FLUX here): accel
    then holds no activations between calls; on other models the same reset is there for whoever calls it."""
    from diffusers.hooks import HookRegistry

    for fam in ("flux", "pixart"):
        build, inputs = BUILDERS[fam]
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 3))
        first = images(pipe, **inputs(steps=6))
        state = accel.api.handle_of(pipe).state
        assert accel.stats(pipe, count_macs_now=False).reused > 0
        assert any(state._store) == (fam == "pixart")  # FLUX's pipeline reset it at the end of its call
        HookRegistry.check_if_exists_or_initialize(pipe.transformer).reset_stateful_hooks()
        assert not any(state._store) and accel.stats(pipe, count_macs_now=False).reused > 0  # the record stays
        assert torch.equal(images(pipe, **inputs(steps=6)), first)
        accel.remove(pipe)
