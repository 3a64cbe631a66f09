"""accel.pipelines: family adapters (``families``) and the embedded reference pipelines (``load_reference``)."""
from . import families  # noqa: F401
from .reference import REFERENCES, load_pipeline, load_reference, reference_names, tuned_config  # noqa: F401
