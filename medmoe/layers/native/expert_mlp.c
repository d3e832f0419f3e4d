/* Per-expert linear layers with few rows per expert (float32, CPU): one pass over the weights per direction.
 *
 * Built and loaded by medmoe/layers/native/build.py and called through medmoe/layers/native/experts.py (ctypes),
 * which holds the contract and the checks.
 *
 * For each of n experts e, with r rows, K inputs and N outputs:
 *   forward   y[e] = x[e] . w[e] + b[e]                      x (r, K), w (K, N), b (N), y (r, N)
 *   backward  gx[e] = g[e] . w[e]^T,  gw[e] = x[e]^T . g[e],  gb[e] = sum over rows of g[e]
 * x, y, g and gx are strided over experts and rows (element (e, i, c) at p[e * s_e + i * s_r + c]); w, gw and gb
 * are contiguous (n, K, N) and (n, N).
 *
 * With r small both directions are limited by memory traffic over w (and gw). The forward reads w as one
 * stream: panels of KP rows, each used strip by strip with an r x 2 VW block of y in registers while the same strip
 * of the next panel is prefetched. PyTorch's backward (two bmm) reads w for gx and then writes gw, reading each
 * destination line first; here each weight row is read once, its input gradients and its weight-gradient row are
 * computed while it is in cache, and the weight gradient is written with streaming stores (no read of the
 * destination). Vectors are GCC / Clang vector extensions (16 floats with AVX-512, else 8), which the compiler maps
 * to AVX, AVX-512 or NEON. Experts are spread over the process's OpenMP threads (PyTorch's libgomp, so
 * torch.set_num_threads applies).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#include "native_gemm.h" /* VW, vf, loadv, storev, hsum */

/* Store that bypasses the cache where the CPU has one (the weight gradients are written once and not read back
 * here): saves reading each destination line before writing it. p must be VW * 4-byte aligned. */
static inline void streamv(float *p, vf v) {
#if defined(__AVX512F__)
    _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
    _mm256_stream_ps(p, (__m256)v);
#else
    storev(p, v);
#endif
}

/* y[0:RB] += x[0:RB] . w for one expert. w is taken in panels of KP rows, each used strip by strip (RB x 2 VW outputs
 * in registers, accumulated over the panel's rows, added to y once per panel). While a strip is read, the same strip
 * of the panel after it is prefetched, in the order it will be read: the loads stay one panel (24-96 kB) ahead of
 * use without overflowing L2, and past the last panel they run into the next expert's weights, which this thread
 * reads next (w is contiguous over experts). Measured (2 threads, 8 rows, 128 experts, cold): 24.5 / 22 GB/s for
 * d x 4d / 4d x d weights, against 18 / 19.5 GB/s when the next panel was prefetched as one block spread over the
 * strips. */
#define KP 32
#define FORWARD_ROWS(RB)                                                                                              \
    static void forward_rows_##RB(int K, int N, const float *x, long xs_r, const float *w, float *y, long ys_r) {      \
        const int ns = N - N % (2 * VW);                                                                              \
        for (int k0 = 0; k0 < K; k0 += KP) {                                                                          \
            const int kn = K - k0 < KP ? K - k0 : KP;                                                                 \
            const float *panel = w + (size_t)k0 * N;                                                                  \
            const size_t ahead = (size_t)KP * N; /* the same strip, one panel on */                                   \
            for (int c = 0; c < ns; c += 2 * VW) {                                                                    \
                vf lo[RB], hi[RB];                                                                                    \
                for (int i = 0; i < RB; ++i) lo[i] = (vf){0}, hi[i] = (vf){0};                                        \
                const float *wk = panel + c;                                                                          \
                for (int k = 0; k < kn; ++k, wk += N) {                                                               \
                    __builtin_prefetch(wk + ahead), __builtin_prefetch(wk + ahead + VW);                              \
                    const vf w_lo = loadv(wk), w_hi = loadv(wk + VW);                                                 \
                    for (int i = 0; i < RB; ++i) {                                                                    \
                        const float a = x[i * xs_r + k0 + k];                                                         \
                        lo[i] += a * w_lo;                                                                            \
                        hi[i] += a * w_hi;                                                                            \
                    }                                                                                                 \
                }                                                                                                     \
                for (int i = 0; i < RB; ++i) {                                                                        \
                    float *yi = y + i * ys_r + c;                                                                     \
                    storev(yi, loadv(yi) + lo[i]);                                                                    \
                    storev(yi + VW, loadv(yi + VW) + hi[i]);                                                          \
                }                                                                                                     \
            }                                                                                                         \
            for (int i = 0; i < RB; ++i)                                                                              \
                for (int c = ns; c < N; ++c) {                                                                        \
                    float s = 0.0f;                                                                                   \
                    for (int k = 0; k < kn; ++k) s += x[i * xs_r + k0 + k] * panel[(size_t)k * N + c];               \
                    y[i * ys_r + c] += s;                                                                             \
                }                                                                                                     \
        }                                                                                                             \
    }
