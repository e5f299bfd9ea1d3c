"""Depthwise causal Conv1d (+ SiLU), reference: ``F.conv1d`` with K-1 zeros of padding, sliced.

Works on any device and dtype (what CUDA, fp64, bf16 and autocast run); autograd's backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv_reference"]


def depthwise_conv_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    silu: bool = False,
    reverse: bool = False,
) -> torch.Tensor:
    """``act(y)``, ``y_t = bias + sum_s w[K-1-s] x_{t-s}`` (causal) or ``x_{t+s}`` (reverse).

    Args:
        x: ``(B, C, L)``.
        weight: ``(C, 1, K)`` (``nn.Conv1d`` depthwise layout), cast to x's dtype.
        bias: ``(C,)`` or None, cast to x's dtype.
        silu: apply SiLU to the result.
        reverse: the anti-causal form (zeros after the end) instead of the causal one.

    Returns:
        ``(B, C, L)`` in x's dtype.
    """
    k, length = weight.shape[-1], x.shape[-1]
    w = weight.flip(-1) if reverse else weight
    y = F.conv1d(
        x,
        w.to(x.dtype),
        None if bias is None else bias.to(x.dtype),
        padding=k - 1,
        groups=x.shape[1],
    )
    y = y[..., k - 1 :] if reverse else y[..., :length]
    return F.silu(y) if silu else y
