"""ConvS5: a convolutional state-space layer whose state is a feature map.

Smith, De Mello, Kautz, Linderman, Byeon, "Convolutional State Space Models for Long-Range
Spatiotemporal Modeling", NeurIPS 2023, arXiv 2310.19694 (REFERENCES.md §1.6).

``X_t = Λ̄ ⊙ X_{t-1} + B̄ ∗ U_t``, ``Y_t = 2·Re(C̃ ∗ X_t) + D·U_t``: the state ``X`` is a
``(P_s, H, W)`` complex map, ``B̄`` and ``C̃`` are 2-D convolutions and ``Λ̄`` is pointwise over the
state channels (the same at every pixel), initialised like S5 (HiPPO-N eigenvalues, block-diagonal
eigenvectors, conjugate symmetry). Training computes ``B̄ ∗ U`` for all frames in one batched
convolution and runs the recurrence over time with :func:`ssmkit.core.ops.diag_scan` (parallel over
pixels and state channels); generation calls :meth:`ConvS5.step` frame by frame.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops
from ssmkit.core.hippo import s5_init
from ssmkit.core.registry import register_model
from ssmkit.core.s4d import DISCRETIZATIONS, mark_ssm_parameter
from ssmkit.core.s5 import S5State, discretize_diagonal
from ssmkit.core.state import check_state


class ConvS5(nn.Module):
    """ConvS5 layer (Smith et al. 2023, arXiv 2310.19694), ``(B, T, C, H, W) -> (B, T, hidden, H, W)``.

    Args:
        in_channels: input channels C (U in the paper).
        hidden_channels: output channels.
        d_state: state channels P (P/2 complex channels stored when ``conj_sym``).
        kernel_size: odd kernel size of the input convolution ``B``.
        c_kernel_size: odd kernel size of the output convolution ``C`` (default: ``kernel_size``).
        blocks: HiPPO-N blocks J on the diagonal of the initial eigenvectors.
        discretization: ``"zoh"`` or ``"bilinear"``.
        conj_sym: keep one mode of each conjugate pair (output ``2·Re``).
        clip_eigs: clamp ``Re(Λ) <= -1e-4``.
        dt_min, dt_max: range of the log-uniform initial step.
        lr: learning-rate hint (``_optim``) for ``Lambda_re``, ``Lambda_im``, ``log_step``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        d_state: int,
        kernel_size: int = 3,
        c_kernel_size: int | None = None,
        blocks: int = 1,
        discretization: str = "zoh",
        conj_sym: bool = True,
        clip_eigs: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        c_kernel_size = kernel_size if c_kernel_size is None else c_kernel_size
        for name, k in (("kernel_size", kernel_size), ("c_kernel_size", c_kernel_size)):
            if not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(
                    f"ConvS5: {name} must be a positive odd int ('same' padding keeps H, W), "
                    f"got {k!r}."
                )
        if discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"ConvS5: discretization must be one of {DISCRETIZATIONS}, got {discretization!r}."
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"ConvS5: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}.")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.d_state = d_state
        self.discretization = discretization
        self.conj_sym = conj_sym
        self.clip_eigs = clip_eigs
        lam, v = s5_init(d_state, blocks, conj_sym)  # (P_s,), (P, P_s)
        self.n_modes = lam.shape[0]
        # B: He-normal real kernels in the original basis, mapped to the eigenbasis by Vᴴ.
        b = torch.randn(d_state, in_channels, kernel_size, kernel_size, dtype=torch.float64)
        b = b * math.sqrt(2.0 / (in_channels * kernel_size**2))
        b_tilde = torch.einsum("qp,pcij->qcij", v.conj().T, b.to(torch.complex128))
        c = torch.randn(hidden_channels, d_state, c_kernel_size, c_kernel_size, dtype=torch.float64)
        c = c / math.sqrt(d_state * c_kernel_size**2)
        c_tilde = torch.einsum("hpij,pq->hqij", c.to(torch.complex128), v)
        log_step = torch.rand(self.n_modes) * (math.log(dt_max) - math.log(dt_min)) + math.log(
            dt_min
        )
        self.Lambda_re = mark_ssm_parameter(nn.Parameter(lam.real.float()), lr)
        self.Lambda_im = mark_ssm_parameter(nn.Parameter(lam.imag.float()), lr)
        self.log_step = mark_ssm_parameter(nn.Parameter(log_step), lr)
        self.B = nn.Parameter(torch.view_as_real(b_tilde).float())  # (P_s, C, k, k, 2)
        self.C = nn.Parameter(torch.view_as_real(c_tilde).float())  # (hidden, P_s, k, k, 2)
        self.D = nn.Parameter(torch.randn(hidden_channels, in_channels) / math.sqrt(in_channels))

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``Λ̄`` (P_s,) complex64 and the real weight of ``B̄ ∗`` as one conv (2·P_s, C, k, k).

        Output channels ``[:P_s]`` are the real parts of ``B̄ ∗ U``, ``[P_s:]`` the imaginary parts.
        """
        re = self.Lambda_re.float()
        if self.clip_eigs:
            re = re.clamp(max=-1e-4)
        lam = torch.complex(re, self.Lambda_im.float())
        lam_bar, gamma = discretize_diagonal(lam, self.log_step.float().exp(), self.discretization)
        b_bar = gamma[:, None, None, None] * torch.view_as_complex(self.B.float())
        return lam_bar, torch.cat([b_bar.real, b_bar.imag], dim=0)

    def _input_conv(self, u: torch.Tensor, b_weight: torch.Tensor) -> torch.Tensor:
        """``B̄ ∗ U``: ``(N, C, H, W)`` -> ``(N, P_s, H, W)`` complex64."""
        # complex64 state whatever autocast says (REFERENCES.md §1.11)
        with torch.autocast(device_type=u.device.type, enabled=False):
            out = F.conv2d(u.float(), b_weight.float(), padding=b_weight.shape[-1] // 2)
        return torch.complex(out[:, : self.n_modes], out[:, self.n_modes :])

    def _readout(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``2·Re(C̃ ∗ X) + D·U``: ``(N, P_s, H, W)`` complex, ``(N, C, H, W)`` -> ``(N, hidden, H, W)``."""
        c = torch.view_as_complex(self.C.float())
        # Re(C̃ ∗ X) = C̃.re ∗ X.re - C̃.im ∗ X.im, one real convolution over 2·P_s channels.
        weight = torch.cat([c.real, -c.imag], dim=1)
        with torch.autocast(device_type=h.device.type, enabled=False):
            y = F.conv2d(torch.cat([h.real, h.imag], dim=1), weight, padding=weight.shape[-1] // 2)
        y = 2 * y if self.conj_sym else y
        return y + torch.einsum("hc,nc...->nh...", self.D.float(), u)

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        spatial_size: tuple[int, int] | None = None,
    ) -> S5State:
        """Zero state map ``(B, P_s, H, W)`` complex64.

        Args:
            batch_size: B.
            device: defaults to the parameters' device.
            dtype: ignored (the state is complex64).
            spatial_size: ``(H, W)`` of the frames; required.
        """
        if spatial_size is None or len(spatial_size) != 2:
            raise ValueError(
                "ConvS5.init_state: the state is a feature map, pass spatial_size=(H, W) of the "
                f"frames, got {spatial_size!r}."
            )
        device = device if device is not None else self.D.device
        h = torch.zeros(
            batch_size, self.n_modes, *spatial_size, dtype=torch.complex64, device=device
        )
        return S5State(ssm=h)

    def _check_state(self, state: object, batch: int, height: int, width: int) -> torch.Tensor:
        check_state(state, S5State, "ConvS5")
        expected = (batch, self.n_modes, height, width)
        got = tuple(state.ssm.shape)  # type: ignore[attr-defined]
        if got != expected:
            raise ValueError(
                f"ConvS5: state.ssm must have shape (B, P_s, H, W) = {expected}, got {got}; "
                "build it with init_state(B, spatial_size=(H, W))."
            )
        return state.ssm.to(torch.complex64)  # type: ignore[attr-defined]

    def _check_frames(self, x: Any, rank: int, layout: str) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                f"ConvS5: x must be a floating tensor {layout}, got {type(x).__name__}."
            )
        if x.dim() != rank or x.shape[rank - 3] != self.in_channels:
            raise ValueError(
                f"ConvS5: x must have shape {layout} with C = {self.in_channels}, got "
                f"{tuple(x.shape)}."
            )

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: S5State | None = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, S5State]:
        """Run the layer over a video.

        Args:
            x: ``(B, T, C, H, W)``.
            state: state map before the first frame ``(B, P_s, H, W)``, e.g. the last state of a
                conditioning clip.
            resets: ``(B, T)`` bool; the state restarts from zero at True frames.
            mask: ``(B, T)`` bool, True for real frames; padded frames leave the state untouched
                and give zero output.
            return_state: also return the state after the last frame.

        Returns:
            ``y`` ``(B, T, hidden, H, W)``, or ``(y, state)``.
        """
        self._check_frames(x, 5, "(B, T, C, H, W)")
        batch, length, _, height, width = x.shape
        for name, flags in (("mask", mask), ("resets", resets)):
            if flags is not None and (
                not isinstance(flags, torch.Tensor)
                or flags.dtype != torch.bool
                or tuple(flags.shape) != (batch, length)
            ):
                raise ValueError(
                    f"ConvS5: {name} must be a bool tensor (B, T) = {(batch, length)}, got "
                    f"{getattr(flags, 'dtype', type(flags).__name__)} "
                    f"{tuple(getattr(flags, 'shape', ()))}."
                )
        u = x.float()
        if mask is not None:
            u = u * mask[:, :, None, None, None]
        h0 = self._check_state(state, batch, height, width) if state is not None else None
        lam_bar, b_weight = self.discretize()
        frames = u.reshape(batch * length, self.in_channels, height, width)
        bu = self._input_conv(frames, b_weight).reshape(batch, length, self.n_modes, height, width)
        a = lam_bar.reshape(1, 1, -1, 1, 1)
        if mask is not None:
            a = torch.where(mask[:, :, None, None, None], a, torch.ones_like(a))
        h = ops.diag_scan(a, bu, initial_state=h0, resets=resets)  # (B, T, P_s, H, W)
        y = self._readout(h.reshape(batch * length, self.n_modes, height, width), frames)
        y = y.reshape(batch, length, self.hidden_channels, height, width)
        if mask is not None:
            y = y * mask[:, :, None, None, None]
        y = y.to(x.dtype)
        if return_state:
            return y, S5State(ssm=h[:, -1])
        return y

    def step(self, x_t: torch.Tensor, state: S5State) -> tuple[torch.Tensor, S5State]:
        """One frame: ``X = Λ̄ ⊙ X + B̄ ∗ U_t``, ``Y = 2·Re(C̃ ∗ X) + D·U_t``.

        Args:
            x_t: ``(B, C, H, W)``.
            state: from :meth:`init_state` or a previous call.

        Returns:
            ``y_t`` ``(B, hidden, H, W)`` and the new state.
        """
        self._check_frames(x_t, 4, "(B, C, H, W)")
        batch, _, height, width = x_t.shape
        h = self._check_state(state, batch, height, width)
        lam_bar, b_weight = self.discretize()
        u = x_t.float()
        h = lam_bar[:, None, None] * h + self._input_conv(u, b_weight)
        return self._readout(h, u).to(x_t.dtype), S5State(ssm=h)


def _example_inputs(model: nn.Module) -> tuple[Any, ...]:
    return (torch.randn(2, 3, model.in_channels, 5, 6),)


@register_model(
    "core.conv_s5",
    tiny={"in_channels": 2, "hidden_channels": 4, "d_state": 4},
    example_inputs=_example_inputs,
)
def conv_s5(**kwargs: Any) -> ConvS5:
    """ConvS5 layer (state is a feature map), 64 -> 64 channels, d_state 64."""
    return ConvS5(**{"in_channels": 64, "hidden_channels": 64, "d_state": 64, **kwargs})
