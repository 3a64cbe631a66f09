"""``torchrun --nproc_per_node 2 tests/cp_cli.py ARGS...``: the ``accel`` command on CPU processes.

Test launcher only: diffusers places rank r on accelerator ``r % torch.accelerator.device_count()`` and a CPU
has none, so the count is stood in by 1 here (each rank then runs on "cpu")."""
import os
import sys

import torch

torch.accelerator.device_count = lambda: 1
os.environ["ACCEL_PROG"] = "tests/cp_cli.py"  # what the bench records as the program of its command

from accel.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
