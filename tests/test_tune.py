"""accel tune: its pieces (Pareto set, prompt split, targets, bounds), a config folder that moves as one, the tune on a
saved SD3 folder resuming after kill -9, two processes, and bad arguments refused before anything loads. The tunes
run on a fixed clock (``tune_tiny_run.py``), so where their stages stop and what they choose do not depend on the
machine's speed."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import accel
from accel.cli import main
from accel.calibrate.tune import (TuneConfig, first_generation_seconds, grid, pareto, relative, split_prompts,
                                  teacher_seconds, validation_images, within, write_config)
from accel.stack import CacheSpec, SolverSpec, Stack
from launch import launch_two, run_checked
from user_models import prompt_file, save

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
RUN = Path(__file__).parent / "tune_tiny_run.py"


def test_pareto_keeps_what_nothing_beats_on_both():
    recs = [{"speedup": s, "quality_loss": q} for s, q in [(2, 0.1), (3, 0.1), (3, 0.3), (5, 0.2), (4, 0.25), (1, 0)]]
    assert [(r["speedup"], r["quality_loss"]) for r in pareto(recs)] == [(1, 0), (3, 0.1), (5, 0.2)]


def test_split_is_seeded_disjoint_and_keeps_repeats_together():
    prompts = [f"p{i % 10}" for i in range(40)]
    search, valid = split_prompts(prompts, seed=3)
    assert not set(search) & set(valid) and len(search) + len(valid) == 40
    assert split_prompts(prompts, seed=3) == (search, valid) and split_prompts(prompts, seed=4) != (search, valid)
    with pytest.raises(ValueError, match="2 distinct"):
        split_prompts(["same"] * 5)


def test_targets_and_bounds():
    assert TuneConfig().max_quality_loss == 0.1  # the default target
    with pytest.raises(ValueError, match="one target"):
        TuneConfig(max_quality_loss=0.1, target_speedup=6)
    with pytest.raises(ValueError):
        TuneConfig(budget_minutes=0)
    with pytest.raises(ValueError):
        TuneConfig(solvers=("euler",))
    cfg = TuneConfig(max_quality_loss=0.1, max_alignment_drop=2.0)
    m = relative(fd=76.3, align=0.84, plain_fd=70.0, plain_align=0.85)
    assert m["fd_rel"] == pytest.approx(0.09) and m["alignment_drop"] == pytest.approx(1.0)
    assert m["quality_loss"] == pytest.approx(0.09 + 1.0 / 20)
    assert within(m, cfg)
    assert not within(relative(78.0, 0.85, 70.0, 0.85), cfg)  # fd_domain 11% above
    assert not within(relative(70.0, 0.82, 70.0, 0.85), cfg)  # 3 alignment points lost
    assert within({"quality_loss": 0.05}, cfg) and not within({"quality_loss": 0.2}, cfg)  # 1 - SSIM elsewhere
    assert within(relative(200.0, 0.0, 70.0, 0.85), TuneConfig(target_speedup=6))  # target mode: no bound


def test_the_grid_configs_carry_the_guidance_they_were_measured_at():
    stacks = grid(TuneConfig(guidance=6.0, solvers=("unipc",), nfes=(3,), guidance_methods=("cfg", "apg:7.5")))
    assert [s.call_defaults()["guidance_scale"] for s in stacks] == [6.0, 7.5]
    assert Stack.from_dict(stacks[0].to_dict()) == stacks[0]


def test_a_resumed_older_run_reads_its_cfg_records_at_the_tune_scale(tmp_path):
    """Records written before configs carried CFG's scale are read with the tune's, so nothing is measured twice
    and a chosen CFG config carries its scale."""
    from types import SimpleNamespace

    from accel.calibrate.tune import _Search

    old = Stack(SolverSpec("unipc"), 3).to_dict()
    (tmp_path / "candidates.jsonl").write_text(json.dumps({"key": "solver:3:unipc", "stack": old, "speedup": 5.0}) + "\n")
    search = _Search(SimpleNamespace(cfg=TuneConfig(guidance=6.0)), None, 1.0, tmp_path, None, 0, 1)
    key = grid(TuneConfig(guidance=6.0, solvers=("unipc",), nfes=(3,), guidance_methods=("cfg",)))[0].shorthand()
    assert list(search.records) == [key] and Stack.from_dict(search.records[key]["stack"]).guidance_scale == 6.0


def test_what_a_deadline_cannot_cut_is_costed_before_it_starts():
    # LD3's teacher: 200 steps on at most 64 prompts, at the plain pipeline's seconds per image of 20 steps
    assert teacher_seconds(0.1, TuneConfig(steps=20), 100) == pytest.approx(0.1 * 10 * 64)
    assert teacher_seconds(0.1, TuneConfig(steps=20), 8) == pytest.approx(0.1 * 10 * 8)
    assert teacher_seconds(0.1, TuneConfig(steps=20), 1) == pytest.approx(0.1 * 10 * 2)  # one prompt, both halves
    # ECAD's latency model (9 calls of a batch), reference and first population (16, 8 per process) at the
    # searched config's speed
    assert first_generation_seconds(0.1, 4.0, TuneConfig(ecad_pop=16, batch=4), 10, world=2) == \
        pytest.approx((9 * 10 + 9 * 4) * 0.1 / 4)


def test_validation_images_follow_the_time_left():
    # 0.05 s per plain image, two candidates at 5x: 1.5 * 0.05 * 1.4 = 0.105 s per validation image
    assert validation_images(100, 0.05, [5.0, 5.0], seconds_left=42.1, repeats=8) == 200  # half of 42.1 s
    assert validation_images(100, 0.05, [5.0, 5.0], seconds_left=1e6, repeats=8) == 800  # at most 8 per prompt
    assert validation_images(100, 0.05, [5.0, 5.0], seconds_left=-30.0, repeats=8) == 100  # past the budget: once
    assert validation_images(100, 0.05, [5.0], seconds_left=1e6, repeats=1) == 100
    with pytest.raises(ValueError, match="validation_repeats"):
        TuneConfig(validation_repeats=0)


def test_a_config_folder_moves_as_one(tmp_path):
    """``write_config`` copies the stack's files beside it; loaded from anywhere, the paths point beside it."""
    from tiny import tiny_pixart

    pipe = tiny_pixart()
    sched = accel.CacheSchedule.uniform(pipe, 4, 2)
    sched.save(tmp_path / "elsewhere.json")
    stack = Stack(SolverSpec("dpm++"), 4, CacheSpec(file=str(tmp_path / "elsewhere.json")))
    write_config(stack, tmp_path / "a" / "tuned", note="x")
    os.rename(tmp_path / "a" / "tuned", tmp_path / "moved")
    (tmp_path / "elsewhere.json").unlink()
    loaded = Stack.load(tmp_path / "moved" / "config.json")
    assert loaded.cache.file == str(tmp_path / "moved" / "schedule.json") and loaded.metadata["note"] == "x"
    kw = loaded.apply_kwargs(pipe, 4)
    assert kw["solver"] == "dpm++" and kw["cache"] == str(tmp_path / "moved" / "schedule.json")
    assert Stack.from_shorthand("solver:4:unipc:steps=missing.json").beside(tmp_path).solver.steps == "missing.json"


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune-user")
    return save("sd3", root), prompt_file(root)


