"""ECAD: resumes after kill -9 without losing evaluated candidates; 2 processes give the front of 1."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from launch import launch_two, run_checked

RUN = Path(__file__).parent / "ecad_tiny_run.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _front(d: Path):
    return [(f["quality_loss"], f["macs_fraction"]) for f in json.loads((d / "index.json").read_text())["front"]]


def _run(out: Path):
    run_checked([sys.executable, str(RUN), str(out)], env=ENV, cwd=RUN.parent.parent)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_and_resume_gives_the_uninterrupted_front(tmp_path):
    """The run kills itself with SIGKILL in its second generation (after 12 of its 24 evaluations: the first
    generation's 8 and 4 more), then the same command resumes it."""
    _run(tmp_path / "straight")
    out = tmp_path / "killed"
    p = subprocess.run([sys.executable, str(RUN), str(out)], env=dict(ENV, ECAD_KILL_AFTER="12"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=RUN.parent.parent, timeout=600)
    assert p.returncode == -signal.SIGKILL  # killed, not finished
    n_before = len((out / "candidates.jsonl").read_text().splitlines())
    assert n_before == 12 and (out / "algorithm.pkl").exists() and not (out / "index.json").exists()  # mid-search
    _run(out)
    lines = (out / "candidates.jsonl").read_text().splitlines()
    keys = [json.loads(l)["key"] for l in lines if l.strip().endswith("}")]
    assert len(keys) == len(set(keys))  # nothing evaluated twice
    assert len(keys) > n_before
    assert _front(out) == _front(tmp_path / "straight")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_give_the_same_front(tmp_path):
    pytest.importorskip("accelerate")
    _run(tmp_path / "one")
    launch_two([str(RUN), str(tmp_path / "two")], env=ENV, cwd=RUN.parent.parent)
    assert _front(tmp_path / "two") == _front(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "index.json").read_text())["processes"] == 2  # really two processes


def _tiny_pixart_call():
    """A tiny PixArt pipeline, one calibration call (batch 2) and the fixed call arguments."""
    sys.path.insert(0, str(RUN.parent))
    from tiny import pixart_inputs, tiny_pixart

    pipe = tiny_pixart()
    pipe.set_progress_bar_config(disable=True)
    kw = pixart_inputs(batch=2, steps=4)
    call = {k: kw[k] for k in ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                               "negative_prompt_attention_mask", "negative_prompt")}
    return pipe, call, dict(height=16, width=16, use_resolution_binning=False)


