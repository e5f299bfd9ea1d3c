"""The scan operators of ``ssmkit.kernels``, re-exported for the domains.

Domains reach the kernels only through this module (an import-linter contract enforces it). Each
name below forwards to ``ssmkit.kernels.<op>`` and resolves the kernel on first call, so importing
``ssmkit.core`` never imports a kernel backend (nor triton). Every operator takes a
``backend="auto"|"ref"|"cpu"|"triton"`` keyword; the signatures and shapes are documented on the
kernels themselves and in ``INTERFACES.md``:

- ``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
  return_last_state=False, *, initial_state=None, reverse=False, resets=None)``: Mamba-1 (S6).
- ``ssd_scan(x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None, initial_states=None,
  seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0, inf), return_final_states=False)``:
  Mamba-2 chunked state-space duality.
- ``diag_scan(a, b, initial_state=None, resets=None, reset_value=None, reverse=False)``:
  ``h_t = a_t * h_{t-1} + b_t`` (real or complex).
- ``fft_conv(u, k, bidirectional=False)``: long causal / bidirectional convolution.
- ``cross_scan``, ``cross_merge``, ``cross_scan_3d``, ``cross_merge_3d``, ``scan_permutation``:
  2-D / 3-D scan orders and their exact adjoints.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

__all__ = [
    "cross_merge",
    "cross_merge_3d",
    "cross_scan",
    "cross_scan_3d",
    "diag_scan",
    "fft_conv",
    "scan_permutation",
    "selective_scan",
    "ssd_scan",
]


@functools.cache
def _kernel(package: str, name: str) -> Callable[..., Any]:
    module = importlib.import_module(f"ssmkit.kernels.{package}")
    op = getattr(module, name, None)
    if op is None:
        raise ImportError(
            f"ssmkit.kernels.{package} does not define {name!r}: this checkout's kernels are "
            "incomplete. Update ssmkit (or reinstall it with `pip install -e .`)."
        )
    return op


def _forward(package: str, name: str) -> Callable[..., Any]:
    def op(*args: Any, **kwargs: Any) -> Any:
        return _kernel(package, name)(*args, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"``ssmkit.kernels.{package}.{name}`` (see its docstring for shapes)."
    return op


selective_scan = _forward("selective_scan", "selective_scan")
ssd_scan = _forward("ssd_scan", "ssd_scan")
diag_scan = _forward("diag_scan", "diag_scan")
fft_conv = _forward("fft_conv", "fft_conv")
cross_scan = _forward("cross_scan", "cross_scan")
cross_merge = _forward("cross_scan", "cross_merge")
cross_scan_3d = _forward("cross_scan", "cross_scan_3d")
cross_merge_3d = _forward("cross_scan", "cross_merge_3d")
scan_permutation = _forward("cross_scan", "scan_permutation")
