"""BAC: the scheduler DP against brute force, bubbling union, similarity statistics, calibration on each family."""
import itertools

import numpy as np
import pytest
import torch

import accel
from accel.calibrate.bac import (LatencyModel, acs_all, acs_all_forecast, acs_update_steps, allocate_updates,
                                 bubbling_union, calibrate_bac, forecast_schedule_value, schedule_value, segment_costs)
from accel.calibrate.features import (FeatureRecorder, caching_error, forecast_similarity,
                                      forecast_similarity_reference, similarity)
from accel.pipelines.families import find_denoiser, layout_of
from tiny import BUILDERS, FAMILIES

CALL_KEYS = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask",
             "negative_prompt", "pooled_prompt_embeds", "negative_pooled_prompt_embeds", "class_labels")


def test_dp_finds_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 9))
        m = int(rng.integers(1, k + 1))
        sim = rng.normal(size=(k, k))
        got = acs_update_steps(sim, m)
        best = max(schedule_value(sim, [0, *c]) for c in itertools.combinations(range(1, k), m - 1))
        assert len(got) == m and got[0] == 0 and schedule_value(sim, got) == pytest.approx(best, abs=1e-12)


def test_forecast_dp_finds_the_brute_force_optimum_with_and_without_warmup():
    rng = np.random.default_rng(2)
    for _ in range(150):
        k = int(rng.integers(2, 8))
        w = int(rng.integers(0, k))
        sim, fsim = rng.normal(size=(k, k)), rng.normal(size=(k, k, k))
        values, steps = acs_all_forecast(sim, fsim, warmup=w)
        for m in range(1, k + 1):
            sets = [[0, *c] for c in itertools.combinations(range(1, k), m - 1) if set(range(w)) <= {0, *c}]
            if not sets:
                assert values[m - 1] == -np.inf and steps[m - 1] == []
                continue
            best = max(forecast_schedule_value(sim, fsim, s) for s in sets)
            assert len(steps[m - 1]) == m and set(range(w)) <= set(steps[m - 1])
            assert forecast_schedule_value(sim, fsim, steps[m - 1]) == pytest.approx(best, abs=1e-10)
            assert values[m - 1] == pytest.approx(best, abs=1e-10)


def _max_gap(steps: list[int], k: int) -> int:
    """The longest run of reused steps of an update set over k steps."""
    b = sorted(steps) + [k]
    return max(b[i + 1] - b[i] - 1 for i in range(len(b) - 1))


def test_dps_respect_max_gap_and_find_the_brute_force_optimum_within_it():
    rng = np.random.default_rng(3)
    for _ in range(150):
        k = int(rng.integers(2, 8))
        w, g = int(rng.integers(0, k)), int(rng.integers(0, k))
        sim, fsim = rng.normal(size=(k, k)), rng.normal(size=(k, k, k))
        held, held_steps = acs_all(sim, max_gap=g)
        fc, fc_steps = acs_all_forecast(sim, fsim, warmup=w, max_gap=g)
        for m in range(1, k + 1):
            sets = [[0, *c] for c in itertools.combinations(range(1, k), m - 1) if _max_gap([0, *c], k) <= g]
            if not sets:
                assert held[m - 1] == -np.inf and held_steps[m - 1] == [] and fc_steps[m - 1] == []
                continue
            assert _max_gap(held_steps[m - 1], k) <= g
            assert held[m - 1] == pytest.approx(max(schedule_value(sim, s) for s in sets), abs=1e-10)
            sets = [s for s in sets if set(range(w)) <= set(s)]
            if sets:
                assert _max_gap(fc_steps[m - 1], k) <= g and set(range(w)) <= set(fc_steps[m - 1])
                best = max(forecast_schedule_value(sim, fsim, s) for s in sets)
                assert fc[m - 1] == pytest.approx(best, abs=1e-10)
            else:
                assert fc[m - 1] == -np.inf


