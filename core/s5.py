"""S5: one MIMO complex-diagonal state-space layer, run with a parallel diagonal scan.

Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling", ICLR 2023,
arXiv 2208.04933 (REFERENCES.md §1.5).

``x_t = Λ̄ ⊙ x_{t-1} + B̄·u_t``, ``y_t = 2·Re(C̃·x_t) + D ⊙ u_t`` with a state of P complex modes
(P/2 stored when ``conj_sym``), initialised from the eigendecomposition of HiPPO-N (block-diagonal
over ``blocks``), a learned step per mode and ZOH or bilinear discretisation. The sequence runs
through :func:`ssmkit.core.ops.diag_scan`, which also handles episode ``resets`` (RL) and a
reverse scan for the bidirectional variant (states concatenated, C̃ has 2·P_s columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssmkit.core import ops
from ssmkit.core.hippo import s5_init
from ssmkit.core.registry import register_model
from ssmkit.core.s4d import DISCRETIZATIONS, mark_ssm_parameter
from ssmkit.core.state import (
    SSMState,
    check_causal,
    check_sequence_inputs,
    check_state,
    check_step_input,
)


@dataclass
class S5State(SSMState):
    """Recurrent state of :class:`S5` (and, with a spatial map, of ConvS5).

    Attributes:
        ssm: ``(B, P_s)`` complex64 (``(B, P_s, H, W)`` for ConvS5).
    """

    ssm: torch.Tensor


def discretize_diagonal(
    lam: torch.Tensor, step: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Λ̄`` and the per-mode input factor ``γ`` with ``B̄ = γ ⊙ B̃`` (both (P_s,) complex).

    ZOH: ``Λ̄ = exp(ΛΔ)``, ``γ = (Λ̄ - 1)/Λ``; bilinear: ``Λ̄ = (1 + ΔΛ/2)/(1 - ΔΛ/2)``,
    ``γ = Δ/(1 - ΔΛ/2)``.
    """
    if method == "zoh":
        lam_bar = torch.exp(lam * step)
        return lam_bar, torch.expm1(lam * step) / lam
    bl = 1 / (1 - step / 2 * lam)
    return bl * (1 + step / 2 * lam), bl * step


def reversed_resets(resets: torch.Tensor | None) -> torch.Tensor | None:
    """Restart flags of a reverse scan over the same episodes: the step before each start."""
    if resets is None:
        return None
    out = torch.zeros_like(resets)
    out[:, :-1] = resets[:, 1:]
    return out


