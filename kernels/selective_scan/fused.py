"""Fused Mamba-1 mixer interior for inference on CPU: conv, SiLU, x_proj, dt projection,
softplus, scan, skip, gate, in time-major (B, L, E) layout, one native call per direction.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
https://arxiv.org/abs/2312.00752 (Algorithm 2 with the ``mamba_ssm`` module layout); the reversed
direction is Vision Mamba's (Zhu et al., 2024, https://arxiv.org/abs/2401.09417).

Given ``xi``, ``z`` ``(B, L, E)`` (the two halves of ``in_proj``'s output, read in place through
their row stride, so no transposes or copies), :func:`mamba_inner_inference` walks time in chunks
of about ``CHUNK`` steps (from the end with ``reverse``); per chunk, on the process's OpenMP threads:

1. (rows split over threads) ``u_t = silu(conv_b + sum_k conv_w[k] xi_{t-(K-1)+k})`` (causal,
   zero history), or with ``reverse`` the causal conv of the reversed sequence, ``u_t =
   silu(conv_b + sum_k conv_w[k] xi_{t+(K-1)-k})``, then ``x_dbl_t = x_proj_w u_t`` = ``(dt, B,
   C)``, into chunk-sized buffers (so u and x_dbl never exist for the whole sequence);
2. (blocks of 16 channels split over threads) the scan over the chunk. The SIMD lanes are
   channels, so ``B_t[n]``/``C_t[n]`` are broadcasts shared by the block and the read-out needs no
   horizontal sum; the 16 x N state is carried between chunks in memory:
   ``Delta = softplus(dt_bias + dt_proj_w dt_t)`` (threshold 20, computed one step ahead: it does
   not depend on the state, so its latency hides), ``h = exp(Delta A) h + Delta u_t B_t``,
   ``y_t = (<C_t, h> + D u_t) silu(z_t)``, written (or, with ``accumulate``, added) as
   ``scale * y_t`` into ``out`` ``(B, L, E)`` at any row stride.

So BiMamba's two directions share ``in_proj``'s output and write their mean straight into the
``out_proj`` input. The exp is exp2 by Cody-Waite reduction (``vreduceps``), a degree-6 polynomial
and ``vscalefps`` (~1 ulp, exact 0 for -inf, NaN-propagating); softplus is
``max(x, 0) + log1p(exp(-|x|))`` with ``log1p(e) = 2 atanh(e / (2 + e))`` (no cancellation).
Built with ``-fopenmp`` the library shares torch's OpenMP runtime (the threads that just ran the
matmuls); without OpenMP it runs on one thread, without AVX-512 a portable C loop with the same
math runs. Inference only: nothing is saved for a backward; the caller must not need gradients.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ssmkit.kernels._native_build import _ptr, load_or_warn
from ssmkit.kernels._simd import AVX512_PRELUDE

LANES = 16  # channels per block (one AVX-512 vector)

_SOURCE = (
    r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

"""
    + AVX512_PRELUDE
    + r"""
/* ---- portable scalar path ---- */
static inline float sp_s(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float silu_s(float x) { return x / (1.0f + expf(-x)); }

#ifdef SS_AVX512
/* softplus, threshold 20: max(x, 0) + log1p(exp(-|x|)), log1p(e) = 2 atanh(s), s = e/(2+e). */
static inline __m512 softplus_v(__m512 x) {
    __m512 e = exp2_v(_mm512_mul_ps(_mm512_abs_ps(x), SET1(-LOG2E)));
    __m512 s = _mm512_div_ps(e, _mm512_add_ps(e, SET1(2.0f)));
    __m512 s2 = _mm512_mul_ps(s, s);
    __m512 q = SET1(1.0f / 15.0f);
    q = FMA(q, s2, SET1(1.0f / 13.0f));
    q = FMA(q, s2, SET1(1.0f / 11.0f));
    q = FMA(q, s2, SET1(1.0f / 9.0f));
    q = FMA(q, s2, SET1(1.0f / 7.0f));
    q = FMA(q, s2, SET1(1.0f / 5.0f));
    q = FMA(q, s2, SET1(1.0f / 3.0f));
    q = FMA(q, s2, SET1(1.0f));
    __m512 r = FMA(_mm512_add_ps(s, s), q, _mm512_max_ps(x, _mm512_setzero_ps()));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, SET1(20.0f), _CMP_GT_OQ), r, x);
}
static inline __m512 silu_v(__m512 x) {
    __m512 e = exp2_v(_mm512_mul_ps(x, SET1(-LOG2E)));
    return _mm512_div_ps(x, _mm512_add_ps(e, SET1(1.0f)));
}
static inline __mmask16 lane_mask(int64_t e0, int64_t e_end) {
    int64_t rem = e_end - e0;
    return rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
}
#endif

/* u[t - t_off, e] = silu(b[e] + sum_k wT[k, e] x[t + off(k), e]), off(k) = k - (K-1) (causal) or
   (K-1) - k (reverse); x rows at stride sx, u rows at stride su; channels [e_begin, e_end). */
static void conv_range(const float* x, int64_t sx, const float* wT, const float* bias, float* u,
                       int64_t su, int64_t L, int64_t E, int64_t K, int64_t reverse,
                       int64_t e_begin, int64_t e_end, int64_t t_begin, int64_t t_end,
                       int64_t t_off) {
    /* times [t_begin, t_end) go to u rows t - t_off */
    for (int64_t t = t_begin; t < t_end; ++t) {
#ifdef SS_AVX512
        for (int64_t e0 = e_begin; e0 < e_end; e0 += 16) {
            __mmask16 m = lane_mask(e0, e_end);
            __m512 acc = bias ? _mm512_maskz_loadu_ps(m, bias + e0) : _mm512_setzero_ps();
            for (int64_t k = 0; k < K; ++k) {
                int64_t j = reverse ? t + (K - 1) - k : t - (K - 1) + k;
                if (j < 0 || j >= L) continue;
                acc = FMA(_mm512_maskz_loadu_ps(m, wT + k * E + e0),
                          _mm512_maskz_loadu_ps(m, x + j * sx + e0), acc);
            }
            _mm512_mask_storeu_ps(u + (t - t_off) * su + e0, m, silu_v(acc));
        }
#else
        for (int64_t e = e_begin; e < e_end; ++e) {
            float acc = bias ? bias[e] : 0.0f;
            for (int64_t k = 0; k < K; ++k) {
                int64_t j = reverse ? t + (K - 1) - k : t - (K - 1) + k;
                if (j >= 0 && j < L) acc += wT[k * E + e] * x[j * sx + e];
            }
            u[(t - t_off) * su + e] = silu_s(acc);
        }
#endif
    }
}

#ifdef SS_AVX512
/* softplus(bias + sum_r row[r] wT[r, :]) for one block of channels (two partial sums). */
static inline __m512 delta_at(const float* row, const float* wT, __m512 bv, int64_t R, int64_t E,
                              int64_t e0, __mmask16 m) {
    __m512 d0 = bv, d1 = _mm512_setzero_ps();
    int64_t r = 0;
    for (; r + 1 < R; r += 2) {
        d0 = FMA(SET1(row[r]), _mm512_maskz_loadu_ps(m, wT + r * E + e0), d0);
        d1 = FMA(SET1(row[r + 1]), _mm512_maskz_loadu_ps(m, wT + (r + 1) * E + e0), d1);
    }
    if (r < R) d0 = FMA(SET1(row[r]), _mm512_maskz_loadu_ps(m, wT + r * E + e0), d0);
    return softplus_v(_mm512_add_ps(d0, d1));
}
#endif

/* The scan. u (L, E) rows at stride su; xd (L, R + 2N) rows at stride sxd = (dt, B, C);
   z rows at stride sz (or NULL); wT (R, E) = dt_proj_w transposed; bias (E,); a2 (N, E) =
   A transposed times log2(e); D (E,) or NULL; out rows at stride so. */
#ifdef SS_AVX512
static inline __attribute__((always_inline)) void scan_block(
        const float* u, int64_t su, const float* xd, int64_t sxd, const float* z, int64_t sz,
        const float* wT, const float* bias, const float* a2, const float* D, float* out,
        int64_t so, float scale, int64_t accumulate, int64_t reverse, int64_t t_begin,
        int64_t t_end, int64_t E, int64_t R, const int64_t N, __m512* h, __m512* a,
        float* state, int64_t e0, __mmask16 m) {
    /* times [t_begin, t_end) (backwards with reverse); u and xd hold rows t - t_begin; the
       block's state (N x 16) is read from and written back to state */
    for (int64_t n = 0; n < N; ++n) {
        h[n] = _mm512_loadu_ps(state + n * 16);
        a[n] = _mm512_maskz_loadu_ps(m, a2 + n * E + e0);
    }
    const int64_t L = t_end - t_begin;
    const __m512 bv = _mm512_maskz_loadu_ps(m, bias + e0);
    const __m512 dv = D ? _mm512_maskz_loadu_ps(m, D + e0) : _mm512_setzero_ps();
    const __m512 sv = SET1(scale);
    /* Delta does not depend on the state: it is computed one step ahead, so its latency hides
       behind the state update. */
    __m512 delta_next = delta_at(xd + (reverse ? L - 1 : 0) * sxd, wT, bv, R, E, e0, m);
    for (int64_t s = 0; s < L; ++s) {
        const int64_t i = reverse ? L - 1 - s : s, t = t_begin + i; /* chunk row, time */
        const float* row = xd + i * sxd;
        const __m512 delta = delta_next;
        const int64_t i_next = s + 1 < L ? (reverse ? i - 1 : i + 1) : i;
        delta_next = delta_at(xd + i_next * sxd, wT, bv, R, E, e0, m);
        const __m512 uv = _mm512_maskz_loadu_ps(m, u + i * su + e0);
        const __m512 du = _mm512_mul_ps(delta, uv);
        const float *Bp = row + R, *Cp = row + R + N;
        __m512 acc0 = _mm512_mul_ps(dv, uv), acc1 = _mm512_setzero_ps();
        #pragma GCC unroll 8
        for (int64_t n = 0; n < N; n += 2) {
            __m512 d0 = exp2_v(_mm512_mul_ps(delta, a[n]));
            h[n] = FMA(d0, h[n], _mm512_mul_ps(du, SET1(Bp[n])));
            acc0 = FMA(SET1(Cp[n]), h[n], acc0);
            if (n + 1 < N) {
                __m512 d1 = exp2_v(_mm512_mul_ps(delta, a[n + 1]));
                h[n + 1] = FMA(d1, h[n + 1], _mm512_mul_ps(du, SET1(Bp[n + 1])));
                acc1 = FMA(SET1(Cp[n + 1]), h[n + 1], acc1);
            }
        }
        __m512 y = _mm512_add_ps(acc0, acc1);
        if (z) {
            __m512 zv = _mm512_maskz_loadu_ps(m, z + t * sz + e0);
            y = _mm512_mul_ps(y, silu_v(zv));
        }
        float* op = out + t * so + e0;
        y = accumulate ? FMA(y, sv, _mm512_maskz_loadu_ps(m, op)) : _mm512_mul_ps(y, sv);
        _mm512_mask_storeu_ps(op, m, y);
    }
    for (int64_t n = 0; n < N; ++n) _mm512_storeu_ps(state + n * 16, h[n]);
}
#endif

/* One chunk [t_begin, t_end) of the scan for channels [e_begin, e_end); u, xd hold the chunk's
   rows (t - t_begin); state (ceil(E / 16) blocks of N x 16) carries h between chunks. */
static void scan_range(const float* u, int64_t su, const float* xd, int64_t sxd, const float* z,
                       int64_t sz, const float* wT, const float* bias, const float* a2,
                       const float* D, float* out, int64_t so, float scale, int64_t accumulate,
                       int64_t reverse, int64_t t_begin, int64_t t_end, int64_t E, int64_t R,
                       int64_t N, float* state, int64_t e_begin, int64_t e_end) {
#ifdef SS_AVX512
    for (int64_t e0 = e_begin; e0 < e_end; e0 += 16) {
        __mmask16 m = lane_mask(e0, e_end);
        float* st = state + e0 * N;
        if (N == 16) {
            /* fixed size and a fully unrolled n loop */
            __m512 h[16], a[16];
            scan_block(u, su, xd, sxd, z, sz, wT, bias, a2, D, out, so, scale, accumulate,
                       reverse, t_begin, t_end, E, R, 16, h, a, st, e0, m);
        } else {
            __m512 h[N], a[N];
            scan_block(u, su, xd, sxd, z, sz, wT, bias, a2, D, out, so, scale, accumulate,
                       reverse, t_begin, t_end, E, R, N, h, a, st, e0, m);
        }
    }
#else
    const int64_t L = t_end - t_begin;
    for (int64_t e = e_begin; e < e_end; ++e) {
        float* st = state + (e & ~(int64_t)15) * N + (e & 15);
        for (int64_t s = 0; s < L; ++s) {
            const int64_t i = reverse ? L - 1 - s : s, t = t_begin + i;
            const float* row = xd + i * sxd;
            float dl = bias[e];
            for (int64_t r = 0; r < R; ++r) dl += row[r] * wT[r * E + e];
            const float delta = sp_s(dl), uv = u[i * su + e], du = delta * uv;
            float y = D ? D[e] * uv : 0.0f;
            for (int64_t n = 0; n < N; ++n) {
                float hn = exp2f(delta * a2[n * E + e]) * st[n * 16] + du * row[R + n];
                st[n * 16] = hn;
                y += row[R + N + n] * hn;
            }
            if (z) y *= silu_s(z[t * sz + e]);
            float* op = out + t * so + e;
            *op = accumulate ? *op + scale * y : scale * y;
        }
    }
#endif
}

/* xd[i, :] = u[i, :] @ xw for rows [0, rows); xw (E, P) = x_proj_w transposed. */
static void xproj_rows(const float* u, int64_t rows, int64_t E, const float* xw, int64_t P,
                       float* xd) {
    int64_t i = 0;
#ifdef SS_AVX512
    for (; i + 4 <= rows; i += 4) {
        const float *u0 = u + i * E, *u1 = u0 + E, *u2 = u1 + E, *u3 = u2 + E;
        for (int64_t p0 = 0; p0 < P; p0 += 16) {
            __mmask16 m = lane_mask(p0, P);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t e = 0; e < E; ++e) {
                __m512 w = _mm512_maskz_loadu_ps(m, xw + e * P + p0);
                a0 = FMA(SET1(u0[e]), w, a0);
                a1 = FMA(SET1(u1[e]), w, a1);
                a2 = FMA(SET1(u2[e]), w, a2);
                a3 = FMA(SET1(u3[e]), w, a3);
            }
            _mm512_mask_storeu_ps(xd + i * P + p0, m, a0);
            _mm512_mask_storeu_ps(xd + (i + 1) * P + p0, m, a1);
            _mm512_mask_storeu_ps(xd + (i + 2) * P + p0, m, a2);
            _mm512_mask_storeu_ps(xd + (i + 3) * P + p0, m, a3);
        }
    }
#endif
    for (; i < rows; ++i)
        for (int64_t p = 0; p < P; ++p) {
            float acc = 0.0f;
            for (int64_t e = 0; e < E; ++e) acc += u[i * E + e] * xw[e * P + p];
            xd[i * P + p] = acc;
        }
}

#ifdef _OPENMP
#include <omp.h>
#endif
int64_t mf_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* One direction of the mixer interior, time chunk by time chunk (forward, or from the end with
   reverse), on nthreads OpenMP threads sharing the process's (torch's) runtime:
     A. the chunk's rows split over threads: conv + SiLU for all channels into ubuf, then x_proj
        into xdbuf;  (barrier)
     B. channel blocks split over threads: the scan over the chunk, state carried in memory;
        (barrier)
   so u and x_dbl never exist for the whole sequence. x (L rows, stride sx) is the conv input,
   z the gate (or NULL); convT (K, E), conv_b (E,) or NULL; xw (E, P = R + 2N); dtT (R, E);
   dt_b (E,); a2 (N, E) = A^T log2(e); D (E,) or NULL; out rows at stride so. */
int64_t mf_direction(const float* x, int64_t sx, const float* z, int64_t sz, const float* convT,
                     const float* conv_b, const float* xw, const float* dtT, const float* dt_b,
                     const float* a2, const float* D, float* out, int64_t so, float scale,
                     int64_t accumulate, int64_t reverse, int64_t L, int64_t E, int64_t R,
                     int64_t N, int64_t K, int64_t chunk, int64_t nthreads) {
    const int64_t P = R + 2 * N, blocks = (E + 15) / 16;
    const int64_t n_chunks = (L + chunk - 1) / chunk;
    float* ubuf = (float*)malloc(sizeof(float) * (chunk * E + chunk * P + blocks * 16 * N));
    if (!ubuf) return 1;
    float *xdbuf = ubuf + chunk * E, *state = xdbuf + chunk * P;
    memset(state, 0, sizeof(float) * blocks * 16 * N);
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)(nthreads > 0 ? nthreads : 1))
#endif
    {
#ifdef _OPENMP
        const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int64_t tid = 0, nt = 1;
#endif
        const int64_t lo = blocks * tid / nt * 16;
        int64_t hi = blocks * (tid + 1) / nt * 16;
        if (hi > E) hi = E;
        for (int64_t c = 0; c < n_chunks; ++c) {
            const int64_t t_begin = reverse ? (L - (c + 1) * chunk > 0 ? L - (c + 1) * chunk : 0)
                                            : c * chunk;
            const int64_t t_end = reverse ? L - c * chunk
                                          : (t_begin + chunk < L ? t_begin + chunk : L);
            const int64_t rows = t_end - t_begin;
            const int64_t ra = rows * tid / nt, rb = rows * (tid + 1) / nt;
            conv_range(x, sx, convT, conv_b, ubuf, E, L, E, K, reverse, 0, E, t_begin + ra,
                       t_begin + rb, t_begin);
            xproj_rows(ubuf + ra * E, rb - ra, E, xw, P, xdbuf + ra * P);
#ifdef _OPENMP
            #pragma omp barrier
#endif
            scan_range(ubuf, E, xdbuf, P, z, sz, dtT, dt_b, a2, D, out, so, scale, accumulate,
                       reverse, t_begin, t_end, E, R, N, state, lo, hi);
#ifdef _OPENMP
            #pragma omp barrier
#endif
        }
    }
    free(ubuf);
    return 0;
}
"""
)