def test_forecast_similarity_is_exact_on_linear_features():
    t = torch.arange(6, dtype=torch.float64)[:, None, None]
    feats = 1.0 + t * torch.randn(1, 3, 8, dtype=torch.float64)  # A_t linear in t: every forecast is exact
    f = forecast_similarity(feats, "mse")
    assert torch.isinf(f[2, 1]).all() and torch.isinf(f[0, 3, :3]).all()  # j >= i, t < i: undefined
    assert torch.allclose(f[0, 3, 3:], torch.zeros(3, dtype=torch.float64), atol=1e-12)  # Gram form: rounding only
    assert torch.allclose(forecast_similarity(feats, "cosine")[1, 2, 2:], torch.ones(4, dtype=torch.float64))
    curved = feats + (t**2) * 0.1  # a curved path: the forecast now misses
    assert (forecast_similarity(curved, "mse")[0, 3, 4:] < -1e-6).all()


def test_forecast_similarity_gram_form_matches_the_reference():
    feats = torch.randn(7, 3, 40, dtype=torch.float64) + torch.linspace(0, 2, 7, dtype=torch.float64)[:, None, None]
    for metric in ("cosine", "mse", "l1"):
        fast, ref = forecast_similarity(feats, metric), forecast_similarity_reference(feats, metric)
        finite = torch.isfinite(ref)
        assert torch.equal(finite, torch.isfinite(fast)) and int(finite.sum()) == 56  # j < i <= t < 7
        assert torch.allclose(fast[finite], ref[finite], rtol=1e-9, atol=1e-9)


def test_one_dp_gives_every_update_count():
    sim = np.random.default_rng(1).normal(size=(7, 7))
    values, steps = acs_all(sim)
    for m in range(1, 8):
        assert steps[m - 1] == acs_update_steps(sim, m) and values[m - 1] == pytest.approx(schedule_value(sim, steps[m - 1]))


def test_greedy_allocation_matches_brute_force_on_concave_curves():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n, k = 3, 5
        gains = np.sort(rng.random((n, k - 1)), axis=1)[:, ::-1]  # diminishing returns
        values = np.concatenate([np.zeros((n, 1)), np.cumsum(gains, 1)], 1)
        macs = rng.integers(1, 4, n).astype(float)
        budget = float(rng.integers(int(macs.sum()), int(macs.sum() * k) + 1))
        got = allocate_updates(values, macs, budget)
        assert (got >= 1).all() and (got * macs).sum() <= budget
        best = max(sum(values[s, c - 1] for s, c in enumerate(cs)) for cs in itertools.product(range(1, k + 1), repeat=n)
                   if (np.array(cs) * macs).sum() <= budget)
        # greedy by gain per MAC is within one item's value of the optimum (a knapsack bound)
        assert sum(values[s, c - 1] for s, c in enumerate(got)) >= best - gains.max() - 1e-9


def test_segment_cost_includes_the_update_step_itself():
    sim = np.arange(16, dtype=float).reshape(4, 4)
    assert segment_costs(sim)[1, 3] == sim[1, 1] + sim[1, 2] + sim[1, 3]


def test_bubbling_union_refreshes_top_error_components_with_downstream_ffns():
    # slots: (block, component) with component 2 = ff
    slots = [(0, 0), (0, 2), (1, 0), (1, 2)]
    updates = [{0, 5}, {0, 3}, {0, 7}, {0, 4}]
    errors = np.array([0.9, 0.1, 0.2, 0.05])  # slot 0 has the largest caching error
    out = bubbling_union(updates, errors, slots, ffn_components={2}, top_k=1)
    assert out[0] == {0, 5, 3, 4}  # own steps + ff of block 0 and of block 1
    assert out[1:] == updates[1:]


def test_similarity_and_error_on_known_features():
    f = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[2.0, 0.0]]])  # 3 steps, batch 1
    s = similarity(f, "cosine")
    assert s[0, 0] == pytest.approx(1) and s[0, 1] == pytest.approx(0) and s[0, 2] == pytest.approx(1)
    assert similarity(f, "l1")[0, 2] == pytest.approx(-0.5)
    assert caching_error(f) == pytest.approx(np.mean([1.0, 0.5, 1.5]))


def test_recorder_memory_is_bounded_by_max_dim():
    rec = FeatureRecorder(num_slots=1, num_steps=3, max_dim=64)
    for t in range(3):
        rec.observe(t, 0, 0, torch.randn(2, 1000))
    assert all(x.shape == (2, 64) for x in rec._buf[(0, 0)].values())
    rec.end_call()
    assert rec._buf == {} and rec.result().similarity.shape == (1, 3, 3)


