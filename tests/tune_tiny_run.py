"""``accel tune`` on a fixed clock (used by test_tune.py, also under accelerate launch): python tests/tune_tiny_run.py
ARGS... runs ``accel tune ARGS...`` with ``tune`` given a ``clocks.TickClock``: its deadlines never pass, so every
stage runs to the end of its own work, and its speed-ups are ratios of denoiser calls, whatever the machine's load.

With TUNE_KILL_AFTER=N the process kills itself (SIGKILL, no cleanup) as it starts measuring its (N+1)-th candidate,
so a resume test interrupts the search at a known point."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clocks import TickClock, on_clock  # noqa: E402

from accel.calibrate import tune as tune_module  # noqa: E402
from accel.cli import main  # noqa: E402

if __name__ == "__main__":
    on_clock(tune_module, "tune", TickClock())
    kill_after = int(os.environ.get("TUNE_KILL_AFTER", "0"))
    if kill_after:  # the test's interruption, inside this script only
        measure_one, done = tune_module._Search._one, [0]

        def _measure_then_die(self, *args):
            if done[0] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            done[0] += 1
            return measure_one(self, *args)

        tune_module._Search._one = _measure_then_die
    sys.exit(main(sys.argv[1:]))
