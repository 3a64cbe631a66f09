"""Learned step placements: step files used by name, exactly the arithmetic of the default steps where they hold
the default points, on VP and flow schedules (FLUX's dynamic shift too); the LD3 learner's gradient, result and
resumption."""
import json
import warnings

import numpy as np
import pytest
import torch

import accel
from accel.calibrate import steps as ld3
from accel.solvers.learned_steps import StepFile, default_points, schedule_kind, sigmas_at
from accel.solvers.named import solver_from_name
from accel.solvers.provenance import made_for
from tiny import flux_inputs, sd3_inputs, tiny_flux, tiny_sd3, tiny_text_pixart, tiny_text_pixart_flow

PIXART = dict(height=32, width=32, use_resolution_binning=False)


def _step_file(pipe, solver: str, points, path, guidance: float = 4.5):
    kind = schedule_kind(solver_from_name(pipe, solver))
    stamp = made_for(pipe.transformer)
    StepFile(kind, tuple(points), solver.split(":")[0], guidance, stamp["fingerprint"], tuple(stamp["weights"])).save(path)
    return path


def _latents(pipe, steps: int, **kw):
    return pipe(**kw, num_inference_steps=steps, output_type="latent").images.float()


def _pixart_call(pipe, guidance=4.5):
    return dict(prompt=["a shirt", "a bag"], guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
                **PIXART)


@pytest.mark.parametrize("solver", ["dpm++", "unipc"])
def test_default_points_give_the_default_steps_bit_for_bit_on_vp(solver, tmp_path):
    pipe = tiny_text_pixart()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, solver=solver)
    plain = _latents(pipe, 5, **_pixart_call(pipe))
    default = default_points(pipe.scheduler, 5)
    accel.remove(pipe)
    path = _step_file(pipe, solver, default, tmp_path / "s.json")
    accel.apply(pipe, solver=f"{solver}:steps={path}")
    same = _latents(pipe, 5, **_pixart_call(pipe))
    assert torch.equal(plain, same)
    accel.remove(pipe)
    moved = list(default)
    moved[2] -= 60.0
    accel.apply(pipe, solver=f"{solver}:steps={_step_file(pipe, solver, moved, tmp_path / 'm.json')}")
    assert not torch.allclose(plain, _latents(pipe, 5, **_pixart_call(pipe)))  # the points do reach the call
    accel.remove(pipe)


def test_flow_config_points_give_the_default_sigmas():
    pipe = tiny_text_pixart_flow()
    for solver in ("dpm++", "unipc"):
        sched = solver_from_name(pipe, solver)
        ref = solver_from_name(pipe, solver)
        ref.set_timesteps(5)
        sched.use_points(torch.tensor(default_points(sched, 5), dtype=torch.float64))
        assert torch.equal(sched.sigmas, ref.sigmas.float()), solver
        # the model time is sigma * 1000 unrounded (diffusers' flow configs truncate it)
        assert torch.allclose(sched.timesteps, ref.timesteps.float(), atol=1.0)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_flowmatch_points_follow_the_pipelines_own_shift(family, tmp_path):
    build, inputs = {"flux": (tiny_flux, flux_inputs), "sd3": (tiny_sd3, sd3_inputs)}[family]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, solver="unipc")
    kw = inputs(steps=4)
    kw["output_type"] = "latent"
    plain = pipe(**kw).images
    plain_sigmas = pipe.scheduler.sigmas.clone()
    # FLUX passes its own sigmas to the call; SD3 leaves them to the solver's default
    u = list(np.linspace(1.0, 1 / 4, 4)) if family == "flux" else default_points(pipe.scheduler, 4)
    accel.remove(pipe)
    g = 3.5 if family == "flux" else 4.0  # the calls' guidance_scale
    accel.apply(pipe, solver=f"unipc:steps={_step_file(pipe, 'unipc', u, tmp_path / 's.json', g)}")
    kw = inputs(steps=4)
    kw["output_type"] = "latent"
    kw.pop("sigmas", None)
    out = pipe(**kw).images
    assert torch.equal(pipe.scheduler.sigmas, plain_sigmas)  # the source's shift (FLUX: the call's mu) applied
    assert torch.equal(out, plain)
    src = pipe.scheduler.timestep_source
    if family == "flux":
        for mu in (0.5, 1.1):  # another resolution: the same unshifted points, FLUX's shift for its mu
            sig, _ = sigmas_at(pipe.scheduler, torch.tensor(u, dtype=torch.float64), mu)
            src.set_timesteps(sigmas=u, mu=mu)
            assert torch.allclose(sig.float(), src.sigmas[:4].float().clamp(max=0.999), atol=1e-6)
    accel.remove(pipe)