def _calibration_call(fam: str):
    """A tiny pipeline of the family, its varying call arguments and the fixed ones (8 steps, batch 2)."""
    build, inputs = BUILDERS[fam]
    pipe = build()
    pipe.set_progress_bar_config(disable=True)
    kw = inputs(batch=2, steps=8)
    call = {k: kw.pop(k) for k in list(kw) if k in CALL_KEYS}
    for k in ("num_inference_steps", "guidance_scale", "generator", "output_type"):
        kw.pop(k, None)
    return pipe, call, kw


@pytest.mark.parametrize("fam", FAMILIES)
def test_calibrate_bac_on_every_family(fam):
    pipe, call, kw = _calibration_call(fam)
    guidance = 1.0 if fam == "flux" else 4.0
    budget = 0.7 if fam == "unet" else 0.5  # the UNet's shallowest level (over half its MACs here) always computes
    sched = calibrate_bac(pipe, [call, call], steps=8, guidance=guidance, speedup=None, macs_fraction=budget,
                          call_kwargs=kw)
    assert sched.method == "bac" and sched.table.shape[0] == 8 and sched.table[0].all()
    assert sched.metadata["component_macs_fraction"] <= budget
    greedy = calibrate_bac(pipe, [call], steps=8, guidance=guidance, speedup=None, macs_fraction=budget, call_kwargs=kw,
                           allocation="greedy")
    assert greedy.table[0].all() and greedy.metadata["component_macs_fraction"] <= budget
    _, den = find_denoiser(pipe)
    for b in layout_of(den).always_compute_blocks:
        assert sched.table[:, b].all() and greedy.table[:, b].all()  # never reused by a calibrated schedule
    if fam == "unet":
        with pytest.raises(ValueError, match="shallowest level always computes"):
            calibrate_bac(pipe, [call], steps=8, guidance=guidance, macs_fraction=0.3, call_kwargs=kw)
    _, den = find_denoiser(pipe)
    n_slots = sum(len(b) for b in layout_of(den).blocks(den))
    assert len(greedy.metadata["updates_per_component"]) == n_slots  # one count per component
    accel.apply(pipe, cache=sched)
    pipe(**call, **kw, num_inference_steps=8, guidance_scale=guidance, output_type="pt")
    assert accel.stats(pipe).reused > 0


def test_warmup_steps_always_compute_and_the_budget_holds():
    pipe, call, kw = _calibration_call("pixart")
    for alloc, reuse in itertools.product(("uniform", "greedy"), ("hold", "taylor")):
        sched = calibrate_bac(pipe, [call], steps=8, guidance=4.0, speedup=None, macs_fraction=0.6, call_kwargs=kw,
                              allocation=alloc, warmup=3, reuse=reuse)
        assert sched.table[:3].all() and not sched.table[3:].all() and sched.reuse == reuse
        assert sched.metadata["warmup"] == 3 and sched.metadata["component_macs_fraction"] <= 0.6
    with pytest.raises(ValueError, match="warmup"):
        calibrate_bac(pipe, [call], steps=8, guidance=4.0, speedup=None, macs_fraction=0.6, call_kwargs=kw, warmup=8)


def test_latency_model_counts_the_block_runs_the_fast_path_leaves():
    table = np.zeros((4, 3, 2), dtype=bool)
    table[0] = True
    table[2, 0, 1] = True  # block 0 runs at step 2 for one component
    table[3, 2, 0] = True  # block 2 is not covered by the fast path: it runs at every step anyway
    model = LatencyModel(t_fixed=1.0, sec_per_mac=0.5, t_full=9.0, sec_per_block_step=0.25, fast_blocks=(0, 1))
    assert model.block_steps(table) == 2 + 1 + 4  # block 0: steps 0, 2; block 1: step 0; block 2: all 4
    assert model.predict(2.0, model.block_steps(table)) == 1.0 + 0.25 * 7 + 0.5 * 2.0
    assert LatencyModel(1.0, 0.5, 9.0).block_steps(table) == 12  # no fast path: every block at every step