def _tune_args(folder, prompts, out) -> list[str]:
    return ["tune", "--pipeline", str(folder), "--prompts", str(prompts), "--height", "16", "--width", "16",
            "--steps", "6", "--solvers", "dpm++,unipc", "--nfe", "3,4", "--guidance-methods", "cfg,apg:4.5",
            "--learned-steps", "1", "--cache-searches", "1", "--budget-minutes", "0.5", "--batch", "4",
            "--validation-repeats", "2", "--out", str(out)]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_tune_on_a_saved_sd3_folder_resumes_after_kill_and_writes_a_loadable_config(sd3, tmp_path):
    """The first run kills itself with SIGKILL as it starts measuring its 4th candidate (in the grid), then the same
    command resumes it (both on a fixed clock: ``tune_tiny_run.py``)."""
    folder, prompts = sd3
    out = tmp_path / "tune"
    cmd = [sys.executable, str(RUN), *_tune_args(folder, prompts, out)]
    p = subprocess.run(cmd, env=dict(ENV, TUNE_KILL_AFTER="3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=600)
    assert p.returncode == -signal.SIGKILL  # killed mid-search, not finished
    cands = out / "candidates.jsonl"
    n_before = len(cands.read_text().splitlines())
    assert n_before == 3 and not (out / "index.json").exists()
    assert "chosen" in run_checked(cmd, env=ENV).stdout
    recs = [json.loads(line) for line in cands.read_text().splitlines() if line.strip().endswith("}")]
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)) and len(keys) > n_before  # nothing measured twice
    stages = {r["stage"] for r in recs}
    assert {"grid", "steps", "cache"} <= stages, stages  # learned steps and an ECAD schedule were searched
    index = json.loads((out / "index.json").read_text())
    assert index["pareto"] and (out / "pareto.png").exists()
    assert "fd_domain" not in json.dumps(index["validated"])  # a user's model: the generic measure only
    # the chosen config loads and runs from a folder of its own
    chosen = Stack.load(out / "chosen" / "config.json")
    assert chosen.metadata["validation"]["quality_loss"] <= 0.1
    from accel.pipelines.reference import load_pipeline

    pipe = load_pipeline(str(folder))
    pipe.set_progress_bar_config(disable=True)
    accel.apply(pipe, config=out / "chosen" / "config.json")
    img = pipe(["a red dress"], height=16, width=16, output_type="pt", **pipe.accel_defaults).images
    assert torch.isfinite(img).all()
    accel.remove(pipe)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_share_the_candidates(sd3, tmp_path):
    pytest.importorskip("accelerate")
    folder, prompts = sd3
    out = tmp_path / "two"
    args = _tune_args(folder, prompts, out)
    args[args.index("--learned-steps") + 1] = "2"  # one step file on each process
    launch_two([str(RUN), *args], env=ENV)
    recs = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys))
    assert sum(r["stage"] == "grid" for r in recs) == 8  # the whole grid, each candidate once
    assert len(list((out / "steps").glob("*.json"))) == 2
    index = json.loads((out / "index.json").read_text())
    assert index["chosen"] and Stack.load(out / "chosen" / "config.json").steps in (3, 4), index["message"]