def test_step_file_checks(tmp_path):
    pipe = tiny_text_pixart()
    pipe.set_progress_bar_config(disable=True)
    path = _step_file(pipe, "unipc", [999.0, 700.0, 400.0, 150.0], tmp_path / "s.json")
    other = tiny_text_pixart(seed=1)
    with pytest.raises(ValueError, match="other weights"):
        accel.apply(other, solver=f"unipc:steps={path}")
    with pytest.raises(ValueError, match="flow"):
        accel.apply(tiny_text_pixart_flow(), solver=f"unipc:steps={path}")
    with pytest.warns(UserWarning, match="learned for solver 'unipc'"):
        accel.apply(pipe, solver=f"dpm++:steps={path}")
    with pytest.warns(UserWarning, match="interpolated"):
        _latents(pipe, 6, **_pixart_call(pipe))
    ts = pipe.scheduler.timesteps
    assert len(ts) == 6 and float(ts[0]) == 999.0 and bool(torch.all(ts[1:] < ts[:-1]))
    with pytest.warns(UserWarning, match="learned at guidance 4.5, this call uses 2"):
        _latents(pipe, 4, **_pixart_call(pipe, guidance=2.0))
    accel.remove(pipe)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "accel.Steps/1", "kind": "vp", "points": [5.0, 9.0], "solver": "unipc",
                               "guidance": 4.5}))
    with pytest.raises(ValueError, match="decreasing"):
        StepFile.load(bad)
    bad.write_text(json.dumps({"points": [1.0]}))
    with pytest.raises(ValueError, match="not a step file"):
        StepFile.load(bad)
    with pytest.raises(ValueError, match="one learned step file"):
        accel.apply(pipe, solver=f"unipc:steps={path}:steps={path}")


def test_logits_parametrisation_round_trips():
    pts = [999.0, 870.0, 500.0, 120.0]
    assert ld3.points_of(ld3.logits_for(pts), 999.0).tolist() == pytest.approx(pts, abs=1e-9)


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_gradient_through_the_solver_matches_central_differences(solver):
    from accel.calibrate.model_fn import GuidedDenoiser
    from accel.pipelines.calls import condition

    pipe = tiny_text_pixart()
    pipe.set_progress_bar_config(disable=True)
    for p in pipe.transformer.parameters():
        p.requires_grad_(False)
    fn = GuidedDenoiser(pipe, condition(pipe, ["a shirt", "a bag"], 4.5), 4.5, PIXART)
    noise = torch.randn(2, *fn.latent_shape, generator=torch.Generator().manual_seed(0))
    target = torch.randn_like(noise) * 0.5
    tmpl = solver_from_name(pipe, solver)
    first = default_points(tmpl, 4)[0]
    logits = ld3.logits_for([999.0, 800.0, 450.0, 200.0]).requires_grad_(True)

    def loss(lg):
        return ((ld3.solve(tmpl, fn, noise, ld3.points_of(lg, first), None) - target) ** 2).mean()

    loss(logits).backward()
    fd = ld3._fd_gradient(lambda v: float(loss(v)), logits.detach())
    assert torch.allclose(logits.grad, fd, rtol=0.05, atol=0.05 * float(fd.abs().max()))


def _learn(pipe, tmp_path=None, **cfg):
    config = ld3.LD3Config(**{**dict(iters=6, train_batch=2, eval_every=2, teacher_steps=30), **cfg})
    return ld3.learn_steps(pipe, "unipc", 3, ["a shirt", "a bag", "a coat", "a boot"], ["a dress", "a sneaker"], 4.5,
                           config, seed=0, batch=2, call_kwargs=PIXART, progress=False,
                           checkpoint=tmp_path / "ckpt" if tmp_path else None)


