"""SpaceTime: companion-matrix state-space models with a closed-loop decoder.

Zhang, Saab, Poli, Dao, Goel, Ré, "Effectively Modeling Time Series with Simple Discrete State
Spaces", ICLR 2023 (arXiv 2303.09489). Written from the paper.

Each SSM channel is single-input single-output with state size d and a companion matrix
``A = S + e_d aᵀ`` (``S`` shifts the state up by one, the learned row ``a`` closes the loop), so
``A x = (x_2, ..., x_d, a·x)``. Its output over a window is the causal convolution of the input
with the kernel ``k_i = cᵀ Aⁱ b``, computed here from the Krylov vectors ``Aⁱ b`` by repeated
squaring (log₂ ℓ matrix products) and applied with ``ssmkit.core.ops.fft_conv``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core.ops import fft_conv
from ssmkit.timeseries.revin import RevIN


def _fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return fft_conv(u, k)


def polymul(p: torch.Tensor, q: torch.Tensor, n: int) -> torch.Tensor:
    """First ``n`` coefficients of the polynomial product ``p q`` (last dims; leading dims
    broadcast), by FFT."""
    size = 1 << (p.shape[-1] + q.shape[-1] - 1).bit_length()
    out = torch.fft.irfft(torch.fft.rfft(p, size) * torch.fft.rfft(q, size), size)
    return out[..., :n]


def series_inverse(p: torch.Tensor, n: int) -> torch.Tensor:
    """First ``n`` coefficients of the power series ``1 / p(z)`` (``p[..., 0] != 0``), by Newton
    iteration ``g <- g (2 - p g)``, doubling the number of correct terms each step."""
    g = 1.0 / p[..., :1]
    k = 1
    while k < n:
        k = min(2 * k, n)
        two = torch.zeros(k, dtype=p.dtype, device=p.device)
        two[0] = 2.0
        g = polymul(g, two - polymul(p[..., :k], g, k), k)
    return g


def companion_sequence(a: torch.Tensor, init: torch.Tensor, steps: int) -> torch.Tensor:
    """The states ``x_t = Aᵗ x_0`` of a companion system, packed as one sequence.

    With ``A x = (x_2, ..., x_d, a·x)`` every state is a window of one scalar sequence w:
    ``x_t = w[t : t + d]``, where ``w[:d] = x_0`` and ``w[t + d] = a · w[t : t + d]``. That
    order-d linear recurrence is ``w = G / P`` with ``P(z) = 1 - Σ_m a_{d-m} z^m`` and G the
    first d coefficients of ``P x_0``; the division is a power-series inverse by FFT, so all
    ``steps`` states cost O((d + steps) log) instead of ``steps`` matrix products.

    Args:
        a: (..., d) last rows. init: (..., d) initial states x_0 (broadcast against a).
        steps: number of states after x_0.

    Returns:
        w (..., d + steps); ``w.unfold(-1, d, 1)[..., t, :]`` is ``x_t``.
    """
    d = a.shape[-1]
    p = torch.cat([torch.ones_like(a[..., :1]), -a.flip(-1)], dim=-1)
    numerator = polymul(p, init, d)
    return polymul(numerator, series_inverse(p, d + steps), d + steps)


def _correlate(w: torch.Tensor, c: torch.Tensor, n: int) -> torch.Tensor:
    """``out[..., t] = c · w[..., t : t + d]`` for t < n: a readout ``cᵀ x_t`` of every state."""
    return torch.einsum("...td,...d->...t", w.unfold(-1, c.shape[-1], 1)[..., :n, :], c)


def companion(a: torch.Tensor) -> torch.Tensor:
    """Companion matrices (H, d, d) from last rows a (H, d): ones on the super-diagonal."""
    d = a.shape[-1]
    shift = torch.diag(torch.ones(d - 1, dtype=a.dtype, device=a.device), 1)
    last_row = F.pad(a.unsqueeze(-2), (0, 0, d - 1, 0))
    return shift + last_row


def _l1_bounded(v: torch.Tensor) -> torch.Tensor:
    """v / max(1, ‖v‖₁) per row: keeps a companion matrix's roots inside the unit disc."""
    return v / v.abs().sum(-1, keepdim=True).clamp_min(1.0)


