"""DC-Solver calibration: ratio search against a ground truth, CPR fit, ratio files with a fingerprint."""
import numpy as np
import pytest
import torch

import accel
from accel.calibrate.dc import calibrate_dc, fit_cpr, load_dc, refine_ratios, sample, save_dc, search_ratios
from accel.calibrate.model_fn import GuidedDenoiser
from accel.solvers import DCSolverScheduler, cpr_ratios
from tiny import BUILDERS

KEYS = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask",
        "negative_prompt")


def test_cpr_fit_recovers_the_ratios_it_was_made_from():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 0.3, 36)
    true[0] += 1.0
    recs = [{"nfe": n, "guidance": g, "ratios": cpr_ratios(true, n, g)} for n in (5, 6, 8, 10, 12, 15)
            for g in (1.5, 3.0, 4.5, 7.5, 10.0)]
    fit = fit_cpr(recs, ridge=1e-10)
    for n, g in ((7, 6.0), (9, 2.0)):  # unseen configurations
        assert cpr_ratios(fit, n, g) == pytest.approx(cpr_ratios(true, n, g), abs=1e-4)


def test_search_finds_ratios_no_worse_than_unipc_and_files_carry_the_fingerprint(tmp_path):
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    kw = inputs(batch=2)
    fn = GuidedDenoiser(pipe, {k: kw[k] for k in KEYS}, 4.0, call_kwargs=dict(height=16, width=16,
                                                                               use_resolution_binning=False))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    _, gt = sample(fn, type(pipe.scheduler).from_config(pipe.scheduler.config), noise, 60, record=True)
    x_unipc, _ = sample(fn, DCSolverScheduler.from_config(pipe.scheduler.config), noise, 5)
    ratios, mse = search_ratios(fn, pipe.scheduler.config, noise, 5, gt, max_evals=8)
    assert len(ratios) == 5 and ratios[:2] == [1.0, 1.0] and all(0.5 <= r <= 1.5 for r in ratios)
    assert ratios != [1.0] * 5  # a random model still has a compensation that helps somewhere
    x_dc, _ = sample(fn, DCSolverScheduler.from_config(pipe.scheduler.config, dc_ratios=ratios), noise, 5)
    assert mse == pytest.approx(float(((x_dc - gt.latents[-1]) ** 2).mean()), rel=1e-5)

    refined, mse_f = refine_ratios(fn, pipe.scheduler.config, noise, 5, gt.latents[-1], ratios, max_evals=30)
    assert refined[:2] == [1.0, 1.0] and all(0.5 <= r <= 1.5 for r in refined) and mse_f <= mse + 1e-9
    x_ref, _ = sample(fn, DCSolverScheduler.from_config(pipe.scheduler.config, dc_ratios=refined), noise, 5)
    assert mse_f == pytest.approx(float(((x_ref - gt.latents[-1]) ** 2).mean()), rel=1e-5)

    content = {"fingerprint": "another-model", "searched": [{"nfe": 5, "guidance": 4.0, "ratios": ratios}],
               "cpr_coefficients": [1.0] + [0.0] * 35}
    save_dc(tmp_path / "dc.json", content)
    sch = DCSolverScheduler.from_config(pipe.scheduler.config, dc_path=str(tmp_path / "dc.json"), cpr_guidance_scale=4.0)
    sch.set_timesteps(5)
    assert sch.dc_ratios == ratios  # the searched configuration
    sch.set_timesteps(7)
    assert sch.dc_ratios == [1.0] * 7  # CPR elsewhere
    with pytest.raises(ValueError, match="made for model 'another-model'"):
        accel.apply(pipe, solver=sch)
    with pytest.raises(ValueError, match="needs cpr_guidance_scale"):
        DCSolverScheduler.from_config(pipe.scheduler.config, dc_path=str(tmp_path / "dc.json"))
    with pytest.raises(FileNotFoundError, match="accel calibrate --method dc"):
        load_dc(tmp_path / "missing.json")


def test_solvers_by_name_attach_and_bad_names_are_clear():
    from diffusers import UniPCMultistepScheduler

    build, _ = BUILDERS["pixart"]
    pipe = build()
    old = pipe.scheduler
    accel.apply(pipe, solver="unipc")
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler) and pipe.scheduler.config.solver_type == "bh2"
    assert pipe.scheduler.config.num_train_timesteps == old.config.num_train_timesteps
    accel.remove(pipe)
    assert pipe.scheduler is old
    with pytest.raises(ValueError, match="unknown solver 'heun'; known: dc, dpm\\+\\+"):
        accel.apply(pipe, solver="heun")
    with pytest.raises(ValueError, match="v3:EMS_FILE"):
        accel.apply(pipe, solver="v3")
    with pytest.raises(ValueError, match="dc:RATIO_FILE:GUIDANCE"):
        accel.apply(pipe, solver="dc:x.json")
    assert pipe.scheduler is old