def test_learned_steps_lower_the_validation_error_and_a_call_reproduces_it():
    pipe = tiny_text_pixart()
    pipe.set_progress_bar_config(disable=True)
    steps = _learn(pipe, iters=10)
    m = steps.meta
    assert m["valid_mse_learned"] < m["valid_mse_default"]
    assert steps.points[0] == pytest.approx(m["default_points"][0]) and steps.points != tuple(m["default_points"])
    # the call path solves with the arithmetic the steps were learned with: the same validation error
    from accel.calibrate.dc import sample
    from accel.calibrate.model_fn import GuidedDenoiser
    from accel.pipelines.calls import condition

    fn = GuidedDenoiser(pipe, condition(pipe, ["a dress", "a sneaker"], 4.5), 4.5, PIXART)
    noise = torch.randn((2, *fn.latent_shape), generator=torch.Generator().manual_seed(2 * 10_007))
    target = sample(fn, type(pipe.scheduler).from_config(pipe.scheduler.config), noise, 30)[0]
    sched = solver_from_name(pipe, "unipc")
    sched.learned_steps = steps
    out = sample(fn, sched, noise, 3)[0]
    assert float(((out - target) ** 2).mean()) == pytest.approx(m["valid_mse_learned"], rel=1e-4)


def test_an_interrupted_learning_resumes_to_the_same_steps(tmp_path, monkeypatch):
    pipe = tiny_text_pixart()
    pipe.set_progress_bar_config(disable=True)
    whole = _learn(pipe)
    real, calls = ld3.solve, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 14:  # inside the 4th iteration, after the checkpoint of the 2nd
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ld3, "solve", dying)
    with pytest.raises(KeyboardInterrupt):
        _learn(pipe, tmp_path)
    assert (tmp_path / "ckpt").exists()
    monkeypatch.setattr(ld3, "solve", real)
    resumed = _learn(pipe, tmp_path)
    assert np.allclose(resumed.points, whole.points, rtol=1e-6) and not (tmp_path / "ckpt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert resumed.meta["valid_mse_learned"] == pytest.approx(whole.meta["valid_mse_learned"], rel=1e-5)


def test_a_cache_schedule_lays_over_learned_steps_in_a_stack(tmp_path):
    from accel.stack import Stack

    pipe = tiny_text_pixart()
    pipe.set_progress_bar_config(disable=True)
    path = _step_file(pipe, "unipc", [999.0, 800.0, 520.0, 230.0], tmp_path / "s.json")
    stack = Stack.from_shorthand(f"solver:4:unipc:steps={path}+uniform:2")
    accel.apply(pipe, config=stack)
    out = _latents(pipe, 4, **_pixart_call(pipe))
    st = accel.stats(pipe)
    assert pipe.scheduler.timesteps.tolist() == [999.0, 800.0, 520.0, 230.0]
    assert st.reused > 0 and torch.isfinite(out).all()
    accel.remove(pipe)


def test_the_shipped_step_files_belong_to_their_reference_pipeline():
    from accel.pipelines.reference import load_reference
    from accel.pipelines.components import WEIGHTS_DIR

    files = sorted((WEIGHTS_DIR / "solvers").glob("steps-*.json"))
    assert len(files) >= 4
    pipes = {name: load_reference(name) for name in ("pixart-eps", "pixart-flow")}
    for path in files:
        sf = StepFile.load(path)
        own = "pixart-flow" if path.name.startswith("steps-pixart-flow") else "pixart-eps"
        other = "pixart-eps" if own == "pixart-flow" else "pixart-flow"
        assert path.name == f"steps-{own}-{sf.solver}-{sf.nfe}.json" and sf.guidance == 4.5
        assert sf.meta["valid_mse_learned"] < sf.meta["valid_mse_default"]
        accel.apply(pipes[own], solver=f"{sf.solver}:steps={path}")
        accel.remove(pipes[own])
        with pytest.raises(ValueError):
            accel.apply(pipes[other], solver=f"{sf.solver}:steps={path}")