class CompanionSSM(nn.Module):
    """One companion SSM per channel, applied as an FFT convolution.

    Args:
        d_model: channels H. d_state: state size d (64 in the paper).

    forward(u (B, L, H)) -> (B, L, H).
    """

    def __init__(self, d_model: int, d_state: int = 64) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(d_model, d_state) * 0.1 / math.sqrt(d_state))
        self.b = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))
        self.c = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))
        self.skip = nn.Parameter(torch.randn(d_model))

    def kernel(self, length: int) -> torch.Tensor:
        """k (H, length) with ``k_i = cᵀ Aⁱ b``."""
        w = companion_sequence(_l1_bounded(self.a), self.b, length - 1)
        return _correlate(w, self.c, length)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = self.kernel(u.shape[1])
        y = _fft_conv(u.transpose(1, 2), k).transpose(1, 2)
        return y + u * self.skip


_PREPROCESS = ("diff1", "diff2", "ma4", "ma16")


def preprocessing_kernel(name: str) -> torch.Tensor:
    """Fixed causal kernels: ``"identity"``, ``"diff<order>"`` (finite differences) and
    ``"ma<w>"`` (residual after a trailing moving average of window w)."""
    if name == "identity":
        return torch.ones(1)
    if name.startswith("diff") and name[4:].isdigit():
        order = int(name[4:])
        return torch.tensor([(-1.0) ** i * math.comb(order, i) for i in range(order + 1)])
    if name.startswith("ma") and name[2:].isdigit() and int(name[2:]) >= 1:
        window = int(name[2:])
        kernel = torch.full((window,), -1.0 / window)
        kernel[0] += 1.0
        return kernel
    raise ValueError(
        f"preprocessing kernel {name!r}; expected 'identity', 'diff<order>' or 'ma<window>'."
    )


