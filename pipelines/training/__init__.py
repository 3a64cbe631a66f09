"""Training of the reference pipelines (kept out of CI): ``python -m accel.pipelines.training --help``."""
