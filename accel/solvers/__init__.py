"""accel.solvers: fast samplers as diffusers schedulers (pure step maths plus thin SchedulerMixin classes)."""
from .dc_solver import DCSolverScheduler, cpr_ratios, lagrange_interpolate  # noqa: F401
from .dpm_solver_v3 import DPMSolverV3Scheduler, load_ems, save_ems  # noqa: F401
from .named import named_solver, solver_from_name, solver_names  # noqa: F401
