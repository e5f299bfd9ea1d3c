"""C helpers shared by the native CPU kernels' sources (``native.py``, ``fused.py``).

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
