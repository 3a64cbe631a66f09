"""A small ECAD run on a tiny pipeline (used by test_ecad.py, also under accelerate launch): python tests/ecad_tiny_run.py OUT

With ECAD_KILL_AFTER=N the process kills itself (SIGKILL, no cleanup) as it starts the (N+1)-th candidate evaluation,
so a resume test interrupts the search at a known point in its middle."""
import os, signal, sys, time; sys.path.insert(0, "tests")
import torch; torch.set_num_threads(1)
from tiny import tiny_pixart, pixart_inputs
from accel.calibrate.ecad import ECADConfig, run_ecad
pipe = tiny_pixart(); pipe.set_progress_bar_config(disable=True)
kw = pixart_inputs(batch=2, steps=6)
call = {k: kw[k] for k in ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask", "negative_prompt")}
ck = dict(height=16, width=16, use_resolution_binning=False)
kill_after = int(os.environ.get("ECAD_KILL_AFTER", "0"))
if kill_after:  # the test's interruption, inside this script only
    from accel.calibrate import ecad
    evaluate, done = ecad.ScheduleEvaluator.evaluate, [0]
    def _evaluate_then_die(self, bits):
        if done[0] >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        done[0] += 1
        return evaluate(self, bits)
    ecad.ScheduleEvaluator.evaluate = _evaluate_then_die
cfg = ECADConfig(steps=6, pop_size=8, generations=3, quality="fidelity", seed_intervals=(2, 3))
t = time.time()
r = run_ecad(pipe, [call], sys.argv[1], cfg, call_kwargs=ck, progress=False)
print(time.time() - t, [(round(f["quality_loss"], 4), round(f["macs_fraction"], 3)) for f in r.front])
