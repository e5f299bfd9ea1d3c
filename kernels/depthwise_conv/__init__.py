"""``depthwise_causal_conv1d``: the short depthwise conv (+ SiLU) before every Mamba scan.

Backends: ``ref`` (``reference.py``, ``F.conv1d``; any device and dtype) and ``cpu``
(``native.py``, a C kernel with its own backward, fp32; other dtypes, autocast, ``torch.compile``
traces and a missing compiler fall back to the reference). ``triton`` runs the reference (cuDNN's
depthwise conv is the CUDA path). See README.md beside this file.
"""

from __future__ import annotations

import torch

from ssmkit.kernels._dispatch import check_same_device_floats, resolve_backend
from ssmkit.kernels.depthwise_conv.reference import depthwise_conv_reference

__all__ = ["depthwise_causal_conv1d"]

_OP = "depthwise_causal_conv1d"
_ACTIVATIONS = (None, "silu")


def _validate(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None
) -> None:
    check_same_device_floats(_OP, x=x, weight=weight, bias=bias)
    if x.dim() != 3 or x.shape[-1] < 1:
        raise ValueError(
            f"{_OP}: x must be (B, C, L) with L >= 1 (channels before time), got shape "
            f"{tuple(x.shape)}; for (B, L, C) activations pass `x.transpose(1, 2)`."
        )
    channels = x.shape[1]
    if weight.dim() != 3 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(
            f"{_OP}: weight must be (C, 1, K) = ({channels}, 1, K) (nn.Conv1d depthwise layout, "
            f"C = x's channels), got {tuple(weight.shape)}; pass `conv.weight` of an "
            f"nn.Conv1d({channels}, {channels}, K, groups={channels})."
        )
    if weight.shape[-1] < 1:
        raise ValueError(f"{_OP}: weight has kernel size K=0; it needs K >= 1.")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(
            f"{_OP}: bias must be (C,) = ({channels},) or None, got {tuple(bias.shape)}."
        )
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"{_OP}: activation must be one of {_ACTIVATIONS}, got {activation!r}; apply other "
            "activations to the output yourself."
        )


def _native_ok(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether the C kernel can run these inputs (else the reference runs, without error)."""
    if any(t is not None and t.dtype != torch.float32 for t in (x, weight, bias)):
        return False
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False
    from ssmkit.kernels.depthwise_conv.native import native_library

    return native_library() is not None


def depthwise_causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: str | None = None,
    reverse: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Depthwise causal 1-D convolution with an optional fused SiLU.

    Causal: ``y_t = bias + sum_{s<K} w[K-1-s] x_{t-s}`` (zeros before the start), the short conv
    of Mamba (Gu & Dao 2023, https://arxiv.org/abs/2312.00752); ``reverse=True``:
    ``y_t = bias + sum_{s<K} w[K-1-s] x_{t+s}`` (zeros after the end), the backward direction of a
    bidirectional mixer, equal to ``flip(causal(flip(x)))``. Then ``act(y)``.

    Args:
        x: ``(B, C, L)``, L >= 1 (any L, also L < K).
        weight: ``(C, 1, K)``, the ``nn.Conv1d(C, C, K, groups=C)`` layout.
        bias: ``(C,)`` or None.
        activation: None or ``"silu"``.
        reverse: the anti-causal form.
        backend: ``"auto"`` (native C on CPU, ``F.conv1d`` elsewhere), ``"ref"``, ``"cpu"`` or
            ``"triton"`` (runs the reference); env ``SSMKIT_BACKEND`` overrides ``"auto"``.

    Returns:
        ``(B, C, L)`` in x's dtype.
    """
    _validate(x, weight, bias, activation)
    silu = activation == "silu"
    name = resolve_backend(_OP, backend, x.device)
    if name == "cpu" and _native_ok(x, weight, bias):
        from ssmkit.kernels.depthwise_conv.native import NativeDepthwiseConv

        return NativeDepthwiseConv.apply(x, weight, bias, bool(reverse), silu)
    return depthwise_conv_reference(x, weight, bias, silu=silu, reverse=reverse)
