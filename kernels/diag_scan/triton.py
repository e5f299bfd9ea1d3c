"""Triton ``diag_scan``: one program per (batch row, block of state elements), a loop over time.

The recurrence is elementwise in the state, so each program keeps its block of ``h`` in registers
and walks the sequence once (forward), or once backwards for the gradient:

    g_t = dL/dh_t + conj(a_{t+1}) g_{t+1},  db_t = g_t,  da_t = g_t conj(h_{t-1}),  dh_0 = conj(a_1) g_1.

Complex inputs run on their (re, im) planes (``torch.view_as_real``), with the complex products
written out. Imported lazily by the dispatcher only; runs under ``TRITON_INTERPRET=1`` on CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssmkit.kernels._dispatch import device_guard
from ssmkit.kernels.diag_scan.reference import fold_resets

_BLOCK = 128


@triton.jit
def _load(ptr, idx, mask, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        re = tl.load(ptr + 2 * idx, mask=mask, other=0.0).to(tl.float32)
        im = tl.load(ptr + 2 * idx + 1, mask=mask, other=0.0).to(tl.float32)
    else:
        re = tl.load(ptr + idx, mask=mask, other=0.0).to(tl.float32)
        im = re * 0.0
    return re, im


@triton.jit
def _store(ptr, idx, re, im, mask, IS_COMPLEX: tl.constexpr):
    if IS_COMPLEX:
        tl.store(ptr + 2 * idx, re, mask=mask)
        tl.store(ptr + 2 * idx + 1, im, mask=mask)
    else:
        tl.store(ptr + idx, re, mask=mask)


@triton.jit
def _diag_scan_fwd_kernel(
    a_ptr, b_ptr, h0_ptr, out_ptr, L, S,
    HAS_H0: tl.constexpr, REVERSE: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < S
    if HAS_H0:
        h_re, h_im = _load(h0_ptr, row * S + offs, mask, IS_COMPLEX)
    else:
        h_re = tl.zeros([BLOCK], dtype=tl.float32)
        h_im = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(L):
        t = L - 1 - k if REVERSE else k
        idx = (row * L + t) * S + offs
        a_re, a_im = _load(a_ptr, idx, mask, IS_COMPLEX)
        b_re, b_im = _load(b_ptr, idx, mask, IS_COMPLEX)
        new_re = a_re * h_re - a_im * h_im + b_re
        h_im = a_re * h_im + a_im * h_re + b_im
        h_re = new_re
        _store(out_ptr, idx, h_re, h_im, mask, IS_COMPLEX)


@triton.jit
def _diag_scan_bwd_kernel(
    a_ptr, h_ptr, h0_ptr, grad_ptr, da_ptr, db_ptr, dh0_ptr, L, S,
    HAS_H0: tl.constexpr, REVERSE: tl.constexpr, IS_COMPLEX: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < S
    c_re = tl.zeros([BLOCK], dtype=tl.float32)  # conj(a_{next}) g_{next}
    c_im = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(L):
        k = L - 1 - i  # walk the forward order backwards
        t = L - 1 - k if REVERSE else k
        t_prev = t + 1 if REVERSE else t - 1
        idx = (row * L + t) * S + offs
        g_re, g_im = _load(grad_ptr, idx, mask, IS_COMPLEX)
        g_re += c_re
        g_im += c_im
        _store(db_ptr, idx, g_re, g_im, mask, IS_COMPLEX)
        hp_re, hp_im = _load(h_ptr, (row * L + t_prev) * S + offs, mask & (k > 0), IS_COMPLEX)
        if HAS_H0:
            first = (offs * 0 + k) == 0
            h0_re, h0_im = _load(h0_ptr, row * S + offs, mask & first, IS_COMPLEX)
            hp_re += h0_re
            hp_im += h0_im
        # da = g * conj(h_prev)
        _store(da_ptr, idx, g_re * hp_re + g_im * hp_im, g_im * hp_re - g_re * hp_im, mask,
               IS_COMPLEX)  # fmt: skip
        a_re, a_im = _load(a_ptr, idx, mask, IS_COMPLEX)
        # carry = conj(a) * g
        c_re = a_re * g_re + a_im * g_im
        c_im = a_re * g_im - a_im * g_re
    if HAS_H0:
        _store(dh0_ptr, row * S + offs, c_re, c_im, mask, IS_COMPLEX)


def _planes(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return torch.view_as_real(t) if t.is_complex() else t


def _launch_args(b: torch.Tensor) -> tuple[int, int, tuple[int, int]]:
    bsz, length = b.shape[:2]
    size = b[0, 0].numel()
    return length, size, (bsz, triton.cdiv(size, _BLOCK))


class _DiagScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse):  # type: ignore[override]
        a, b = a.contiguous(), b.contiguous()
        h0 = h0.contiguous() if h0 is not None else None
        out = torch.empty_like(b)
        length, size, grid = _launch_args(b)
        with device_guard(b):
            _diag_scan_fwd_kernel[grid](
                _planes(a), _planes(b), _planes(h0) if h0 is not None else b, _planes(out),
                length, size, HAS_H0=h0 is not None, REVERSE=reverse,
                IS_COMPLEX=b.is_complex(), BLOCK=_BLOCK,
            )  # fmt: skip
        ctx.save_for_backward(a, out, h0)
        ctx.reverse = reverse
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        a, h, h0 = ctx.saved_tensors
        grad = grad.contiguous()
        da, db = torch.empty_like(h), torch.empty_like(h)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        length, size, grid = _launch_args(h)
        with device_guard(h):
            _diag_scan_bwd_kernel[grid](
                _planes(a), _planes(h), _planes(h0) if h0 is not None else h, _planes(grad),
                _planes(da), _planes(db), _planes(dh0) if dh0 is not None else h, length, size,
                HAS_H0=h0 is not None, REVERSE=ctx.reverse, IS_COMPLEX=h.is_complex(),
                BLOCK=_BLOCK,
            )  # fmt: skip
        return da, db, dh0, None


def diag_scan_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    reset_value: torch.Tensor | None = None,
    reverse: bool = False,
) -> torch.Tensor:
    """Same contract as :func:`ssmkit.kernels.diag_scan.reference.diag_scan_ref`."""
    a, b = fold_resets(a, b, resets, reset_value)
    return _DiagScanTriton.apply(a.expand(b.shape), b, initial_state, reverse)
