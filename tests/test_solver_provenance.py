"""Solver files belong to one model's weights: another checkpoint of the same architecture is a clear error,
a dtype cast of the same model is not."""
import json

import pytest
import torch

import accel
from accel.calibrate.dc import save_dc
from accel.solvers import DCSolverScheduler, DPMSolverV3Scheduler, save_ems
from accel.solvers.provenance import made_for, same_weights, weights_signature
from tiny import tiny_pixart


def _files(tmp_path, stamp: dict) -> tuple[str, str]:
    lam = torch.linspace(-8, 8, 11)
    shape = (11, 4, 8, 8)
    ems = str(tmp_path / "ems.safetensors")
    save_ems(ems, lam, torch.ones(shape), torch.zeros(shape), torch.zeros(shape),
             {"fingerprint": stamp["fingerprint"], "weights": json.dumps(stamp["weights"])})
    dc = str(tmp_path / "dc.json")
    save_dc(dc, {**stamp, "searched": [], "cpr_coefficients": [1.0] + [0.0] * 35})
    return ems, dc


def test_files_made_for_one_checkpoint_refuse_another_of_the_same_architecture(tmp_path):
    a, b = tiny_pixart(seed=0), tiny_pixart(seed=1)
    stamp = made_for(a.transformer)
    assert stamp["fingerprint"] == made_for(b.transformer)["fingerprint"]  # the architecture alone cannot tell them
    assert not same_weights(stamp["weights"], weights_signature(b.transformer))
    ems, dc = _files(tmp_path, stamp)
    solvers = {"ems": lambda p: DPMSolverV3Scheduler.from_config(p.scheduler.config, ems_path=ems),
               "dc": lambda p: DCSolverScheduler.from_config(p.scheduler.config, dc_path=dc, cpr_guidance_scale=4.5)}
    for method, make in solvers.items():
        with pytest.raises(ValueError, match=f"other weights.*--method {method}"):
            accel.apply(b, solver=make(b))
        assert b.scheduler.__class__.__name__ == "DPMSolverMultistepScheduler"  # nothing changed on refusal
        accel.apply(a, solver=make(a))
        accel.remove(a)
    a.transformer.to(torch.bfloat16)  # the same weights in another dtype still match
    assert same_weights(stamp["weights"], weights_signature(a.transformer))
    accel.apply(a, solver=solvers["ems"](a))
    accel.remove(a)


def test_files_without_a_weights_signature_are_checked_on_the_architecture(tmp_path):
    pipe = tiny_pixart()
    ems, dc = _files(tmp_path, {"fingerprint": made_for(pipe.transformer)["fingerprint"], "weights": []})
    accel.apply(pipe, solver=DPMSolverV3Scheduler.from_config(pipe.scheduler.config, ems_path=ems))
    accel.remove(pipe)
    ems, _ = _files(tmp_path, {"fingerprint": "another-architecture", "weights": []})
    with pytest.raises(ValueError, match="made for model 'another-architecture'"):
        accel.apply(pipe, solver=DPMSolverV3Scheduler.from_config(pipe.scheduler.config, ems_path=ems))

