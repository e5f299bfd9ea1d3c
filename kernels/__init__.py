"""ssmkit.kernels: scan operators (reference, fast CPU and Triton backends behind one dispatcher)."""

if __name__ != "ssmkit.kernels":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.kernels`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.kernels` instead."
    )

from ssmkit.kernels.cross_scan import (
    cross_merge,
    cross_merge_3d,
    cross_scan,
    cross_scan_3d,
    scan_permutation,
    scan_permutation_3d,
)
from ssmkit.kernels.depthwise_conv import depthwise_causal_conv1d
from ssmkit.kernels.diag_scan import diag_scan
from ssmkit.kernels.fft_conv import fft_conv
from ssmkit.kernels.rms_norm import rms_norm
from ssmkit.kernels.selective_scan import selective_scan
from ssmkit.kernels.ssd_scan import ssd_scan

__all__ = [
    "cross_merge",
    "cross_merge_3d",
    "cross_scan",
    "cross_scan_3d",
    "depthwise_causal_conv1d",
    "diag_scan",
    "fft_conv",
    "rms_norm",
    "scan_permutation",
    "scan_permutation_3d",
    "selective_scan",
    "ssd_scan",
]