def test_search_runs_in_the_solver_and_guidance_it_is_for(tmp_path):
    """--solver / --guidance-method: the reference and every candidate run with them; the pipeline is restored."""
    import torch

    import accel
    from accel.calibrate.ecad import ECADConfig, ScheduleEvaluator, run_ecad

    pipe, call, ck = _tiny_pixart_call()
    cfg = ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity", seed_intervals=(2,), solver="unipc",
                     guidance_method="apg:6")
    scheduler = pipe.scheduler
    ev = ScheduleEvaluator(pipe, [call], cfg, ck)
    assert pipe.scheduler is scheduler and not accel.is_applied(pipe)  # restored after the reference
    accel.apply(pipe, solver="unipc", guidance=accel.APG(6.0))
    expect = pipe(**call, **ck, num_inference_steps=4, guidance_scale=6.0, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    accel.remove(pipe)
    plain = pipe(**call, **ck, num_inference_steps=4, guidance_scale=6.0, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(ev.ref, expect) and not torch.allclose(ev.ref, plain)
    res = run_ecad(pipe, [call], tmp_path, cfg, call_kwargs=ck, progress=False)
    s = accel.CacheSchedule.load(tmp_path / res.front[0]["file"])
    assert s.table.shape[0] == 4 and s.metadata["solver"] == "unipc" and s.metadata["guidance_method"] == "apg:6"
    assert pipe.scheduler is scheduler and not accel.is_applied(pipe)


def test_latency_cost_scores_with_one_model_per_run_and_keeps_it(tmp_path, monkeypatch):
    """cost="latency": the second objective is the time fraction predicted by one model kept in the run. The model is
    given (``run_ecad(latency_model=...)``), not timed, so every number asserted is the model's, not the machine's;
    a resumed run reads the kept model and times nothing either."""
    import accel
    from accel.calibrate import bac
    from accel.calibrate.ecad import ECADConfig, run_ecad

    pipe, call, ck = _tiny_pixart_call()
    with pytest.raises(ValueError, match="cost"):
        ECADConfig(cost="seconds")

    def not_timed(*args, **kwargs):
        raise AssertionError("the latency model was timed on the machine")

    monkeypatch.setattr(bac, "measure_latency_model", not_timed)
    full = 4 * sum(bac.record_statistics(pipe, [call], 4, 4.5, call_kwargs=ck)[1])  # component MACs of 4 steps
    n_blocks = len(pipe.transformer.transformer_blocks)
    # all-compute: 0.2 s fixed, 0.05 s per block run, 1 s of component MACs
    model = bac.LatencyModel(t_fixed=0.2, sec_per_mac=1.0 / full, t_full=0.2 + 0.05 * 4 * n_blocks + 1.0,
                             sec_per_block_step=0.05, fast_blocks=tuple(range(n_blocks)))
    cfg = ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity", seed_intervals=(2,), cost="latency")
    res = run_ecad(pipe, [call], tmp_path, cfg, call_kwargs=ck, progress=False, latency_model=model)
    kept = json.loads((tmp_path / "latency_model.json").read_text())
    assert kept == {**vars(model), "fast_blocks": list(model.fast_blocks)}
    for f in res.front:
        table = accel.CacheSchedule.load(tmp_path / f["file"]).table
        predicted = model.predict(f["macs_fraction"] * full, model.block_steps(table)) / model.t_full
        assert f["predicted_time_fraction"] == pytest.approx(predicted, abs=1e-5) and 0 < predicted < 1
    (tmp_path / "latency_model.json").write_text(json.dumps({**kept, "t_fixed": 0.0, "sec_per_block_step": 0.0}))
    (tmp_path / "algorithm.pkl").unlink()  # search again with the kept model: it is read, not given or timed anew
    again = run_ecad(pipe, [call], tmp_path, cfg, call_kwargs=ck, progress=False)
    # no fixed time and no block term: the prediction is proportional to the MACs
    for f in again.front:
        assert f["predicted_time_fraction"] == pytest.approx(f["macs_fraction"] / model.t_full, abs=1e-5)


def test_max_cost_keeps_the_front_below_it(tmp_path):
    """max_cost: schedules above the cost bound are infeasible, so every front point is at or below it; file seeds
    are listed (and plotted) beside the uniform ones."""
    import accel
    from accel.calibrate.ecad import ECADConfig, run_ecad

    with pytest.raises(ValueError, match="max_cost"):
        ECADConfig(max_cost=0.0)
    with pytest.raises(ValueError, match="seed schedule not found: nope.json"):
        ECADConfig(seed_schedules=("nope.json",))
    pipe, call, ck = _tiny_pixart_call()
    cfg = ECADConfig(steps=4, pop_size=6, generations=2, quality="fidelity", seed_intervals=(2,), max_cost=0.6)
    res = run_ecad(pipe, [call], tmp_path, cfg, call_kwargs=ck, progress=False)
    assert res.front and all(f["macs_fraction"] <= 0.6 for f in res.front)
    seed = accel.CacheSchedule.at_steps(pipe, 4, [0, 2, 3]).save(tmp_path / "my_seed.json")
    free = run_ecad(pipe, [call], tmp_path / "free", ECADConfig(steps=4, pop_size=6, generations=2, quality="fidelity",
                                                                seed_intervals=(2,), seed_schedules=(str(seed),)),
                    call_kwargs=ck, progress=False)
    assert any(f["macs_fraction"] > 0.6 for f in free.front)  # without the bound the front reaches above it
    seeds = json.loads((tmp_path / "free" / "index.json").read_text())["seeds"]
    assert [s["label"] for s in seeds] == ["uniform 2", "my_seed"]  # file seeds are plotted too, by file name


def test_macs_fraction_is_what_the_run_computes():
    """The search's MACs objective equals the component MACs accel.stats measures for the same schedule, also when
    the candidate reuses at step 0 (nothing is stored yet: it computes, and the objective counts it)."""
    import numpy as np
    import torch

    import accel
    from accel.calibrate.ecad import ECADConfig, ScheduleEvaluator

    pipe, call, ck = _tiny_pixart_call()
    ev = ScheduleEvaluator(pipe, [call], ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity"), ck)
    bits = np.random.default_rng(0).random(ev.n_var) < 0.5
    bits[: ev.n_var // 4] = False  # every component "reused" at step 0
    accel.apply(pipe, cache=ev.schedule(bits))
    pipe(**call, **ck, num_inference_steps=4, guidance_scale=4.5, output_type="pt",
         generator=torch.Generator().manual_seed(0))
    st = accel.stats(pipe)
    accel.remove(pipe)
    measured = sum(c.computed * c.macs for c in st.components) / sum((c.computed + c.reused) * c.macs
                                                                      for c in st.components)
    assert ev.macs_fraction(bits) == pytest.approx(measured, rel=1e-9) and ev.table(bits)[0].all()


def test_alignment_term_is_the_class_probability_lost():
    """quality "fidelity+alignment": the loss is 1 - SSIM plus the prompted class's classifier probability lost
    against the uncached images; prompts that name no reference class are refused."""
    import numpy as np

    from accel.calibrate.ecad import ECADConfig, ScheduleEvaluator
    from accel.metrics import class_probability

    sys.path.insert(0, str(RUN.parent))
    from tiny import tiny_text_pixart_flow

    with pytest.raises(ValueError, match="unknown quality objective"):
        ECADConfig(quality="fd_domain+beauty")
    pipe = tiny_text_pixart_flow()
    cfg = ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity+alignment")
    with pytest.raises(ValueError, match="each a reference caption"):
        ScheduleEvaluator(pipe, [{"prompt": ["a photo of a cat"]}], cfg)
    ev = ScheduleEvaluator(pipe, [{"prompt": ["a photo of a sneaker", "a photo of a dress"]}], cfg)
    assert ev.labels.tolist() == [7, 3] and ev.ref_prob == pytest.approx(class_probability(ev.ref, [7, 3]))
    bits = np.zeros(ev.n_var, bool)  # reuse everything after step 0
    m = ev.evaluate(bits)
    assert m["quality_loss"] == pytest.approx(1 - m["ssim"] + ev.ref_prob - m["class_probability"], abs=2e-6)

    assert m["ssim"] < 1 and "fd_domain" not in m
    # a weighted term: the same images, the lost probability counted five times
    for bad in ("fidelity+0*alignment", "fidelity+x*alignment", "fidelity+2*fidelity", "fidelity+inf*alignment"):
        with pytest.raises(ValueError, match="unknown quality objective"):
            ECADConfig(quality=bad)
    weighted = ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity+5*alignment")
    assert weighted.weights == {"fidelity": 1.0, "alignment": 5.0} and weighted.terms == ("fidelity", "alignment")
    mw = ScheduleEvaluator(pipe, [{"prompt": ["a photo of a sneaker", "a photo of a dress"]}], weighted).evaluate(bits)
    assert mw["class_probability"] == pytest.approx(m["class_probability"], abs=1e-6) and mw["ssim"] == pytest.approx(m["ssim"])
    assert mw["quality_loss"] == pytest.approx(1 - m["ssim"] + 5 * (ev.ref_prob - m["class_probability"]), abs=1e-5)


def test_fd_plain_term_is_the_distance_to_the_uncached_images_over_their_spread():
    """quality "fidelity+fd_plain" (the default on a user's model): 1 - SSIM plus the Frechet distance on
    EfficientNet features to the uncached images over their total feature variance; the uncached schedule scores 0."""
    import numpy as np

    import accel
    from accel.calibrate.ecad import ECADConfig, ScheduleEvaluator
    from accel.metrics import fd_plain

    pipe, call, ck = _tiny_pixart_call()
    calls = [call, call]  # four images (the second call is seeded 1)
    ev = ScheduleEvaluator(pipe, calls, ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity+2*fd_plain"), ck)
    full = ev.evaluate(np.ones(ev.n_var, bool))
    assert full["fd_plain"] == pytest.approx(0.0, abs=1e-6) and full["quality_loss"] == pytest.approx(0.0, abs=1e-5)
    m = ev.evaluate(np.zeros(ev.n_var, bool))  # reuse everything after step 0
    spread = np.trace(ev.plain_stats.sigma)
    accel.apply(pipe, cache=ev.schedule(np.zeros(ev.n_var, bool)))
    direct = fd_plain(ev._generate(), ev.ref)
    accel.remove(pipe)
    assert m["fd_plain"] == pytest.approx(direct, rel=1e-6)
    assert m["fd_plain"] > 0 and m["quality_loss"] == pytest.approx(1 - m["ssim"] + 2 * m["fd_plain"] / spread, abs=2e-6)


def test_block_granularity_decides_whole_blocks():
    """granularity="block": one gene per (step, block); every component of a block computes or reuses together, and
    a component-level table maps to genes that compute a block wherever any of its components computes."""
    import numpy as np

    from accel.calibrate.ecad import ECADConfig, ScheduleEvaluator

    with pytest.raises(ValueError, match="granularity"):
        ECADConfig(granularity="layer")
    pipe, call, ck = _tiny_pixart_call()
    comp = ScheduleEvaluator(pipe, [call], ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity"), ck)
    ev = ScheduleEvaluator(pipe, [call], ECADConfig(steps=4, pop_size=4, generations=1, quality="fidelity",
                                                    granularity="block"), ck)
    n_blocks = int(ev.present.any(axis=1).sum())
    assert ev.n_var == 4 * n_blocks and comp.n_var == 4 * int(ev.present.sum()) > ev.n_var
    bits = np.random.default_rng(0).random(ev.n_var) < 0.5
    t = ev.table(bits)
    assert (t[1:] == bits.reshape(4, n_blocks)[1:, :, None]).all()  # whole blocks, step 0 computing
    assert np.array_equal(ev.bits(t)[n_blocks:], bits[n_blocks:])
    part = np.ones_like(t)
    part[2, 0, 1:] = False  # block 0 computes only its first component at step 2
    part[3, 1, :] = False  # block 1 reuses everything at step 3
    genes = ev.bits(part).reshape(4, n_blocks)
    assert genes[2, 0] and not genes[3, 1] and genes.sum() == genes.size - 1
