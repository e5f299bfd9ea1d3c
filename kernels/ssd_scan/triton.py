"""Triton ``ssd_scan``: the SSD recurrence with the (P x N) state held in registers.

This is the recurrent ("fused_recurrent" in FLA's terms) form of SSD, not the chunked tensor-core
form: one program per (batch, head, block of head dims) walks the sequence,

    h_t = alpha_t h_{t-1} + u_t ⊗ B_t,   y_t = h_t C_t,

with ``alpha_t = exp(dt_t A)`` (zeroed where ``seq_idx`` changes) and ``u_t = dt_t x_t`` formed in
torch, so dt's softplus/bias/limit, A, D and the z gate are differentiated by autograd around the
kernel. The forward stores the state every ``_CKPT`` steps; the backward walks the checkpoints in
reverse, recomputes each segment's states into a scratch buffer and runs the adjoint recurrence

    gH_t = dy_t ⊗ C_t + dsnap_t + alpha_{t+1} gH_{t+1},
    du_t = gH_t B_t,  dB_t = gH_tᵀ u_t,  dC_t = h_tᵀ dy_t,  dalpha_t = <gH_t, h_{t-1}>,
    dh_0 = alpha_1 gH_1.

Final states (and the per-sequence states of ``cu_seqlens``) are "snapshots" the kernel writes
after the steps flagged in ``snap`` and whose gradients it injects on the way back. Imported
lazily by the dispatcher; runs under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ssmkit.kernels._dispatch import device_guard
from ssmkit.kernels.ssd_scan.reference import cu_seqlens_to_seq_idx, process_dt, segment_ids

_CKPT = 16


@triton.jit
def _ssd_fwd_kernel(
    u_ptr, alpha_ptr, b_ptr, c_ptr, h0_ptr, snap_ptr, y_ptr, snaps_ptr, ckpt_ptr,
    L, H, G, P, N, NSLOT, NCK,
    HAS_H0: tl.constexpr, CKPT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    bi = tl.program_id(0)
    hi = tl.program_id(1)
    pb = tl.program_id(2)
    gi = hi // (H // G)
    offs_p = pb * BP + tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mask_p = offs_p < P
    mask_n = offs_n < N
    mask_pn = mask_p[:, None] & mask_n[None, :]
    pn = offs_p[:, None] * N + offs_n[None, :]
    head_state = (bi * H + hi) * P * N
    if HAS_H0:
        state = tl.load(h0_ptr + head_state + pn, mask=mask_pn, other=0.0).to(tl.float32)
    else:
        state = tl.zeros([BP, BN], dtype=tl.float32)
    for t in range(L):
        if t % CKPT == 0:
            tl.store(ckpt_ptr + ((bi * NCK + t // CKPT) * H + hi) * P * N + pn, state, mask=mask_pn)
        alpha = tl.load(alpha_ptr + (bi * L + t) * H + hi)
        u = tl.load(u_ptr + ((bi * L + t) * H + hi) * P + offs_p, mask=mask_p, other=0.0)
        bt = tl.load(b_ptr + ((bi * L + t) * G + gi) * N + offs_n, mask=mask_n, other=0.0)
        ct = tl.load(c_ptr + ((bi * L + t) * G + gi) * N + offs_n, mask=mask_n, other=0.0)
        state = alpha * state + u[:, None] * bt[None, :]
        y = tl.sum(state * ct[None, :], axis=1)
        tl.store(y_ptr + ((bi * L + t) * H + hi) * P + offs_p, y, mask=mask_p)
        slot = tl.load(snap_ptr + bi * L + t)
        if slot >= 0:
            tl.store(snaps_ptr + ((bi * NSLOT + slot) * H + hi) * P * N + pn, state, mask=mask_pn)


@triton.jit
def _ssd_bwd_kernel(
    u_ptr, alpha_ptr, b_ptr, c_ptr, snap_ptr, ckpt_ptr, dy_ptr, dsnaps_ptr, scratch_ptr,
    du_ptr, dalpha_ptr, db_ptr, dc_ptr, dh0_ptr,
    L, H, G, P, N, NSLOT, NCK, NPB,
    CKPT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    bi = tl.program_id(0)
    hi = tl.program_id(1)
    pb = tl.program_id(2)
    gi = hi // (H // G)
    offs_p = pb * BP + tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mask_p = offs_p < P
    mask_n = offs_n < N
    mask_pn = mask_p[:, None] & mask_n[None, :]
    pn = offs_p[:, None] * N + offs_n[None, :]
    local = tl.arange(0, BP)[:, None] * BN + offs_n[None, :]  # scratch layout (BP, BN)
    scratch = scratch_ptr + ((bi * H + hi) * NPB + pb) * (CKPT + 1) * BP * BN
    part = (pb * tl.num_programs(0) + bi) * L  # partial-sum rows of this p-block
    carry = tl.zeros([BP, BN], dtype=tl.float32)  # alpha_{t+1} gH_{t+1}
    for i in range(NCK):
        c = NCK - 1 - i
        t0 = c * CKPT
        t1 = tl.minimum(t0 + CKPT, L)
        state = tl.load(ckpt_ptr + ((bi * NCK + c) * H + hi) * P * N + pn, mask=mask_pn, other=0.0)
        tl.store(scratch + local, state)
        for t in range(t0, t1):
            alpha = tl.load(alpha_ptr + (bi * L + t) * H + hi)
            u = tl.load(u_ptr + ((bi * L + t) * H + hi) * P + offs_p, mask=mask_p, other=0.0)
            bt = tl.load(b_ptr + ((bi * L + t) * G + gi) * N + offs_n, mask=mask_n, other=0.0)
            state = alpha * state + u[:, None] * bt[None, :]
            tl.store(scratch + (t - t0 + 1) * BP * BN + local, state)
        for j in range(t1 - t0):
            t = t1 - 1 - j
            row = (bi * L + t) * H + hi
            alpha = tl.load(alpha_ptr + row)
            u = tl.load(u_ptr + row * P + offs_p, mask=mask_p, other=0.0)
            bt = tl.load(b_ptr + ((bi * L + t) * G + gi) * N + offs_n, mask=mask_n, other=0.0)
            ct = tl.load(c_ptr + ((bi * L + t) * G + gi) * N + offs_n, mask=mask_n, other=0.0)
            dy = tl.load(dy_ptr + row * P + offs_p, mask=mask_p, other=0.0)
            h_t = tl.load(scratch + (t - t0 + 1) * BP * BN + local)
            h_prev = tl.load(scratch + (t - t0) * BP * BN + local)
            g = carry + dy[:, None] * ct[None, :]
            slot = tl.load(snap_ptr + bi * L + t)
            if slot >= 0:
                snap_off = ((bi * NSLOT + slot) * H + hi) * P * N + pn
                g += tl.load(dsnaps_ptr + snap_off, mask=mask_pn, other=0.0)
            tl.store(du_ptr + row * P + offs_p, tl.sum(g * bt[None, :], axis=1), mask=mask_p)
            out_row = ((part + t) * H + hi) * N + offs_n
            tl.store(db_ptr + out_row, tl.sum(g * u[:, None], axis=0), mask=mask_n)
            tl.store(dc_ptr + out_row, tl.sum(h_t * dy[:, None], axis=0), mask=mask_n)
            tl.store(dalpha_ptr + (part + t) * H + hi, tl.sum(tl.sum(g * h_prev, axis=1), axis=0))
            carry = alpha * g
    tl.store(dh0_ptr + (bi * H + hi) * P * N + pn, carry, mask=mask_pn)


def _blocks(headdim: int, dstate: int) -> tuple[int, int, int]:
    bp = min(triton.next_power_of_2(headdim), 32)
    return bp, triton.next_power_of_2(dstate), triton.cdiv(headdim, bp)


class _SSDRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, alpha, B, C, h0, snap, nslots):  # type: ignore[override]
        bsz, length, nheads, headdim = u.shape
        ngroups, dstate = B.shape[2], B.shape[3]
        bp, bn, npb = _blocks(headdim, dstate)
        nck = triton.cdiv(length, _CKPT)
        y = torch.empty_like(u)
        snaps = torch.zeros((bsz, nslots, nheads, headdim, dstate), device=u.device)
        ckpt = torch.empty((bsz, nck, nheads, headdim, dstate), device=u.device)
        with device_guard(u):
            _ssd_fwd_kernel[(bsz, nheads, npb)](
                u, alpha, B, C, h0 if h0 is not None else u, snap, y, snaps, ckpt,
                length, nheads, ngroups, headdim, dstate, nslots, nck,
                HAS_H0=h0 is not None, CKPT=_CKPT, BP=bp, BN=bn,
            )  # fmt: skip
        ctx.save_for_backward(u, alpha, B, C, snap, ckpt)
        ctx.has_h0 = h0 is not None
        return y, snaps

    @staticmethod
    def backward(ctx, dy, dsnaps):  # type: ignore[override]
        u, alpha, B, C, snap, ckpt = ctx.saved_tensors
        bsz, length, nheads, headdim = u.shape
        ngroups, dstate = B.shape[2], B.shape[3]
        bp, bn, npb = _blocks(headdim, dstate)
        nck = ckpt.shape[1]
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        if dsnaps is None:
            dsnaps = torch.zeros((bsz, 1, nheads, headdim, dstate), device=u.device)
            snap = torch.full_like(snap, -1)
        dsnaps = dsnaps.contiguous()
        scratch = torch.empty((bsz, nheads, npb, _CKPT + 1, bp, bn), device=u.device)
        du = torch.empty_like(u)
        dalpha = torch.empty((npb, bsz, length, nheads), device=u.device)
        dB = torch.empty((npb, bsz, length, nheads, dstate), device=u.device)
        dC = torch.empty_like(dB)
        dh0 = torch.empty((bsz, nheads, headdim, dstate), device=u.device)
        with device_guard(u):
            _ssd_bwd_kernel[(bsz, nheads, npb)](
                u, alpha, B, C, snap, ckpt, dy, dsnaps, scratch, du, dalpha, dB, dC, dh0,
                length, nheads, ngroups, headdim, dstate, dsnaps.shape[1], nck, npb,
                CKPT=_CKPT, BP=bp, BN=bn,
            )  # fmt: skip
        rep = nheads // ngroups
        dB = dB.sum(0).reshape(bsz, length, ngroups, rep, dstate).sum(3)
        dC = dC.sum(0).reshape(bsz, length, ngroups, rep, dstate).sum(3)
        return du, dalpha.sum(0), dB, dC, dh0 if ctx.has_h0 else None, None, None


def ssd_scan_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 256,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`ssmkit.kernels.ssd_scan.reference.ssd_scan_ref` (chunk_size only
    affects the chunked backends; the recurrence has no chunks)."""
    bsz, length = x.shape[:2]
    dt = process_dt(dt.float(), dt_bias, dt_softplus, dt_limit)
    alpha = torch.exp(dt * A.float())  # (b, l, h)
    if cu_seqlens is not None:
        seq_idx = cu_seqlens_to_seq_idx(cu_seqlens, length)
    if seq_idx is not None:
        seg = segment_ids(seq_idx)
        keep = torch.ones_like(seg, dtype=torch.bool)
        keep[:, 1:] = seg[:, 1:] == seg[:, :-1]
        alpha = alpha * keep.unsqueeze(-1)
    snap = torch.full((bsz, length), -1, dtype=torch.int32, device=x.device)
    if cu_seqlens is not None:
        ends = (cu_seqlens[1:] - 1).long()
        snap[0, ends] = torch.arange(ends.numel(), dtype=torch.int32, device=x.device)
        nslots = ends.numel()
    else:
        snap[:, -1] = 0
        nslots = 1
    xf = x.float()
    u = (xf * dt.unsqueeze(-1)).contiguous()
    h0 = initial_states.float().contiguous() if initial_states is not None else None
    y, snaps = _SSDRecurrence.apply(
        u, alpha.contiguous(), B.float().contiguous(), C.float().contiguous(), h0, snap, nslots
    )
    if D is not None:
        y = y + xf * (D.float().unsqueeze(-1) if D.dim() == 1 else D.float())
    if z is not None:
        y = y * F.silu(z.float())
    final = snaps[0] if cu_seqlens is not None else snaps[:, 0]
    return y.to(x.dtype), final
