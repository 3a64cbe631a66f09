"""Every CLI command on saved FLUX, SD3, SDXL, DiT, FLUX.2, Qwen-Image, Z-Image and Chroma folders, as a user runs
them: generate, the six calibration methods, bench with accel rows (and, on the families of 2026, the peers); and
the bad-argument refusals."""
import json

import pytest

from accel.cli import main
from user_models import prompt_file, save

FAMILIES = ("flux", "sd3", "sdxl", "dit", "flux2", "qwen-image", "z-image", "chroma")
NEW = ("flux2", "qwen-image", "z-image", "chroma")  # their bench also runs the peers
PEERS = ("fbcache:0.2", "taylorseer:2", "magcache:0.1", "dbcache:0.2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-models")
    classes = prompt_file(root, ("bag", "sneaker", "dress", "coat"), "classes.txt")
    return {f: save(f, root) for f in FAMILIES}, prompt_file(root), classes


def _args(family: str, prompts, classes) -> list[str]:
    size = [] if family == "dit" else ["--height", "16", "--width", "16"]
    return size + ["--prompts", str(classes if family == "dit" else prompts)]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_command_runs_on_a_saved_folder(family, folders, tmp_path, capsys):
    paths, prompts, classes = folders
    pipe = str(paths[family])
    common = _args(family, prompts, classes)
    cal = ["calibrate", "--pipeline", pipe, "--steps", "4", "--batch", "2", *common]
    assert main([*cal, "--method", "uniform", "--interval", "2", "--out", str(tmp_path / "u.json")]) == 0
    budget = ["--macs-fraction", "0.7"] if family == "sdxl" else []  # the UNet's level 0 always computes
    assert main([*cal, "--method", "bac", *budget, "--out", str(tmp_path / "bac.json")]) == 0
    assert json.loads((tmp_path / "bac.json").read_text())["method"] == "bac"
    assert main([*cal, "--method", "ems", "--num-samples", "16", "--batch", "16", "--grid-points", "4",
                 "--out", str(tmp_path / "ems.safetensors")]) == 0
    assert "paths samples" in capsys.readouterr().out  # a user's model: its own guided ODE paths by default
    assert main([*cal, "--method", "dc", "--nfe", "3", "--guidances", "4.5", "--num-datapoints", "2",
                 "--gt-steps", "12", "--out", str(tmp_path / "dc.json")]) == 0
    assert main([*cal, "--method", "ecad", "--pop-size", "4", "--generations", "1",
                 "--out", str(tmp_path / "ecad")]) == 0
    assert main([*cal, "--method", "steps", "--nfe", "3", "--iters", "2", "--train-batch", "2", "--teacher-steps", "8",
                 "--out", str(tmp_path / "steps.json")]) == 0
    assert "learned" in capsys.readouterr().out
    gen = ["generate", "--pipeline", pipe, "--steps", "4", "--out", str(tmp_path / "g")]
    gen += ["--prompt", "bag"] if family == "dit" else ["--height", "16", "--width", "16"]
    assert main([*gen, "--cache", str(tmp_path / "bac.json")]) == 0
    assert "reused" in capsys.readouterr().out
    for solver in ("dpm++", f"dc:{tmp_path / 'dc.json'}", f"unipc:steps={tmp_path / 'steps.json'}"):
        assert main([*gen, "--solver", solver]) == 0, solver
    # statistics of a random-weight model from 16 samples may make v3 diverge: then it says so, never a silent NaN
    rc = main([*gen, "--solver", f"v3:{tmp_path / 'ems.safetensors'}"])
    assert rc == 0 or (rc == 2 and "non-finite latents" in capsys.readouterr().err)
    assert (tmp_path / "g" / "000.png").exists()
    out = tmp_path / "bench"
    methods = ["plain", "uniform:2", "solver:3:dpm++", *(PEERS if family in NEW else ())]
    assert main(["bench", "--pipeline", pipe, *common, "--steps", "4", "--num-images", "2", "--batch", "2",
                 "--methods", ",".join(methods), "--no-effnet", "--timing-rounds", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    rows, skipped = [r["method"] for r in res["rows"]], {s["method"]: s["reason"] for s in res["config"]["skipped"]}
    assert rows[:3] == methods[:3] and sorted(rows + list(skipped)) == sorted(methods)  # every row, or its reason
    assert all(reason for reason in skipped.values()) and not set(skipped) & {"plain", "uniform:2", "solver:3:dpm++"}


def test_bad_arguments_are_refused_up_front(folders, tmp_path, capsys):
    paths, prompts, classes = folders
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    cases = [
        (["generate", "--pipeline", str(paths["dit"]), "--prompt", "a dog"], "class-conditional"),
        (["generate", "--pipeline", str(paths["dit"]), "--prompt", "bag", "--height", "64"], "fixed image size"),
        (["generate", "--steps", "0"], "--steps must be at least 1"),
        (["generate", "--guidance", "-1"], "--guidance must not be negative"),
        (["bench", "--num-images", "0"], "--num-images must be at least 1"),
        (["bench", "--prompts", str(empty)], "has no prompts"),
        (["calibrate", "--method", "dc", "--pipeline", str(paths["sd3"]), "--prompts", str(tmp_path / "none.txt"),
          "--out", str(tmp_path / "x.json")], "not found"),
        (["calibrate", "--method", "bac", "--pipeline", str(paths["sd3"]), "--prompts", str(empty),
          "--out", str(tmp_path / "x.json")], "has no prompts"),
        (["calibrate", "--method", "uniform", "--steps", "0", "--out", str(tmp_path / "x.json")], "--steps"),
        (["calibrate", "--method", "ems", "--num-samples", "2", "--out", str(tmp_path / "x.json")], "fewer than 16"),
        (["calibrate", "--method", "steps", "--out", str(tmp_path / "x.json")], "steps of one NFE"),
        (["calibrate", "--method", "steps", "--nfe", "4,5", "--out", str(tmp_path / "x.json")], "steps of one NFE"),
        (["calibrate", "--method", "steps", "--nfe", "4", "--teacher-steps", "3", "--out", str(tmp_path / "x.json")],
         "--teacher-steps above --nfe"),
        (["calibrate", "--method", "steps", "--nfe", "4", "--solver", "unipc:steps=x.json",
          "--out", str(tmp_path / "x.json")], "without a step file"),
        (["generate", "--solver", f"unipc:steps={tmp_path / 'none.json'}"], "not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
