"""Two-process runs under ``accelerate launch`` for the tests (CPU, gloo)."""
from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    """A port nobody listens on now: each launch gets its own, so a store left by an earlier launch cannot collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_checked(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` of ``cmd`` with its output captured; a failure raises with the stderr in the message."""
    res = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {res.returncode}:\n{res.stderr[-4000:]}")
    return res


def launch_two(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``accelerate launch`` ``args`` on 2 processes (``run_checked``)."""
    return run_checked([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
                        "--dynamo_backend", "no", *args], **kwargs)
