"""Selective scan, Triton backend: forward and backward kernels.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
https://arxiv.org/abs/2312.00752. Same math as ``reference.py``.

One program owns a block of BLOCK_E channels of one batch row, with the whole (BLOCK_E, N) state
in registers, and walks time sequentially. Time is cut into chunks of CHUNK steps; the forward
stores the state at every chunk start. The backward walks the chunks in reverse: it recomputes the
chunk's states into a per-program scratch buffer (CHUNK + 1 slots, L2-resident on a GPU), then runs
the adjoint recurrence ``g_t = C_t dy_t + dA_{t+1} g_{t+1}`` backwards through them. Gradients of
the shared/grouped B and C are sums over channels, accumulated with atomic adds.

Imported only by the dispatcher when ``backend="triton"`` is chosen (never by
``import ssmkit.kernels``). Runs under ``TRITON_INTERPRET=1`` on CPU tensors, which is how the
tests exercise it without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ssmkit.kernels._dispatch import device_guard, triton_interpreted
from ssmkit.kernels.selective_scan.common import scan_with_core


def _configs() -> list[triton.Config]:
    # The interpreter cannot benchmark several configs (no GPU driver): exactly one there.
    if triton_interpreted():
        return [triton.Config({"BLOCK_E": 4}, num_warps=1)]
    return [
        triton.Config({"BLOCK_E": 8}, num_warps=2),
        triton.Config({"BLOCK_E": 16}, num_warps=4),
        triton.Config({"BLOCK_E": 32}, num_warps=4),
    ]


@triton.autotune(configs=_configs(), key=["E", "N", "CHUNK"])
@triton.jit
def _forward_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    h0_ptr,
    keep_ptr,
    y_ptr,
    last_ptr,
    chunk_ptr,
    E,
    N,
    L,
    G,
    PER_GROUP,
    N_CHUNKS,
    HAS_H0: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements at long L
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    mask_e = e < E
    mask = mask_e[:, None] & (n[None, :] < N)
    state_offsets = e[:, None] * N + n[None, :]  # (BLOCK_E, BLOCK_N) into an (E, N) slab
    A = tl.load(A_ptr + state_offsets, mask=mask, other=0.0)
    row = pid_b * E * L + e * L  # (BLOCK_E,) start of each channel's time series
    bc = pid_b * G * N * L + (e // PER_GROUP)[:, None] * N * L + n[None, :] * L
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * E * N + state_offsets, mask=mask, other=0.0)
    else:
        h = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for chunk in range(0, N_CHUNKS):
        tl.store(chunk_ptr + (pid_b * N_CHUNKS + chunk) * E * N + state_offsets, h, mask=mask)
        start = chunk * CHUNK
        stop = tl.minimum(start + CHUNK, L)
        for t in range(start, stop):
            u_t = tl.load(u_ptr + row + t, mask=mask_e, other=0.0)
            dt_t = tl.load(dt_ptr + row + t, mask=mask_e, other=0.0)
            B_t = tl.load(B_ptr + bc + t, mask=mask, other=0.0)
            C_t = tl.load(C_ptr + bc + t, mask=mask, other=0.0)
            decay = tl.exp(dt_t[:, None] * A)
            if HAS_KEEP:
                decay = decay * tl.load(keep_ptr + pid_b * L + t)
            h = decay * h + (dt_t * u_t)[:, None] * B_t
            tl.store(y_ptr + row + t, tl.sum(h * C_t, axis=1), mask=mask_e)
    tl.store(last_ptr + pid_b * E * N + state_offsets, h, mask=mask)


@triton.autotune(configs=_configs(), key=["E", "N", "CHUNK"], reset_to_zero=["dB_ptr", "dC_ptr"])
@triton.jit
def _backward_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    keep_ptr,
    chunk_ptr,
    dy_ptr,
    dlast_ptr,
    scratch_ptr,
    du_ptr,
    ddt_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    dh0_ptr,
    E,
    N,
    L,
    G,
    PER_GROUP,
    N_CHUNKS,
    HAS_KEEP: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements at long L
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    mask_e = e < E
    mask = mask_e[:, None] & (n[None, :] < N)
    state_offsets = e[:, None] * N + n[None, :]
    tile = tl.arange(0, BLOCK_E)[:, None] * BLOCK_N + n[None, :]
    scratch = scratch_ptr + (pid_b * tl.num_programs(1) + pid_e) * (CHUNK + 1) * BLOCK_E * BLOCK_N
    A = tl.load(A_ptr + state_offsets, mask=mask, other=0.0)
    row = pid_b * E * L + e * L
    bc = pid_b * G * N * L + (e // PER_GROUP)[:, None] * N * L + n[None, :] * L
    # carry: gradient reaching the state h_{t} from the steps after t, starting from d(last)
    carry = tl.load(dlast_ptr + pid_b * E * N + state_offsets, mask=mask, other=0.0)
    dA = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for back in range(0, N_CHUNKS):
        chunk = N_CHUNKS - 1 - back
        start = chunk * CHUNK
        stop = tl.minimum(start + CHUNK, L)
        # recompute the chunk's states: slot 0 = state before the chunk, slot k = h_{start+k-1}
        h = tl.load(
            chunk_ptr + (pid_b * N_CHUNKS + chunk) * E * N + state_offsets, mask=mask, other=0.0
        )
        tl.store(scratch + tile, h)
        for t in range(start, stop):
            u_t = tl.load(u_ptr + row + t, mask=mask_e, other=0.0)
            dt_t = tl.load(dt_ptr + row + t, mask=mask_e, other=0.0)
            B_t = tl.load(B_ptr + bc + t, mask=mask, other=0.0)
            decay = tl.exp(dt_t[:, None] * A)
            if HAS_KEEP:
                decay = decay * tl.load(keep_ptr + pid_b * L + t)
            h = decay * h + (dt_t * u_t)[:, None] * B_t
            tl.store(scratch + (t - start + 1) * BLOCK_E * BLOCK_N + tile, h)
        tl.debug_barrier()
        for i in range(0, stop - start):
            t = stop - 1 - i
            u_t = tl.load(u_ptr + row + t, mask=mask_e, other=0.0)
            dt_t = tl.load(dt_ptr + row + t, mask=mask_e, other=0.0)
            B_t = tl.load(B_ptr + bc + t, mask=mask, other=0.0)
            C_t = tl.load(C_ptr + bc + t, mask=mask, other=0.0)
            dy_t = tl.load(dy_ptr + row + t, mask=mask_e, other=0.0)
            decay = tl.exp(dt_t[:, None] * A)
            if HAS_KEEP:
                decay = decay * tl.load(keep_ptr + pid_b * L + t)
            h_t = tl.load(scratch + (t - start + 1) * BLOCK_E * BLOCK_N + tile)
            h_prev = tl.load(scratch + (t - start) * BLOCK_E * BLOCK_N + tile)
            g = carry + dy_t[:, None] * C_t
            # dC_t = sum_e dy h_t and dB_t = sum_e g dt u, summed over the channels of a group
            tl.atomic_add(dC_ptr + bc + t, dy_t[:, None] * h_t, mask=mask)
            tl.atomic_add(dB_ptr + bc + t, g * (dt_t * u_t)[:, None], mask=mask)
            s = tl.sum(g * B_t, axis=1)
            x = g * h_prev * decay
            dA += x * dt_t[:, None]
            tl.store(ddt_ptr + row + t, tl.sum(x * A, axis=1) + s * u_t, mask=mask_e)
            tl.store(du_ptr + row + t, s * dt_t, mask=mask_e)
            carry = decay * g
        tl.debug_barrier()
    tl.store(dA_ptr + pid_b * E * N + state_offsets, dA, mask=mask)
    tl.store(dh0_ptr + pid_b * E * N + state_offsets, carry, mask=mask)


def _chunk_length() -> int:
    # short chunks keep the interpreted tests' scratch small; 64 on a GPU, as the CUDA kernel
    return 16 if triton_interpreted() else 64


class _SelectiveScanTriton(torch.autograd.Function):
    """Core scan on Triton: h_t = keep_t exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <C_t, h_t>."""

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
        u, dt, A, B, C = (t.contiguous() for t in (u, dt, A, B, C))
        h0 = None if h0 is None else h0.contiguous()
        keep = None if keep is None else keep.contiguous()
        batch, channels, length = u.shape
        groups, n_state = B.shape[1], A.shape[1]
        chunk = _chunk_length()
        n_chunks = triton.cdiv(length, chunk)
        y = torch.empty_like(u)
        last = torch.empty(batch, channels, n_state, dtype=u.dtype, device=u.device)
        chunk_states = torch.empty(
            batch, n_chunks, channels, n_state, dtype=u.dtype, device=u.device
        )
        with device_guard(u):
            _forward_kernel[lambda meta: (batch, triton.cdiv(channels, meta["BLOCK_E"]))](
                u,
                dt,
                A,
                B,
                C,
                u if h0 is None else h0,
                u if keep is None else keep,
                y,
                last,
                chunk_states,
                channels,
                n_state,
                length,
                groups,
                channels // groups,
                n_chunks,
                HAS_H0=h0 is not None,
                HAS_KEEP=keep is not None,
                CHUNK=chunk,
                BLOCK_N=triton.next_power_of_2(n_state),
            )
        ctx.save_for_backward(u, dt, A, B, C, keep, chunk_states)
        ctx.has_h0 = h0 is not None
        ctx.chunk = chunk
        return y, last

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor, dlast: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        u, dt, A, B, C, keep, chunk_states = ctx.saved_tensors
        batch, channels, length = u.shape
        groups, n_state = B.shape[1], A.shape[1]
        chunk = ctx.chunk
        n_chunks = chunk_states.shape[1]
        block_n = triton.next_power_of_2(n_state)
        dy = dy.contiguous().float()
        dlast = dlast.contiguous().float()
        du, ddt = torch.empty_like(u), torch.empty_like(dt)
        dA = torch.empty(batch, channels, n_state, dtype=u.dtype, device=u.device)
        dB, dC = torch.zeros_like(B), torch.zeros_like(C)
        dh0 = torch.empty(batch, channels, n_state, dtype=u.dtype, device=u.device)
        max_block = max(c.kwargs["BLOCK_E"] for c in _configs())
        # (CHUNK + 1) state tiles per program, whichever BLOCK_E the autotuner picks
        scratch = torch.empty(
            batch * (channels + max_block) * (chunk + 1) * block_n,
            dtype=u.dtype,
            device=u.device,
        )
        with device_guard(u):
            _backward_kernel[lambda meta: (batch, triton.cdiv(channels, meta["BLOCK_E"]))](
                u,
                dt,
                A,
                B,
                C,
                u if keep is None else keep,
                chunk_states,
                dy,
                dlast,
                scratch,
                du,
                ddt,
                dA,
                dB,
                dC,
                dh0,
                channels,
                n_state,
                length,
                groups,
                channels // groups,
                n_chunks,
                HAS_KEEP=keep is not None,
                CHUNK=chunk,
                BLOCK_N=block_n,
            )
        return du, ddt, dA.sum(0), dB, dC, dh0 if ctx.has_h0 else None, None


def _core(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None,
    keep: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _SelectiveScanTriton.apply(u, dt, A, B, C, h0, keep)


def selective_scan_triton(
    *args: Any, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton selective scan; arguments, shapes and returns as ``selective_scan``."""
    return scan_with_core(_core, *args, **kwargs)
