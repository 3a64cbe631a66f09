"""Solvers by name on every family's own scheduler: configured from the pipeline's noise schedule and
measured against a 200-step solve of the pipeline's own scheduler from the same noise."""
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

import accel
from accel.solvers.noise_schedule import NoiseSchedule
from tiny import flux_inputs, sd3_inputs, sdxl_inputs, tiny_flux, tiny_sd3, tiny_sdxl, tiny_unet, unet_inputs
from tiny_families import BUILDERS as NEW

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
FLOW = {"flux": (tiny_flux, flux_inputs), "sd3": (tiny_sd3, sd3_inputs),
        **{k: NEW[k] for k in ("flux2", "qwen-image", "z-image", "chroma", "hunyuan-image")}}


def _latents(pipe, inputs, steps: int, **extra) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    kw = inputs(steps=steps)
    kw.update(output_type="latent", **extra)
    return pipe(**kw).images.float()


def _mse(a, b) -> float:
    return float((a - b).pow(2).mean())


@pytest.mark.parametrize("family", sorted(FLOW))
def test_flow_solvers_match_the_pipelines_own_scheduler_error(family):
    build, inputs = FLOW[family]
    pipe = build()
    truth = _latents(pipe, inputs, 200)
    own = _mse(_latents(pipe, inputs, 10), truth)
    for name in ("dpm++", "unipc"):
        accel.apply(pipe, solver=name)
        assert pipe.scheduler.config.prediction_type == "flow_prediction"
        err = _mse(_latents(pipe, inputs, 10), truth)
        accel.remove(pipe)
        assert err < 2 * own, (name, err, own)
        # before the noise-schedule adapter, an epsilon solver on this schedule was ~10,000x further off
        assert err < 0.01 * float(truth.pow(2).mean())


def test_flux_solver_follows_the_dynamic_shift_the_pipeline_passes():
    pipe = tiny_flux()
    accel.apply(pipe, solver="dpm++")
    _latents(pipe, flux_inputs, 6)
    ours = pipe.scheduler.sigmas[:-1].clone()
    src = pipe.scheduler.timestep_source
    assert src.config.use_dynamic_shifting  # FLUX's own scheduler shifts by the image size (mu)
    accel.remove(pipe)
    plain = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    plain.set_timesteps(6, mu=0.5)
    assert not torch.allclose(ours, plain.sigmas[:-1])  # mu of this call, not a fixed one
    assert torch.all(ours[1:] < ours[:-1]) and 0 < float(ours[-1]) < 1


def test_sd3_custom_sigmas_reach_the_solver():
    pipe = tiny_sd3()
    accel.apply(pipe, solver="unipc")
    sigmas = [1.0, 0.8, 0.5, 0.3, 0.1]
    _latents(pipe, sd3_inputs, None, sigmas=sigmas)
    want = pipe.scheduler.timestep_source.sigmas[:-1]  # the source shifted them as SD3's Euler would
    assert len(pipe.scheduler.timesteps) == 5
    # sigma 1 (alpha 0) steps in to 1 - 1/1000, as diffusers' own flow solvers start
    assert torch.allclose(pipe.scheduler.sigmas[:-1], want.float().clamp(max=0.999))
    assert float(want[0]) == 1.0 and torch.allclose(pipe.scheduler.sigmas[1:-1], want[1:].float())
    accel.remove(pipe)


@pytest.mark.parametrize("sched", [
    DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **SD_BETAS),
    PNDMScheduler(skip_prk_steps=True, **SD_BETAS),
    EulerDiscreteScheduler(timestep_spacing="leading", **SD_BETAS),
    DPMSolverMultistepScheduler(**SD_BETAS),
    DDIMScheduler(clip_sample=False, prediction_type="v_prediction", **SD_BETAS),
], ids=["ddim", "pndm", "euler", "dpm", "ddim-v"])
def test_vp_solvers_on_stable_diffusion_schedulers(sched):
    pipe = tiny_unet()
    pipe.scheduler = sched
    truth = _latents(pipe, unet_inputs, 200)
    own = _mse(_latents(pipe, unet_inputs, 10), truth)
    for name in ("dpm++", "unipc"):
        accel.apply(pipe, solver=name)
        assert pipe.scheduler.config.prediction_type == sched.config.prediction_type
        assert torch.equal(pipe.scheduler.alphas_cumprod, sched.alphas_cumprod)
        err = _mse(_latents(pipe, unet_inputs, 10), truth)
        accel.remove(pipe)
        assert err < 2 * own, (name, err, own)


def test_sdxl_euler_and_noise_schedule_reading():
    pipe = tiny_sdxl()
    ns = NoiseSchedule.of(pipe.scheduler)
    assert (ns.kind, ns.prediction_type) == ("vp", "epsilon")
    a, s = ns.alpha_sigma(torch.tensor([0.0, 999.0]))
    assert torch.allclose(a**2 + s**2, torch.ones(2))
    inputs = lambda steps: sdxl_inputs(steps=steps, guidance=4.0)  # noqa: E731
    truth = _latents(pipe, inputs, 200)
    own = _mse(_latents(pipe, inputs, 10), truth)
    accel.apply(pipe, solver="dpm++")
    assert _mse(_latents(pipe, inputs, 10), truth) < own
    accel.remove(pipe)


