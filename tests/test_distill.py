"""accel distill on a reference-shaped flow pipeline: pairs, resumable training, the student in the bench."""
import json

import pytest
import torch

import accel.bench
from accel.distill import DistillConfig, PairConfig, load_pairs, make_pairs, one_step_sigma, train_student
from clocks import TickClock, on_clock
from tiny import tiny_text_pixart, tiny_text_pixart_flow

PROMPTS = ["a photo of a sneaker", "a photo of a bag", "a pullover, studio shot", "an ankle boot"]


def _one_step_mse(model, pipe, z, x, idx, prompts) -> float:
    from accel.distill.train import _predict, prompt_table

    emb, mask = prompt_table(pipe, prompts)
    t1, s1 = one_step_sigma(pipe.scheduler)
    with torch.no_grad():
        v = _predict(model, z, torch.full((len(z),), t1), emb[idx], mask[idx])
    return float(((z - s1 * v - x) ** 2).mean())


def test_pairs_resume_and_student_training_lowers_the_one_step_error(tmp_path):
    pipe = tiny_text_pixart_flow()
    cfg = PairConfig(num_pairs=48, solver="unipc", steps=3, chunk=16, batch=16)
    make_pairs(pipe, PROMPTS, tmp_path / "pairs", cfg, progress=False)
    first = torch.load(tmp_path / "pairs" / "pairs-00001.pt")
    (tmp_path / "pairs" / "pairs-00001.pt").unlink()  # a run killed before this chunk was written
    make_pairs(pipe, PROMPTS, tmp_path / "pairs", cfg, progress=False)
    again = torch.load(tmp_path / "pairs" / "pairs-00001.pt")
    assert torch.equal(first["z"], again["z"]) and torch.allclose(first["x"], again["x"], atol=1e-6)
    z, x, idx, prompts = load_pairs(tmp_path / "pairs")
    assert z.shape == x.shape == (48, 4, 8, 8) and prompts == PROMPTS
    assert "_diffusers_hook" not in pipe.transformer.__dict__ and type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"

    before = _one_step_mse(pipe.transformer, pipe, z, x, idx, prompts)
    dcfg = DistillConfig(reflow_steps=10, distill_steps=30, batch=16, lr=1e-3, ema_decay=0.9)
    half = DistillConfig(**{**dcfg.__dict__, "distill_steps": 10})
    train_student(pipe, tmp_path / "pairs", tmp_path / "s.ckpt", half, progress=False)
    assert torch.load(tmp_path / "s.ckpt", weights_only=False)["step"] == 20
    student = train_student(pipe, tmp_path / "pairs", tmp_path / "s.ckpt", dcfg, progress=False)  # resumes at 20
    assert torch.load(tmp_path / "s.ckpt", weights_only=False)["step"] == 40
    after = _one_step_mse(student, pipe, z, x, idx, prompts)
    assert after < 0.7 * before


def test_distill_refuses_an_epsilon_pipeline(tmp_path):
    pipe = tiny_text_pixart()
    pipe.accel_defaults = {"use_resolution_binning": False, "clean_caption": False, "max_sequence_length": 16,
                           "height": 32, "width": 32}
    make_pairs(pipe, PROMPTS, tmp_path / "pairs", PairConfig(num_pairs=4, steps=2, chunk=4, batch=4), progress=False)
    with pytest.raises(ValueError, match="flow \\(velocity\\) pipeline"):
        train_student(pipe, tmp_path / "pairs", tmp_path / "s.ckpt", DistillConfig(1, 1, batch=2), progress=False)


def test_the_student_runs_in_the_bench_with_one_denoiser_call(tmp_path, monkeypatch):
    from accel.cli import main
    from accel.metrics.features import CLASSIFIER_PATH

    if not CLASSIFIER_PATH.exists():
        pytest.skip("domain classifier not built")
    on_clock(accel.bench, "run_bench", TickClock(), monkeypatch.setattr)  # timed denoising loops count their calls
    pipe = tiny_text_pixart_flow()
    pipe.save_pretrained(tmp_path / "teacher")
    tiny_text_pixart_flow(seed=1).transformer.save_pretrained(tmp_path / "student")
    assert main(["bench", "--pipeline", str(tmp_path / "teacher"), "--methods", f"plain,onestep:{tmp_path / 'student'}",
                 "--num-images", "4", "--batch", "2", "--steps", "5", "--no-effnet", "--out", str(tmp_path / "b")]) == 0
    rows = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    plain, student = rows
    # 5 steps with CFG (batch doubled) against 1 step without: exactly a tenth of the denoiser MACs
    assert student["macs_per_image"] == pytest.approx(plain["macs_per_image"] / 10, rel=1e-6)
    assert plain["latency_denoise"] == 5 * student["latency_denoise"] > 0  # 5 denoiser calls against 1