FORWARD_ROWS(8)
FORWARD_ROWS(4)
FORWARD_ROWS(2)
FORWARD_ROWS(1)

void medmoe_linear_forward(int n, int r, int K, int N, const float *x, long xs_e, long xs_r, const float *w,
                           const float *b, float *y, long ys_e, long ys_r) {
#pragma omp parallel for schedule(static)
    for (int e = 0; e < n; ++e) {
        const float *xe = x + e * xs_e, *we = w + (size_t)e * K * N;
        float *ye = y + e * ys_e;
        for (int i = 0; i < r; ++i) memcpy(ye + i * ys_r, b + (size_t)e * N, sizeof(float) * N);
        int i = 0;
        for (; i + 8 <= r; i += 8) forward_rows_8(K, N, xe + i * xs_r, xs_r, we, ye + i * ys_r, ys_r);
        if (i + 4 <= r) forward_rows_4(K, N, xe + i * xs_r, xs_r, we, ye + i * ys_r, ys_r), i += 4;
        if (i + 2 <= r) forward_rows_2(K, N, xe + i * xs_r, xs_r, we, ye + i * ys_r, ys_r), i += 2;
        if (i < r) forward_rows_1(K, N, xe + i * xs_r, xs_r, we, ye + i * ys_r, ys_r);
    }
}

/* gx[i, k + j] = g[i] . w[k + j] for RB rows i and KB weight rows j at once (RB x KB accumulator chains, each g
 * chunk loaded once for the KB weight rows), scalar tail for N % VW. */
#define INPUT_GRAD(RB, KB)                                                                                            \
    static void input_grad_##RB##_##KB(int N, const float *g, long gs_r, const float *w, float *gx, long gxs_r) {     \
        const int nv = N - N % VW;                                                                                    \
        vf acc[RB][KB];                                                                                               \
        for (int i = 0; i < RB; ++i)                                                                                  \
            for (int j = 0; j < KB; ++j) acc[i][j] = (vf){0};                                                         \
        for (int c = 0; c < nv; c += VW) {                                                                            \
            vf wv[KB];                                                                                                \
            for (int j = 0; j < KB; ++j) wv[j] = loadv(w + (size_t)j * N + c);                                        \
            for (int j = 0; j < KB; ++j) __builtin_prefetch(w + (size_t)(KB + j) * N + c); /* next rows */            \
            for (int i = 0; i < RB; ++i) {                                                                            \
                const vf gv = loadv(g + i * gs_r + c);                                                                \
                for (int j = 0; j < KB; ++j) acc[i][j] += gv * wv[j];                                                 \
            }                                                                                                         \
        }                                                                                                             \
        for (int i = 0; i < RB; ++i)                                                                                  \
            for (int j = 0; j < KB; ++j) {                                                                            \
                float s = hsum(acc[i][j]);                                                                            \
                for (int c = nv; c < N; ++c) s += g[i * gs_r + c] * w[(size_t)j * N + c];                             \
                gx[i * gxs_r + j] = s;                                                                                \
            }                                                                                                         \
    }
INPUT_GRAD(4, 2)
INPUT_GRAD(2, 2)
INPUT_GRAD(1, 2)
INPUT_GRAD(4, 1)
INPUT_GRAD(2, 1)
INPUT_GRAD(1, 1)

#define INPUT_GRAD_ALL_ROWS(KB)                                                                                       \
    static void input_grad_rows_##KB(int r, int N, const float *g, long gs_r, const float *w, float *gx,              \
                                     long gxs_r) {                                                                    \
        int i = 0;                                                                                                    \
        for (; i + 4 <= r; i += 4) input_grad_4_##KB(N, g + i * gs_r, gs_r, w, gx + i * gxs_r, gxs_r);                \
        if (i + 2 <= r) input_grad_2_##KB(N, g + i * gs_r, gs_r, w, gx + i * gxs_r, gxs_r), i += 2;                   \
        if (i < r) input_grad_1_##KB(N, g + i * gs_r, gs_r, w, gx + i * gxs_r, gxs_r);                                \
    }
INPUT_GRAD_ALL_ROWS(2)
INPUT_GRAD_ALL_ROWS(1)

/* gw[k + j] = sum_i x[i, k + j] g[i] for KB weight rows: 4 VW columns at a time (4 x KB chains, each g chunk loaded
 * once for the KB rows), streamed when aligned; then VW columns at a time, then scalar. */
