"""DPM-Solver-v3: degenerate statistics reproduce DPM-Solver++; statistics files carry the model fingerprint."""
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from accel.solvers import DPMSolverV3Scheduler, load_ems, save_ems
from tiny import BUILDERS, images


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("flow", [False, True])
def test_degenerate_statistics_reproduce_dpm_solver_pp(order, flow):
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    extra = dict(use_flow_sigmas=True, prediction_type="flow_prediction") if flow else {}
    # v3's second-order term is the exact integral of the linear interpolation: diffusers' "heun" variant
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, solver_type="heun", solver_order=order,
                                                             final_sigmas_type="sigma_min", **extra)
    ref = images(pipe, **inputs(steps=6))
    pipe.scheduler = DPMSolverV3Scheduler.from_config(pipe.scheduler.config, degenerated=True, use_corrector=False)
    assert (images(pipe, **inputs(steps=6)) - ref).abs().max() <= 1e-5


def test_statistics_run_with_corrector_and_third_order(tmp_path):
    build, inputs = BUILDERS["pixart"]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    lam = torch.linspace(-8, 8, 41)
    shape = (41, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    l = 1 + 0.05 * torch.randn(shape, generator=g)
    s = 0.05 * torch.randn(shape, generator=g)
    b = 0.01 * torch.randn(shape, generator=g)
    save_ems(tmp_path / "ems.safetensors", lam, l, s, b, {"fingerprint": "abc"})
    pipe.scheduler = DPMSolverV3Scheduler.from_config(pipe.scheduler.config, ems_path=str(tmp_path / "ems.safetensors"),
                                                      solver_order=3, use_corrector=True)
    out = images(pipe, **inputs(steps=6))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="made for model 'abc'"):
        load_ems(tmp_path / "ems.safetensors", fingerprint="other")
    import accel

    with pytest.raises(ValueError, match="was made for model 'abc'"):
        accel.apply(pipe, solver=pipe.scheduler)
    with pytest.raises(ValueError, match="needs empirical model statistics"):
        DPMSolverV3Scheduler()
    with pytest.raises(FileNotFoundError, match="accel calibrate --method ems"):
        DPMSolverV3Scheduler(ems_path=str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("chunk_elems", [1 << 21, 256 * 7, 1])
def test_chunked_integrals_match_the_whole_grid(chunk_elems):
    """The integrals walked in chunks (bounded memory) equal the one-shot reference, chunk borders included."""
    from accel.solvers.dpm_solver_v3 import EMSIntegrals, reference_integrals

    g = torch.Generator().manual_seed(0)
    shape = (41, 4, 8, 8)
    ems = {"lambdas": torch.linspace(-8, 8, 41, dtype=torch.float64), "l": 1 + 0.05 * torch.randn(shape, generator=g),
           "s": 0.1 * torch.randn(shape, generator=g), "b": 0.1 * torch.randn(shape, generator=g)}
    lams = torch.tensor([-6.0, -3.5, -1.0, 0.3, 4.6], dtype=torch.float64)
    ints = EMSIntegrals(lams, ems, shape[1:], sub=64, max_order=3, chunk_elems=chunk_elems)
    ref = reference_integrals(lams, ems, shape[1:], sub=64, max_order=3)
    for k in ("l", "L", "S", "I", "B", "C"):
        torch.testing.assert_close(getattr(ints, k), ref[k], rtol=1e-10, atol=1e-12)
    for (i, k), e in ints.E.items():
        torch.testing.assert_close(e, ref[("E", i, k)], rtol=1e-10, atol=1e-12)
    assert len(ints.E) == 2 * (len(lams) - 1)


def test_integrals_are_reused_by_calls_with_the_same_timesteps():
    sch = DPMSolverV3Scheduler(degenerated=True)
    sch.set_timesteps(6)
    first = sch._ints
    sch.set_timesteps(5)
    assert sch._ints is not first
    sch.set_timesteps(6)
    assert sch._ints is first
