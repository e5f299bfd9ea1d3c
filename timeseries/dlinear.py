"""DLinear: the linear forecasting floor every benchmark here is measured against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MovingAverage(nn.Module):
    """Moving average along time with the ends repeated, so the output keeps length L.

    Args:
        kernel_size: window length (odd keeps the average centred).

    x (B, L, C) -> trend (B, L, C).
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}.")
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        front = (self.kernel_size - 1) // 2
        back = self.kernel_size - 1 - front
        padded = torch.cat(
            [x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1
        )
        return F.avg_pool1d(padded.transpose(1, 2), self.kernel_size, stride=1).transpose(1, 2)


class DLinear(nn.Module):
    """Trend/seasonal decomposition, then one linear map over the lookback per component.

    Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023.

    Args:
        seq_len: lookback L. pred_len: horizon H. enc_in: channels C.
        moving_avg: decomposition window (25 in the paper).
        individual: one pair of linear maps per channel instead of shared ones.

    forward(x_enc (B, L, C), x_mark_enc=None) -> (B, H, C).
    """

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        enc_in: int = 7,
        moving_avg: int = 25,
        individual: bool = False,
    ) -> None:
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.decompose = MovingAverage(moving_avg)
        n = enc_in if individual else 1
        self.individual = individual
        self.linear_seasonal = nn.ModuleList(nn.Linear(seq_len, pred_len) for _ in range(n))
        self.linear_trend = nn.ModuleList(nn.Linear(seq_len, pred_len) for _ in range(n))
        for layer in [*self.linear_seasonal, *self.linear_trend]:
            nn.init.constant_(layer.weight, 1.0 / seq_len)

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None) -> torch.Tensor:
        if x_enc.dim() != 3 or x_enc.shape[1:] != (self.seq_len, self.enc_in):
            raise ValueError(
                f"DLinear expects x_enc (B, {self.seq_len}, {self.enc_in}), got {tuple(x_enc.shape)}."
            )
        trend = self.decompose(x_enc)
        seasonal, trend = (x_enc - trend).transpose(1, 2), trend.transpose(1, 2)  # (B, C, L)
        if self.individual:
            out = torch.stack(
                [
                    self.linear_seasonal[c](seasonal[:, c]) + self.linear_trend[c](trend[:, c])
                    for c in range(self.enc_in)
                ],
                dim=1,
            )
        else:
            out = self.linear_seasonal[0](seasonal) + self.linear_trend[0](trend)
        return out.transpose(1, 2)
