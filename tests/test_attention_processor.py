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
