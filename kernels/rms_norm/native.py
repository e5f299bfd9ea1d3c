"""RMSNorm, native CPU kernel: C compiled on first use, called via ctypes.

``y = x r w`` with ``r = rsqrt(mean(x^2) + eps)`` per row (Zhang & Sennrich 2019,
https://arxiv.org/abs/1910.07467). The forward makes two vector passes over each row of D values
(sum of squares, then scale) and saves ``r`` per row (fp32, ``(rows,)``) for the backward. With
``g = dy w`` the backward is

    dx = r (g - x r^2 mean(g x)),    dw = sum_rows dy x r,

again two passes per row (the dot ``sum g x``, then dx and the row's share of dw). Rows are split
over OpenMP threads (``torch.get_num_threads()``; Python threads when the library builds without
OpenMP); each part accumulates dw in its own ``(D,)`` row of a ``(parts, D)`` buffer, summed
afterwards (no atomics). The inner loops are ``#pragma omp simd`` over D (any D: the compiler
handles the remainder). ``SSMKIT_NATIVE=0`` disables it (the reference then runs). See README.md
for the measured speed.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch.autograd.function import once_differentiable

from ssmkit.kernels._native_build import _parts, _ptr, _run_parts, load_or_warn

__all__ = ["NativeRMSNorm", "native_library"]

_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>

/* x, y: (rows, D) contiguous; w: (D,) or NULL; rstd: (rows,). Rows [r0, r1). */
void rn_forward(const float* x, const float* w, float* y, float* rstd, int64_t D, float eps,
                int64_t r0, int64_t r1) {
    const float inv_d = 1.0f / (float)D;
    for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * D;
        float* yr = y + r * D;
        float ss = 0.0f;
        #pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < D; ++i) ss += xr[i] * xr[i];
        const float s = 1.0f / sqrtf(ss * inv_d + eps);
        rstd[r] = s;
        if (w) {
            #pragma omp simd
            for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * s * w[i];
        } else {
            #pragma omp simd
            for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * s;
        }
    }
}

/* dy, dx: (rows, D) contiguous; dw_part: (D,), this part's own accumulator (overwritten; untouched
   when w is NULL). dx = r (g - x r^2 mean(g x)), g = dy w; dw_part = sum_rows dy x r. */
void rn_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                 float* dw_part, int64_t D, int64_t r0, int64_t r1) {
    const float inv_d = 1.0f / (float)D;
    if (w) memset(dw_part, 0, sizeof(float) * D);
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * D, *gr = dy + r * D;
        float* dxr = dx + r * D;
        const float s = rstd[r];
        float dot = 0.0f;
        if (w) {
            #pragma omp simd reduction(+ : dot)
            for (int64_t i = 0; i < D; ++i) dot += gr[i] * w[i] * xr[i];
            const float c = s * s * s * dot * inv_d;
            #pragma omp simd
            for (int64_t i = 0; i < D; ++i) {
                dxr[i] = s * gr[i] * w[i] - c * xr[i];
                dw_part[i] += gr[i] * xr[i] * s;
            }
        } else {
            #pragma omp simd reduction(+ : dot)
            for (int64_t i = 0; i < D; ++i) dot += gr[i] * xr[i];
            const float c = s * s * s * dot * inv_d;
            #pragma omp simd
            for (int64_t i = 0; i < D; ++i) dxr[i] = s * gr[i] - c * xr[i];
        }
    }
}

#ifdef _OPENMP
#include <omp.h>
#endif
int64_t rn_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* the same over all rows on nthreads OpenMP threads; part t of dw_parts ((nthreads, D)) is
   thread t's accumulator */
void rn_forward_par(const float* x, const float* w, float* y, float* rstd, int64_t D, float eps,
                    int64_t rows, int64_t nthreads) {
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)nthreads)
    {
        int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
        rn_forward(x, w, y, rstd, D, eps, rows * tid / nt, rows * (tid + 1) / nt);
    }
#else
    (void)nthreads;
    rn_forward(x, w, y, rstd, D, eps, 0, rows);
#endif
}

void rn_backward_par(const float* x, const float* w, const float* rstd, const float* dy,
                     float* dx, float* dw_parts, int64_t D, int64_t rows, int64_t nthreads) {
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)nthreads)
    {
        int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
        /* a thread the runtime did not start leaves its part zero */
        if (w && tid == 0)
            for (int64_t t = nt; t < nthreads; ++t) memset(dw_parts + t * D, 0, sizeof(float) * D);
        rn_backward(x, w, rstd, dy, dx, dw_parts + tid * D, D, rows * tid / nt,
                    rows * (tid + 1) / nt);
    }
#else
    for (int64_t t = 1; w && t < nthreads; ++t) memset(dw_parts + t * D, 0, sizeof(float) * D);
    rn_backward(x, w, rstd, dy, dx, dw_parts, D, 0, rows);
#endif
}
"""

