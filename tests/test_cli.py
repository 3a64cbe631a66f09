"""The accel command: subcommands, help, clear errors with a non-zero exit."""
import json

import pytest

from accel.cli import main
from tiny import tiny_pixart


@pytest.mark.parametrize("cmd", ["info", "generate", "calibrate", "bench"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "usage: accel" in capsys.readouterr().out


def test_info_lists_families(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "PixArtTransformer2DModel" in out and "pixart-eps" in out


def test_calibrate_uniform_on_a_local_pipeline_folder(tmp_path, capsys):
    tiny_pixart().save_pretrained(tmp_path / "pipe")
    out = tmp_path / "s.json"
    assert main(["calibrate", "--method", "uniform", "--pipeline", str(tmp_path / "pipe"), "--steps", "8",
                 "--interval", "4", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["num_inference_steps"] == 8 and d["family"] == "pixart" and d["table"][4][0] == "111"
    steps = tmp_path / "steps.json"  # a step pattern (TaylorSeer's, warm-up 3, interval 3) with forecast reuse
    assert main(["calibrate", "--method", "uniform", "--pipeline", str(tmp_path / "pipe"), "--steps", "8",
                 "--compute-steps", "0,1,2,4,7", "--reuse", "taylor", "--out", str(steps)]) == 0
    d = json.loads(steps.read_text())
    assert d["reuse"] == "taylor" and [r[0] == "111" for r in d["table"]] == [1, 1, 1, 0, 1, 0, 0, 1]
    assert main(["calibrate", "--method", "uniform", "--pipeline", str(tmp_path / "pipe"), "--steps", "8",
                 "--compute-steps", "2,4", "--out", str(steps)]) == 2
    assert "must include step 0" in capsys.readouterr().err


def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys):
    assert main(["bench", "--methods", "plain,nonsense:3"]) == 2
    assert "unknown bench method 'nonsense:3'" in capsys.readouterr().err
    assert main(["bench", "--methods", "schedule:/no/such.json"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", "--method", "uniform", "--pipeline", str(tmp_path / "empty"), "--out", "x.json"]) == 2
    assert "neither a reference pipeline" in capsys.readouterr().err


def test_device_and_dtype_options(tmp_path, capsys):
    assert main(["generate", "--device", "nonsense", "--out", str(tmp_path / "g")]) == 2
    assert "--device nonsense" in capsys.readouterr().err
    assert main(["generate", "--pipeline", "pixart-eps", "--device", "cpu", "--dtype", "bfloat16", "--steps", "2",
                 "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "000.png").exists()
