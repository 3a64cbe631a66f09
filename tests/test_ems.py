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


def _gaussian_model(scheduler, c: float, flow: bool):
    """The exact denoiser of Gaussian data x0 ~ N(0, c^2 I), in the scheduler's prediction space; differentiable in
    the (continuous) timestep, as a network is, so the JVP along the ODE tangent sees its time dependence."""
    acp = scheduler.alphas_cumprod.double()

    def alpha_sigma(t: torch.Tensor):
        if flow:
            s = t / scheduler.config.num_train_timesteps
            return 1 - s, s
        la = acp.log()
        i = t.detach().clamp(0, len(acp) - 2).floor().long()
        la2 = la[i] + (t - i) * (la[i + 1] - la[i])  # log-linear in t between the discrete steps
        return torch.exp(la2 / 2), torch.sqrt(-torch.expm1(la2))

    def fn(x, t):
        a, s = alpha_sigma(torch.as_tensor(t, dtype=torch.float64).flatten()[0])
        x0 = a * c * c * x / (a * a * c * c + s * s)
        return ((x - x0) / s if flow else (x - a * x0) / s).to(x.dtype)

    return fn, alpha_sigma


@pytest.mark.parametrize("path", ["noised", "ode"])
@pytest.mark.parametrize("flow", [False, True])
def test_v3_with_computed_statistics_is_exact_on_gaussian_data(flow, path):
    """For Gaussian data N = sigma eps - l x vanishes with the EMS l, so DPM-Solver-v3 integrates the ODE exactly
    (up to the statistics' interpolation) where DPM-Solver++ at 5 steps does not: checks EMS and solver together."""
    from diffusers import DPMSolverMultistepScheduler

    kw = dict(use_flow_sigmas=True, prediction_type="flow_prediction") if flow else {}
    base = DPMSolverMultistepScheduler(num_train_timesteps=1000, **kw)
    c = 0.5
    fn, alpha_sigma = _gaussian_model(base, c, flow)
    x0 = c * torch.randn(64, 2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    import tempfile, os

    lams, l, s, b = compute_ems(fn, base, x0, grid_points=200, progress=False, path=path)
    errs = {}
    with tempfile.TemporaryDirectory() as d:
        save_ems(os.path.join(d, "e.safetensors"), lams, l, s, b, {"fingerprint": "x"})
        for name, extra in (("v3", {"ems_path": os.path.join(d, "e.safetensors")}), ("dpm++", {"degenerated": True})):
            sch = DPMSolverV3Scheduler.from_config(base.config, **extra)
            sch.set_timesteps(5)
            xT = torch.randn(8, 2, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            a_T, s_T = sch._alpha_sigma(0)
            x = xT * (a_T**2 * c * c + s_T**2) ** 0.5  # a sample of the marginal at the first timestep
            start = x.clone()
            for t in sch.timesteps:
                x = sch.step(fn(x, t), t, x).prev_sample
            a_f, s_f = sch._alpha_sigma(len(sch.timesteps))
            exact = start * ((a_f**2 * c * c + s_f**2) / (a_T**2 * c * c + s_T**2)) ** 0.5
            errs[name] = float(((x - exact) ** 2).mean() / (exact**2).mean())
    assert errs["v3"] < 1e-3 and errs["v3"] < 0.1 * errs["dpm++"], errs


@pytest.mark.parametrize("flow", [False, True])
def test_ode_path_follows_the_exact_gaussian_flow(flow):
    """``ode_path`` (the ``--data paths`` statistics) lands on the exact probability-flow ODE solution at every grid
    point: for Gaussian data the ODE only rescales x, by the ratio of marginal standard deviations."""
    import numpy as np
    from diffusers import DPMSolverMultistepScheduler

    from accel.calibrate.ems import _alpha_sigma_t, lambda_range, ode_path
    from accel.solvers.noise_schedule import NoiseSchedule

    kw = dict(use_flow_sigmas=True, prediction_type="flow_prediction") if flow else {}
    base = DPMSolverMultistepScheduler(num_train_timesteps=1000, **kw)
    c = 0.5
    fn, _ = _gaussian_model(base, c, flow)
    lams = np.linspace(*lambda_range(base), 21)
    z = torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xs = ode_path(fn, base, z, lams)
    ns = NoiseSchedule.of(base)
    a_T, s_T, _ = _alpha_sigma_t(ns, float(lams[0]))
    for lam, x in zip(lams, xs):
        a, s, _ = _alpha_sigma_t(ns, float(lam))
        exact = z * ((a * a * c * c + s * s) / (a_T**2 * c * c + s_T**2)) ** 0.5
        assert float(((x - exact) ** 2).mean() / (exact**2).mean()) < 1e-4


def test_guided_denoiser_runs_a_half_precision_model_in_the_callers_precision():
    """Calibration math stays in float32/64 while a bf16 model runs in bf16 (as on a user's GPU pipeline)."""
    pipe, call, extra, _ = _pixart()
    ref = GuidedDenoiser(pipe, call, guidance=4.0, call_kwargs=extra)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want = ref(x, 500.0)
    pipe.to(torch.bfloat16)
    fn = GuidedDenoiser(pipe, {k: v.to(torch.bfloat16) if v is not None and v.is_floating_point() else v
                               for k, v in call.items()}, guidance=4.0, call_kwargs=extra)
    got = fn(x, 500.0)
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.1 * want.abs().max()  # bf16 rounding, not another function
