"""``rms_norm``: root-mean-square normalisation over the last dimension (every Mamba block's norm).

Backends: ``ref`` (``reference.py``, the composite torch formula in fp32; any device and dtype)
and ``cpu`` (``native.py``, a C kernel with its own backward, fp32; other dtypes, autocast,
``torch.compile`` traces and a missing compiler fall back to the reference). ``triton`` runs the
reference. See README.md beside this file.
"""

from __future__ import annotations

import torch

from ssmkit.kernels._dispatch import check_same_device_floats, resolve_backend
from ssmkit.kernels.rms_norm.reference import rms_norm_reference

__all__ = ["rms_norm"]

_OP = "rms_norm"


def _validate(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> None:
    check_same_device_floats(_OP, x=x, weight=weight)
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(
            f"{_OP}: x must be (..., D) with D >= 1 (normalised over the last dim), got shape "
            f"{tuple(x.shape)}."
        )
    if weight is not None and tuple(weight.shape) != (x.shape[-1],):
        raise ValueError(
            f"{_OP}: weight must be (D,) = ({x.shape[-1]},) (D = x's last dim) or None, got "
            f"{tuple(weight.shape)}; pass a weight of x.shape[-1] elements."
        )
    if not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{_OP}: eps must be a number >= 0, got {eps!r}; Mamba uses 1e-5.")


def _native_ok(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Whether the C kernel can run these inputs (else the reference runs, without error)."""
    if any(t is not None and t.dtype != torch.float32 for t in (x, weight)):
        return False
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False
    from ssmkit.kernels.rms_norm.native import native_library

    return native_library() is not None


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """RMS normalisation of the last dimension, computed in fp32.

    ``y = x * rsqrt(mean(x^2, -1) + eps) * weight`` (Zhang & Sennrich 2019,
    https://arxiv.org/abs/1910.07467), the norm of every Mamba residual block.

    Args:
        x: ``(..., D)``, any leading dims, D >= 1.
        weight: ``(D,)`` scale or None.
        eps: added to the mean square.
        backend: ``"auto"`` (native C on CPU, the torch formula elsewhere), ``"ref"``, ``"cpu"``
            or ``"triton"`` (runs the reference); env ``SSMKIT_BACKEND`` overrides ``"auto"``.

    Returns:
        ``(..., D)`` fp32 (whatever x's dtype; callers cast back).
    """
    _validate(x, weight, eps)
    name = resolve_backend(_OP, backend, x.device)
    if name == "cpu" and _native_ok(x, weight):
        from ssmkit.kernels.rms_norm.native import NativeRMSNorm

        return NativeRMSNorm.apply(x, weight, float(eps))
    return rms_norm_reference(x, weight, eps)