_NAMES = ("mf_openmp", "mf_direction")
# Target time steps per chunk. Each chunk costs two thread barriers, which a busy machine makes
# expensive (a descheduled thread stalls the other), so chunks are long; the length is evened out
# over the sequence (L = 4097 runs as 4 chunks of 1025, not 4 of 1024 and one of 1).
CHUNK = 1024


def _chunk(length: int) -> int:
    count = max(1, round(length / CHUNK))
    return -(-length // count)


def _load(library: ctypes.CDLL) -> ctypes.CDLL:
    for name in _NAMES:
        getattr(library, name).restype = ctypes.c_int64
    return library


@functools.cache
def fused_library() -> ctypes.CDLL | None:
    """The compiled fused kernels, or None (with one warning) when they cannot be built.

    ``SSMKIT_NATIVE=0`` disables them (callers then take the unfused path).
    """
    library = load_or_warn(
        "mamba_inner_inference", _SOURCE, _NAMES, "mamba_fused", "mf_openmp", "the unfused path"
    )
    return None if library is None else _load(library)


def fused_available(*tensors: torch.Tensor | None) -> bool:
    """Whether :func:`mamba_inner_inference` can run on these tensors now.

    True when the kernels are built, every tensor is an fp32 CPU tensor, and no gradient is being
    recorded for any of them (``torch.no_grad`` / ``torch.inference_mode``, or no tensor requires
    grad).
    """
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in present):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    return fused_library() is not None


