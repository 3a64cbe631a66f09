"""accel.distill: turn a multi-step flow pipeline into a one-step generator (``accel distill``). Presets for known
one-step / few-step checkpoints are solvers (``accel.solvers.presets``, ``solver="onestep:<name>"``)."""
from .pairs import PairConfig, load_pairs, make_pairs  # noqa: F401
from .train import DistillConfig, one_step_sigma, train_student  # noqa: F401
