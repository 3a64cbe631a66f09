"""accel.solvers: fast samplers as diffusers schedulers (pure step maths plus thin SchedulerMixin classes)."""
from .dc_solver import DCSolverScheduler, cpr_ratios, lagrange_interpolate  # noqa: F401