class Preprocessing(nn.Module):
    """SpaceTime's fixed preprocessing SSMs: channel h applies kernel ``kernels[h % K]``.

    Differencing and moving-average residuals are companion SSMs with fixed (not learned)
    parameters; like any such SSM they are a causal convolution.

    forward(u (B, L, H)) -> (B, L, H).
    """

    def __init__(self, d_model: int, kernels: tuple[str, ...] = _PREPROCESS) -> None:
        super().__init__()
        bank = [preprocessing_kernel(n) for n in kernels]
        width = max(len(k) for k in bank)
        stacked = torch.stack([F.pad(k, (0, width - len(k))) for k in bank])
        self.register_buffer("k", stacked[torch.arange(d_model) % len(bank)], persistent=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = self.k[:, : u.shape[1]].to(u.dtype)
        return _fft_conv(u.transpose(1, 2), k).transpose(1, 2)


class ClosedLoopSSM(nn.Module):
    """The closed-loop decoder: forecasts the whole horizon from the state after the lag.

    In controllable canonical form (``b = e_d``; every SISO transfer function with this
    denominator is reachable through ``a`` and ``c``). Over the lag the layer is an ordinary SSM,
    ``x_{j+1} = A x_j + b u_j``, ``y_j = cᵀ x_{j+1}``, and also predicts its own next input
    ``û_{j+1} = Kᵀ x_{j+1}``. Past the lag that prediction is fed back, so
    ``x_{n+h} = (A + b Kᵀ)ʰ x_n``: again a companion matrix, with last row ``a + K``.

    Args:
        d_model: channels H. d_state: d.

    forward(u (B, L, H), horizon) -> (y_lag (B, L, H), y_future (B, horizon, H),
    u_next (B, L, H)) where u_next[:, j] predicts u[:, j + 1].
    """

    def __init__(self, d_model: int, d_state: int = 64) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(d_model, d_state) * 0.1 / math.sqrt(d_state))
        self.gain = nn.Parameter(torch.randn(d_model, d_state) * 0.1 / math.sqrt(d_state))
        self.c = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))

    def forward(
        self, u: torch.Tensor, horizon: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        length = u.shape[1]
        a = _l1_bounded(self.a)
        closed_row = _l1_bounded(a + self.gain)
        gain = closed_row - a
        e_last = torch.zeros_like(a)
        e_last[:, -1] = 1.0
        w = companion_sequence(a, e_last, length - 1)  # windows: A^t b, t < L
        ut = u.transpose(1, 2)  # (B, H, L)
        y_lag = _fft_conv(ut, _correlate(w, self.c, length))
        u_next = _fft_conv(ut, _correlate(w, gain, length))
        powers = w.unfold(-1, a.shape[-1], 1)[:, :length]  # (H, L, d)
        state = torch.einsum("bhl,hld->bhd", ut.flip(-1), powers)  # x_n
        future = companion_sequence(closed_row, state, horizon)  # (B, H, d + horizon)
        y_future = _correlate(future, self.c, horizon + 1)[..., 1:].transpose(1, 2)
        return y_lag.transpose(1, 2), y_future, u_next.transpose(1, 2)


class _Block(nn.Module):
    """Pre-norm residual block: x + SSM(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, mixer: nn.Module, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = mixer
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class SpaceTime(nn.Module):
    """SpaceTime forecaster (Zhang et al., ICLR 2023, arXiv 2303.09489).

    Embedding (C -> d_model) -> ``n_blocks`` encoder blocks (the first with the fixed
    preprocessing kernels, the others with learned companion SSMs; each followed by a GELU MLP,
    with skips) -> closed-loop companion decoder -> linear head (d_model -> C).

    Args:
        seq_len: lookback L. pred_len: horizon H. enc_in: channels C.
        d_model: width (128 in the paper). d_state: companion state size (64).
        n_blocks: encoder blocks (2). d_ff: MLP width (defaults to d_model).
        dropout: 0.25 in the released runs.
        preprocess_kernels: fixed kernels of the first block.
        lag_norm: ``"revin"`` (per-series mean/std, undone at the output), ``"mean"``
            (the released runs' lag-mean subtraction) or ``"none"``.
        aux_weight: weight of the auxiliary losses (lag reconstruction and next-input
            prediction; the paper weighs horizon, lag and input terms 1:1:1). After a forward in
            training mode ``self.auxiliary_loss`` holds them; the task adds it to the MSE.

    forward(x_enc (B, L, C), x_mark_enc=None) -> (B, H, C).
    """

    def __init__(
        self,
        seq_len: int = 96,
        pred_len: int = 96,
        enc_in: int = 7,
        d_model: int = 128,
        d_state: int = 64,
        n_blocks: int = 2,
        d_ff: int | None = None,
        dropout: float = 0.25,
        preprocess_kernels: tuple[str, ...] = _PREPROCESS,
        lag_norm: str = "revin",
        aux_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if lag_norm not in ("revin", "mean", "none"):
            raise ValueError(f"lag_norm={lag_norm!r}; expected 'revin', 'mean' or 'none'.")
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}.")
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.lag_norm, self.aux_weight = lag_norm, aux_weight
        self.revin = RevIN(enc_in)
        self.embed = nn.Linear(enc_in, d_model)
        d_ff = d_ff or d_model
        mixers = [Preprocessing(d_model, tuple(preprocess_kernels))]
        mixers += [CompanionSSM(d_model, d_state) for _ in range(n_blocks - 1)]
        self.encoder = nn.ModuleList(_Block(m, d_model, d_ff, dropout) for m in mixers)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = ClosedLoopSSM(d_model, d_state)
        self.head = nn.Linear(d_model, enc_in)
        self.auxiliary_loss: torch.Tensor | None = None

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None) -> torch.Tensor:
        if x_enc.dim() != 3 or x_enc.shape[-1] != self.enc_in:
            raise ValueError(
                f"SpaceTime expects x_enc (B, L, {self.enc_in}), got {tuple(x_enc.shape)}."
            )
        if self.lag_norm == "revin":
            x = self.revin.norm(x_enc)
        elif self.lag_norm == "mean":
            center = x_enc.mean(1, keepdim=True).detach()
            x = x_enc - center
        else:
            x = x_enc
        z = self.embed(x)
        for block in self.encoder:
            z = block(z)
        z = self.norm(z)
        y_lag, y_future, u_next = self.decoder(z, self.pred_len)
        out = self.head(y_future)
        if self.training and self.aux_weight > 0:
            backcast = self.head(y_lag)
            self.auxiliary_loss = self.aux_weight * (
                F.mse_loss(backcast, x) + F.mse_loss(u_next[:, :-1], z[:, 1:].detach())
            )
        else:
            self.auxiliary_loss = None
        if self.lag_norm == "revin":
            return self.revin.denorm(out)
        if self.lag_norm == "mean":
            return out + center
        return out