def test_unsupported_schedules_are_refused_with_a_reason():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = tiny_unet()
    pipe.scheduler = DDIMScheduler(prediction_type="sample")
    with pytest.raises(NotImplementedError, match="epsilon and v_prediction"):
        accel.apply(pipe, solver="dpm++")
    assert not accel.is_applied(pipe)
    with pytest.raises(NotImplementedError, match="invert_sigmas"):
        NoiseSchedule.of(FlowMatchEulerDiscreteScheduler(invert_sigmas=True))
    with pytest.raises(ValueError, match="takes no argument"):
        accel.apply(tiny_unet(), solver="dpm++:3")


def test_a_scheduler_class_is_configured_for_the_schedule_too():
    pipe = tiny_sd3()
    accel.apply(pipe, solver=DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    _latents(pipe, sd3_inputs, 4)
    accel.remove(pipe)


def test_v3_and_dc_through_a_flowmatch_schedule_beat_unipc_on_a_trained_flow_model():
    """FLUX / SD3 ship FlowMatchEuler; the trained pixart-flow model solved through that schedule (shift 3, as SD3)
    with its shipped statistics: v3 ends closer to the 200-step Euler solve than UniPC, and so does DC with ratios
    searched for this schedule. (On random-weight FLUX / SD3 the statistics carry no structure to exploit.)"""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from accel.calibrate.dc import sample, search_ratios
    from accel.calibrate.model_fn import GuidedDenoiser
    from accel.pipelines.reference import load_reference
    from accel.pipelines.calls import condition
    from accel.solvers import DPMSolverV3Scheduler
    from accel.solvers.baselines import UniPC
    from accel.solvers.named import build_solver_for, shipped_file

    pipe = load_reference("pixart-flow")
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a photo of a sneaker", "a dress", "a bag", "an ankle boot"]
    fn = GuidedDenoiser(pipe, condition(pipe, prompts, 4.5), 4.5, dict(pipe.accel_defaults))
    noise = torch.randn(len(prompts), *fn.latent_shape, generator=torch.Generator().manual_seed(0))
    src = FlowMatchEulerDiscreteScheduler(shift=3.0)
    truth, traj = sample(fn, FlowMatchEulerDiscreteScheduler(shift=3.0), noise, 200, record=True)

    def err(sched, n=6):
        return _mse(sample(fn, sched, noise, n)[0], truth)

    unipc = err(build_solver_for(UniPC, src, solver_type="bh2"))
    v3 = err(build_solver_for(DPMSolverV3Scheduler, src, ems_path=shipped_file(pipe, "ems")))
    assert v3 < unipc, (v3, unipc)
    ratios, dc = search_ratios(fn, src, noise, 6, traj)
    assert dc <= unipc * (1 + 1e-6) and ratios[:2] == [1.0, 1.0], (dc, unipc)


@pytest.mark.parametrize("sched", [DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **SD_BETAS),
                                   PNDMScheduler(skip_prk_steps=True, **SD_BETAS)], ids=["ddim", "pndm"])
def test_ems_and_dc_calibrate_on_schedulers_without_sigmas(sched):
    """SD with DDIM or PNDM: neither has sigmas nor a DPM-Solver's alpha / sigma; calibration reads the schedule
    through NoiseSchedule: finite statistics, a ground truth with noise levels, and DC no worse than UniPC."""
    from accel.calibrate.dc import dc_solver, sample, search_ratios
    from accel.calibrate.ems import compute_ems_chunked
    from accel.calibrate.model_fn import GuidedDenoiser

    pipe = tiny_unet()
    pipe.scheduler = sched
    pipe.set_progress_bar_config(disable=True)
    kw = unet_inputs(batch=4, steps=2)
    call = {k: kw[k] for k in ("prompt_embeds", "negative_prompt_embeds")}
    fn = GuidedDenoiser(pipe, call, 4.0, dict(height=16, width=16))
    assert fn.cfg and fn.latent_shape == (4, 8, 8)
    _, l, s, b = compute_ems_chunked([(fn, torch.zeros(4, *fn.latent_shape))], pipe.scheduler, 8, progress=False,
                                     path="ode")
    assert all(torch.isfinite(v).all() for v in (l, s, b)) and l.shape == (9, 4, 8, 8)
    noise = torch.randn(4, *fn.latent_shape, generator=torch.Generator().manual_seed(0))
    truth, traj = sample(fn, type(sched).from_config(sched.config), noise, 40, record=True)
    lv = traj.sigmas  # PNDM's PLMS steps evaluate its first timestep twice: 41 or 42 levels
    assert len(lv) >= 41 and all(a >= b for a, b in zip(lv, lv[1:])) and lv[0] > lv[-2] > lv[-1] == 0
    unipc = _mse(sample(fn, dc_solver(pipe.scheduler), noise, 5)[0], truth)
    _, dc = search_ratios(fn, pipe.scheduler, noise, 5, traj)
    assert dc <= unipc * (1 + 1e-6)


@pytest.mark.parametrize("family", ["wan", "wan22", "hunyuan-video", "hunyuan-video-15", "ltx", "cogvideox"])
def test_video_solvers_match_the_pipelines_own_scheduler_error(family):
    """The video families at 10 steps: dpm++ and unipc end within 2x of the pipeline's own scheduler's latent MSE
    to a 200-step solve of that scheduler (Wan 2.2: across its switch of experts)."""
    build, inputs = NEW[family]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)

    def latents(steps):
        out = pipe(**{**inputs(steps=steps), "output_type": "latent"})
        return torch.as_tensor(out.frames if hasattr(out, "frames") else out.images).float()

    truth = latents(200)
    own = _mse(latents(10), truth)
    for name in ("dpm++", "unipc"):
        accel.apply(pipe, solver=name)
        err = _mse(latents(10), truth)
        accel.remove(pipe)
        assert err < 2 * own, (name, err, own)
