"""Triton cross-scan / cross-merge: a gather and a sum of K inverse gathers (no atomics).

``scan``: ``out[b, k, c, n] = x[b, c, perm[k, n]]``; ``merge``: ``out[b, c, n] = Σ_k
y[b, k, c, inverse[k, n]]`` accumulated in fp32 (fp64 for
fp64 inputs). Each is the other's adjoint, so the autograd
Functions in ``reference.py`` use one as the other's backward. Imported lazily by the dispatcher;
runs under ``TRITON_INTERPRET=1`` on CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssmkit.kernels._dispatch import device_guard

_BLOCK = 256


@triton.jit
def _scan_kernel(x_ptr, perm_ptr, out_ptr, K, C, N, BLOCK: tl.constexpr):
    pid = tl.program_id(0)  # over (b, k, c)
    c = pid % C
    k = (pid // C) % K
    b = pid // (C * K)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    src = tl.load(perm_ptr + k * N + offs, mask=mask, other=0)
    vals = tl.load(x_ptr + (b * C + c) * N + src, mask=mask)
    tl.store(out_ptr + pid * N + offs, vals, mask=mask)


@triton.jit
def _merge_kernel(y_ptr, inv_ptr, out_ptr, K, C, N, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)  # over (b, c)
    c = pid % C
    b = pid // C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros([BLOCK], dtype=ACC)
    for k in range(K):
        src = tl.load(inv_ptr + k * N + offs, mask=mask, other=0)
        acc += tl.load(y_ptr + ((b * K + k) * C + c) * N + src, mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + pid * N + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def scan_triton(x_flat: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``(B, C, N) -> (B, K, C, N)`` (see ``reference.gather_scan``)."""
    x_flat = x_flat.contiguous()
    bsz, channels, n = x_flat.shape
    k = perm.shape[0]
    out = torch.empty((bsz, k, channels, n), dtype=x_flat.dtype, device=x_flat.device)
    with device_guard(x_flat):
        _scan_kernel[(bsz * k * channels, triton.cdiv(n, _BLOCK))](
            x_flat, perm.contiguous(), out, k, channels, n, BLOCK=_BLOCK
        )
    return out


def merge_triton(y: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``(B, K, C, N) -> (B, C, N)`` (see ``reference.gather_merge``)."""
    y = y.contiguous()
    bsz, k, channels, n = y.shape
    out = torch.empty((bsz, channels, n), dtype=y.dtype, device=y.device)
    with device_guard(y):
        _merge_kernel[(bsz * channels, triton.cdiv(n, _BLOCK))](
            y,
            inverse.contiguous(),
            out,
            k,
            channels,
            n,
            ACC=tl.float64 if y.dtype == torch.float64 else tl.float32,
            BLOCK=_BLOCK,
        )
    return out
