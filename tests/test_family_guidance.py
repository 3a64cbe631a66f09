"""APG and FA-CFG on both forms of classifier-free guidance: one batched call (SD3, SDXL) and two calls per
step (FLUX's true CFG); a call with no CFG at all (guidance-distilled FLUX) warns that there is nothing to guide."""
import warnings

import pytest
import torch

import accel
from accel.guidance.hook import NOTHING_TO_GUIDE
from tiny import flux_inputs, images, sd3_inputs, sdxl_inputs, tiny_flux, tiny_sd3, tiny_sdxl

W = 7.5
CASES = {"flux-true-cfg": (tiny_flux, flux_inputs), "sd3": (tiny_sd3, sd3_inputs),
         "sdxl": (tiny_sdxl, lambda **kw: sdxl_inputs(**{"steps": 6, **kw}))}


def _norm(pipe) -> float:
    return accel.stats(pipe, count_macs_now=False).extra["guidance"]["mean_update_norm"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_apg_and_facfg_on_each_cfg_form(case):
    build, inputs = CASES[case]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    plain = images(pipe, **inputs(guidance=W))
    # the exact reductions to the pipeline's own CFG (x0 conversions add float rounding only)
    accel.apply(pipe, guidance=accel.APG(W, eta=1.0, momentum=0.0, norm_threshold=None))
    assert torch.allclose(images(pipe, **inputs(guidance=W)), plain, atol=2e-4)
    cfg_norm = _norm(pipe)
    assert accel.stats(pipe, count_macs_now=False).extra["guidance"]["guided_calls"] == 6
    accel.apply(pipe, guidance=accel.FrequencyAwareCFG(W, W))
    assert torch.allclose(images(pipe, **inputs(guidance=W)), plain, atol=2e-4)
    # FA-CFG with other band scales and the paper's APG change the result; APG shrinks the update
    accel.apply(pipe, guidance=accel.FrequencyAwareCFG(1.0, W))
    assert not torch.allclose(images(pipe, **inputs(guidance=W)), plain, atol=1e-3)
    accel.apply(pipe, guidance=accel.APG(W, norm_threshold=0.5))
    out = images(pipe, **inputs(guidance=W))
    assert not torch.allclose(out, plain, atol=1e-3)
    assert 0 < _norm(pipe) < cfg_norm
    accel.remove(pipe)
    assert torch.equal(images(pipe, **inputs(guidance=W)), plain)


def test_guidance_distilled_flux_warns_once_that_there_is_nothing_to_guide():
    pipe = tiny_flux(guidance_embeds=True)
    pipe.set_progress_bar_config(disable=True)
    kw = flux_inputs()
    plain = images(pipe, **kw, guidance_scale=3.5)
    accel.apply(pipe, guidance=accel.APG(W))
    with pytest.warns(UserWarning, match="nothing to guide"):
        out = images(pipe, **flux_inputs(), guidance_scale=3.5)
    assert torch.equal(out, plain)
    assert accel.stats(pipe, count_macs_now=False).extra["guidance"]["guided_calls"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: a second call says nothing new
        images(pipe, **flux_inputs(), guidance_scale=3.5)
    accel.remove(pipe)
    assert NOTHING_TO_GUIDE.startswith("accel guidance")


def test_flux_true_cfg_composes_with_caching():
    pipe = tiny_flux()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 2), guidance=accel.APG(W))
    images(pipe, **flux_inputs(guidance=W))
    st = accel.stats(pipe, count_macs_now=False)
    assert st.reused > 0 and st.extra["guidance"]["guided_calls"] == 6
    accel.remove(pipe)
