"""S4D: the diagonal linear time-invariant state-space layer.

Gu, Gupta, Goel, Ré, "On the Parameterization and Initialization of Diagonal State Space Models",
NeurIPS 2022, arXiv 2206.11893 (REFERENCES.md §1.4).

Per channel h, ``N/2`` complex modes ``A_n = -exp(log_A_real) + i·A_imag``, a step ``dt``, an output
vector ``C`` (the input vector B folded into it) and a skip ``D``. The convolution view computes
the kernel ``K[l] = 2·Re Σ_n C_n·dB_n·dA_n^l`` with a Vandermonde product and applies it with an FFT
(:func:`ssmkit.core.ops.fft_conv`); the recurrent view ``h_t = dA·h_{t-1} + dB·u_t``,
``y_t = 2·Re(C·h_t) + D·u_t`` (complex state) serves ``step``, ``resets`` and the state carried
between calls. Then GELU, dropout and a pointwise ``Conv1d(H, 2H) + GLU``, as in the authors'
standalone S4D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops
from ssmkit.core.hippo import S4D_INITS, s4d_init
from ssmkit.core.registry import register_model
from ssmkit.core.state import (
    SSMState,
    check_causal,
    check_sequence_inputs,
    check_state,
    check_step_input,
)

DISCRETIZATIONS = ("zoh", "bilinear")


def mark_ssm_parameter(param: nn.Parameter, lr: float | None = None) -> nn.Parameter:
    """Tag an SSM parameter: no weight decay, and its own learning rate when ``lr`` is given.

    Sets ``param._no_weight_decay = True`` (read by ``param_groups``) and ``param._optim``
    (``{"weight_decay": 0.0}`` plus ``"lr"``), the hint the S4 codebase uses.
    """
    param._no_weight_decay = True  # type: ignore[attr-defined]
    param._optim = {"weight_decay": 0.0, **({"lr": lr} if lr is not None else {})}  # type: ignore[attr-defined]
    return param


@dataclass
class S4DState(SSMState):
    """Recurrent state of :class:`S4D`.

    Attributes:
        ssm: ``(B, H, N/2)`` complex64, the diagonal SSM state.
    """

    ssm: torch.Tensor


class S4DKernel(nn.Module):
    """The SSM parameters of :class:`S4D` and its discretisation.

    Args:
        d_model: channels H.
        d_state: state size N (``N/2`` complex modes are stored).
        init: ``"lin"``, ``"inv"``, ``"real"`` or ``"legs"`` (see :mod:`ssmkit.core.hippo`).
        discretization: ``"zoh"`` or ``"bilinear"``.
        channels: number of output vectors C (2 for a bidirectional layer).
        dt_min, dt_max: range of the log-uniform initial step.
        lr: learning rate hint for ``log_dt``, ``log_A_real`` and ``A_imag``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "lin",
        discretization: str = "zoh",
        channels: int = 1,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        if init not in S4D_INITS:
            raise ValueError(f"S4D: init must be one of {S4D_INITS}, got {init!r}.")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"S4D: discretization must be one of {DISCRETIZATIONS}, got {discretization!r}."
            )
        if d_state < 2 or d_state % 2:
            raise ValueError(
                f"S4D: d_state must be even and >= 2 (N/2 complex modes), got {d_state}."
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S4D: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}.")
        self.discretization = discretization
        n_modes = d_state // 2
        a, b = s4d_init(init, n_modes)
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(channels, d_model, n_modes, dtype=torch.complex64) * b.to(torch.complex64)
        self.log_dt = mark_ssm_parameter(nn.Parameter(log_dt), lr)
        self.log_A_real = mark_ssm_parameter(
            nn.Parameter(torch.log(-a.real).float().repeat(d_model, 1)), lr
        )
        self.A_imag = mark_ssm_parameter(nn.Parameter(a.imag.float().repeat(d_model, 1)), lr)
        self.C = nn.Parameter(torch.view_as_real(c).clone())

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``log(dA)``, ``dB`` (H, N/2) and ``C`` (channels, H, N/2), all complex64.

        ZOH: ``dA = exp(dt·A)``, ``dB = (dA - 1)/A``; bilinear: ``dA = (1 + dt·A/2)/(1 - dt·A/2)``,
        ``dB = dt/(1 - dt·A/2)``. ``log(dA)`` gives the powers ``dA^l = exp(l·log dA)``.
        """
        dt = self.log_dt.float().exp()[:, None]
        a = torch.complex(-self.log_A_real.float().exp(), self.A_imag.float())
        dta = a * dt
        if self.discretization == "zoh":
            log_da = dta
            db = torch.expm1(dta) / a
        else:
            log_da = torch.log((1 + dta / 2) / (1 - dta / 2))
            db = dt / (1 - dta / 2)
        return log_da, db, torch.view_as_complex(self.C.float())

    def forward(self, length: int) -> torch.Tensor:
        """The convolution kernel ``K`` (channels, H, length), float32."""
        log_da, db, c = self.discretize()
        positions = torch.arange(length, device=log_da.device, dtype=torch.float32)
        vandermonde = torch.exp(log_da[..., None] * positions)  # (H, N/2, L)
        return 2 * torch.einsum("chn,hnl->chl", c * db, vandermonde).real


class S4D(nn.Module):
    """S4D layer (Gu et al. 2022, arXiv 2206.11893): diagonal LTI SSM + GELU + Conv1d/GLU.

    Args:
        d_model: channels H (= D).
        d_state: state size N; ``N/2`` complex modes per channel.
        dropout: dropout after the GELU.
        init: ``"lin"`` (S4D-Lin), ``"inv"``, ``"real"`` or ``"legs"`` (HiPPO-N eigenvalues).
        discretization: ``"zoh"`` or ``"bilinear"``.
        bidirectional: add an anti-causal kernel with its own C (non-causal: no ``step``/state).
        dt_min, dt_max: range of the log-uniform initial step.
        transposed: inputs and outputs are ``(B, H, L)`` instead of ``(B, L, H)``.
        lr: learning-rate hint (``_optim``) on ``log_dt``, ``log_A_real``, ``A_imag``.

    Shapes: ``forward(x (B, L, D)) -> (B, L, D)``; ``step(x_t (B, D), state) -> ((B, D), state)``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        dropout: float = 0.0,
        init: str = "lin",
        discretization: str = "zoh",
        bidirectional: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        transposed: bool = False,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.bidirectional = bidirectional
        self.transposed = transposed
        self.kernel = S4DKernel(
            d_model, d_state, init, discretization, 2 if bidirectional else 1, dt_min, dt_max, lr
        )
        self.D = nn.Parameter(torch.randn(d_model))
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, 1), nn.GLU(dim=1))

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> S4DState:
        """Zero state ``h`` (B, H, N/2) complex64 (the state is complex whatever ``dtype``)."""
        check_causal("S4D", self.bidirectional, "init_state")
        device = device if device is not None else self.D.device
        h = torch.zeros(
            batch_size, self.d_model, self.d_state // 2, dtype=torch.complex64, device=device
        )
        return S4DState(ssm=h)

    def _check_state(self, state: object, batch: int) -> torch.Tensor:
        check_state(state, S4DState, "S4D")
        expected = (batch, self.d_model, self.d_state // 2)
        if tuple(state.ssm.shape) != expected:
            raise ValueError(
                f"S4D: state.ssm must have shape (B, H, N/2) = {expected}, got {tuple(state.ssm.shape)}."
            )
        return state.ssm.to(torch.complex64)

    def _output(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """GELU -> dropout -> Conv1d(H, 2H) + GLU on ``y`` (B, H, L)."""
        return self.output_linear(self.dropout(F.gelu(y)).to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: S4DState | None = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, S4DState]:
        """Apply the layer to a sequence.

        Args:
            x: ``(B, L, D)`` (``(B, D, L)`` when transposed).
            state: state to continue from (``h`` before the first token); causal layers only.
            resets: ``(B, L)`` bool; the state restarts from zero at True positions (the
                recurrent view runs instead of the FFT convolution). Causal layers only.
            mask: ``(B, L)`` bool, True for real tokens; pads are zeroed before the convolution.
                Outputs at real positions equal running the unpadded sequence for left or right
                padding, and the returned state is the one after the last real token.
            return_state: also return the state after the last token (causal layers only).

        Returns:
            ``y`` shaped like ``x``, or ``(y, state)`` when ``return_state``.
        """
        if self.transposed and isinstance(x, torch.Tensor) and x.dim() == 3:
            check_sequence_inputs(
                "S4D (transposed, x is (B, D, L))", x.transpose(1, 2), self.d_model, mask, resets
            )
        else:
            check_sequence_inputs("S4D", x, self.d_model, mask, resets)
        if state is not None or return_state or resets is not None:
            check_causal("S4D", self.bidirectional, "state, return_state or resets")
        u = (x if self.transposed else x.transpose(1, 2)).float()  # (B, H, L)
        batch, _, length = u.shape
        if mask is not None:
            u = u * mask[:, None, :]
        h0 = self._check_state(state, batch) if state is not None else None
        log_da, db, c = self.kernel.discretize()

        if resets is not None:
            b = db * u.transpose(1, 2)[..., None].to(torch.complex64)  # (B, L, H, N/2)
            a = torch.exp(log_da)
            if mask is not None:  # pads leave the state untouched
                keep = mask[:, :, None, None]
                a = torch.where(keep, a, torch.ones_like(a))
            hs = ops.diag_scan(a, b, initial_state=h0, resets=resets)
            y = 2 * torch.einsum("hn,blhn->bhl", c[0], hs).real
            last = hs[:, -1]
        else:
            k = self.kernel(length)
            y = ops.fft_conv(u, k if self.bidirectional else k[0], bidirectional=self.bidirectional)
            last = None
            if h0 is not None:
                y = y + self._initial_state_response(log_da, c[0], h0, mask, length)
            if return_state:
                last = self._final_state(log_da, db, u, h0, mask)
        y = y + self.D.float()[:, None] * u
        if mask is not None:
            y = y * mask[:, None, :]
        out = self._output(y, x.dtype)
        out = out if self.transposed else out.transpose(1, 2)
        if return_state:
            return out, S4DState(ssm=last)
        return out

    @staticmethod
    def _initial_state_response(
        log_da: torch.Tensor,
        c: torch.Tensor,
        h0: torch.Tensor,
        mask: torch.Tensor | None,
        length: int,
    ) -> torch.Tensor:
        """``2·Re Σ_n C_n·dA_n^{p_t}·h0_n`` (B, H, L), p_t = real tokens up to and including t."""
        if mask is None:
            steps = torch.arange(1, length + 1, device=h0.device, dtype=torch.float32)
            powers = torch.exp(log_da[..., None] * steps)  # (H, N/2, L)
            return 2 * torch.einsum("hn,bhn,hnl->bhl", c, h0, powers).real
        steps = mask.float().cumsum(1)  # (B, L)
        powers = torch.exp(log_da[None, :, :, None] * steps[:, None, None, :])  # (B, H, N/2, L)
        return 2 * torch.einsum("hn,bhn,bhnl->bhl", c, h0, powers).real

    @staticmethod
    def _final_state(
        log_da: torch.Tensor,
        db: torch.Tensor,
        u: torch.Tensor,
        h0: torch.Tensor | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """State after the last (real) token: ``dA^n·h0 + Σ_s dA^{c_s}·dB·u_s`` (B, H, N/2).

        ``c_s`` counts the real tokens after s (pads neither decay nor feed the state).
        """
        batch, _, length = u.shape
        uc = u.to(torch.complex64)
        if mask is None:
            after = torch.arange(length - 1, -1, -1, device=u.device, dtype=torch.float32)
            powers = torch.exp(log_da[..., None] * after)  # (H, N/2, L)
            h = db * torch.einsum("bhl,hnl->bhn", uc, powers)
            total = torch.full((batch,), float(length), device=u.device)
        else:
            m = mask.float()
            after = m.flip(1).cumsum(1).flip(1) - m  # (B, L)
            powers = torch.exp(log_da[None, :, :, None] * after[:, None, None, :])
            h = db * torch.einsum("bhl,bhnl->bhn", uc, powers)
            total = m.sum(1)
        if h0 is not None:
            h = h + torch.exp(log_da[None] * total[:, None, None]) * h0
        return h

    def step(self, x_t: torch.Tensor, state: S4DState) -> tuple[torch.Tensor, S4DState]:
        """One token of the recurrent view.

        Args:
            x_t: ``(B, D)``.
            state: from :meth:`init_state` or a previous call.

        Returns:
            ``y_t`` ``(B, D)`` and the new state.
        """
        check_causal("S4D", self.bidirectional, "step")
        check_step_input("S4D", x_t, self.d_model)
        h = self._check_state(state, x_t.shape[0])
        log_da, db, c = self.kernel.discretize()
        u = x_t.float()
        h = torch.exp(log_da) * h + db * u[..., None].to(torch.complex64)
        y = 2 * torch.einsum("hn,bhn->bh", c[0], h).real + self.D.float() * u
        out = self._output(y[..., None], x_t.dtype)[..., 0]
        return out, S4DState(ssm=h)


def _example_inputs(model: nn.Module) -> tuple[Any, ...]:
    return (torch.randn(2, 16, model.d_model),)


@register_model("core.s4d", tiny={"d_model": 8, "d_state": 8}, example_inputs=_example_inputs)
def s4d(**kwargs: Any) -> S4D:
    """S4D layer (diagonal LTI SSM, FFT convolution), d_model 256, d_state 64."""
    return S4D(**{"d_model": 256, "d_state": 64, **kwargs})
