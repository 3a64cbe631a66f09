"""accel bench end to end on a reference-shaped pipeline folder (tiny random transformer, real text encoder)."""
import json

import pytest

from accel.cli import main
from accel.metrics.features import CLASSIFIER_PATH
from accel.metrics.quality import REF_STATS
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


@needs_metrics
def test_bench_writes_every_output_and_measures_every_row(folder, tmp_path, capsys):
    methods = "plain,uniform:2,bac:1.1,toca:2:0.5,fbcache:0.3,taylorseer:2,magcache:0.1,apg:6,facfg:3:6,dbcache:0.2"
    assert main(["bench", "--pipeline", str(folder), "--methods", methods, "--num-images", "4", "--batch", "2",
                 "--steps", "6", "--no-effnet", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == methods.split(",")
    assert rows["plain"]["speedup_e2e"] == pytest.approx(1.0) and rows["plain"]["psnr"] == float("inf")
    for r in res["rows"]:
        assert r["latency_e2e"] > 0 and r["latency_denoise"] > 0 and r["fd_domain"] >= 0 and 0 <= r["alignment"] <= 1
    assert rows["uniform:2"]["macs_per_image"] < rows["plain"]["macs_per_image"]
    assert rows["fbcache:0.3"]["peer"] and rows["dbcache:0.2"]["peer"] and not rows["uniform:2"]["peer"]
    assert rows["bac:1.1"]["config"]["updates_per_component"] >= 1
    for f in ("results.md", "pareto.png", "grid.png"):
        assert (tmp_path / f).stat().st_size > 0
