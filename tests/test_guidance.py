"""APG and FA-CFG: exact reductions to CFG, the paper's projection by hand, and every classic pipeline family."""
import pytest
import torch

import accel
from accel.guidance import functional as G
from tiny import BUILDERS, images


def _r(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_apg_reduces_to_cfg():
    c, u = _r(3, 4, 8, 8, seed=1), _r(3, 4, 8, 8, seed=2)
    out, _, clipped = G.apg(c, u, 7.5, eta=1.0, momentum=0.0, norm_threshold=None)
    assert torch.allclose(out, G.cfg(c, u, 7.5), atol=1e-5) and not clipped.any()


def test_facfg_with_equal_band_scales_is_cfg():
    c, u = _r(2, 4, 16, 16, seed=1), _r(2, 4, 16, 16, seed=2)
    assert torch.allclose(G.frequency_aware_cfg(c, u, 5.0, 5.0, 0.5), G.cfg(c, u, 5.0), atol=1e-5)
    # and different scales really act on different bands
    assert not torch.allclose(G.frequency_aware_cfg(c, u, 1.0, 9.0, 0.5), G.cfg(c, u, 5.0), atol=1e-3)


def test_apg_projection_by_hand():
    cond = torch.tensor([[3.0, 4.0]])
    uncond = torch.tensor([[3.0, 0.0]])
    # delta = [0, 4]; v = [0.6, 0.8]; par = 3.2 v = [1.92, 2.56]; orth = [-1.92, 1.44]
    out, _, _ = G.apg(cond, uncond, scale=2.0, eta=0.0, momentum=0.0, norm_threshold=None)
    assert torch.allclose(out, torch.tensor([[3 - 1.92, 4 + 1.44]]), atol=1e-6)
    out, _, _ = G.apg(cond, uncond, scale=3.0, eta=0.5, momentum=0.0, norm_threshold=None)
    assert torch.allclose(out, cond + 2 * (torch.tensor([[-1.92, 1.44]]) + 0.5 * torch.tensor([[1.92, 2.56]])), atol=1e-6)


def test_apg_momentum_and_rescale_follow_the_algorithm():
    cond, u1, u2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, -1.0]])
    _, run, _ = G.apg(cond, u1, 2.0, momentum=-0.5)
    assert torch.allclose(run, cond - u1)
    _, run2, _ = G.apg(cond, u2, 2.0, momentum=-0.5, running=run)
    assert torch.allclose(run2, (cond - u2) - 0.5 * (cond - u1))
    big = torch.tensor([[30.0, 40.0]])
    _, _, clipped = G.apg(big, torch.zeros(1, 2), 2.0, momentum=0.0, norm_threshold=5.0)
    assert clipped.tolist() == [True]


def test_apg_is_independent_per_sample():
    c, u = _r(4, 2, 4, 4, seed=3), _r(4, 2, 4, 4, seed=4)
    whole, _, _ = G.apg(c, u, 9.0, norm_threshold=2.0)
    parts = torch.cat([G.apg(c[i : i + 1], u[i : i + 1], 9.0, norm_threshold=2.0)[0] for i in range(4)])
    assert torch.allclose(whole, parts, atol=1e-6)


def test_x0_conversions_roundtrip():
    x, pred = _r(2, 4, 8, 8, seed=5), _r(2, 4, 8, 8, seed=6)
    a, s = torch.tensor([0.8, 0.3]), torch.tensor([0.6, 0.95])
    for pt in ("epsilon", "v_prediction", "flow_prediction"):
        assert torch.allclose(G.from_x0(G.to_x0(pred, x, a, s, pt), x, a, s, pt), pred, atol=1e-4)


@pytest.mark.parametrize("fam", ["pixart", "dit", "sd3", "unet"])
def test_guidance_on_classic_pipelines(fam):
    build, inputs = BUILDERS[fam]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    w = 6.0
    plain = images(pipe, **inputs(guidance=w))
    # exact reductions, end to end (x0 conversions add float rounding only)
    accel.apply(pipe, guidance=accel.APG(w, eta=1.0, momentum=0.0, norm_threshold=None))
    assert torch.allclose(images(pipe, **inputs(guidance=w)), plain, atol=2e-4)
    accel.apply(pipe, guidance=accel.FrequencyAwareCFG(w, w))
    assert torch.allclose(images(pipe, **inputs(guidance=w)), plain, atol=2e-4)
    # the paper's APG changes the result, keeps no state between calls, and reports its statistics
    accel.apply(pipe, guidance=accel.APG(w, eta=0.0, momentum=-0.5, norm_threshold=1.0))
    a = images(pipe, **inputs(guidance=w))
    assert not torch.allclose(a, plain, atol=1e-3)
    assert torch.equal(images(pipe, **inputs(guidance=w)), a)
    g = accel.stats(pipe).extra["guidance"]
    assert g["guided_calls"] == 6 and g["mean_update_norm"] > 0 and 0 <= g["clip_rate"] <= 1
    # composes with caching
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 2), guidance=accel.APG(w))
    images(pipe, **inputs(guidance=w))
    st = accel.stats(pipe)
    assert st.reused > 0 and st.extra["guidance"]["guided_calls"] == 6
    accel.remove(pipe)
    assert torch.equal(images(pipe, **inputs(guidance=w)), plain)


def test_guidance_without_cfg_batch_passes_through():
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    plain = images(pipe, **inputs(guidance=1.0))
    accel.apply(pipe, guidance=accel.APG(7.0))
    with pytest.warns(UserWarning, match="nothing to guide"):
        assert torch.equal(images(pipe, **inputs(guidance=1.0)), plain)
    assert accel.stats(pipe).extra["guidance"]["guided_calls"] == 0


def test_modular_guiders_reduce_to_cfg_and_reset_momentum():
    from diffusers.guiders import BaseGuidance, ClassifierFreeGuidance

    from accel.guidance.guiders import AccelAPGGuider, AccelFrequencyAwareGuider

    c, u = _r(2, 4, 8, 8, seed=7), _r(2, 4, 8, 8, seed=8)
    ref = ClassifierFreeGuidance(guidance_scale=5.0)
    ref.set_state(0, 10, torch.tensor(999))
    expect = ref.forward(c, u).pred
    apg = AccelAPGGuider(guidance_scale=5.0, eta=1.0, momentum=0.0, norm_threshold=None)
    fa = AccelFrequencyAwareGuider(5.0, 5.0)
    assert isinstance(apg, BaseGuidance) and isinstance(fa, BaseGuidance)
    for g in (apg, fa):
        g.set_state(0, 10, torch.tensor(999))
        assert torch.allclose(g.forward(c, u).pred, expect, atol=1e-5)
    m = AccelAPGGuider(guidance_scale=5.0)
    m.set_state(0, 10, torch.tensor(999))
    first = m.forward(c, u).pred
    m.set_state(1, 10, torch.tensor(900))
    m.forward(c, u)
    m.set_state(0, 10, torch.tensor(999))  # a new call
    assert torch.equal(m.forward(c, u).pred, first)
