/* Shared by the native kernels (expert_mlp.c, soft_routing.c): vector helpers and one register-blocked matmul
 * kernel for small float32 matrices. Everything here is static: each source file gets its own copy. */
#ifndef MEDMOE_NATIVE_GEMM_H
#define MEDMOE_NATIVE_GEMM_H
#include <math.h>
#include <stddef.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#ifdef __AVX512F__
#define VW 16 /* floats per vector */
#else
#define VW 8
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int vi __attribute__((vector_size(VW * 4)));

static inline vf loadv(const float *p) { return *(const vfu *)p; }
static inline void storev(float *p, vf v) { *(vfu *)p = v; }
static inline vf splat(float a) { return a - (vf){0}; }
static inline vf vmax(vf a, vf b) { /* C has no vector ?: */
    const vi take_a = a > b;
    return (vf)(((vi)a & take_a) | ((vi)b & ~take_a));
}

/* Horizontal sum and maximum. With AVX the halves are combined by shuffles in registers (GCC compiles the portable
 * loop below into stores to the stack and scalar adds, which made the expert backward's dot products with small N
 * about 15 % slower); the summation order is the same pairwise tree either way. */
static inline float hsum(vf v) {
#if defined(__AVX512F__)
    return _mm512_reduce_add_ps((__m512)v);
#elif defined(__AVX__)
    __m128 h = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#else
    float t[VW];
    for (int q = 0; q < VW; ++q) t[q] = v[q];
    for (int width = VW / 2; width > 0; width /= 2)
        for (int q = 0; q < width; ++q) t[q] += t[q + width];
    return t[0];
#endif
}

static inline float hmax(vf v) {
#if defined(__AVX512F__)
    return _mm512_reduce_max_ps((__m512)v);
#else
    float best = v[0];
    for (int q = 1; q < VW; ++q) best = v[q] > best ? v[q] : best;
    return best;
#endif
}

/* exp(x) within 1 ulp on [-87, 0] (checked in steps of 1e-4): Cephes' expf polynomial on [-ln2/2, ln2/2], 2^n from
 * the exponent bits. Inputs below -87.3 give 2^-126 (callers only pass x <= 0 after subtracting a maximum, and
 * normalise afterwards). */
static inline vf expv(vf x) {
    const vf magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
    x = vmax(x, splat(-87.33654f));
    vf t = x * splat(1.44269504088896341f) + magic;
    const vf n = t - magic;
    vf r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
    vf q = splat(1.9875691500e-4f);
    q = q * r + splat(1.3981999507e-3f);
    q = q * r + splat(8.3334519073e-3f);
    q = q * r + splat(4.1665795894e-2f);
    q = q * r + splat(1.6666665459e-1f);
    q = q * r + splat(5.0000001201e-1f);
    q = q * (r * r) + r + splat(1.0f);
    const vi bits = ((vi)t - (vi)magic + 127) << 23;
    return q * (vf)bits;
}

/* c[i][j0 : j0 + NV VW] (+)= sum_k A(i, k) b[k bs : k bs + NV VW] for MR rows: A(i, k) = a[i ai + k ak], rows of C
 * by pointer (slot rows are not evenly spaced). MR x NV accumulators stay in registers over the whole K loop. */
