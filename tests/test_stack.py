"""The whole stack as one typed config: the bench shorthand and the JSON file round-trip to the same object,
bad files are refused with the reason, and applying a config equals applying its parts."""
import json

import pytest
import torch

import accel
from accel.bench.rows import make_row
from accel.cli import main
from accel.pipelines.families import find_denoiser, fingerprint
from accel.stack import CacheSpec, SolverSpec, Stack
from tiny import images, pixart_inputs, tiny_pixart

SHORTHANDS = [
    "solver:8:dpm+++uniform:2+apg:4.5:0.0:0.0:1.0",  # a '+' inside a solver name: not a part separator
    "solver:4:v3+uniform:3:taylor+apg:7.5:0.0:-0.5:0.0",
    "solver:6:dc:4.5+facfg:1.0:7.5:0.5",
    "solver:3:unipc+cfg:6.0",  # the pipeline's own CFG at the scale the config was made for
    "uniform:2",
    "solver:5:unipc",
    "solver:4:dc:x.json:4.5:steps=steps.json+uniform:2",  # learned steps ride on any solver
    "solver:5:unipc:steps=steps.json",
]


@pytest.mark.parametrize("text", SHORTHANDS)
def test_shorthand_and_file_round_trip(text, tmp_path):
    stack = Stack.from_shorthand(text)
    assert stack.shorthand() == text
    assert Stack.from_dict(json.loads(json.dumps(stack.to_dict()))) == stack
    assert Stack.load(stack.save(tmp_path / "s.json")) == stack


def test_the_parts_are_typed():
    s = Stack.from_shorthand("solver:6:dc:4.5+uniform:2:taylor+apg:7.5")
    assert s.solver == SolverSpec("dc", None, 4.5) and s.steps == 6
    assert s.cache == CacheSpec(interval=2, reuse="taylor") and s.guidance == accel.APG(7.5)
    assert Stack.from_shorthand("solver:4:v3:e.safetensors:steps=s.json").solver == SolverSpec("v3", "e.safetensors",
                                                                                                  steps="s.json")


@pytest.mark.parametrize("bad, reason", [
    ({"format": "accel.CacheSchedule/1"}, "not an accel stack config"),
    ({"format": "accel.Stack/1", "solvr": None, "steps": 4}, "unknown stack config keys: solvr"),
    ({"format": "accel.Stack/1", "solver": {"name": "euler"}, "steps": 4}, "solver 'euler'"),
    ({"format": "accel.Stack/1", "cache": {"interval": 2, "file": "x.json"}}, "exactly one"),
    ({"format": "accel.Stack/1", "cache": {"intervall": 2}}, "intervall"),
    ({"format": "accel.Stack/1", "guidance": {"method": "cfg", "scale": 2}}, "apg or facfg"),
    ({"format": "accel.Stack/1", "steps": 0}, "at least 1"),
    ({"format": "accel.Stack/1", "guidance": {"method": "apg", "scale": 6}, "guidance_scale": 6}, "its own scale"),
    ({"format": "accel.Stack/1", "guidance_scale": -1}, "number >= 0"),
    ({"format": "accel.Stack/1", "guidance_scale": True}, "number >= 0"),
    ({"format": "accel.Stack/1"}, "empty stack"),
])
def test_a_bad_file_is_refused_with_the_reason(bad, reason, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=reason):
        Stack.load(path)
    with pytest.raises(ValueError, match="not JSON"):
        (tmp_path / "broken.json").write_text("{")
        Stack.load(tmp_path / "broken.json")


def test_applying_a_config_equals_applying_its_parts(tmp_path):
    pipe = tiny_pixart()
    pipe.set_progress_bar_config(disable=True)
    stack = Stack.from_shorthand("solver:5:unipc+uniform:2:taylor+apg:4.5")
    accel.apply(pipe, solver="unipc", cache=accel.CacheSchedule.uniform(pipe, 5, 2, reuse="taylor"),
                guidance=accel.APG(4.5))
    parts = images(pipe, **pixart_inputs(steps=5, guidance=4.5))
    accel.remove(pipe)
    accel.apply(pipe, config=stack.save(tmp_path / "stack.json"))
    assert pipe.accel_defaults == {"num_inference_steps": 5, "guidance_scale": 4.5}
    kw = {**pixart_inputs(), **pipe.accel_defaults}
    assert torch.equal(images(pipe, **kw), parts)
    accel.remove(pipe)
    assert "accel_defaults" not in pipe.__dict__  # remove restores the pipeline's call defaults
    with pytest.raises(ValueError, match="not both"):
        accel.apply(pipe, config=stack, cache=accel.CacheSchedule.uniform(pipe, 5, 2))


def test_a_cfg_config_carries_its_scale(tmp_path):
    """A stack with the pipeline's own CFG sets the call's guidance scale as an APG stack does."""
    stack = Stack.from_shorthand("solver:3:unipc+cfg:6")
    assert stack.guidance is None and stack.call_defaults() == {"num_inference_steps": 3, "guidance_scale": 6.0}
    assert "guidance_scale" not in Stack.from_shorthand("solver:3:unipc").to_dict()  # files older accel reads
    pipe = tiny_pixart()
    accel.apply(pipe, config=stack.save(tmp_path / "stack.json"))
    assert pipe.accel_defaults == {"num_inference_steps": 3, "guidance_scale": 6.0}
    accel.remove(pipe)
    with pytest.raises(ValueError, match="cfg:W"):
        Stack.from_shorthand("solver:3:unipc+cfg:high")
    with pytest.raises(ValueError, match="one of each"):
        Stack.from_shorthand("solver:3:unipc+cfg:6+apg:6")


def test_a_config_for_another_model_is_refused():
    pipe = tiny_pixart()
    fp = fingerprint(find_denoiser(pipe)[1])
    accel.apply(pipe, config=Stack(steps=4, cache=CacheSpec(interval=2), fingerprint=fp))
    accel.remove(pipe)
    with pytest.raises(ValueError, match="made for another model"):
        accel.apply(pipe, config=Stack(steps=4, cache=CacheSpec(interval=2), fingerprint="0" * 16))


def test_bench_rows_and_generate_take_the_config(tmp_path, capsys):
    path = Stack.from_shorthand("solver:4:dpm+++uniform:2+apg:4.5").save(tmp_path / "stack.json")
    row = make_row(f"config:{path}")
    assert row.call_kwargs == {"num_inference_steps": 4, "guidance_scale": 4.5}
    assert row.config["stack"]["solver"]["name"] == "dpm++"
    assert make_row("stack:solver:4:dpm+++uniform:2+apg:4.5").call_kwargs == row.call_kwargs
    out = tmp_path / "gen"
    assert main(["generate", "--pipeline", "pixart-eps", "--config", str(path), "--out", str(out)]) == 0
    assert (out / "000.png").exists() and "4 steps" in capsys.readouterr().out
    assert main(["generate", "--config", str(path), "--cache", "uniform:2", "--out", str(out)]) == 2
    assert "leave out --cache" in capsys.readouterr().err
    assert main(["generate", "--config", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
