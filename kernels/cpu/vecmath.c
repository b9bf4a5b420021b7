/* vecmath.c: the small inner loops of attention and the SSM scan, AVX2/FMA with a portable fallback. */
#include <math.h>
#include "kernels/cpu/cpu_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- portable versions (also the reference for the AVX2 ones) ---- */

static float dot_c(const float *a, const float *b, int n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float ssm_step_c(float *h, const float *A, const float *B, const float *C, float delta, float du, int n)
{
    float y = 0.0f;
    for (int s = 0; s < n; s++) {
        h[s] = expf(delta * A[s]) * h[s] + du * B[s];
        y += C[s] * h[s];
    }
    return y;
}

#if defined(__x86_64__)
#define AVX_TARGET __attribute__((target("avx2,fma")))

static inline AVX_TARGET float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static AVX_TARGET float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/*
 * exp(x) for x <= 0 (the SSM decay): x = k ln2 + r with |r| <= ln2/2, exp(r)
 * by a degree-6 Taylor-like minimax polynomial, times 2^k built in the
 * exponent bits.  Relative error about 2 ulp; inputs below -87 give ~1e-38.
 */
static inline AVX_TARGET __m256 exp_neg_avx2(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    x = _mm256_max_ps(x, lo);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);
    /* exp(r) ~ 1 + r + r^2 (1/2 + r (1/6 + r (1/24 + r (1/120 + r/720)))) */
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static AVX_TARGET float ssm_step_avx2(float *h, const float *A, const float *B, const float *C, float delta,
                                      float du, int n)
{
    __m256 vd = _mm256_set1_ps(delta), vdu = _mm256_set1_ps(du), acc = _mm256_setzero_ps();
    int s = 0;
    for (; s + 8 <= n; s += 8) {
        __m256 dA = exp_neg_avx2(_mm256_mul_ps(vd, _mm256_loadu_ps(A + s)));
        __m256 hv = _mm256_fmadd_ps(dA, _mm256_loadu_ps(h + s), _mm256_mul_ps(vdu, _mm256_loadu_ps(B + s)));
        _mm256_storeu_ps(h + s, hv);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(C + s), hv, acc);
    }
    float y = hsum8(acc);
    if (s < n)
        y += ssm_step_c(h + s, A + s, B + s, C + s, delta, du, n - s);
    return y;
}
#endif

float cpu_dot(const float *a, const float *b, int n)
{
#if defined(__x86_64__)
    if (cpu_use_avx2())
        return dot_avx2(a, b, n);
#endif
    return dot_c(a, b, n);
}

float cpu_ssm_step(float *h, const float *A, const float *B, const float *C, float delta, float du, int n)
{
#if defined(__x86_64__)
    if (cpu_use_avx2())
        return ssm_step_avx2(h, A, B, C, delta, du, n);
#endif
    return ssm_step_c(h, A, B, C, delta, du, n);
}
