"""accel.distill: turn a multi-step flow pipeline into a one-step generator (``accel distill``), and presets
for known one-step / few-step checkpoints (``accel.apply(pipe, solver="onestep:<name>")``)."""
from .pairs import PairConfig, load_pairs, make_pairs  # noqa: F401
from .train import DistillConfig, one_step_sigma, train_student  # noqa: F401
