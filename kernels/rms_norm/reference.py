"""RMSNorm, reference: the composite torch formula in fp32 (any device and dtype; autograd's backward).

What CUDA, fp64, bf16, autocast and ``torch.compile`` traces run.
"""

from __future__ import annotations

import torch

__all__ = ["rms_norm_reference"]


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``y = x * rsqrt(mean(x^2, -1) + eps) * weight``, computed in fp32 (Zhang & Sennrich 2019).

    Args:
        x: ``(..., D)``, cast to fp32.
        weight: ``(D,)`` or None, cast to fp32.
        eps: added to the mean square.

    Returns:
        ``(..., D)`` fp32.
    """
    x = x.float()
    y = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * weight.float()
