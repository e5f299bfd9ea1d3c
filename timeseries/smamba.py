"""S-Mamba: variates as tokens, a bidirectional Mamba across them, an FFN over time."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import BiMamba
from ssmkit.timeseries.revin import RevIN


class SMambaLayer(nn.Module):
    """``x + Mamba_f(x) + flip(Mamba_b(flip(x)))`` over variate tokens, norm, FFN, norm.

    Args:
        d_model: token width D. d_ff: FFN width. d_state, d_conv, expand: Mamba settings
            (S-Mamba uses d_conv=2, expand=1). dropout: after the mixer and inside the FFN.

    forward(x (B, N, D)) -> (B, N, D).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        d_state: int = 16,
        d_conv: int = 2,
        expand: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.mixer = BiMamba(
            d_model, variant="separate", merge="add", d_state=d_state, d_conv=d_conv, expand=expand
        )
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff1, self.ff2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.mixer(x)))
        y = self.dropout(self.ff2(self.dropout(F.gelu(self.ff1(x)))))
        return self.norm2(x + y)


class SMamba(nn.Module):
    """S-Mamba forecaster.

    Wang et al., "Is Mamba Effective for Time Series Forecasting?", Neurocomputing 2024
    (arXiv 2403.11144). Each variate's lookback (and each time-feature series) becomes one token
    (Linear L -> D); ``e_layers`` bidirectional Mamba layers mix the tokens; a linear head maps
    each variate token to the horizon; time-feature tokens are dropped at the output.

    Args:
        seq_len: lookback L. pred_len: horizon H. enc_in: variates N.
        d_model, d_ff: token and FFN widths (256 / 256 for ETTh1).
        e_layers: number of layers (2 for ETTh1). d_state: Mamba state size (2 for ETTh1).
        d_conv, expand: Mamba conv width and expansion (2 and 1 in S-Mamba).
        dropout: 0.1. use_norm: per-variate lookback normalisation, undone at the output.

    forward(x_enc (B, L, N), x_mark_enc (B, L, K) | None) -> (B, H, N).
    """

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        enc_in: int = 7,
        d_model: int = 256,
        d_ff: int = 256,
        e_layers: int = 2,
        d_state: int = 2,
        d_conv: int = 2,
        expand: int = 1,
        dropout: float = 0.1,
        use_norm: bool = True,
    ) -> None:
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.use_norm = use_norm
        self.revin = RevIN(enc_in)
        self.embed = nn.Linear(seq_len, d_model)
        self.embed_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            SMambaLayer(d_model, d_ff, d_state, d_conv, expand, dropout) for _ in range(e_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, pred_len)

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None) -> torch.Tensor:
        if x_enc.dim() != 3 or x_enc.shape[1:] != (self.seq_len, self.enc_in):
            raise ValueError(
                f"SMamba expects x_enc (B, {self.seq_len}, {self.enc_in}), got {tuple(x_enc.shape)}."
            )
        x = self.revin.norm(x_enc) if self.use_norm else x_enc
        tokens = x.transpose(1, 2)  # (B, N, L)
        if x_mark_enc is not None and x_mark_enc.shape[-1] > 0:
            if x_mark_enc.shape[:2] != x_enc.shape[:2]:
                raise ValueError(
                    f"x_mark_enc must be (B, L, K) with (B, L) = {tuple(x_enc.shape[:2])}, "
                    f"got {tuple(x_mark_enc.shape)}."
                )
            tokens = torch.cat([tokens, x_mark_enc.transpose(1, 2).to(x.dtype)], dim=1)
        h = self.embed_dropout(self.embed(tokens))  # (B, N + K, D)
        for layer in self.layers:
            h = layer(h)
        out = self.head(self.norm(h)).transpose(1, 2)[:, :, : self.enc_in]  # (B, H, N)
        return self.revin.denorm(out) if self.use_norm else out
