"""Fast CPU ``diag_scan``: a two-level chunked scan with a hand-written reverse-time backward.

A Python loop over L steps costs a few microseconds of dispatch per step, which dominates for the
small per-step states of S5/LRU. The scan is instead split into chunks of length T ~ sqrt(L):

1. local scans of every chunk at once, from a zero state (a loop of T steps, each step vectorised
   over all chunks), and the running products ``P_t = a_1 ... a_t`` inside each chunk (cumprod:
   products only, no division, so tiny decays just underflow to the right answer, zero);
2. a loop over the chunks carrying the state across chunk ends: ``H_c = P_T H_{c-1} + local_T``;
3. the fix-up ``h_t = local_t + P_t H_{c-1}``.

That is ~2·sqrt(L) Python steps instead of L. No autograd graph is built: the backward is the same
scan run backwards in time,

    g_t = dL/dh_t + conj(a_{t+1}) g_{t+1},   db_t = g_t,   da_t = g_t conj(h_{t-1}),
    dh_0 = conj(a_1) g_1,

using the saved outputs as ``h_{t-1}`` (the op returns every state, so nothing is recomputed).
Resets are folded into ``(a, b)`` before this runs (see ``reference.fold_resets``).
"""

from __future__ import annotations

import math

import torch

from ssmkit.kernels.diag_scan.reference import fold_resets

# Below this many elements per time step the chunked scan wins; above it the plain loop is
# bandwidth-bound and the loop, with ~4x less memory traffic, wins (measured on 2 cores).
_LOOP_MIN_STEP_ELEMENTS = 512


def _scan_loop(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool, shift: int = 0
) -> torch.Tensor:
    """``h_t = a_{t+shift} h_{t-1} + b_t`` (t running backwards when ``reverse``), no autograd."""
    out = torch.empty_like(b)
    length = b.shape[1]
    steps = range(length - 1, -1, -1) if reverse else range(length)
    h = h0
    for t in steps:
        if h is None:
            out[:, t] = b[:, t]
        else:
            torch.addcmul(b[:, t], a[:, t + shift], h, out=out[:, t])
        h = out[:, t]
    return out


def _scan_chunked(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    bsz, length = b.shape[:2]
    rest = b.shape[2:]
    T = max(1, math.isqrt(length))
    nchunks = -(-length // T)
    pad = nchunks * T - length
    if pad:
        a = torch.cat([a, a.new_ones((bsz, pad, *rest))], dim=1)
        b = torch.cat([b, b.new_zeros((bsz, pad, *rest))], dim=1)
    a4 = a.reshape(bsz, nchunks, T, *rest)
    b4 = b.reshape(bsz, nchunks, T, *rest)
    local = torch.empty_like(b4)
    local[:, :, 0] = b4[:, :, 0]
    for t in range(1, T):
        torch.addcmul(b4[:, :, t], a4[:, :, t], local[:, :, t - 1], out=local[:, :, t])
    prods = torch.cumprod(a4, dim=2)
    carries = torch.empty_like(b4[:, :, 0])  # (B, nC, *S): the state entering each chunk
    h = h0 if h0 is not None else torch.zeros_like(carries[:, 0])
    for c in range(nchunks):
        carries[:, c] = h
        h = torch.addcmul(local[:, c, -1], prods[:, c, -1], h)
    out = torch.addcmul(local, prods, carries.unsqueeze(2))
    return out.reshape(bsz, nchunks * T, *rest)[:, :length]


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, reverse: bool = False
) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + b_t`` over dim 1 (backwards in time if ``reverse``), no autograd.

    Args:
        a, b: ``(B, L, *S)``, same shape.
        h0: ``(B, *S)`` or None.
        reverse: run ``t = L-1 .. 0``.
    """
    if b[:, 0].numel() >= _LOOP_MIN_STEP_ELEMENTS:
        return _scan_loop(a, b, h0, reverse)
    if reverse:
        return _scan_chunked(a.flip(1), b.flip(1), h0).flip(1)
    return _scan_chunked(a, b, h0)


def _adjoint_scan(a_conj: torch.Tensor, grad_h: torch.Tensor, reverse: bool) -> torch.Tensor:
    """``g_t = grad_t + conj(a_{t+1}) g_{t+1}``: the same scan, backwards in time, shifted by one."""
    if grad_h[:, 0].numel() >= _LOOP_MIN_STEP_ELEMENTS:
        return _scan_loop(a_conj, grad_h, None, not reverse, shift=-1 if reverse else 1)
    zero = torch.zeros_like(a_conj[:, :1])
    if reverse:
        a_next = torch.cat([zero, a_conj[:, :-1]], dim=1)
    else:
        a_next = torch.cat([a_conj[:, 1:], zero], dim=1)
    return linear_scan(a_next, grad_h, None, not reverse)


class _DiagScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse):  # type: ignore[override]
        a = a.contiguous()
        h = linear_scan(a, b.contiguous(), h0, reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse = reverse
        return h

    @staticmethod
    def backward(ctx, grad_h):  # type: ignore[override]
        a, h, h0 = ctx.saved_tensors
        reverse = ctx.reverse
        a_conj = a.conj() if a.is_complex() else a
        h_conj = h.conj() if h.is_complex() else h
        g = _adjoint_scan(a_conj, grad_h.contiguous(), reverse)
        grad_a = torch.empty_like(g)
        first = 0 if not reverse else -1  # time index that multiplies h0
        if reverse:
            torch.mul(g[:, :-1], h_conj[:, 1:], out=grad_a[:, :-1])
        else:
            torch.mul(g[:, 1:], h_conj[:, :-1], out=grad_a[:, 1:])
        if h0 is None:
            grad_a[:, first] = 0
        else:
            grad_a[:, first] = g[:, first] * (h0.conj() if h0.is_complex() else h0)
        grad_h0 = None
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = g[:, first] * a_conj[:, first]
        return grad_a, g, grad_h0, None


def diag_scan_cpu(
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    reset_value: torch.Tensor | None = None,
    reverse: bool = False,
) -> torch.Tensor:
    """Same contract as :func:`ssmkit.kernels.diag_scan.reference.diag_scan_ref`."""
    a, b = fold_resets(a, b, resets, reset_value)
    return _DiagScan.apply(a.expand(b.shape), b, initial_state, reverse)
