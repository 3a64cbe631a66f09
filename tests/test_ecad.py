"""ECAD: resumes after kill -9 without losing evaluated candidates; 2 processes give the front of 1."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = Path(__file__).parent / "ecad_tiny_run.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _front(d: Path):
    return [(f["quality_loss"], f["macs_fraction"]) for f in json.loads((d / "index.json").read_text())["front"]]


def _run(out: Path):
    subprocess.run([sys.executable, str(RUN), str(out)], check=True, env=ENV, capture_output=True, cwd=RUN.parent.parent)


def test_kill_and_resume_gives_the_uninterrupted_front(tmp_path):
    _run(tmp_path / "straight")
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, str(RUN), str(out)], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=RUN.parent.parent)
    deadline = time.time() + 120
    while not (out / "algorithm.pkl").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    n_before = len((out / "candidates.jsonl").read_text().splitlines()) if (out / "candidates.jsonl").exists() else 0
    _run(out)
    lines = (out / "candidates.jsonl").read_text().splitlines()
    keys = [json.loads(l)["key"] for l in lines if l.strip().endswith("}")]
    assert len(keys) == len(set(keys))  # nothing evaluated twice
    assert len(keys) >= n_before
    assert _front(out) == _front(tmp_path / "straight")


def test_two_processes_give_the_same_front(tmp_path):
    pytest.importorskip("accelerate")
    _run(tmp_path / "one")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(RUN), str(tmp_path / "two")]
    subprocess.run(cmd, check=True, env=ENV, capture_output=True, cwd=RUN.parent.parent)
    assert _front(tmp_path / "two") == _front(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "index.json").read_text())["processes"] == 2  # really two processes