_NAMES = ("rn_forward", "rn_backward", "rn_forward_par", "rn_backward_par")


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (with one warning) when it cannot be built.

    ``SSMKIT_NATIVE=0`` disables it (the reference then runs).
    """
    return load_or_warn("rms_norm", _SOURCE, _NAMES, "rms_norm", "rn_openmp", "the torch formula")


def _forward(library: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor | None, eps: float):
    """``(y, rstd)`` for x ``(rows, D)`` contiguous: y ``(rows, D)``, rstd ``(rows,)``."""
    rows, d = x.shape
    y = torch.empty_like(x)
    rstd = torch.empty(rows, dtype=torch.float32)
    pointers = [_ptr(x), _ptr(weight), _ptr(y), _ptr(rstd), ctypes.c_int64(d), ctypes.c_float(eps)]
    parts = _parts(rows)
    if library.rn_openmp() and len(parts) > 1:
        library.rn_forward_par(*pointers, ctypes.c_int64(rows), ctypes.c_int64(len(parts)))
    elif rows:
        _run_parts(
            library.rn_forward, parts, lambda i, lo, hi: (*pointers, *map(ctypes.c_int64, (lo, hi)))
        )
    return y, rstd


def _backward(
    library: ctypes.CDLL,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    rstd: torch.Tensor,
    dy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dx, dweight)`` for x, dy ``(rows, D)`` contiguous; dweight None when weight is None."""
    rows, d = x.shape
    parts = _parts(rows)
    dx = torch.empty_like(x)
    dw_parts = torch.zeros(len(parts), d, dtype=torch.float32)
    pointers = [_ptr(t) for t in (x, weight, rstd, dy, dx)]
    if library.rn_openmp() and len(parts) > 1:
        library.rn_backward_par(
            *pointers, _ptr(dw_parts), *map(ctypes.c_int64, (d, rows, len(parts)))
        )
    elif rows:
        _run_parts(
            library.rn_backward,
            parts,
            lambda i, lo, hi: (
                *pointers,
                ctypes.c_void_p(dw_parts[i].data_ptr()),
                *map(ctypes.c_int64, (d, lo, hi)),
            ),
        )
    if weight is None:
        return dx, None
    return dx, dw_parts[0] if len(parts) == 1 else dw_parts.sum(0)


class NativeRMSNorm(torch.autograd.Function):
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` in C (fp32 CPU tensors), with its own backward.

    Inputs: x ``(..., D)`` (made contiguous if it is not), weight ``(D,)`` or None, eps (float).
    Output ``(..., D)`` fp32. Gradients for x and weight.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        eps: float,
    ) -> torch.Tensor:
        library = native_library()
        shape = x.shape
        x2 = x.contiguous().view(-1, shape[-1])
        weight = None if weight is None else weight.contiguous()
        y, rstd = _forward(library, x2, weight, eps)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        library = native_library()
        x2, weight, rstd = ctx.saved_tensors
        dy = dy.contiguous().view(x2.shape)
        dx, dweight = _backward(library, x2, weight, rstd, dy)
        return dx.view(ctx.shape), dweight, None
