"""Reversible instance normalisation over the lookback window."""

from __future__ import annotations

import torch
from torch import nn


class RevIN(nn.Module):
    """Per-series normalisation that is undone at the output.

    Kim et al., "Reversible Instance Normalization for Accurate Time-Series Forecasting against
    Distribution Shift", ICLR 2022. S-Mamba's ``use_norm`` is this without the affine part.

    Args:
        num_features: channels C.
        eps: added to the variance.
        affine: learn a per-channel scale and shift applied after normalising.
        subtract_last: centre on the last lookback value instead of the mean.

    Call ``norm(x)`` with x (B, L, C) first; ``denorm(y)`` with y (B, H, C) then uses the
    statistics of that same call.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        affine: bool = False,
        subtract_last: bool = False,
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.subtract_last = num_features, eps, subtract_last
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        self._center: torch.Tensor | None = None
        self._scale: torch.Tensor | None = None

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, C) -> normalised (B, L, C); stores the statistics for :meth:`denorm`."""
        if x.dim() != 3 or x.shape[-1] != self.num_features:
            raise ValueError(
                f"RevIN expects x of shape (B, L, {self.num_features}), got {tuple(x.shape)}."
            )
        center = x[:, -1:].detach() if self.subtract_last else x.mean(1, keepdim=True).detach()
        scale = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + self.eps).detach()
        self._center, self._scale = center, scale
        x = (x - center) / scale
        if self.affine:
            x = x * self.weight + self.bias
        return x

    def denorm(self, y: torch.Tensor, channels: slice | None = None) -> torch.Tensor:
        """y (B, H, C') back to the input scale; ``channels`` selects C' of the C statistics."""
        if self._center is None or self._scale is None:
            raise RuntimeError("RevIN.denorm called before norm.")
        sel = channels if channels is not None else slice(None)
        if self.affine:
            y = (y - self.bias[sel]) / (self.weight[sel] + self.eps * self.eps)
        return y * self._scale[..., sel] + self._center[..., sel]
