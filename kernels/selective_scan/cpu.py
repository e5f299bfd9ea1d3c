"""Selective scan, fast CPU backend, with a hand-written backward.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
https://arxiv.org/abs/2312.00752. Same math as ``reference.py``. Two paths behind one core:

- fp32 with a C compiler at hand: the native kernel of ``native.py`` (one fused pass per channel,
  compiled on first use, ~10x faster than the path below);
- otherwise (fp64, or no compiler) the vectorised torch path in this file, organised like the
  CUDA kernel:

  - Time is cut into chunks of T steps. Per chunk, the coefficients ``dA = exp(delta * A)`` and
    ``dBu = delta * u * B`` are formed in one vectorised op each, as a time-major (T, b, E, N)
    block that fits in cache.
  - The recurrence then runs sequentially inside that block, in place: ``dBu[t] += dA[t] * h``
    (one fused ``addcmul_`` per step, no autograd graph), turning the block into the states.
  - The read-out ``y_t = <C_t, h_t>`` is one batched matmul per chunk.
  - Only the state at each chunk start is saved. The backward walks the chunks in reverse,
    recomputes the chunk's states from the saved start state, runs the adjoint recurrence
    ``g_t = C_t dy_t + dA_{t+1} g_{t+1}`` in place, and forms every gradient with vectorised ops.

Memory is O(b E L + chunks * b E N + T b E N), against O(b E L N) for an autograd scan.
The native kernel fuses delta bias and softplus, the D skip, the z gate and reverse; on this
torch path they stay on plain autograd around the core (``common.gate_in_torch``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ssmkit.kernels.selective_scan.common import gate_in_torch, scan_with_core
from ssmkit.kernels.selective_scan.native import NativeSelectiveScan, native_library

# Elements of one (T, b, E, N) chunk buffer: a few of them should sit in L2 together.
_CHUNK_ELEMENTS = 1 << 17


def _chunk_length(batch: int, channels: int, n_state: int, length: int) -> int:
    per_step = batch * channels * n_state
    return max(1, min(length, _CHUNK_ELEMENTS // max(per_step, 1)))


def _coefficients(
    dt: torch.Tensor,
    u: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    keep: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discretised decay and drive of one chunk.

    Args:
        dt, u: (T, b, E); A: (E, N); B: (T, b, G, N); keep: (T, b) 0/1 or None.

    Returns:
        decay exp(dt A) (T, b, E, N) (zero where the state resets) and drive dt u B (T, b, E, N).
    """
    steps, batch, channels = dt.shape
    groups, n_state = B.shape[2], B.shape[3]
    decay = torch.exp(dt[..., None] * A)
    if keep is not None:
        decay.mul_(keep[:, :, None, None])
    drive = (dt * u).view(steps, batch, groups, channels // groups, 1) * B[:, :, :, None, :]
    return decay, drive.view(steps, batch, channels, n_state)


def _scan_in_place(decay: torch.Tensor, drive: torch.Tensor, h: torch.Tensor) -> None:
    """drive[t] <- decay[t] * h_{t-1} + drive[t], so that drive holds the states h_t."""
    previous = h
    for decay_t, drive_t in zip(decay.unbind(0), drive.unbind(0)):
        drive_t.addcmul_(decay_t, previous)
        previous = drive_t


class _SelectiveScanCore(torch.autograd.Function):
    """h_t = keep_t exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <C_t, h_t> (fp32, time-major)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        u: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        h0: torch.Tensor | None,
        keep: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # u, dt (b, E, L); A (E, N); B, C (b, G, N, L); h0 (b, E, N); keep (b, L)
        batch, channels, length = u.shape
        n_state = A.shape[1]
        groups = B.shape[1]
        ut = u.permute(2, 0, 1).contiguous()  # (L, b, E)
        dtt = dt.permute(2, 0, 1).contiguous()
        Bt = B.permute(3, 0, 1, 2).contiguous()  # (L, b, G, N)
        Ct = C.permute(3, 0, 1, 2).contiguous()
        keept = None if keep is None else keep.t().contiguous()  # (L, b)
        steps = _chunk_length(batch, channels, n_state, length)
        starts = list(range(0, length, steps))

        y = torch.empty(length, batch, channels, dtype=u.dtype)
        chunk_states = torch.empty(len(starts), batch, channels, n_state, dtype=u.dtype)
        h = u.new_zeros(batch, channels, n_state) if h0 is None else h0.contiguous()
        for index, start in enumerate(starts):
            stop = min(start + steps, length)
            chunk_states[index].copy_(h)
            decay, states = _coefficients(
                dtt[start:stop], ut[start:stop], A, Bt[start:stop], _slice(keept, start, stop)
            )
            _scan_in_place(decay, states, h)
            T = stop - start
            # (T, b, G, E/G, N) @ (T, b, G, N, 1) -> (T, b, G, E/G, 1)
            read = (
                states.view(T, batch, groups, channels // groups, n_state)
                @ Ct[start:stop, :, :, :, None]
            )
            y[start:stop] = read.view(T, batch, channels)
            h = states[-1]
        last = h.clone()
        ctx.save_for_backward(ut, dtt, A, Bt, Ct, keept, chunk_states)
        ctx.steps = steps
        ctx.has_h0 = h0 is not None
        return y.permute(1, 2, 0), last

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor, dlast: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        ut, dtt, A, Bt, Ct, keept, chunk_states = ctx.saved_tensors
        length, batch, channels = ut.shape
        n_state = A.shape[1]
        groups = Bt.shape[2]
        per_group = channels // groups
        steps = ctx.steps
        dyt = dy.permute(2, 0, 1).contiguous()  # (L, b, E)

        du = torch.empty_like(ut)
        ddt = torch.empty_like(dtt)
        dB = torch.empty_like(Bt)
        dC = torch.empty_like(Ct)
        dA = torch.zeros_like(A)
        # gradient reaching h_{stop-1} from the steps after the chunk
        carry = torch.zeros(batch, channels, n_state, dtype=ut.dtype) if dlast is None else dlast
        starts = list(range(0, length, steps))
        for index in reversed(range(len(starts))):
            start = starts[index]
            stop = min(start + steps, length)
            T = stop - start
            dt_c, u_c, B_c, C_c, dy_c = (
                dtt[start:stop],
                ut[start:stop],
                Bt[start:stop],
                Ct[start:stop],
                dyt[start:stop],
            )
            h_start = chunk_states[index]
            decay, states = _coefficients(dt_c, u_c, A, B_c, _slice(keept, start, stop))
            _scan_in_place(decay, states, h_start)

            # g_t = dL/dh_t = C_t dy_t + decay_{t+1} g_{t+1}   (T, b, E, N)
            g = (dy_c.view(T, batch, groups, per_group, 1) * C_c[:, :, :, None, :]).view(
                T, batch, channels, n_state
            )
            g[-1].add_(carry)
            g_steps, decay_steps = g.unbind(0), decay.unbind(0)
            for t in range(T - 2, -1, -1):
                g_steps[t].addcmul_(decay_steps[t + 1], g_steps[t + 1])
            carry = decay[0] * g[0]

            grouped_g = g.view(T, batch, groups, per_group, n_state)
            # dC_t = sum_e dy_{t,e} h_{t,e}   (T, b, G, N)
            dC[start:stop] = (
                dy_c.view(T, batch, groups, 1, per_group)
                @ states.view(T, batch, groups, per_group, n_state)
            ).view(T, batch, groups, n_state)
            # dB_t = sum_e g_{t,e} dt_{t,e} u_{t,e}   (T, b, G, N)
            dB[start:stop] = ((dt_c * u_c).view(T, batch, groups, 1, per_group) @ grouped_g).view(
                T, batch, groups, n_state
            )
            # s_t = <g_t, B_t> per channel   (T, b, E)
            s = (grouped_g @ B_c[:, :, :, :, None]).view(T, batch, channels)

            # x_t = g_t * h_{t-1} * decay_t: the gradient of the log-decay dt_t * A
            x = torch.empty_like(states)
            x[0].copy_(h_start)
            x[1:].copy_(states[:-1])
            x.mul_(g).mul_(decay)
            dA.add_(torch.einsum("tben,tbe->en", x, dt_c))
            ddt[start:stop] = torch.einsum("tben,en->tbe", x, A).addcmul_(s, u_c)
            du[start:stop] = s * dt_c

        dh0 = carry if ctx.has_h0 else None
        return (
            du.permute(1, 2, 0),
            ddt.permute(1, 2, 0),
            dA,
            dB.permute(1, 2, 3, 0),
            dC.permute(1, 2, 3, 0),
            dh0,
            None,
        )


def _slice(t: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if t is None else t[start:stop]


def _core(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None,
    keep: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if u.dtype == torch.float32 and native_library() is not None:
        # the native kernel applies bias, softplus, D, the z gate and reverse itself (fwd and bwd)
        return NativeSelectiveScan.apply(
            u, dt, A, B, C, h0, keep, delta_bias, delta_softplus, D, z, reverse
        )
    if delta_bias is not None:
        dt = dt + delta_bias[:, None]
    if delta_softplus:
        dt = F.softplus(dt)  # threshold 20, as mamba_ssm
    return gate_in_torch(_SelectiveScanCore.apply, u, dt, A, B, C, h0, keep, (), D, z, reverse)


def selective_scan_cpu(
    *args: Any, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked CPU selective scan; arguments, shapes and returns as ``selective_scan``."""
    return scan_with_core(_core, *args, fuses_delta=True, fuses_gate=True, **kwargs)