def test_speedup_target_is_met_under_the_latency_model(monkeypatch):
    """A speed-up budget picks the largest update count whose predicted speed-up meets the target. The latency
    model is fixed here (its timing is the next test's business), so the choice cannot depend on the machine."""
    from accel.calibrate import bac

    pipe, call, kw = _calibration_call("pixart")
    macs = bac.record_statistics(pipe, [call], 8, 4.0, call_kwargs=kw)[1]
    full = 8 * sum(macs)
    n_blocks = len(pipe.transformer.transformer_blocks)
    model = bac.LatencyModel(t_fixed=0.2, sec_per_mac=1.0 / full, t_full=1.2 + 0.05 * 8 * n_blocks,
                             sec_per_block_step=0.05, fast_blocks=tuple(range(n_blocks)))
    monkeypatch.setattr(bac, "measure_latency_model", lambda *a, **k: model)
    sched = calibrate_bac(pipe, [call], steps=8, guidance=4.0, speedup=1.5, call_kwargs=kw, reuse="taylor")
    m = sched.metadata
    pred = model.t_full / model.predict(m["component_macs_fraction"] * full, model.block_steps(sched.table))
    assert m["predicted_speedup"] == pytest.approx(pred) and pred >= 1.5
    one_more = calibrate_bac(pipe, [call], steps=8, guidance=4.0, macs_fraction=None, speedup=pred + 1e-6,
                             call_kwargs=kw, reuse="taylor")
    assert one_more.metadata["updates_per_component"] < m["updates_per_component"]  # the largest M that fits
    with pytest.raises(ValueError, match="budget not reachable"):
        calibrate_bac(pipe, [call], steps=8, guidance=4.0, speedup=50.0, call_kwargs=kw)


@pytest.mark.slow
def test_latency_model_is_measured_with_the_block_fast_path():
    """The timed model's structure (three timed calls; the numbers depend on the machine and are not asserted)."""
    from accel.calibrate.bac import measure_latency_model, record_statistics

    pipe, call, kw = _calibration_call("pixart")
    macs = record_statistics(pipe, [call], 8, 4.0, call_kwargs=kw)[1]
    lm = measure_latency_model(pipe, call, 8, 4.0, macs, repeats=1, call_kwargs=kw)
    n_blocks = len(pipe.transformer.transformer_blocks)
    assert list(lm.fast_blocks) == list(range(n_blocks)) and lm.sec_per_block_step >= 0 and lm.t_full > 0


def test_check_records_the_schedules_fidelity_on_the_calibration_calls():
    """check=True: PSNR, SSIM and fd_plain of the schedule's images against the all-compute images, the same
    numbers a direct computation gives."""
    import torch

    from accel.metrics import psnr, ssim

    pipe, call, kw = _calibration_call("pixart")
    sched = calibrate_bac(pipe, [call, call], steps=8, guidance=4.0, macs_fraction=0.5, call_kwargs=kw, check=True)
    f = sched.metadata["calibration_fidelity"]
    out = []
    for cached in (False, True):
        accel.apply(pipe, cache=sched if cached else None)
        out.append(torch.cat([pipe(**call, **kw, num_inference_steps=8, guidance_scale=4.0, output_type="pt",
                                   generator=torch.Generator().manual_seed(i)).images.float() for i in range(2)]))
        accel.remove(pipe)
    assert f["psnr"] == pytest.approx(psnr(out[1], out[0]), rel=1e-6) and f["ssim"] == pytest.approx(ssim(out[1], out[0]))
    assert f["fd_plain"] >= 0 and f["psnr"] < float("inf")


def test_the_cli_defaults_are_the_best_measured_setting_and_the_paper_is_available(tmp_path, capsys):
    """No options: forecast reuse and a warm-up of a tenth of the steps; --paper: held outputs, no warm-up."""
    import json

    from accel.cli import main

    base = ["calibrate", "--method", "bac", "--pipeline", "pixart-eps", "--steps", "10", "--num-prompts", "2",
            "--batch", "2", "--macs-fraction", "0.6", "--no-check"]
    assert main(base + ["--out", str(tmp_path / "best.json")]) == 0
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["reuse"] == "taylor" and best["metadata"]["warmup"] == 1
    assert "forecast reuse, warm-up 1" in capsys.readouterr().out
    assert main(base + ["--paper", "--out", str(tmp_path / "paper.json")]) == 0
    paper = json.loads((tmp_path / "paper.json").read_text())
    assert paper["reuse"] == "hold" and paper["metadata"]["warmup"] == 0
    assert main(base + ["--paper", "--reuse", "taylor", "--out", str(tmp_path / "x.json")]) == 2
    assert "--paper is held reuse" in capsys.readouterr().err
