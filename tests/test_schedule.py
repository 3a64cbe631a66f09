"""CacheSchedule: files, model checks, resampling; stats MACs against a direct count."""
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import accel
from tiny import BUILDERS, images, pixart_inputs, tiny_dit, tiny_pixart


def test_json_roundtrip_and_apply_from_path(tmp_path):
    pipe = tiny_pixart()
    s = accel.CacheSchedule.uniform(pipe, 6, interval=2, resolution=(16, 16))
    s.table[3, 1, 2] = True
    path = s.save(tmp_path / "s.json")
    t = accel.CacheSchedule.load(path)
    assert np.array_equal(t.table, s.table) and t.fingerprint == s.fingerprint and t.resolution == (16, 16)
    assert json.loads(path.read_text())["components"] == ["attn1", "attn2", "ff"]
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, cache=str(path))
    images(pipe, **pixart_inputs())
    st = accel.stats(pipe)
    assert st.computed == int(s.table.sum())  # exactly what the table says (one batched CFG call per step)


def test_bad_files_fail_clearly(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid accel cache schedule"):
        accel.CacheSchedule.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an accel cache schedule"):
        accel.CacheSchedule.load(tmp_path / "y.json")


def test_mismatch_names_what_differs():
    a, b = tiny_pixart(), tiny_pixart()
    s = accel.CacheSchedule.uniform(a, 6, 2)
    b.transformer.register_to_config(norm_eps=1e-5)  # same layout, another config
    with pytest.raises(accel.ScheduleMismatchError, match="fingerprint"):
        accel.apply(b, cache=s)
    with pytest.raises(accel.ScheduleMismatchError, match="family 'pixart' vs model 'dit'"):
        accel.apply(tiny_dit(), cache=s)


def test_resampling_is_proportional():
    pipe = tiny_pixart()
    s = accel.CacheSchedule.uniform(pipe, 20, interval=4)  # 25% computed
    with pytest.warns(UserWarning):
        r = s.resampled(40)
    assert r.table.shape == (40, 2, 3) and r.table[0].all()
    assert r.compute_fraction() == pytest.approx(s.compute_fraction(), abs=0.03)
    with pytest.warns(UserWarning):
        d = s.resampled(10)
    assert d.table[0].all() and 0.2 <= d.compute_fraction() <= 0.5


def test_uniform_keeps_the_shallow_unet_level():
    pipe = BUILDERS["unet"][0]()
    s = accel.CacheSchedule.uniform(pipe, 6, interval=3)
    assert s.table[:, 0].all() and not s.table[1:3, 1].any()


def test_stats_macs_match_a_direct_flop_count():
    pipe = tiny_pixart()
    pipe.set_progress_bar_config(disable=True)
    with FlopCounterMode(display=False) as fc:
        images(pipe, **pixart_inputs())
    direct = sum(fc.get_flop_counts()["PixArtTransformer2DModel"].values()) // 2
    accel.apply(pipe)
    images(pipe, **pixart_inputs())
    st = accel.stats(pipe)
    assert st.macs_full == direct and st.macs_computed == direct
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, interval=2))
    with FlopCounterMode(display=False) as fc:
        images(pipe, **pixart_inputs())
    cached_direct = sum(fc.get_flop_counts()["PixArtTransformer2DModel"].values()) // 2
    st = accel.stats(pipe)
    assert st.macs_computed == cached_direct < direct
    assert st.denoise_seconds > 0 and str(st).startswith("accel stats (pixart)")


def test_taylor_reuse_extrapolates_the_last_two_computed_outputs(tmp_path):
    pipe = tiny_pixart()
    pipe.set_progress_bar_config(disable=True)
    s = accel.CacheSchedule.uniform(pipe, 6, interval=2, reuse="taylor")
    t = accel.CacheSchedule.load(s.save(tmp_path / "t.json"))
    assert t.reuse == "taylor" and accel.CacheSchedule.uniform(pipe, 6, 2).reuse == "hold"
    with pytest.raises(ValueError, match="reuse must be one of"):
        accel.CacheSchedule.uniform(pipe, 6, 2, reuse="quadratic")
    _, den = accel.pipelines.families.find_denoiser(pipe)
    ff = den.transformer_blocks[-1].ff
    seen = []
    h = ff.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    accel.apply(pipe, cache=str(tmp_path / "t.json"))
    accel.api.handle_of(pipe).state.fast_blocks = False  # serve reused outputs through the module (seen here)
    images(pipe, **pixart_inputs())
    h.remove()
    assert len(seen) == 6  # computed at steps 0, 2, 4; reused at 1, 3, 5
    assert torch.equal(seen[1], seen[0])  # one computed output so far: held
    for k in (3, 5):  # steps k-1 and k-3 computed: last + (1/2)(last - previous)
        torch.testing.assert_close(seen[k], seen[k - 1] + 0.5 * (seen[k - 1] - seen[k - 3]))
        assert not torch.equal(seen[k], seen[k - 1])


def test_at_steps_with_taylor_reuse_reproduces_diffusers_taylorseer():
    """TaylorSeer (warm-up 3, interval 2, order 1) computes steps 0, 1, 2, 4, 6 of 8 and forecasts the rest to
    first order from the last two computed outputs: accel's at_steps schedule with taylor reuse gives its images."""
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    with pytest.raises(ValueError, match="must include step 0"):
        accel.CacheSchedule.at_steps(tiny_pixart(), 8, [1, 4])
    outs = {}
    for kind in ("accel", "diffusers", "plain"):
        pipe = tiny_pixart()
        pipe.set_progress_bar_config(disable=True)
        if kind == "accel":
            accel.apply(pipe, cache=accel.CacheSchedule.at_steps(pipe, 8, [0, 1, 2, 4, 6], reuse="taylor"))
        elif kind == "diffusers":
            ids = [rf"transformer_blocks\.\d+\.{c}" for c in ("attn1", "attn2", "ff")]
            apply_taylorseer_cache(pipe.transformer, TaylorSeerCacheConfig(
                cache_interval=2, disable_cache_before_step=3, max_order=1, taylor_factors_dtype=torch.float32,
                cache_identifiers=ids))
            _set_cache_context(pipe.transformer, CacheContext("cond"))  # PixArt's pipeline sets none
        outs[kind] = images(pipe, **{**pixart_inputs(steps=8), "output_type": "latent"})
    torch.testing.assert_close(outs["accel"], outs["diffusers"], rtol=0, atol=1e-5)
    assert (outs["accel"] - outs["plain"]).abs().max() > 1e-3  # the forecasts are not the computed outputs
