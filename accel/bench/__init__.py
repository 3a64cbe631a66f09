"""accel.bench: the quality-versus-latency comparison behind ``accel bench``."""
from .driver import BenchConfig, run_bench, to_markdown  # noqa: F401
from .rows import ROW_KINDS, Row, make_row, row_kind  # noqa: F401