#define WEIGHT_GRAD(KB)                                                                                               \
    static void weight_grad_rows_##KB(int r, int N, const float *g, long gs_r, const float *xk, long xs_r,            \
                                      float *gw) {                                                                    \
        const int aligned = ((uintptr_t)gw % (VW * 4)) == 0 && N % VW == 0;                                           \
        int c = 0;                                                                                                    \
        for (; c + 4 * VW <= N; c += 4 * VW) {                                                                        \
            vf acc[KB][4];                                                                                            \
            for (int j = 0; j < KB; ++j)                                                                              \
                for (int q = 0; q < 4; ++q) acc[j][q] = (vf){0};                                                      \
            for (int i = 0; i < r; ++i) {                                                                             \
                const float *grow = g + i * gs_r + c;                                                                 \
                const vf g0 = loadv(grow), g1 = loadv(grow + VW);                                                     \
                const vf g2 = loadv(grow + 2 * VW), g3 = loadv(grow + 3 * VW);                                      \
                for (int j = 0; j < KB; ++j) {                                                                        \
                    const float a = xk[i * xs_r + j];                                                                 \
                    acc[j][0] += a * g0, acc[j][1] += a * g1, acc[j][2] += a * g2, acc[j][3] += a * g3;               \
                }                                                                                                     \
            }                                                                                                         \
            for (int j = 0; j < KB; ++j)                                                                              \
                for (int q = 0; q < 4; ++q) {                                                                         \
                    float *dst = gw + (size_t)j * N + c + VW * q;                                                     \
                    if (aligned)                                                                                      \
                        streamv(dst, acc[j][q]);                                                                      \
                    else                                                                                              \
                        storev(dst, acc[j][q]);                                                                       \
                }                                                                                                     \
        }                                                                                                             \
        for (; c + VW <= N; c += VW)                                                                                  \
            for (int j = 0; j < KB; ++j) {                                                                            \
                vf acc = {0};                                                                                         \
                for (int i = 0; i < r; ++i) acc += xk[i * xs_r + j] * loadv(g + i * gs_r + c);                        \
                storev(gw + (size_t)j * N + c, acc);                                                                  \
            }                                                                                                         \
        for (; c < N; ++c)                                                                                            \
            for (int j = 0; j < KB; ++j) {                                                                            \
                float s = 0.0f;                                                                                       \
                for (int i = 0; i < r; ++i) s += xk[i * xs_r + j] * g[i * gs_r + c];                                  \
                gw[(size_t)j * N + c] = s;                                                                            \
            }                                                                                                         \
    }
WEIGHT_GRAD(2)
WEIGHT_GRAD(1)

/* Returns 0, or 1 if a thread could not allocate its row buffers (then the outputs are incomplete). */
int medmoe_linear_backward(int n, int r, int K, int N, const float *g, long gs_e, long gs_r, const float *x,
                           long xs_e, long xs_r, const float *w, float *gx, long gxs_e, long gxs_r, float *gw,
                           float *gb) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        /* Each expert's rows of g and x copied next to each other: strided rows a multiple of 4 kB apart (the usual
         * layout, one row per sample) fall into the same cache sets and evict one another. */
        float *gbuf = malloc(sizeof(float) * ((size_t)r * N + (size_t)r * K));
        float *xbuf = gbuf ? gbuf + (size_t)r * N : NULL;
        failed = gbuf == NULL;
#pragma omp for schedule(static)
        for (int e = 0; e < n; ++e) {
            if (!gbuf) continue;
            const float *we = w + (size_t)e * K * N;
            float *gxe = gx + e * gxs_e, *gwe = gw + (size_t)e * K * N, *gbe = gb + (size_t)e * N;
            for (int i = 0; i < r; ++i) {
                memcpy(gbuf + (size_t)i * N, g + e * gs_e + i * gs_r, sizeof(float) * N);
                memcpy(xbuf + (size_t)i * K, x + e * xs_e + i * xs_r, sizeof(float) * K);
            }
            memcpy(gbe, gbuf, sizeof(float) * N);
            for (int i = 1; i < r; ++i)
                for (int c = 0; c < N; ++c) gbe[c] += gbuf[(size_t)i * N + c];
            int k = 0;
            for (; k + 2 <= K; k += 2) {
                input_grad_rows_2(r, N, gbuf, N, we + (size_t)k * N, gxe + k, gxs_r);
                weight_grad_rows_2(r, N, gbuf, N, xbuf + k, K, gwe + (size_t)k * N);
            }
            if (k < K) {
                input_grad_rows_1(r, N, gbuf, N, we + (size_t)k * N, gxe + k, gxs_r);
                weight_grad_rows_1(r, N, gbuf, N, xbuf + k, K, gwe + (size_t)k * N);
            }
#ifdef __AVX__
            _mm_sfence(); /* this thread's streamed stores complete before the region ends */
#endif
        }
        free(gbuf);
    }
    return failed;
}