#define MICRO(MR, NV)                                                                                                 \
    static inline void micro_##MR##_##NV(int K, const float *a, long ai, long ak, const float *b, long bs, int j0,   \
                                         float *const *c, int acc) {                                                  \
        vf s[MR][NV];                                                                                                 \
        for (int i = 0; i < MR; ++i)                                                                                  \
            for (int v = 0; v < NV; ++v) s[i][v] = (vf){0};                                                           \
        for (int k = 0; k < K; ++k, b += bs) {                                                                        \
            vf bv[NV];                                                                                                \
            for (int v = 0; v < NV; ++v) bv[v] = loadv(b + v * VW);                                                   \
            const float *ak0 = a + k * ak;                                                                            \
            for (int i = 0; i < MR; ++i) {                                                                            \
                const float x = ak0[i * ai];                                                                          \
                for (int v = 0; v < NV; ++v) s[i][v] += x * bv[v];                                                    \
            }                                                                                                         \
        }                                                                                                             \
        for (int i = 0; i < MR; ++i)                                                                                  \
            for (int v = 0; v < NV; ++v) {                                                                            \
                float *ci = c[i] + j0 + v * VW;                                                                       \
                storev(ci, acc ? loadv(ci) + s[i][v] : s[i][v]);                                                      \
            }                                                                                                         \
    }
MICRO(8, 2)
MICRO(4, 2)
MICRO(1, 2)
MICRO(12, 1)
MICRO(4, 1)
MICRO(1, 1)

/* Floats of packing space gemm needs for inner dimension K. */
#define GEMM_PACK(K) ((size_t)(K) * 2 * VW)

/* C (M x N) = [C +] A (M x K) . B (K x N); N a multiple of VW; rows of B and C by pointer. With more than 16 rows
 * of C (or unevenly spaced rows of B) each block of 2 VW columns of B is first copied into pack (GEMM_PACK(K)
 * floats) as one contiguous panel: rows of B a multiple of 1 kB apart would otherwise share a few cache sets and
 * evict one another while the panel is reused for every block of rows of C. */
static inline void gemm(int M, int N, int K, const float *a, long ai, long ak, const float *const *b, float *const *c,
                        int acc, float *pack) {
    const long bs = K > 1 ? b[1] - b[0] : 0;
    int direct = M <= 16;
    for (int k = 2; k < K && direct; ++k) direct = b[k] - b[k - 1] == bs;
    for (int j = 0; j < N; j += 2 * VW) {
        const int nv = N - j >= 2 * VW ? 2 : 1;
        const float *panel = direct ? b[0] + j : pack;
        const long ps = direct ? bs : nv * VW;
        if (!direct)
            for (int k = 0; k < K; ++k) { /* rows far apart defeat the hardware prefetcher: ask ahead */
                if (k + 8 < K) __builtin_prefetch(b[k + 8] + j);
                if (j + 2 * VW < N) __builtin_prefetch(b[k] + j + 2 * VW), __builtin_prefetch(b[k] + j + 3 * VW);
                for (int v = 0; v < nv; ++v) storev(pack + (size_t)k * nv * VW + v * VW, loadv(b[k] + j + v * VW));
            }
        int i = 0;
        if (nv == 2) {
            for (; i + 8 <= M; i += 8) micro_8_2(K, a + i * ai, ai, ak, panel, ps, j, c + i, acc);
            for (; i + 4 <= M; i += 4) micro_4_2(K, a + i * ai, ai, ak, panel, ps, j, c + i, acc);
            for (; i < M; ++i) micro_1_2(K, a + i * ai, ai, ak, panel, ps, j, c + i, acc);
        } else {
            for (; i + 12 <= M; i += 12) micro_12_1(K, a + i * ai, ai, ak, panel, ps, j, c + i, acc);
            for (; i + 4 <= M; i += 4) micro_4_1(K, a + i * ai, ai, ak, panel, ps, j, c + i, acc);
            for (; i < M; ++i) micro_1_1(K, a + i * ai, ai, ak, panel, ps, j, c + i, acc);
        }
    }
}

static inline void even_rows(const float **rows, const float *base, int count, long stride) {
    for (int k = 0; k < count; ++k) rows[k] = base + k * stride;
}

/* dst (cols x rows) = src^T, src rows by pointer. */
static inline void transpose(float *dst, const float *const *src, int rows, int cols) {
    for (int j = 0; j < rows; ++j)
        for (int k = 0; k < cols; ++k) dst[(size_t)k * rows + j] = src[j][k];
}

#endif
