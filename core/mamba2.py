"""Mamba-2: the state-space-duality (SSD) mixer with heads, B/C groups and a gated RMSNorm.

Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
State Space Duality" (2024), https://arxiv.org/abs/2405.21060. Parameter names and inits follow
the authors' ``mamba_ssm`` ``Mamba2`` module (``in_proj``, ``conv1d``, ``dt_bias``, ``A_log``,
``D``, ``norm``, ``out_proj``), so their checkpoints load 1:1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops
from ssmkit.core.mamba import (
    causal_conv1d,
    check_sizes,
    conv_prefix,
    conv_silu,
    inverse_softplus_dt,
    make_D,
)
from ssmkit.core.norms import GatedRMSNorm
from ssmkit.core.registry import register_model
from ssmkit.core.state import (
    ConvSSMState,
    check_sequence_inputs,
    check_state,
    check_step_input,
)

__all__ = ["Mamba2"]


@torch.compiler.disable
def _ssd_scan(*args: Any, **kwargs: Any) -> Any:
    """``ops.ssd_scan`` kept out of ``torch.compile`` graphs (a graph break, run eagerly), like
    ``ssmkit.core.mamba._selective_scan``."""
    return ops.ssd_scan(*args, **kwargs)


class Mamba2(nn.Module):
    """Mamba-2 SSD mixer (Dao & Gu, 2024, https://arxiv.org/abs/2405.21060).

    ``in_proj`` gives ``[z, xBC, dt]``; ``xBC`` goes through a causal depthwise conv + SiLU and
    splits into ``x (B, L, H, P)``, ``B, C (B, L, G, N)``; the chunked SSD scan (one scalar decay
    ``A`` per head) gives ``y``; ``out_proj(GatedRMSNorm(y, z))``. ``A_log``, ``D``, ``dt_bias`` and
    dt stay fp32 under autocast.

    ``torch.compile`` works and matches eager (tested), with the scan kernel as a graph break that
    runs eagerly: the kernels' CPU backend drives native code through ctypes and a thread pool,
    which Dynamo cannot trace, so the scan call is ``torch.compiler.disable``d.

    Args:
        d_model: model width ``D``.
        d_state: state size ``N`` per head.
        d_conv: causal depthwise conv width ``K``.
        expand: ``E = expand * D`` inner channels, ``H = E / headdim`` heads.
        headdim: head dimension ``P``.
        ngroups: ``G`` groups of B/C shared by ``H / G`` heads each.
        A_init_range: ``A_log = log U[A_init_range]`` per head.
        D_has_hdim: ``D`` per channel ``(E,)`` instead of per head ``(H,)``.
        rmsnorm: gate through ``GatedRMSNorm`` (else ``y * silu(z)`` in the scan).
        norm_before_gate: see :class:`GatedRMSNorm`.
        dt_min, dt_max, dt_init_floor: log-uniform dt init, stored as ``softplus^-1`` in ``dt_bias``.
        dt_limit: clamp of ``softplus(dt + dt_bias)``.
        chunk_size: SSD chunk length ``Q``.
        conv_bias, bias: biases of the conv and of in_proj / out_proj.
        layer_idx: position in a stack.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: float = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        chunk_size: int = 256,
        conv_bias: bool = True,
        bias: bool = False,
        layer_idx: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_sizes(
            name,
            d_model=d_model,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            headdim=headdim,
            ngroups=ngroups,
            chunk_size=chunk_size,
        )
        d_inner = int(expand * d_model)
        if d_inner % headdim:
            raise ValueError(
                f"{name}: expand * d_model = {d_inner} must be a multiple of headdim={headdim}; "
                "pick a headdim that divides it."
            )
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(
                f"{name}: the {nheads} heads must split evenly into ngroups={ngroups} groups."
            )
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"{name}: A_init_range must be 0 < lo <= hi, got {A_init_range}.")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"{name}: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}.")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.expand, self.headdim, self.ngroups = expand, headdim, ngroups
        self.d_inner, self.nheads = d_inner, nheads
        self.D_has_hdim, self.rmsnorm = D_has_hdim, rmsnorm
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        self.chunk_size = chunk_size
        self.layer_idx = layer_idx
        self.out_features = d_model
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(
            d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=bias, **factory
        )
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            d_conv,
            groups=self.conv_dim,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.dt_bias = nn.Parameter(
            inverse_softplus_dt(nheads, dt_min, dt_max, dt_init_floor, device)
        )
        self.dt_bias._no_weight_decay = True  # type: ignore[attr-defined]
        a = torch.empty(nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(a))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = make_D(d_inner if D_has_hdim else nheads, device)
        if rmsnorm:
            self.norm = GatedRMSNorm(
                d_inner,
                eps=1e-5,
                group_size=d_inner // ngroups,
                norm_before_gate=norm_before_gate,
                **factory,
            )
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory)

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ConvSSMState:
        """Zero state: conv ``(B, conv_dim, K - 1)`` in ``dtype``, ssm ``(B, H, P, N)`` fp32."""
        device = self.in_proj.weight.device if device is None else device
        dtype = self.in_proj.weight.dtype if dtype is None else dtype
        return ConvSSMState(
            conv=torch.zeros(
                batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype
            ),
            ssm=torch.zeros(
                batch_size,
                self.nheads,
                self.headdim,
                self.d_state,
                device=device,
                dtype=torch.float32,
            ),
        )

    def _split(self, zxbcdt: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1))

    def _dt(self, dt: torch.Tensor) -> torch.Tensor:
        """``softplus(dt + dt_bias)`` in fp32, clamped to ``dt_limit``."""
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if self.dt_limit != (0.0, math.inf):
            dt = dt.clamp(self.dt_limit[0], self.dt_limit[1])
        return dt

    def _D(self) -> torch.Tensor:
        return self.D.float().view(self.nheads, self.headdim) if self.D_has_hdim else self.D.float()

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: ConvSSMState | None = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ConvSSMState]:
        """Mix a sequence with the chunked SSD scan.

        Args:
            x: ``(B, L, D)``.
            state: continue from this state (conv window and SSM state) instead of zeros.
            resets: ``(B, L)`` bool, True where an episode starts (state and conv window restart).
            mask: ``(B, L)`` bool, True = real token; pads are zeroed before the conv and the
                scan (dt = 0 there, so the state passes through) and give zero output.
            return_state: also return the state after the last token.

        Returns:
            ``y (B, L, D)``, or ``(y, state)``.
        """
        name = type(self).__name__
        check_sequence_inputs(name, x, self.d_model, mask, resets)
        if state is not None:
            check_state(state, ConvSSMState, name)
        batch, length, _ = x.shape
        z, xbc, dt = self._split(self.in_proj(x))
        if state is None and mask is None and resets is None:  # training: the fused conv + SiLU
            xbc_t = xbc.transpose(1, 2)
            conv_state = conv_prefix(xbc_t, self.conv1d.weight.shape[-1]) if return_state else None
            xbc = conv_silu(xbc_t, self.conv1d.weight, self.conv1d.bias).transpose(1, 2)
        else:
            conv, conv_state = causal_conv1d(
                xbc.transpose(1, 2),
                self.conv1d.weight,
                self.conv1d.bias,
                prefix=None if state is None else state.conv,
                mask=mask,
                resets=resets,
            )
            xbc = F.silu(conv).transpose(1, 2)
        if mask is not None:
            xbc = xbc * mask[..., None].to(xbc.dtype)
        xs, B, C = torch.split(
            xbc, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        initial = None if state is None else state.ssm
        seq_idx = None
        if resets is not None:
            later = resets.clone()
            later[:, 0] = False
            seq_idx = later.long().cumsum(1).to(torch.int32)
            if initial is not None:
                initial = initial * (~resets[:, 0]).to(initial.dtype)[:, None, None, None]
        with torch.autocast(device_type=x.device.type, enabled=False):
            dt = self._dt(dt)
            if mask is not None:
                dt = dt * mask[..., None]
            y, final = _ssd_scan(
                xs.reshape(batch, length, self.nheads, self.headdim),
                dt,
                -torch.exp(self.A_log.float()),
                B.reshape(batch, length, self.ngroups, self.d_state),
                C.reshape(batch, length, self.ngroups, self.d_state),
                self.chunk_size,
                D=self._D(),
                z=None if self.rmsnorm else z.reshape(batch, length, self.nheads, self.headdim),
                initial_states=initial,
                seq_idx=seq_idx,
                return_final_states=True,
            )
        y = y.reshape(batch, length, self.d_inner)
        if self.rmsnorm:
            y = self.norm(y, z)
        out = self.out_proj(y)
        if mask is not None:
            out = out * mask[..., None].to(out.dtype)
        if return_state:
            return out, ConvSSMState(conv=conv_state, ssm=final)
        return out

    def step(
        self, x: torch.Tensor, state: ConvSSMState, *, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ConvSSMState]:
        """One token of recurrent inference, O(1) in the position (any ``ngroups``).

        Args:
            x: ``(B, D)``.
            state: from :meth:`init_state` or ``forward(..., return_state=True)``.
            resets: ``(B,)`` bool: restart these sequences' state before this token.

        Returns:
            ``y (B, D)`` and the new state (the input state is not modified).
        """
        name = type(self).__name__
        check_step_input(name, x, self.d_model)
        check_state(state, ConvSSMState, name)
        if resets is not None:
            state = state.masked_reset(resets)
        batch = x.shape[0]
        z, xbc, dt = self._split(self.in_proj(x))
        window = torch.cat([state.conv.to(xbc.dtype), xbc[..., None]], dim=-1)  # (B, conv_dim, K)
        conv = (window * self.conv1d.weight[:, 0, :].to(xbc.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            conv = conv + self.conv1d.bias.to(xbc.dtype)
        xbc = F.silu(conv)
        xs, B, C = torch.split(
            xbc, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        heads_per_group = self.nheads // self.ngroups
        with torch.autocast(device_type=x.device.type, enabled=False):
            dt = self._dt(dt)  # (B, H)
            decay = torch.exp(dt * -torch.exp(self.A_log.float()))
            xh = xs.float().view(batch, self.nheads, self.headdim)
            Bh = (
                B.float()
                .view(batch, self.ngroups, self.d_state)
                .repeat_interleave(heads_per_group, 1)
            )
            Ch = (
                C.float()
                .view(batch, self.ngroups, self.d_state)
                .repeat_interleave(heads_per_group, 1)
            )
            h = (
                state.ssm * decay[..., None, None]
                + (dt[..., None] * xh)[..., None] * Bh[:, :, None, :]
            )
            D = self._D()
            y = (h * Ch[:, :, None, :]).sum(-1) + xh * (D[:, None] if D.dim() == 1 else D)
            if not self.rmsnorm:
                y = y * F.silu(z.float().view(batch, self.nheads, self.headdim))
        y = y.reshape(batch, self.d_inner).to(xs.dtype)
        if self.rmsnorm:
            y = self.norm(y, z)
        return self.out_proj(y), ConvSSMState(conv=window[..., 1:], ssm=h)


@register_model(
    "core.mamba2",
    tiny={"d_model": 16, "d_state": 8, "headdim": 8, "chunk_size": 8},
    example_inputs=lambda m: (torch.randn(2, 12, m.d_model),),
    description="Mamba-2 SSD mixer (B, L, D) -> (B, L, D)",
)
def mamba2(**kwargs: object) -> Mamba2:
    """Mamba-2 SSD mixer (d_model 256, d_state 128, headdim 64)."""
    return Mamba2(**{"d_model": 256, **kwargs})  # type: ignore[arg-type]
