"""DC-Solver: ratios of 1 are UniPC (bh2) exactly; compensation interpolates; CPR formula."""
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from accel.solvers import DCSolverScheduler, cpr_ratios, lagrange_interpolate
from tiny import BUILDERS, images


@pytest.mark.parametrize("fam,flow", [("pixart", False), ("pixart", True), ("unet", False)])
def test_ratios_of_one_reproduce_unipc_bh2(fam, flow):
    build, inputs = BUILDERS[fam]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    extra = dict(use_flow_sigmas=True, prediction_type="flow_prediction") if flow else {}
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, solver_type="bh2", **extra)
    ref = images(pipe, **inputs(steps=6))
    pipe.scheduler = DCSolverScheduler.from_config(pipe.scheduler.config, dc_ratios=[1.0] * 6)
    assert (images(pipe, **inputs(steps=6)) - ref).abs().max() <= 1e-5
    pipe.scheduler = DCSolverScheduler.from_config(pipe.scheduler.config, dc_ratios=[1, 1, 1.1, 0.8, 1.2, 1.0])
    assert (images(pipe, **inputs(steps=6)) - ref).abs().max() > 1e-4  # compensation really acts


def test_lagrange_is_exact_on_quadratics():
    ts = [900.0, 700.0, 500.0]
    f = lambda t: torch.tensor([3.0 + 0.01 * t - 2e-5 * t * t])  # noqa: E731
    assert torch.allclose(lagrange_interpolate(ts, [f(t) for t in ts], 612.5), f(612.5), atol=1e-5)
    assert torch.equal(lagrange_interpolate(ts, [f(t) for t in ts], 500.0), f(500.0).float())


def test_cpr_formula_and_config_errors():
    a = [0.0] * 36
    a[0] = 1.0  # c_0 = 1 everywhere: all ratios 1
    assert cpr_ratios(a, 5, 7.5) == [1.0] * 5
    b = [0.0] * 36
    b[9] = 1.0  # c_1 (x^1) = 1 -> rho(i) = i / NFE past the first two steps
    assert cpr_ratios(b, 5, 7.5) == pytest.approx([1, 1, 0.4, 0.6, 0.8])
    s = DCSolverScheduler(dc_ratios=[1.0] * 3)
    with pytest.raises(ValueError, match="dc_ratios has 3 values for 5 steps"):
        s.set_timesteps(5)
    with pytest.raises(ValueError, match="cpr_guidance_scale"):
        DCSolverScheduler(cpr_coefficients=a).set_timesteps(5)
