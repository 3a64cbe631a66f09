"""Guided model function and empirical model statistics on tiny pipelines."""
import pytest
import torch

from accel.calibrate.ems import compute_ems
from accel.calibrate.model_fn import GuidedDenoiser
from accel.solvers import DPMSolverV3Scheduler, save_ems
from tiny import BUILDERS, images

KEYS = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask",
        "negative_prompt")


def _pixart(batch: int = 2):
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    kw = inputs(batch=batch)
    call = {k: kw[k] for k in KEYS}
    extra = dict(height=16, width=16, use_resolution_binning=False)
    return pipe, call, extra, inputs


def test_guided_denoiser_matches_the_pipelines_own_cfg():
    pipe, call, extra, _ = _pixart()
    fn = GuidedDenoiser(pipe, call, guidance=4.0, call_kwargs=extra)
    assert fn.cfg and fn.batch == 2
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500.0)
    emb = torch.cat([call["negative_prompt_embeds"], call["prompt_embeds"]])
    mask = torch.cat([call["negative_prompt_attention_mask"], call["prompt_attention_mask"]])
    out = pipe.transformer(torch.cat([x, x]), encoder_hidden_states=emb, encoder_attention_mask=mask,
                           timestep=torch.full((4,), 500.0), added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    u, c = out.chunk(2)
    assert torch.allclose(fn(x, t), u + 4.0 * (c - u), atol=1e-6)


def test_ems_statistics_run_and_feed_dpm_solver_v3(tmp_path):
    pipe, call, extra, inputs = _pixart(batch=32)  # covariances need samples: 2 give garbage s and b
    fn = GuidedDenoiser(pipe, call, guidance=4.0, call_kwargs=extra)
    x0 = torch.randn(32, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    lams, l, s, b = compute_ems(fn, pipe.scheduler, x0, grid_points=6, progress=False)
    assert l.shape == (7, 4, 8, 8) and torch.isfinite(l).all() and torch.isfinite(s).all() and torch.isfinite(b).all()
    assert (lams[1:] > lams[:-1]).all()
    save_ems(tmp_path / "ems.safetensors", lams, l, s, b, {"fingerprint": "x"})
    pipe.scheduler = DPMSolverV3Scheduler.from_config(pipe.scheduler.config, ems_path=str(tmp_path / "ems.safetensors"))
    assert torch.isfinite(images(pipe, **inputs(steps=5))).all()