@pytest.mark.parametrize("extra, message", [
    (["--max-quality-loss", "0.1", "--target-speedup", "6"], None),  # argparse: one target
    (["--nfe", "3,x"], "--nfe"),
    (["--solvers", "euler"], "solver 'euler'"),
    (["--budget-minutes", "0"], "budget_minutes"),
    (["--guidance-methods", "cfg,apg"], "guidance"),
])
def test_bad_arguments_are_refused_before_loading(extra, message, tmp_path, capsys):
    args = ["tune", "--pipeline", str(tmp_path / "not-there"), "--out", str(tmp_path / "t"), *extra]
    if message is None:
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        return
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_the_shipped_tuned_configs_load_and_lead_the_default_bench():
    from accel.bench_cli import GENERIC, default_methods
    from accel.pipelines.reference import tuned_config
    from accel.pipelines.families import fingerprint
    from accel.pipelines.reference import load_reference

    for name in ("pixart-eps", "pixart-flow"):
        path = tuned_config(name)
        assert path is not None and default_methods(name).startswith(f"plain,config:{path},")
        stack = Stack.load(path)
        assert stack.fingerprint == fingerprint(load_reference(name).transformer)  # made for that model
        # the validation's figures were measured when the config was made: recorded, not re-asserted
        assert math.isfinite(stack.metadata["validation"]["speedup"]) and stack.metadata["tune"]["budget_minutes"] <= 60
    assert tuned_config("./pixart-eps") is None and default_methods("./my-model") == GENERIC