class S5(nn.Module):
    """S5 layer (Smith et al. 2023, arXiv 2208.04933), ``(B, L, D) -> (B, L, D)``.

    Args:
        d_model: input/output width H.
        d_state: state size P (P/2 complex modes stored when ``conj_sym``).
        blocks: number of HiPPO-N blocks J on the diagonal of the initial V.
        discretization: ``"zoh"`` or ``"bilinear"``.
        conj_sym: keep one mode of each conjugate pair (output ``2·Re``).
        clip_eigs: clamp ``Re(Λ) <= -1e-4`` (stable dynamics).
        bidirectional: add a reverse scan (non-causal: no ``step``/state).
        step_scale: multiplies the learned step Δ (evaluate at another sampling rate).
        dt_min, dt_max: range of the log-uniform initial Δ.
        lr: learning-rate hint (``_optim``) for ``Lambda_re``, ``Lambda_im``, ``log_step``, ``B``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        blocks: int = 1,
        discretization: str = "zoh",
        conj_sym: bool = True,
        clip_eigs: bool = False,
        bidirectional: bool = False,
        step_scale: float = 1.0,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        if discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"S5: discretization must be one of {DISCRETIZATIONS}, got {discretization!r}."
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"S5: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}.")
        if step_scale <= 0:
            raise ValueError(f"S5: step_scale must be > 0, got {step_scale}.")
        self.d_model = d_model
        self.d_state = d_state
        self.discretization = discretization
        self.conj_sym = conj_sym
        self.clip_eigs = clip_eigs
        self.bidirectional = bidirectional
        self.step_scale = step_scale
        lam, v = s5_init(d_state, blocks, conj_sym)  # (P_s,), (P, P_s)
        self.n_modes = lam.shape[0]
        b = torch.randn(d_state, d_model, dtype=torch.float64) / math.sqrt(d_model)
        directions = 2 if bidirectional else 1
        c = torch.randn(directions, d_model, d_state, dtype=torch.float64) / math.sqrt(d_state)
        b_tilde = v.conj().T @ b.to(torch.complex128)  # (P_s, H)
        c_tilde = torch.cat([ci.to(torch.complex128) @ v for ci in c], dim=1)  # (H, dirs·P_s)
        log_step = torch.rand(self.n_modes) * (math.log(dt_max) - math.log(dt_min)) + math.log(
            dt_min
        )
        self.Lambda_re = mark_ssm_parameter(nn.Parameter(lam.real.float()), lr)
        self.Lambda_im = mark_ssm_parameter(nn.Parameter(lam.imag.float()), lr)
        self.B = mark_ssm_parameter(nn.Parameter(torch.view_as_real(b_tilde).float()), lr)
        self.C = nn.Parameter(torch.view_as_real(c_tilde).float())
        self.D = nn.Parameter(torch.randn(d_model))
        self.log_step = mark_ssm_parameter(nn.Parameter(log_step), lr)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``Λ̄`` (P_s,) and ``B̄`` (P_s, H), complex64."""
        re = self.Lambda_re.float()
        if self.clip_eigs:
            re = re.clamp(max=-1e-4)
        lam = torch.complex(re, self.Lambda_im.float())
        step = self.step_scale * self.log_step.float().exp()
        lam_bar, gamma = discretize_diagonal(lam, step, self.discretization)
        return lam_bar, gamma[:, None] * torch.view_as_complex(self.B.float())

    def _readout(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...p,hp->...h", h, torch.view_as_complex(self.C.float()))
        y = 2 * y.real if self.conj_sym else y.real
        return y + self.D.float() * u

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> S5State:
        """Zero state ``(B, P_s)`` complex64 (complex whatever ``dtype``)."""
        check_causal("S5", self.bidirectional, "init_state")
        device = device if device is not None else self.D.device
        return S5State(
            ssm=torch.zeros(batch_size, self.n_modes, dtype=torch.complex64, device=device)
        )

    def _check_state(self, state: object, batch: int) -> torch.Tensor:
        check_state(state, S5State, "S5")
        expected = (batch, self.n_modes)
        if tuple(state.ssm.shape) != expected:  # type: ignore[attr-defined]
            raise ValueError(
                f"S5: state.ssm must have shape (B, P_s) = {expected}, got "
                f"{tuple(state.ssm.shape)}."  # type: ignore[attr-defined]
            )
        return state.ssm.to(torch.complex64)  # type: ignore[attr-defined]

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: S5State | None = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, S5State]:
        """Run the layer over a sequence.

        Args:
            x: ``(B, L, D)``.
            state: state before the first token (causal layers only).
            resets: ``(B, L)`` bool episode starts: the state restarts from zero there (the
                bidirectional layer also restarts its reverse scan at each episode end).
            mask: ``(B, L)`` bool, True for real tokens; pads are zeroed, leave the state
                untouched and give zero output, so any padding equals the unpadded sequence.
            return_state: also return the state after the last token (causal layers only).

        Returns:
            ``y`` ``(B, L, D)``, or ``(y, state)``.
        """
        check_sequence_inputs("S5", x, self.d_model, mask, resets)
        if state is not None or return_state:
            check_causal("S5", self.bidirectional, "state or return_state")
        u = x.float()
        if mask is not None:
            u = u * mask[..., None]
        h0 = self._check_state(state, x.shape[0]) if state is not None else None
        lam_bar, b_bar = self.discretize()
        bu = torch.einsum("blh,ph->blp", u.to(torch.complex64), b_bar)  # (B, L, P_s)
        a = lam_bar.expand(1, 1, -1)
        if mask is not None:
            a = torch.where(mask[..., None], a, torch.ones_like(a))
        h = ops.diag_scan(a, bu, initial_state=h0, resets=resets)
        states = h
        if self.bidirectional:
            h_back = ops.diag_scan(a, bu, resets=reversed_resets(resets), reverse=True)
            states = torch.cat([h, h_back], dim=-1)
        y = self._readout(states, u)
        if mask is not None:
            y = y * mask[..., None]
        y = y.to(x.dtype)
        if return_state:
            return y, S5State(ssm=h[:, -1])
        return y

    def step(
        self, x_t: torch.Tensor, state: S5State, *, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, S5State]:
        """One token: ``x = Λ̄ ⊙ x + B̄·u_t``, ``y = 2·Re(C̃·x) + D ⊙ u_t``.

        Args:
            x_t: ``(B, D)``.
            state: from :meth:`init_state` or a previous call.
            resets: optional ``(B,)`` bool; the state restarts from zero where True.

        Returns:
            ``y_t`` ``(B, D)`` and the new state.
        """
        check_causal("S5", self.bidirectional, "step")
        check_step_input("S5", x_t, self.d_model)
        h = self._check_state(state, x_t.shape[0])
        if resets is not None:
            h = torch.where(resets[:, None], torch.zeros_like(h), h)
        lam_bar, b_bar = self.discretize()
        u = x_t.float()
        h = lam_bar * h + u.to(torch.complex64) @ b_bar.T
        return self._readout(h, u).to(x_t.dtype), S5State(ssm=h)


def _example_inputs(model: nn.Module) -> tuple[Any, ...]:
    return (torch.randn(2, 16, model.d_model),)


@register_model("core.s5", tiny={"d_model": 8, "d_state": 8}, example_inputs=_example_inputs)
def s5(**kwargs: Any) -> S5:
    """S5 layer (MIMO complex diagonal SSM, parallel scan), d_model 256, d_state 64."""
    return S5(**{"d_model": 256, "d_state": 64, **kwargs})
