"""C snippets shared by the native CPU kernels' sources (``selective_scan``, ``depthwise_conv``).

``PORTABLE_EXP`` is ``fast_exp``: a branch-free, vectorisable exp (Cody-Waite range reduction
and a degree-6 polynomial, ~1 ulp; exact 0 below -87 and inf above 88.5) in plain C.

``AVX512_PRELUDE`` defines ``SS_AVX512`` when the compiler targets AVX-512 F + DQ (and
``SS_PORTABLE`` is not set, which tests use to build the plain-C paths), with ``exp2_v``: 2^x on a
16-lane vector as ``x = k + f`` with ``f`` in [-1/2, 1/2] (``vreduceps``), 2^f by a degree-6 fit
(relative error 2e-8) and ``vscalefps`` (exact 0 for -inf, inf on overflow, NaN-propagating):
about half the instructions of a portable exp with clamps and exponent bit tricks.
"""

from __future__ import annotations

AVX512_PRELUDE = r"""
#if defined(__AVX512F__) && defined(__AVX512DQ__) && !defined(SS_PORTABLE)
#include <immintrin.h>
#define SS_AVX512 1
#endif

#define LOG2E 1.44269504088896341f

#ifdef SS_AVX512
#define FMA _mm512_fmadd_ps
#define SET1 _mm512_set1_ps
static inline __m512 exp2_v(__m512 x) {
    __m512 k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 p = SET1(1.5337577497120947e-4f);
    p = FMA(p, f, SET1(1.3399859890341759e-3f));
    p = FMA(p, f, SET1(9.618519805371761e-3f));
    p = FMA(p, f, SET1(5.550329014658928e-2f));
    p = FMA(p, f, SET1(2.4022646248340607e-1f));
    p = FMA(p, f, SET1(6.931471824645996e-1f));
    p = FMA(p, f, SET1(1.0f));
    return _mm512_scalef_ps(p, k);
}
#endif
"""

PORTABLE_EXP = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>

/* exp(x) = 2^k exp(r), k = round(x / ln2), r = x - k ln2 in [-ln2/2, ln2/2] (Cody-Waite). */
static inline float fast_exp(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float kf = xc * 1.44269504088896341f + 12582912.0f;
    kf = kf - 12582912.0f;
    float r = xc - kf * 0.693359375f;
    r = r + kf * 2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(float));
    float out = p * scale;
    out = x < -87.0f ? 0.0f : out;
    return x > 88.5f ? INFINITY : out;
}
"""
