"""accel.metrics: quality and cost measures usable on any pipeline's images (float, [0, 1], NCHW) and clips
(NFCHW)."""
from .clips import frames, temporal_err  # noqa: F401
from .cost import Latency, latency, macs_per_image  # noqa: F401
from .fid import FIDUnavailableError, fid  # noqa: F401
from .frechet import FeatureStats, frechet_between, frechet_distance  # noqa: F401
from .quality import alignment, class_probability, clipping, fd_domain, fd_effnet, fd_plain, psnr, ssim  # noqa: F401
from .lpips import LPIPSUnavailableError, lpips  # noqa: F401
from .fvd import FVDUnavailableError, fvd  # noqa: F401
