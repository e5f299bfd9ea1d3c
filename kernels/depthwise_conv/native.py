"""Depthwise causal Conv1d (+ SiLU), native CPU kernel: C compiled on first use, called via ctypes.

The short conv before every Mamba scan (Gu & Dao 2023, https://arxiv.org/abs/2312.00752),
written as a correlation with a start offset ``o``:

    pre_t = bias + sum_{j<K} v[j] x_{t+o+j},   causal: v = w, o = -(K-1);  reverse: v = flip(w), o = 0

with x read as zero outside [0, L). The interior t (every tap inside [0, L)) is one
``#pragma omp simd`` loop over t with the K taps in registers (K = 2, 3, 4 unrolled); the at most
K-1 edge positions on each side run a bounds-checked scalar loop, so x is never padded or copied.
The backward recomputes ``pre``, forms ``dpre = dy silu'(pre)`` (``silu' = s (1 + p (1 - s))``),
and gets ``dx`` as the same correlation of ``dpre`` with the flipped kernel and offset
``-o-(K-1)`` (the adjoint), ``dv[j] = sum_t dpre_t x_{t+o+j}`` and ``dbias = sum_t dpre_t``.
The forward splits the B C rows over threads and applies the SiLU in one vector pass per span
of rows (not per row: at L ~ 50 per-row loop remainders would dominate). The backward splits the
channels over threads, so a channel's weight and bias gradients belong to one thread (no
atomics); inside, it walks batch-outer over the thread's contiguous span of channels (streaming
reads) with 16-lane per-channel accumulators for dw/db. OpenMP on ``torch.get_num_threads()``
threads (Python threads when the library builds without OpenMP). ``SSMKIT_NATIVE=0`` disables
it (the reference then runs). See README.md for the measured speed.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch.autograd.function import once_differentiable

from ssmkit.kernels._native_build import _parts, _ptr, _run_parts, load_or_warn
from ssmkit.kernels._simd import PORTABLE_EXP

__all__ = ["NativeDepthwiseConv", "native_library"]

_SOURCE = (
    PORTABLE_EXP
    + r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* sigmoid: exp(-x) is 0 or inf at the extremes, which gives exactly 1 or 0 (no nan) */
static inline float dc_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

/* y = silu(y) over n contiguous elements, in place */
static inline void silu_span(float* y, int64_t n) {
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] * dc_sigmoid(y[i]);
}

/* g = dy silu'(g) over n contiguous elements, in place (g holds the pre-activation):
   silu'(p) = s (1 + p (1 - s)), s = sigmoid(p) */
static inline void silu_grad_span(const float* dy, float* g, int64_t n) {
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float p = g[i], sg = dc_sigmoid(p);
        g[i] = dy[i] * sg * (1.0f + p * (1.0f - sg));
    }
}

/* out_t = b + sum_{j<K} v[j] x_{t+o+j}, x zero outside [0, L). Interior [lo, hi) has every tap
   in range; K is a constant after inlining at the call sites below. */
static inline void corr_row(const float* x, const float* v, int64_t K, int64_t o, float b,
                            int64_t L, float* out) {
    int64_t lo = -o < 0 ? 0 : -o;
    if (lo > L) lo = L;
    int64_t hi = L - o - (K - 1);
    if (hi < lo) hi = lo;
    if (hi > L) hi = L;
    for (int64_t t = 0; t < L; ++t) {
        if (t == lo) t = hi;  /* skip the interior */
        if (t >= L) break;
        float acc = b;
        for (int64_t j = 0; j < K; ++j) {
            int64_t i = t + o + j;
            if (i >= 0 && i < L) acc += v[j] * x[i];
        }
        out[t] = acc;
    }
    const float* xs = x + lo + o;  /* lo + o >= 0 */
    #pragma omp simd
    for (int64_t t = lo; t < hi; ++t) {
        float acc = b;
        for (int64_t j = 0; j < K; ++j) acc += v[j] * xs[t - lo + j];
        out[t] = acc;
    }
}

static void corr_any(const float* x, const float* v, int64_t K, int64_t o, float b, int64_t L,
                     float* out) {
    if (K == 4) corr_row(x, v, 4, o, b, L, out);
    else if (K == 3) corr_row(x, v, 3, o, b, L, out);
    else if (K == 2) corr_row(x, v, 2, o, b, L, out);
    else corr_row(x, v, K, o, b, L, out);
}

/* the taps in correlation order: v = w (causal) or flip(w) (reverse) */
static inline void taps(const float* w, int64_t c, int64_t K, int64_t rev, float* v) {
    for (int64_t j = 0; j < K; ++j) v[j] = w[c * K + (rev ? K - 1 - j : j)];
}

/* x, y: (B, C, L) contiguous; w: (C, 1, K); bias: (C,) or NULL. Rows r = n C + c in [r0, r1),
   taken in memory order: the convs of a span of rows (~4096 values, L1-resident) first, then one
   SiLU pass over the whole span (a vector loop with one remainder per span, not one per row:
   with L ~ 50 the scalar sigmoids of per-row remainders would cost more than the vector part). */
void dc_forward(const float* x, const float* w, const float* bias, float* y, int64_t B,
                int64_t C, int64_t L, int64_t K, int64_t rev, int64_t silu, int64_t r0,
                int64_t r1) {
    (void)B;
    float* v = (float*)malloc(sizeof(float) * K);
    const int64_t o = rev ? 0 : -(K - 1), span = 4096 / L + 1;
    for (int64_t a = r0; a < r1; a += span) {
        const int64_t e = a + span < r1 ? a + span : r1;
        for (int64_t r = a; r < e; ++r) {
            const int64_t c = r % C;
            taps(w, c, K, rev, v);
            corr_any(x + r * L, v, K, o, bias ? bias[c] : 0.0f, L, y + r * L);
        }
        if (silu) silu_span(y + a * L, (e - a) * L);
    }
    free(v);
}

/* a[i] += sum of g_t xs_t over t = i mod 16 (whole 16- and 8-wide blocks as vectors, at most 7
   scalar steps); with ONES, of g_t */
#define DC_LANES(NAME, TERM)                                                                 \
    static inline void NAME(const float* g, const float* xs, int64_t n, float* a) {          \
        (void)xs;                                                                            \
        int64_t t = 0;                                                                       \
        for (; t + 16 <= n; t += 16) {                                                       \
            _Pragma("omp simd") for (int64_t i = 0; i < 16; ++i) a[i] += TERM(t + i);        \
        }                                                                                    \
        if (t + 8 <= n) {                                                                    \
            _Pragma("omp simd") for (int64_t i = 0; i < 8; ++i) a[i] += TERM(t + i);         \
            t += 8;                                                                          \
        }                                                                                    \
        for (int64_t i = 0; t < n; ++t, ++i) a[i] += TERM(t);                                \
    }
#define DC_DOT(t) (g[t] * xs[t])
#define DC_SUM(t) (g[t])
DC_LANES(dot_lanes, DC_DOT)
DC_LANES(sum_lanes, DC_SUM)

/* dy, dx: (B, C, L) contiguous; dw: (C, 1, K); db: (C,) (written even when bias is NULL, then
   unused). Channels [c0, c1) belong to this call (their dw/db to one thread, no atomics); the
   loop is batch-outer, so each step reads the contiguous span of rows (n, c0..c1) of x and dy:
   a stream the prefetcher follows, unlike one channel's rows C L apart. With silu, the span's
   pre-activations are recomputed into scratch and dpre = dy silu'(pre) is one vector pass over
   it. dw/db are accumulated in 16 lanes per channel and tap, summed once at the end. */
void dc_backward(const float* x, const float* w, const float* bias, const float* dy, float* dx,
                 float* dw, float* db, int64_t B, int64_t C, int64_t L, int64_t K, int64_t rev,
                 int64_t silu, int64_t c0, int64_t c1) {
    const int64_t nc = c1 - c0, o = rev ? 0 : -(K - 1), oa = -o - (K - 1);
    if (nc <= 0) return;
    /* the SiLU scratch holds `chunk` rows (~16K values, L2-resident), not the whole span */
    const int64_t chunk = L < 16384 ? (16384 / L < nc ? 16384 / L : nc) : 1;
    float* work = (float*)malloc(sizeof(float) * (2 * nc * K + nc * (K + 1) * 16 +
                                                  (silu ? chunk * L : 0)));
    float *v = work, *vf = v + nc * K, *acc = vf + nc * K, *gs = acc + nc * (K + 1) * 16;
    for (int64_t c = c0; c < c1; ++c) {
        taps(w, c, K, rev, v + (c - c0) * K);
        for (int64_t j = 0; j < K; ++j) vf[(c - c0) * K + j] = v[(c - c0) * K + K - 1 - j];
    }
    memset(acc, 0, sizeof(float) * nc * (K + 1) * 16);
    for (int64_t n = 0; n < B; ++n) {
        for (int64_t i0 = 0; i0 < nc; i0 += chunk) {
            const int64_t i1 = i0 + chunk < nc ? i0 + chunk : nc, base = (n * C + c0 + i0) * L;
            const float* gspan = dy + base;
            if (silu) {
                for (int64_t i = i0; i < i1; ++i)
                    corr_any(x + base + (i - i0) * L, v + i * K, K, o,
                             bias ? bias[c0 + i] : 0.0f, L, gs + (i - i0) * L);
                silu_grad_span(dy + base, gs, (i1 - i0) * L);
                gspan = gs;
            }
            for (int64_t i = i0; i < i1; ++i) {
                const float *g = gspan + (i - i0) * L, *xr = x + base + (i - i0) * L;
                float* a = acc + i * (K + 1) * 16;
                sum_lanes(g, NULL, L, a + K * 16); /* dbias */
                for (int64_t j = 0; j < K; ++j) {  /* dv[j]: t with t+o+j in [0, L) */
                    int64_t t0 = -(o + j) > 0 ? -(o + j) : 0;
                    int64_t t1 = L - (o + j) < L ? L - (o + j) : L;
                    if (t1 > t0) dot_lanes(g + t0, xr + o + j + t0, t1 - t0, a + j * 16);
                }
                corr_any(g, vf + i * K, K, oa, 0.0f, L, dx + base + (i - i0) * L); /* adjoint */
            }
        }
    }
    for (int64_t i = 0; i < nc; ++i) {
        const int64_t c = c0 + i;
        for (int64_t j = 0; j <= K; ++j) {
            const float* a = acc + (i * (K + 1) + j) * 16;
            float sum = 0.0f;
            for (int64_t l = 0; l < 16; ++l) sum += a[l];
            if (j < K) dw[c * K + (rev ? K - 1 - j : j)] = sum;
            else db[c] = sum;
        }
    }
    free(work);
}

#ifdef _OPENMP
#include <omp.h>
#endif
int64_t dc_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* the same on nthreads OpenMP threads: the forward over all B C rows, the backward over all C
   channels (a channel's dw/db: one thread) */
void dc_forward_par(const float* x, const float* w, const float* bias, float* y, int64_t B,
                    int64_t C, int64_t L, int64_t K, int64_t rev, int64_t silu,
                    int64_t nthreads) {
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)nthreads)
    {
        int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t P = B * C;
        dc_forward(x, w, bias, y, B, C, L, K, rev, silu, P * tid / nt, P * (tid + 1) / nt);
    }
#else
    (void)nthreads;
    dc_forward(x, w, bias, y, B, C, L, K, rev, silu, 0, B * C);
#endif
}

void dc_backward_par(const float* x, const float* w, const float* bias, const float* dy,
                     float* dx, float* dw, float* db, int64_t B, int64_t C, int64_t L, int64_t K,
                     int64_t rev, int64_t silu, int64_t nthreads) {
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)nthreads)
    {
        int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
        dc_backward(x, w, bias, dy, dx, dw, db, B, C, L, K, rev, silu, C * tid / nt,
                    C * (tid + 1) / nt);
    }
#else
    (void)nthreads;
    dc_backward(x, w, bias, dy, dx, dw, db, B, C, L, K, rev, silu, 0, C);
#endif
}
"""
)

