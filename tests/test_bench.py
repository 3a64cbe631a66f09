"""accel bench end to end on a reference-shaped pipeline folder (tiny random transformer, real text encoder). The
bench times on a fixed clock here (``clocks``): latencies count denoiser calls, whatever the machine's load."""
import json

import pytest

import accel.bench
from accel.cli import main
from accel.metrics.features import CLASSIFIER_PATH
from accel.metrics.quality import REF_STATS
from clocks import JitterClock, TickClock, on_clock
from tiny import tiny_text_pixart

needs_metrics = pytest.mark.skipif(
    not (CLASSIFIER_PATH.exists() and REF_STATS["domain"].exists()),
    reason="domain classifier or reference statistics not built yet",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "tiny-text-pixart"
    tiny_text_pixart().save_pretrained(path)
    return path


def test_generate_from_a_local_folder(folder, tmp_path, capsys):
    assert main(["generate", "--pipeline", str(folder), "--prompt", "a sneaker", "--steps", "4", "--cache", "uniform:2",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "000.png").exists() and "reused" in capsys.readouterr().out


@pytest.mark.slow
@needs_metrics
def test_bench_writes_every_output_and_measures_every_row(folder, tmp_path, capsys, monkeypatch):
    on_clock(accel.bench, "run_bench", TickClock(), monkeypatch.setattr)
    methods = "plain,uniform:2,bac:m0.6,toca:2:0.5,fbcache:0.3,taylorseer:2,magcache:0.1,apg:6,facfg:3:6,dbcache:0.2"
    assert main(["bench", "--pipeline", str(folder), "--methods", methods, "--num-images", "4", "--batch", "2",
                 "--steps", "6", "--no-effnet", "--out", str(tmp_path), "--page", str(tmp_path / "docs" / "run.md")]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    page = (tmp_path / "docs" / "run.md").read_text()  # the results page: command, machine, date, table, plots
    assert "Command: `accel bench --pipeline" in page and "torch " in page and "\n| accel uniform every 2 |" in page
    assert (tmp_path / "docs" / "run-pareto.png").exists() and "![pareto](run-pareto.png)" in page
    assert list(rows) == methods.split(",")
    assert rows["plain"]["speedup_e2e"] == pytest.approx(1.0) and rows["plain"]["psnr"] == float("inf")
    for r in res["rows"]:  # a model folder, not a reference pipeline: the generic metrics, no Fashion-MNIST ones
        assert r["latency_e2e"] > 0 and r["latency_denoise"] > 0 and 0 <= r["ssim"] <= 1 and "fd_domain" not in r
    assert rows["uniform:2"]["macs_per_image"] < rows["plain"]["macs_per_image"]
    assert rows["fbcache:0.3"]["peer"] and rows["dbcache:0.2"]["peer"] and not rows["uniform:2"]["peer"]
    assert rows["bac:m0.6"]["config"]["updates_per_component"] >= 1
    for f in ("results.md", "pareto.png", "grid.png"):
        assert (tmp_path / f).stat().st_size > 0


@pytest.mark.slow
@needs_metrics
def test_stacked_row_and_full_size_section(folder, tmp_path, monkeypatch):
    import functools

    from accel.bench import shapes

    small = functools.partial(shapes.pixart_alpha_shaped, num_layers=2, num_attention_heads=2, attention_head_dim=8,
                              cross_attention_dim=16)
    monkeypatch.setattr(shapes, "pixart_alpha_shaped", small)  # the full-size model is minutes per call on a CPU
    on_clock(accel.bench, "run_bench", TickClock(), monkeypatch.setattr)
    methods = "plain,stack:solver:3:unipc+uniform:2+apg:4.5,magcache:0.2"
    assert main(["bench", "--pipeline", str(folder), "--methods", methods, "--num-images", "4", "--batch", "2",
                 "--steps", "6", "--no-effnet", "--full-size", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    plain, stack, _ = res["rows"]
    # 3 of 6 steps, and the cache skips components on top (embeddings and the final layer always run)
    assert stack["macs_per_image"] < 0.95 * plain["macs_per_image"] * 3 / 6
    assert [p["kind"] for p in stack["config"]["parts"]] == ["solver", "uniform", "apg"]
    # interleaved timing rounds: 3, as every round reads the same times (the clock counts denoiser calls), so the
    # speed-ups are steady; the stack's denoising loop makes 3 denoiser calls to the plain pipeline's 6
    assert [r["latency_samples"] for r in res["rows"]] == [3, 3, 3]
    assert plain["speedup_denoise_rounds"] == [1.0] * 3 and stack["speedup_denoise_rounds"] == [2.0] * 3
    assert stack["speedup_denoise"] == 2.0 and stack["speedup_spread"] == 0.0 and not stack["unsteady"]
    assert "in each timing round" in (tmp_path / "results.md").read_text()
    full = {r["method"]: r for r in res["full_size"]}
    assert full["plain"]["speedup_denoise"] == 1.0
    assert full["stack:solver:3:unipc+uniform:2+apg:4.5"]["speedup_denoise"] == 2.0
    assert full["magcache:0.2"]["latency_denoise"] > 0  # calibrated on the random-weight model's own inputs
    assert "Full-size latency" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("clock, rounds", [(TickClock, 2), (JitterClock, 4)])
def test_timing_rounds_go_on_while_a_speed_up_is_unsteady(folder, tmp_path, clock, rounds):
    """Past ``timing_rounds``, more interleaved rounds (up to ``max_timing_rounds``) while a row's per-round speed-ups
    spread over ``timing_spread``: none on a clock whose rounds all read alike, all of them on one whose every
    reading is another, and the row is then flagged unsteady."""
    from accel.bench import BenchConfig, run_bench

    res = run_bench(BenchConfig(pipeline=str(folder), methods=("plain", "uniform:2"), num_images=2, batch=2, steps=4,
                                fd_effnet=False, metrics=("psnr",), timing_rounds=2, max_timing_rounds=4,
                                out=str(tmp_path)), clock=clock())
    assert [r["latency_samples"] for r in res] == [rounds, rounds]
    assert res[0]["speedup_denoise_rounds"] == [1.0] * rounds
    per_round = res[1]["speedup_denoise_rounds"]
    assert len(per_round) == rounds and res[1]["unsteady"] == (rounds == 4)
    assert min(per_round) <= res[1]["speedup_denoise"] * 1.0001  # the ratio of the medians lies in the per-round range
    assert max(per_round) >= res[1]["speedup_denoise"] * 0.9999
    assert ("over 4 rounds" in (tmp_path / "results.md").read_text()) == (rounds == 4)


@needs_metrics
def test_a_row_that_cannot_be_made_is_skipped_and_the_others_kept(folder, tmp_path):
    methods = "plain,bac:m0.01,uniform:2"  # no BAC schedule computes only 1% of the MACs
    assert main(["bench", "--pipeline", str(folder), "--methods", methods, "--num-images", "2", "--batch", "2",
                 "--steps", "4", "--no-effnet", "--quality-only", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in res["rows"]] == ["plain", "uniform:2"]
    assert res["config"]["skipped"][0]["method"] == "bac:m0.01" and "not reachable" in res["config"]["skipped"][0]["reason"]
    assert "Skipped `bac:m0.01`" in (tmp_path / "results.md").read_text()


def test_bad_stack_is_a_clear_error(folder, capsys):
    assert main(["bench", "--pipeline", str(folder), "--methods", "plain,stack:uniform:2+uniform:3"]) == 2
    assert "one of each at most" in capsys.readouterr().err


@needs_metrics
@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_give_the_numbers_of_one(folder, tmp_path):
    from launch import launch_two

    pytest.importorskip("accelerate")
    args = ["bench", "--pipeline", str(folder), "--methods", "plain,uniform:2", "--num-images", "8", "--batch", "2",
            "--steps", "4", "--no-effnet", "--quality-only"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    launch_two(["-m", "accel.cli", *args, "--out", str(tmp_path / "two")])
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["config"]["processes"] == 2
    for a, b in zip(one["rows"], two["rows"]):
        for key in ("ssim", "psnr"):  # a model folder: the generic metrics
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)


def test_latency_stand_ins_are_valid_rows():
    """v3 / DC rows are timed as UniPC on the full-size model; the stand-in must parse inside a stack too."""
    from accel.bench.rows import make_row

    for spec in ("solver:4:v3", "solver:5:dc", "stack:solver:4:v3+uniform:2+apg:7.5", "stack:solver:6:dc:7.5+apg:4.5"):
        stand_in = make_row(spec).latency_stand_in
        assert stand_in is not None and ":unipc" in stand_in
        assert make_row(stand_in).name == stand_in


@needs_metrics
def test_a_peer_that_reorders_modules_leaves_the_weights_signature_as_it_was(tmp_path):
    """cache-dit re-registers the transformer's blocks at the end of its children, which reorders named_parameters
    and so the weights signature solver files are checked against; the bench puts the order back after each row,
    so a v3 row after a dbcache row still accepts the statistics made for these weights."""
    pytest.importorskip("cache_dit")
    from accel.bench import BenchConfig, run_bench
    from accel.pipelines.reference import is_available

    if not is_available("pixart-eps"):
        pytest.skip("reference weights not trained yet")
    res = run_bench(BenchConfig(pipeline="pixart-eps", methods=("plain", "dbcache:0.2", "solver:5:v3"), num_images=2,
                                batch=2, steps=6, timing_rounds=0, fd_effnet=False, out=str(tmp_path)))
    assert [r["method"] for r in res] == ["plain", "dbcache:0.2", "solver:5:v3"]


def test_a_row_at_its_own_scale_conditions_true_cfg_at_that_scale():
    """An undistilled FLUX guides through true_cfg_scale: a cfg:W row (or a config's scale) moves it, and a row at
    scale 1 leaves CFG off, rather than keeping the bench's --guidance."""
    from accel.bench.driver import BenchConfig, _call_args
    from accel.bench.rows import make_row
    from tiny import tiny_flux

    pipe, cfg = tiny_flux(), BenchConfig(pipeline="flux", guidance=4.5, steps=4)
    assert _call_args(pipe, make_row("plain"), cfg, ["a cat"])["true_cfg_scale"] == 4.5
    assert _call_args(pipe, make_row("cfg:7"), cfg, ["a cat"])["true_cfg_scale"] == 7.0
    off = _call_args(pipe, make_row("cfg:1"), cfg, ["a cat"])
    assert "true_cfg_scale" not in off and "negative_prompt" not in off and off["guidance_scale"] == 1.0
