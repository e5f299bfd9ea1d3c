"""Root-mean-square norms of the Mamba family, computed in fp32.

- :class:`RMSNorm`: ``y = x / sqrt(mean(x^2) + eps) * weight`` (Zhang & Sennrich, 2019,
  https://arxiv.org/abs/1910.07467), as used by every Mamba residual stack.
- :class:`GatedRMSNorm`: Mamba-2's ``RMSNormGated`` (Dao & Gu, 2024, https://arxiv.org/abs/2405.21060):
  the output gate ``silu(z)`` applied before (default) or after a group-wise RMS norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMS-normalise the last dimension in fp32; returns fp32.

    Args:
        x: ``(..., D)``.
        weight: ``(D,)`` scale or ``None``.
        eps: added to the mean square.

    Runs ``ops.rms_norm``: on CPU fp32 a native kernel with its own backward (the composite
    formula's 5-6 elementwise ops forward and more backward cost ~6x more), elsewhere (CUDA,
    other dtypes, autocast, ``torch.compile``) the torch formula.
    """
    return ops.rms_norm(x, weight, eps)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich, 2019, https://arxiv.org/abs/1910.07467).

    Statistics are computed in fp32 (also under autocast); the output has the input's dtype.

    Args:
        d: normalised width ``D``.
        eps: added to the mean square.
    """

    def __init__(
        self,
        d: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if d <= 0:
            raise ValueError(f"RMSNorm: d must be a positive width, got {d}.")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(..., D)``. Returns ``(..., D)`` in ``x.dtype``."""
        return rms_norm(x, self.weight, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GatedRMSNorm(nn.Module):
    """Group-wise RMS norm with a SiLU output gate: Mamba-2's ``RMSNormGated``.

    Dao & Gu, "Transformers are SSMs" (2024), https://arxiv.org/abs/2405.21060. With
    ``norm_before_gate=False`` (Mamba-2's default) ``y = rmsnorm(x * silu(z)) * weight``, else
    ``y = rmsnorm(x) * weight * silu(z)``. The norm runs over groups of ``group_size`` channels
    (Mamba-2 uses ``d_ssm / ngroups``, so the result does not depend on tensor-parallel splits).

    Args:
        d: width ``D``.
        eps: added to the mean square.
        group_size: channels per normalisation group (``None``: all ``D``).
        norm_before_gate: normalise first, then gate.
    """

    def __init__(
        self,
        d: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        group_size = d if group_size is None else group_size
        if group_size <= 0 or d % group_size:
            raise ValueError(
                f"GatedRMSNorm: group_size must divide d={d}, got {group_size}; "
                "use d_ssm // ngroups."
            )
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x ``(..., D)``; z ``(..., D)`` gate or ``None``. Returns ``(..., D)`` in x's dtype."""
        if z is not None and z.shape != x.shape:
            raise ValueError(
                f"GatedRMSNorm: gate z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}."
            )
        out = x.float()
        if z is not None and not self.norm_before_gate:
            out = out * F.silu(z.float())
        groups = out.unflatten(-1, (-1, self.group_size))
        out = rms_norm(groups, None, self.eps).flatten(-2) * self.weight.float()
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.float())
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}, "
            f"norm_before_gate={self.norm_before_gate}"
        )
