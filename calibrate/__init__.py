"""accel.calibrate: offline calibration producing the artefacts the runtime consumes (schedules, statistics)."""
from . import uniform  # noqa: F401  (registers the method)
from .registry import METHODS, CalibrationMethod, register  # noqa: F401
