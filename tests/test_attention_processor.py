"""accel's attention processor: identical to diffusers' on the torch backend, text K/V computed once per call."""
import pytest
import torch

import accel
from tiny import BUILDERS, images


@pytest.mark.parametrize("fam", ["pixart", "dit", "unet"])
def test_torch_backend_is_bit_identical_and_reuses_text_kv(fam):
    build, inputs = BUILDERS[fam]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    ref = images(pipe, **inputs())
    accel.apply(pipe, attention="torch")
    assert torch.equal(images(pipe, **inputs()), ref)
    att = accel.stats(pipe).extra["attention"]
    assert att["processors"] > 0 and att["torch"] > 0 and "triton" not in att
    if fam in ("pixart", "unet"):  # cross-attention to the text: K/V reused after the first step
        assert att["text_kv_reused"] > 0
    accel.remove(pipe)
    assert torch.equal(images(pipe, **inputs()), ref)
    assert all(type(m.processor).__name__ != "AccelAttnProcessor"
               for m in pipe.components[("transformer" if fam != "unet" else "unet")].modules() if hasattr(m, "processor"))


def test_triton_backend_under_the_interpreter_matches():
    pytest.importorskip("triton")
    from accel.kernels.attention import INTERPRET

    if not INTERPRET:
        pytest.skip("needs TRITON_INTERPRET=1")
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    ref = images(pipe, **inputs(steps=2))
    accel.apply(pipe, attention="triton")
    out = images(pipe, **inputs(steps=2))
    assert (out - ref).abs().max() < 1e-4
    assert accel.stats(pipe).extra["attention"]["triton"] > 0


def test_unknown_backend_is_a_clear_error():
    pipe = BUILDERS["pixart"][0]()
    with pytest.raises(ValueError, match="'cuda' is not a valid Backend"):
        accel.apply(pipe, attention="cuda")


def test_text_kv_of_the_call_invariant_projection_is_reused_without_reading_it(monkeypatch):
    """With a cache, the caption projection is one tensor for the whole call: K/V are reused by identity (no
    content comparison, which would wait for an accelerator at every cross-attention)."""
    import accel.attention as att_mod

    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 4, 2))
    ref = images(pipe, **inputs(steps=4))
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 4, 2), attention="torch")
    compared = []
    real_equal = torch.equal
    monkeypatch.setattr(att_mod.torch, "equal", lambda a, b: compared.append(1) or real_equal(a, b))
    out = images(pipe, **inputs(steps=4))
    monkeypatch.undo()
    assert torch.equal(out, ref)
    assert accel.stats(pipe).extra["attention"]["text_kv_reused"] > 0 and not compared


def test_inference_mode_calls_run_and_match():
    """Inference-mode tensors have no version counter: the projection and K/V reuse fall back to computing or
    comparing, and the images are the no-grad call's."""
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, cache=accel.CacheSchedule.uniform(pipe, 4, 2), attention="torch")
    ref = images(pipe, **inputs(steps=4))
    with torch.inference_mode():
        out = images(pipe, **inputs(steps=4))
    assert torch.equal(out, ref)
