"""The generic layout (any denoiser declaring ``_repeated_blocks``) and the component layouts of FLUX.2, Qwen-Image
and Z-Image, on small random-weight pipelines of each family."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import accel
from accel.calibrate.dc import sample
from accel.calibrate.model_fn import GuidedDenoiser, model_time_map
from accel.pipelines.calls import condition
from accel.pipelines.families import (FamilyLayout, block_io, find_layout, generic_layout, layout_of,
                                      register_block_io)
from tiny_families import BUILDERS, output

HAND = ("flux2", "qwen-image", "z-image")


def _pipe(name: str):
    build, inputs = BUILDERS[name]
    pipe = build(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe, inputs


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean())


@pytest.mark.parametrize("name", HAND)
def test_a_component_layout_is_at_least_as_good_as_the_generic_one(name):
    """Every uniform schedule of the generic layout (whole blocks) is matched by one of the component layout that
    computes no more MACs (within half a percent) and ends at least as close to the plain output. (Caching whole
    blocks also skips their norms and modulation, which a component schedule recomputes: on Qwen-Image, whose
    blocks each project the timestep embedding to 12 x width, the match is a sparser component schedule.)"""
    pipe, inputs = _pipe(name)
    kw = lambda: inputs(steps=8, guidance=4.0)  # noqa: E731
    plain = output(pipe, **kw())
    generic = generic_layout(pipe.transformer)
    assert layout_of(pipe.transformer).name == name and generic.name.startswith("generic:")

    def run(interval: int, layout: str | None) -> tuple[float, float]:
        accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 8, interval, layout=layout))
        err, macs = _mse(output(pipe, **kw()), plain), accel.stats(pipe).macs_fraction
        accel.remove(pipe)
        return macs, err

    own = [run(k, None) for k in (2, 3, 4)]
    for k in (2, 3):
        macs, err = run(k, generic.name)
        assert any(m <= macs + 0.005 and e <= err for m, e in own), (k, macs, err, own)


def test_generic_blocks_reuse_their_residuals_with_hold_and_forecast():
    """Chroma (no layout of its own): a forecast reuse runs, counts what the schedule says, and differs from hold;
    the schedule names the generic layout and is refused on another model."""
    pipe, inputs = _pipe("chroma")
    plain = output(pipe, **inputs(steps=6))
    outs = {}
    for reuse in ("hold", "taylor"):
        sched = accel.CacheSchedule.at_steps(pipe, 6, [0, 1, 3], reuse=reuse)
        assert sched.family == "generic:ChromaTransformer2DModel" and sched.components == ("block",)
        accel.apply(pipe, cache=sched)
        outs[reuse] = output(pipe, **inputs(steps=6))
        st = accel.stats(pipe)
        n_blocks = len(layout_of(pipe.transformer).blocks(pipe.transformer))
        calls = st.denoiser_calls // 6  # Chroma's CFG: two calls a step
        assert (st.computed, st.reused) == (3 * n_blocks * calls, 3 * n_blocks * calls)
        assert [c.module for c in st.components[:2]] == ["transformer_blocks.0", "single_transformer_blocks.0"]
        accel.remove(pipe)
    assert not torch.equal(outs["hold"], outs["taylor"]) and not torch.equal(outs["hold"], plain)
    other, _ = _pipe("hunyuan-image")
    with pytest.raises(accel.ScheduleMismatchError):
        accel.apply(other, cache=sched)


def test_blocks_whose_outputs_cannot_be_told_apart_are_refused_with_the_way_out():
    class Block(nn.Module):
        def forward(self, hidden_states, encoder_hidden_states, temb):
            return encoder_hidden_states, hidden_states

    class Denoiser(nn.Module):
        _repeated_blocks = ["Block"]

        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])

        def forward(self, hidden_states, timestep):
            return hidden_states

    den = Denoiser()
    layout, why = find_layout(den)
    assert layout is None and "register_block_io('Block'" in why
    with pytest.raises(NotImplementedError, match="cannot tell which of its outputs"):
        accel.apply(den, cache=accel.CacheSchedule.full(BUILDERS["chroma"][0](0), 2))
    register_block_io("Block", hidden_out=1, encoder_out=0)
    block_io.cache_clear()
    io = block_io(Block)
    assert (io.hidden_out, io.encoder_out, io.encoder_arg) == (1, 0, "encoder_hidden_states")
    assert [r[0].name for r in layout_of(den).blocks(den)] == ["blocks.0", "blocks.1"]

    class Plain(nn.Module):
        def forward(self, x, timestep):
            return x

    with pytest.raises(NotImplementedError, match="no `_repeated_blocks`.*register_family"):
        layout_of(Plain())


def test_the_model_time_map_is_read_off_the_call():
    assert model_time_map([(1000.0, 1.0), (500.0, 0.5)], 1.0) == (1e-3, 0.0)  # FLUX, Qwen-Image, FLUX.2
    assert model_time_map([(1000.0, 0.0), (750.0, 0.25)], 1.0) == (-1e-3, 1.0)  # Z-Image
    assert model_time_map([(999.0, 999.0), (500.0, 500.0)], 1e-3) == (1.0, 0.0)  # Wan, SD, PixArt
    assert model_time_map([(800.0, 8.0)], 1e-2) == (1e-2, 0.0)  # one timestep: the family's scale
    a, b = model_time_map([(1000.0, 2.0), (0.0, 0.0)], 1.0)
    assert (a, b) == pytest.approx((2e-3, 0.0))


@pytest.mark.parametrize("name", ["z-image", "qwen-image", "chroma", "wan22"])
def test_the_calibration_model_function_is_the_pipelines_own_guided_denoiser(name):
    """At every step of a pipeline call, the guided model function of solver calibration gives the prediction the
    pipeline hands its scheduler: the time convention (Z-Image's 1 - t / 1000, the others' t / 1000), the sign
    of the prediction, the CFG form and order, Z-Image's scale offset, and Wan 2.2's switch of experts."""
    pipe, inputs = _pipe(name)
    guidance = 3.0
    kw = inputs(steps=4, guidance=guidance)
    if name == "wan22":  # one scale for both experts, as a calibration call passes it
        kw = inputs(steps=4, guidance=guidance, guidance_2=guidance)
        boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    if name == "qwen-image":  # its true CFG rescales the combination to the cond norm, which calibration leaves out
        kw = {k: v for k, v in kw.items() if "negative" not in k and k != "true_cfg_scale"}
        guidance = 1.0
    call = {k: v for k, v in kw.items() if "embeds" in k or "mask" in k}
    fn = GuidedDenoiser(pipe, call, guidance, {k: v for k, v in kw.items() if k in ("height", "width", "num_frames")})
    seen = []
    step = pipe.scheduler.step

    def recording(model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.clone(), timestep, sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = recording
    try:
        pipe(**{**kw, "output_type": "latent"})
    finally:
        del pipe.scheduler.step
    assert len(seen) == 4
    if name == "wan22":  # the call crosses the boundary: both experts are followed
        assert {float(t) >= boundary for _, t, _ in seen} == {True, False}
    for pred, t, x in seen:
        with torch.no_grad():
            assert _mse(fn(x, t), pred) < 1e-10 * max(1.0, float(pred.pow(2).mean()))


def test_a_batch_straddling_wan22s_boundary_runs_each_sample_on_its_own_expert():
    """Per-sample times on both sides of the boundary (as a calibration batch may hold): each sample gets what the
    batch gives at its time alone (which expert that is: the test above, against the pipeline's own calls)."""
    pipe, inputs = _pipe("wan22")
    kw = inputs(batch=2, steps=4, guidance=3.0, guidance_2=3.0)
    call = {k: v for k, v in kw.items() if "embeds" in k}
    fn = GuidedDenoiser(pipe, call, 3.0, {k: kw[k] for k in ("height", "width", "num_frames")})
    x = torch.randn(2, *fn.latent_shape, generator=torch.Generator().manual_seed(5))
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    t = torch.tensor([boundary + 50.0, boundary - 300.0])
    with torch.no_grad():
        both = fn(x, t)
        high, low = fn(x, t[0].expand(2)), fn(x, t[1].expand(2))
    assert torch.allclose(both[0], high[0], atol=1e-5) and torch.allclose(both[1], low[1], atol=1e-5)


def test_a_call_without_cfg_warns_and_one_with_it_is_guided():
    pipe, inputs = _pipe("z-image")
    plain = output(pipe, **inputs(steps=4, guidance=4.0))
    # APG with eta 1, no momentum and no threshold is CFG: Z-Image's scale w is the CFG scale 1 + w, cond first
    accel.apply(pipe, guidance=accel.APG(5.0, eta=1.0, norm_threshold=None))
    assert torch.allclose(output(pipe, **inputs(steps=4, guidance=4.0)), plain, atol=1e-4)
    accel.apply(pipe, guidance=accel.APG(5.0))
    assert not torch.allclose(output(pipe, **inputs(steps=4, guidance=4.0)), plain, atol=1e-3)
    accel.remove(pipe)
    distilled, inputs = _pipe("flux2")
    accel.apply(distilled, guidance=accel.APG(5.0))
    with pytest.warns(UserWarning, match="nothing to guide"):
        output(distilled, **inputs(steps=2))
