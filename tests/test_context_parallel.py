"""accel under diffusers' Ulysses context parallelism, on 2 CPU processes (gloo) running a tiny FLUX pipeline and a
tiny Wan 2.1 pipeline (whose plan splits the tokens at its first block, inside accel's hook there): each capability
gives the single-process result within float tolerance, or is refused with a message."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from launch import free_port, run_checked

HERE = Path(__file__).parent


@pytest.fixture(scope="module", params=["flux", "wan", "wan22"])
def report(request, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cp") / "report.json"
    run_checked([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 str(free_port()), str(HERE / "cp_run.py"), str(out), request.param], cwd=HERE, timeout=600)
    return json.loads(out.read_text()) | {"family": request.param}


@pytest.mark.multiprocess
def test_every_capability_gives_the_single_process_result(report):
    cases = report["cases"]
    assert len(cases) == 8
    for name, c in cases.items():
        # gloo all-to-all reorders nothing; the only difference is the attention's summation order over shards
        assert c["max_abs_diff"] <= 1e-5 * max(1.0, c["scale"]), (name, c)
        if report["family"] != "flux":  # Wan: the same arithmetic in the same order on each shard, bit for bit
            assert c["max_abs_diff"] == 0, (name, c)


@pytest.mark.multiprocess
def test_stats_report_the_ranks_share(report):
    for name, c in report["cases"].items():
        if c["stats"] is None:
            continue
        st, st1 = c["stats"], c["stats_single"]
        assert st["context_parallel"] == {"layout": "ulysses:2", "rank": 0, "ranks": 2, "macs": "this rank's"}
        assert st1["context_parallel"] is None
        # the rank runs half of the tokens through the blocks; the embeddings every rank repeats keep it above half
        assert 0.5 * st1["macs_full"] <= st["macs_full"] < 0.75 * st1["macs_full"], name
        # what every rank repeats (embeddings, final layer) is never skipped: the rank's computed share is a bit higher
        assert st1["macs_fraction"] <= st["macs_fraction"] < st1["macs_fraction"] + 0.1, name
        assert st["reused"] == st1["reused"], name  # the same decisions on every rank as in one process


@pytest.mark.multiprocess
def test_what_does_not_compose_is_refused_with_the_reason(report):
    assert "after accel.apply" in report["applied_before"] and "again" in report["applied_before"]
    # FLUX: its own shard; Wan: its generic layout caches whole blocks, which token refresh cannot refresh
    assert ("own shard" if report["family"] == "flux" else "whole blocks") in report["refusals"]["token refresh"]
    assert "attention dispatch" in report["refusals"]["attention"]
    assert "log-sum-exp" in report["refusals"]["ring"]


def _torchrun(args: list[str], **kw):
    return run_checked([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), str(HERE / "cp_cli.py"), *args], cwd=HERE, timeout=900, **kw)


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory) -> Path:
    from user_models import save

    return save("flux", tmp_path_factory.mktemp("users"))


@pytest.mark.multiprocess
def test_generate_on_two_processes_writes_the_one_process_images(flux_folder, tmp_path):
    import numpy as np
    from PIL import Image

    from accel.cli import main

    args = ["generate", "--pipeline", str(flux_folder), "--steps", "4", "--height", "16", "--width", "16",
            "--cache", "uniform:2", "--prompt", "a photo of a cat"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    res = _torchrun(args + ["--out", str(tmp_path / "two"), "--context-parallel", "ulysses:2"])
    assert "context_parallel" in res.stdout and res.stdout.count("images ->") == 1  # rank 0 alone reports
    one, two = (np.asarray(Image.open(tmp_path / d / "000.png"), dtype=int) for d in ("one", "two"))
    assert np.abs(one - two).max() <= 1  # 8-bit rounding of images equal to float tolerance


@pytest.mark.multiprocess
def test_bench_on_two_processes_reports_ranks_and_the_parallel_speed_up(flux_folder, tmp_path):
    out = tmp_path / "bench"
    _torchrun(["bench", "--pipeline", str(flux_folder), "--context-parallel", "ulysses:2", "--steps", "4",
               "--height", "16", "--width", "16", "--num-images", "2", "--batch", "1", "--timing-rounds", "2",
               "--max-timing-rounds", "3", "--timing-spread", "0", "--methods", "plain,uniform:2,uniform:3:taylor", "--metrics", "psnr",
               "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    cp = res["config"]["context_parallel"]
    assert cp["layout"] == "ulysses:2" and cp["ranks"] == 2 and len(cp["plain_denoise_per_rank"]) == 2
    # timed in the launched processes on the machine's clock: that they were timed, not what the times are
    timings = [cp[k] for k in ("plain_denoise", "speedup_denoise", "speedup_e2e")] + cp["plain_denoise_per_rank"]
    assert all(math.isfinite(t) and t > 0 for t in timings)
    assert [len(r["latency_denoise_per_rank"]) for r in res["rows"]] == [2, 2, 2]
    assert res["rows"][1]["psnr"] > 10  # the cached rows are scored against the plain row of the same run
    assert "Context parallelism ulysses:2 over 2 processes" in (out / "results.md").read_text()
    # past the minimum rounds rank 0 decides for all whether to go on (with --timing-spread 0, on unless every
    # speed-up came out the same in both rounds), so every row has the same number of rounds, 2 or 3
    samples = {r["latency_samples"] for r in res["rows"]}
    assert len(samples) == 1 and samples <= {2, 3}
    assert res["config"]["command"].startswith("torchrun --nproc_per_node 2 tests/cp_cli.py bench")


@pytest.mark.multiprocess
def test_bench_refuses_rows_that_decide_per_rank(flux_folder, tmp_path):
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(HERE / "cp_cli.py"), "bench", "--pipeline", str(flux_folder),
                          "--context-parallel", "ulysses:2", "--methods", "plain,uniform:2,bac:2", "--out",
                          str(tmp_path / "b")], cwd=HERE, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and "'bac:2'" in res.stderr and "each rank sees its own shard" in res.stderr
    assert not (tmp_path / "b").exists()  # refused before anything loaded or ran


def test_a_bad_context_parallel_spec_is_refused_before_loading(capsys):
    from accel.cli import main

    assert main(["generate", "--context-parallel", "ulysses", "--pipeline", "nowhere"]) == 2
    assert "KIND:N" in capsys.readouterr().err
    assert main(["generate", "--context-parallel", "ulysses:2", "--pipeline", "nowhere"]) == 2  # one process
    assert "torchrun --nproc_per_node 2" in capsys.readouterr().err
