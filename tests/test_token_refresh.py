"""Token refresh: refreshing (almost) every token equals full compute; fewer tokens trade error for MACs."""
import pytest
import torch

import accel
from tiny import images, pixart_inputs, tiny_pixart


def _run(pipe, **kw):
    pipe.set_progress_bar_config(disable=True)
    return images(pipe, **pixart_inputs(**kw))


def test_refreshing_every_token_is_full_compute():
    pipe = tiny_pixart()
    ref = _run(pipe)
    accel.apply(pipe, cache=accel.TokenRefresh(interval=2, ratio=0.999))
    assert torch.allclose(_run(pipe), ref, atol=1e-6)
    st = accel.stats(pipe)
    assert sum(c.partial for c in st.components) > 0 and st.reused == 0


def test_partial_refresh_beats_pure_reuse_and_saves_macs():
    pipe = tiny_pixart()
    ref = _run(pipe, batch=2)
    accel.apply(pipe, cache=accel.TokenRefresh(interval=3, ratio=0.25))
    out = _run(pipe, batch=2)
    st = accel.stats(pipe)
    assert st.extra["attention"]["processors"] > 0  # installed automatically
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 6, 3))
    reuse = _run(pipe, batch=2)
    full_reuse = accel.stats(pipe)
    err_refresh, err_reuse = (out - ref).abs().mean(), (reuse - ref).abs().mean()
    assert 0 < err_refresh < err_reuse
    assert full_reuse.macs_computed < st.macs_computed < st.macs_full
    accel.remove(pipe)
    assert torch.equal(_run(pipe, batch=2), ref)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError):
        accel.TokenRefresh(interval=0)
    with pytest.raises(ValueError):
        accel.TokenRefresh(ratio=1.0)
