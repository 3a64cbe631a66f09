"""accel.calibrate: offline calibration producing the artefacts the runtime consumes (schedules, statistics)."""
from . import bac, dc, ecad, ems, steps, uniform  # noqa: F401  (register the methods)
from .registry import METHODS, CalibrationMethod, register  # noqa: F401