def _rows(name: str, t: torch.Tensor, batch: int, length: int, channels: int) -> None:
    if t.dim() != 3 or tuple(t.shape) != (batch, length, channels) or t.stride(-1) != 1:
        raise ValueError(
            f"mamba_inner_inference: {name} must be (B, L, E) = {(batch, length, channels)} with "
            f"unit stride in E, got shape {tuple(t.shape)}, strides {t.stride()}."
        )


def mamba_inner_inference(
    xi: torch.Tensor,
    z: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_proj_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor | None,
    *,
    reverse: bool = False,
    out: torch.Tensor | None = None,
    scale: float = 1.0,
    accumulate: bool = False,
) -> torch.Tensor:
    """Mamba-1 mixer interior between ``in_proj`` and ``out_proj``, inference only (fp32, CPU).

    Args:
        xi: ``(B, L, E)`` conv input, unit stride in E (a view of ``in_proj``'s output is fine).
        z: ``(B, L, E)`` gate (same layout rule) or None.
        conv_weight: ``(E, 1, K)`` depthwise causal conv (``nn.Conv1d`` layout); conv_bias ``(E,)``.
        x_proj_weight: ``(R + 2N, E)``; dt_proj_weight ``(E, R)``; dt_proj_bias ``(E,)``.
        A: ``(E, N)`` (``-exp(A_log)``); D: ``(E,)`` or None.
        reverse: run the direction over the reversed sequence (its own causal conv and scan),
            with inputs and output in the original time order.
        out: ``(B, L, E)`` fp32, unit stride in E, to write into (a new tensor when None).
        scale: the result is multiplied by it (0.5 for BiMamba's mean).
        accumulate: add into ``out`` instead of overwriting it.

    Returns:
        ``out`` ``(B, L, E)``: ``scale * (scan(u) + D u) * silu(z)`` (plus ``out``'s old value when
        ``accumulate``).
    """
    library = fused_library()
    if library is None:
        raise RuntimeError("mamba_inner_inference: the fused CPU kernels are not available.")
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (xi, z, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D)
    ):
        raise RuntimeError(
            "mamba_inner_inference is inference only (no backward); run it under torch.no_grad() "
            "or torch.inference_mode(), or use selective_scan for training."
        )
    batch, length, channels = xi.shape
    n_state = A.shape[1]
    rank = dt_proj_weight.shape[1]
    k = conv_weight.shape[-1]
    _rows("xi", xi, batch, length, channels)
    if z is not None:
        _rows("z", z, batch, length, channels)
    if out is None:
        if accumulate:
            raise ValueError("mamba_inner_inference: accumulate=True needs an out tensor.")
        out = torch.empty(batch, length, channels)
    else:
        _rows("out", out, batch, length, channels)
    if x_proj_weight.shape != (rank + 2 * n_state, channels):
        raise ValueError(
            f"mamba_inner_inference: x_proj_weight must be (R + 2N, E) = "
            f"{(rank + 2 * n_state, channels)}, got {tuple(x_proj_weight.shape)}."
        )
    wT_conv = conv_weight.reshape(channels, k).t().contiguous()  # (K, E)
    wT_dt = dt_proj_weight.t().contiguous()  # (R, E)
    a2 = (A.t() * 1.4426950408889634).contiguous()  # (N, E), exp(d A) = 2^(d A log2 e)
    bias_c = None if conv_bias is None else conv_bias.contiguous()
    dt_bias = dt_proj_bias.contiguous()
    D_c = None if D is None else D.contiguous()
    x_w = x_proj_weight.t().contiguous()  # (E, R + 2N)
    ints = ctypes.c_int64
    threads = torch.get_num_threads()
    for b in range(batch):
        xb, zb, ob = xi[b], None if z is None else z[b], out[b]
        status = library.mf_direction(
            _ptr(xb),
            ints(xb.stride(0)),
            _ptr(zb),
            ints(0 if zb is None else zb.stride(0)),
            _ptr(wT_conv),
            _ptr(bias_c),
            _ptr(x_w),
            _ptr(wT_dt),
            _ptr(dt_bias),
            _ptr(a2),
            _ptr(D_c),
            _ptr(ob),
            ints(ob.stride(0)),
            ctypes.c_float(scale),
            *map(
                ints,
                (accumulate, reverse, length, channels, rank, n_state, k, _chunk(length), threads),
            ),
        )
        if status != 0:
            raise MemoryError("mamba_inner_inference: could not allocate the chunk buffers.")
    return out
