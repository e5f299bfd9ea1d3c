"""ssmkit.kernels: scan operators (reference, fast CPU and Triton backends behind one dispatcher)."""

if __name__ != "ssmkit.kernels":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.kernels`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.kernels` instead."
    )

from ssmkit.kernels.selective_scan import selective_scan

__all__ = ["selective_scan"]
