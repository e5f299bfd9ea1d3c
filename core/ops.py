"""The scan operators of ``ssmkit.kernels``, re-exported for the domains.

Domains reach the kernels only through this module (an import-linter contract enforces it). Each
name is ``ssmkit.kernels.<op>``'s dispatcher, which imports its backends (and triton) only when
first called, so importing ``ssmkit.core`` stays light. Every operator takes a
``backend="auto"|"ref"|"cpu"|"triton"`` keyword; the signatures and shapes are documented on the
kernels themselves and in ``INTERFACES.md``:

- ``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
  return_last_state=False, *, initial_state=None, reverse=False, resets=None)``: Mamba-1 (S6).
- ``ssd_scan(x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None, initial_states=None,
  seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0, inf), return_final_states=False)``:
  Mamba-2 chunked state-space duality.
- ``diag_scan(a, b, initial_state=None, resets=None, reset_value=None, reverse=False)``:
  ``h_t = a_t * h_{t-1} + b_t`` (real or complex).
- ``depthwise_causal_conv1d(x, weight, bias=None, *, activation=None, reverse=False)``: the
  short depthwise causal (or anti-causal) conv, optionally with a fused SiLU.
- ``rms_norm(x, weight=None, eps=1e-5)``: RMS norm of the last dim in fp32 (native C on CPU).
- ``fft_conv(u, k, bidirectional=False)``: long causal / bidirectional convolution.
- ``cross_scan``, ``cross_merge``, ``cross_scan_3d``, ``cross_merge_3d``, ``scan_permutation``,
  ``scan_permutation_3d``: 2-D / 3-D scan orders and their exact adjoints.
"""

from __future__ import annotations

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