_NAMES = ("dc_forward", "dc_backward", "dc_forward_par", "dc_backward_par")


@functools.cache
def native_library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (with one warning) when it cannot be built.

    ``SSMKIT_NATIVE=0`` disables it (the reference then runs).
    """
    return load_or_warn(
        "depthwise_causal_conv1d", _SOURCE, _NAMES, "depthwise_conv", "dc_openmp", "F.conv1d"
    )


def _run(
    library: ctypes.CDLL, name: str, pointers: list[ctypes.c_void_p], dims: tuple[int, ...]
) -> None:
    """Run ``dc_<name>`` over all rows (forward) or channels (backward): inside OpenMP, or split
    over Python threads."""
    parts = _parts(dims[0] * dims[1] if name == "forward" else dims[1])
    if library.dc_openmp() and len(parts) > 1:
        getattr(library, f"dc_{name}_par")(*pointers, *map(ctypes.c_int64, (*dims, len(parts))))
        return
    _run_parts(
        getattr(library, f"dc_{name}"),
        parts,
        lambda i, lo, hi: (*pointers, *map(ctypes.c_int64, (*dims, lo, hi))),
    )


class NativeDepthwiseConv(torch.autograd.Function):
    """``act(depthwise_conv(x))`` in C (fp32, contiguous CPU tensors), with its own backward.

    Inputs: x ``(B, C, L)``, weight ``(C, 1, K)``, bias ``(C,)`` or None, ``reverse`` (bool,
    anti-causal), ``silu`` (bool). Output ``(B, C, L)``. Gradients for x, weight and bias.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        reverse: bool,
        silu: bool,
    ) -> torch.Tensor:
        library = native_library()
        x, weight = x.contiguous(), weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        dims = (*x.shape, weight.shape[-1], int(reverse), int(silu))
        _run(library, "forward", [_ptr(x), _ptr(weight), _ptr(bias), _ptr(y)], dims)
        ctx.save_for_backward(x, weight, bias)
        ctx.flags = (int(reverse), int(silu))
        return y

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        library = native_library()
        x, weight, bias = ctx.saved_tensors
        dy = dy.contiguous()
        dx = torch.empty_like(x)
        dweight = torch.empty_like(weight)
        dbias = torch.empty(weight.shape[0], dtype=weight.dtype)
        pointers = [_ptr(t) for t in (x, weight, bias, dy, dx, dweight, dbias)]
        _run(library, "backward", pointers, (*x.shape, weight.shape[-1], *ctx.flags))
        return dx, dweight, None if bias is None else dbias, None, None
