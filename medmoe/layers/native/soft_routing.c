/* Soft MoE routing, dispatch and combine (float32, CPU), one sample at a time so that its tokens stay in cache.
 *
 * Built with expert_mlp.c into one library by medmoe/layers/native/build.py and called by
 * medmoe/layers/native/routing.py, which holds the contract and the checks. Notation as in soft_moe.py: for group g
 * and sample b, tokens x (m, d), slot parameters phi (d, p) (normalised and scaled), p = e s slots:
 *
 *   forward    r = 1 / max(|x_i|, eps)          logits L = (x . phi) * r            (m, p)
 *              combine C = softmax of L over p    dispatch D = softmax of L over m
 *              slots = D^T . x (p, d)             ... experts ...                     y = C . out (m, d)
 *   backward   grad_out = C^T . gy                gL = softmax'(C, gy . out^T)        (before the experts' backward)
 *              gL += softmax'(D, x . grad_slots^T)                                    (after it)
 *              grad_x = D . grad_slots + (gL r) . phi^T - r^2 (gL : L) x      grad_phi += x^T . (gL r)
 *
 * PyTorch runs these as ~25 kernels over the whole batch, each reading or writing the (b, m, d) tokens from memory
 * (about 13 passes); here each sample's tokens, logits and slots are used while they are in cache, so x and y cross
 * memory about as often as the roofline model in benchmarks/soft_moe.py counts (x three times, y twice). The
 * matmuls are small (one side is p or d wide) and run on one register-blocked kernel.
 *
 * Slot rows (slots, out, grad_out, grad_slots) are in the experts' layout, contiguous (g e, b s, d): slot j of
 * sample b of group g is row (g e + j / s, b s + j % s). Every other tensor is contiguous in the shapes above. p and
 * d must be multiples of the vector width (medmoe_routing_vector_width()). Samples are spread over the process's
 * OpenMP threads (PyTorch's libgomp); grad_phi is summed over them in a fixed order (for_each_sample).
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "native_gemm.h"

typedef struct { /* one call: sizes and every tensor it reads or writes (unused ones NULL) */
    int G, B, m, d, e, s, p;
    float eps;
    const float *x, *phi, *phi_t, *grad_y, *out, *grad_slots;
    float *inv_norm, *logits, *dispatch, *combine, *slots, *y, *grad_out, *grad_logits, *grad_x, *grad_phi;
} problem;

typedef struct {                    /* per thread */
    const float **rows_a, **rows_b; /* row pointers, max(m, d, p) each */
    float *mat, *mat2;              /* p x max(m, d) and m x p */
    float *coef;                    /* m */
    float *pack;                    /* gemm's packed panels */
    float *grad_phi;                /* this thread's part of grad_phi (G, d, p), when the call computes it */
} scratch;

static int scratch_init(scratch *w, const problem *q) {
    const int n = q->m > q->d ? q->m : q->d;
    const int rows = n > q->p ? n : q->p;
    w->rows_a = malloc(sizeof(float *) * 2 * rows);
    w->rows_b = w->rows_a ? w->rows_a + rows : NULL;
    w->mat = malloc(sizeof(float) * ((size_t)q->p * n + (size_t)q->m * q->p + q->m));
    w->mat2 = w->mat ? w->mat + (size_t)q->p * n : NULL;
    w->coef = w->mat2 ? w->mat2 + (size_t)q->m * q->p : NULL;
    w->pack = malloc(sizeof(float) * GEMM_PACK(rows));
    w->grad_phi = q->grad_phi ? calloc((size_t)q->G * q->d * q->p, sizeof(float)) : NULL;
    return w->rows_a && w->mat && w->pack && (w->grad_phi || !q->grad_phi);
}

static void scratch_free(scratch *w) {
    free(w->rows_a);
    free(w->mat);
    free(w->pack);
    free(w->grad_phi);
}

typedef void sample_fn(const problem *q, scratch *w, int g, int b);

/* Runs fn for every (group, sample) on the OpenMP threads, then sums the threads' grad_phi in thread order, so that
 * the result does not depend on which thread finishes first: for a given thread count, every run gives the same bits
 * (samples go to threads by a static schedule, each thread adds its samples in order, and the threads' parts are added
 * element by element from thread 0 up). Returns 0, or 1 if a thread could not allocate its scratch (then the outputs
 * are incomplete). */
static int for_each_sample(const problem *q, sample_fn *fn) {
    const int threads = omp_get_max_threads();
    const size_t n_phi = (size_t)q->G * q->d * q->p;
    float **parts = q->grad_phi ? calloc(threads, sizeof(float *)) : NULL; /* each thread's grad_phi */
    if (q->grad_phi && !parts) return 1;
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        scratch w;
        failed = !scratch_init(&w, q);
#pragma omp for schedule(static)
        for (int gb = 0; gb < q->G * q->B; ++gb)
            if (!failed) fn(q, &w, gb / q->B, gb % q->B);
        if (parts) {
            parts[omp_get_thread_num()] = failed ? NULL : w.grad_phi;
#pragma omp barrier
            const int used = omp_get_num_threads();
            int complete = 1;
            for (int t = 0; t < used; ++t) complete &= parts[t] != NULL;
            if (complete) {
#pragma omp for schedule(static)
                for (size_t k = 0; k < n_phi; ++k) {
                    float sum = parts[0][k];
                    for (int t = 1; t < used; ++t) sum += parts[t][k];
                    q->grad_phi[k] = sum;
                }
            } else {
                failed = 1;
            }
        }
        scratch_free(&w);
    }
    free(parts);
    return failed;
}

/* Rows of sample b's p slots in the experts' layout (see the top of the file). */
static void slot_rows(const float **rows, const float *base, const problem *q, int g, int b) {
    const int e = q->e, s = q->s;
    for (int j = 0; j < e * s; ++j)
        rows[j] = base + ((size_t)(g * e + j / s) * q->B * s + (size_t)b * s + j % s) * q->d;
}

static size_t sample(const problem *q, int g, int b) { return (size_t)g * q->B + b; }

/* m x p matrix M = softmax of L over each column (over tokens). */
static void column_softmax(float *M, const float *L, int m, int p) {
    vf top[p / VW], sum[p / VW]; /* p <= a few thousand: fits the stack */
    for (int v = 0; v < p / VW; ++v) top[v] = splat(-INFINITY), sum[v] = (vf){0};
    for (int i = 0; i < m; ++i)
        for (int v = 0; v < p / VW; ++v) top[v] = vmax(top[v], loadv(L + (size_t)i * p + v * VW));
    for (int i = 0; i < m; ++i)
        for (int v = 0; v < p / VW; ++v) {
            const vf ev = expv(loadv(L + (size_t)i * p + v * VW) - top[v]);
            storev(M + (size_t)i * p + v * VW, ev);
            sum[v] += ev;
        }
    for (int v = 0; v < p / VW; ++v) sum[v] = 1.0f / sum[v];
    for (int i = 0; i < m; ++i)
        for (int v = 0; v < p / VW; ++v) storev(M + (size_t)i * p + v * VW, loadv(M + (size_t)i * p + v * VW) * sum[v]);
}

static void forward_sample(const problem *q, scratch *w, int g, int b) {
    const int m = q->m, d = q->d, p = q->p;
    const size_t at = sample(q, g, b);
    const float *x = q->x + at * m * d;
    float *r = q->inv_norm + at * m, *L = q->logits + at * m * p, *C = q->combine + at * m * p;
    for (int i = 0; i < m; ++i) {
        vf acc = {0};
        for (int k = 0; k < d; k += VW) {
            const vf v = loadv(x + (size_t)i * d + k);
            acc += v * v;
        }
        const float norm = sqrtf(hsum(acc));
        r[i] = 1.0f / (norm > q->eps ? norm : q->eps);
    }
    even_rows(w->rows_b, q->phi + (size_t)g * d * p, d, p);
    even_rows(w->rows_a, L, m, p);
    gemm(m, p, d, x, d, 1, w->rows_b, (float *const *)w->rows_a, 0, w->pack); /* x . phi */
    for (int i = 0; i < m; ++i) { /* scale by 1 / |x|; combine = softmax over the row */
        float *Li = L + (size_t)i * p, *Ci = C + (size_t)i * p;
        vf top = splat(-INFINITY), sum = {0};
        for (int v = 0; v < p / VW; ++v) {
            const vf l = loadv(Li + v * VW) * r[i];
            storev(Li + v * VW, l);
            top = vmax(top, l);
        }
        top = splat(hmax(top));
        for (int v = 0; v < p / VW; ++v) {
            const vf ev = expv(loadv(Li + v * VW) - top);
            storev(Ci + v * VW, ev);
            sum += ev;
        }
        const vf inv = splat(1.0f / hsum(sum));
        for (int v = 0; v < p / VW; ++v) storev(Ci + v * VW, loadv(Ci + v * VW) * inv);
    }
    float *D = q->dispatch + at * m * p;
    column_softmax(D, L, m, p);
    even_rows(w->rows_b, x, m, d);
    slot_rows(w->rows_a, q->slots, q, g, b);
    gemm(p, d, m, D, 1, p, w->rows_b, (float *const *)w->rows_a, 0, w->pack); /* slots = D^T . x */
}

static void combine_forward_sample(const problem *q, scratch *w, int g, int b) {
    const size_t at = sample(q, g, b);
    slot_rows(w->rows_b, q->out, q, g, b);
    even_rows(w->rows_a, q->y + at * q->m * q->d, q->m, q->d);
    gemm(q->m, q->d, q->p, q->combine + at * q->m * q->p, q->p, 1, w->rows_b, (float *const *)w->rows_a, 0, w->pack);
}

static void combine_backward_sample(const problem *q, scratch *w, int g, int b) {
    const int m = q->m, d = q->d, p = q->p;
    const size_t at = sample(q, g, b);
    const float *gy = q->grad_y + at * m * d, *C = q->combine + at * m * p;
    float *gL = q->grad_logits + at * m * p;
    even_rows(w->rows_b, gy, m, d);
    slot_rows(w->rows_a, q->grad_out, q, g, b);
    gemm(p, d, m, C, 1, p, w->rows_b, (float *const *)w->rows_a, 0, w->pack); /* grad_out = C^T . gy */
    slot_rows(w->rows_a, q->out, q, g, b);
    transpose(w->mat, w->rows_a, p, d); /* out^T (d, p) */
    even_rows(w->rows_b, w->mat, d, p);
    even_rows(w->rows_a, gL, m, p);
    gemm(m, p, d, gy, d, 1, w->rows_b, (float *const *)w->rows_a, 0, w->pack); /* gC = gy . out^T, into gL */
    for (int i = 0; i < m; ++i) { /* softmax backward over the row */
        float *gi = gL + (size_t)i * p;
        const float *Ci = C + (size_t)i * p;
        vf dot = {0};
        for (int v = 0; v < p / VW; ++v) dot += loadv(gi + v * VW) * loadv(Ci + v * VW);
        const vf t = splat(hsum(dot));
        for (int v = 0; v < p / VW; ++v) storev(gi + v * VW, loadv(Ci + v * VW) * (loadv(gi + v * VW) - t));
    }
}

static void dispatch_backward_sample(const problem *q, scratch *w, int g, int b) {
    const int m = q->m, d = q->d, p = q->p;
    const size_t at = sample(q, g, b);
    const float *x = q->x + at * m * d, *D = q->dispatch + at * m * p, *L = q->logits + at * m * p;
    const float *r = q->inv_norm + at * m;
    float *gL = q->grad_logits + at * m * p, *gx = q->grad_x + at * m * d, *gD = w->mat2;
    slot_rows(w->rows_a, q->grad_slots, q, g, b);
    transpose(w->mat, w->rows_a, p, d); /* grad_slots^T (d, p) */
    even_rows(w->rows_b, w->mat, d, p);
    even_rows(w->rows_a, gD, m, p);
    gemm(m, p, d, x, d, 1, w->rows_b, (float *const *)w->rows_a, 0, w->pack); /* gD = x . grad_slots^T */
    vf colsum[p / VW];
    for (int v = 0; v < p / VW; ++v) colsum[v] = (vf){0};
    for (int i = 0; i < m; ++i)
        for (int v = 0; v < p / VW; ++v)
            colsum[v] += loadv(gD + (size_t)i * p + v * VW) * loadv(D + (size_t)i * p + v * VW);
    float *coef = w->coef; /* -r^2 (gL : L) per token, 0 where the norm was clamped */
    for (int i = 0; i < m; ++i) {
        float *gi = gL + (size_t)i * p;
        const float *Di = D + (size_t)i * p, *Li = L + (size_t)i * p, *gDi = gD + (size_t)i * p;
        vf dot = {0};
        const vf ri = splat(r[i]);
        for (int v = 0; v < p / VW; ++v) { /* adds the softmax backward over the column */
            const vf gl = loadv(gi + v * VW) + loadv(Di + v * VW) * (loadv(gDi + v * VW) - colsum[v]);
            dot += gl * loadv(Li + v * VW);
            storev(gi + v * VW, gl * ri); /* from here on the gradient of x . phi */
        }
        coef[i] = r[i] >= 1.0f / q->eps ? 0.0f : -r[i] * r[i] * hsum(dot);
    }
    slot_rows(w->rows_b, q->grad_slots, q, g, b);
    even_rows(w->rows_a, gx, m, d);
    gemm(m, d, p, D, p, 1, w->rows_b, (float *const *)w->rows_a, 0, w->pack); /* grad_x = D . grad_slots */
    even_rows(w->rows_b, q->phi_t + (size_t)g * p * d, p, d);
    gemm(m, d, p, gL, p, 1, w->rows_b, (float *const *)w->rows_a, 1, w->pack); /* += (gL r) . phi^T */
    for (int i = 0; i < m; ++i) {
        const vf c = splat(coef[i]);
        for (int k = 0; k < d; k += VW) {
            float *gxi = gx + (size_t)i * d + k;
            storev(gxi, loadv(gxi) + c * loadv(x + (size_t)i * d + k));
        }
    }
    even_rows(w->rows_b, gL, m, p);
    even_rows(w->rows_a, w->grad_phi + (size_t)g * d * p, d, p);
    gemm(d, p, m, x, 1, d, w->rows_b, (float *const *)w->rows_a, 1, w->pack); /* grad_phi += x^T . (gL r) */
}

#define PROBLEM(...) ((problem){.G = G, .B = B, .m = m, .d = d, .e = e, .s = s, .p = e * s, __VA_ARGS__})

int medmoe_routing_vector_width(void) { return VW; }

/* The four entry points return 0, or 1 if a thread could not allocate its scratch (outputs then incomplete). */

/* Logits, both softmaxes and the dispatched slots. */
int medmoe_routing_forward(int G, int B, int m, int d, int e, int s, float eps, const float *x, const float *phi,
                           float *inv_norm, float *logits, float *dispatch, float *combine, float *slots) {
    const problem q = PROBLEM(.eps = eps, .x = x, .phi = phi, .inv_norm = inv_norm, .logits = logits,
                              .dispatch = dispatch, .combine = combine, .slots = slots);
    return for_each_sample(&q, forward_sample);
}

/* y = C . out. */
int medmoe_combine_forward(int G, int B, int m, int d, int e, int s, const float *combine, const float *out,
                           float *y) {
    const problem q = PROBLEM(.combine = (float *)combine, .out = out, .y = y);
    return for_each_sample(&q, combine_forward_sample);
}

/* Before the experts' backward: grad_out = C^T . gy (experts' layout) and the combine softmax's part of the logits'
 * gradient, grad_logits = C * (gC - sum_j gC C) with gC = gy . out^T. */
int medmoe_combine_backward(int G, int B, int m, int d, int e, int s, const float *grad_y, const float *combine,
                            const float *out, float *grad_out, float *grad_logits) {
    const problem q = PROBLEM(.grad_y = grad_y, .combine = (float *)combine, .out = out, .grad_out = grad_out,
                              .grad_logits = grad_logits);
    return for_each_sample(&q, combine_backward_sample);
}

/* After the experts' backward: adds the dispatch softmax's part to grad_logits, then grad_x and grad_phi (see the
 * top). phi_t is phi transposed, (G, p, d). grad_phi is overwritten. */
int medmoe_dispatch_backward(int G, int B, int m, int d, int e, int s, float eps, const float *x,
                             const float *grad_slots, const float *dispatch, const float *logits,
                             const float *inv_norm, const float *phi_t, float *grad_logits, float *grad_x,
                             float *grad_phi) {
    const problem q = PROBLEM(.eps = eps, .x = x, .grad_slots = grad_slots, .dispatch = (float *)dispatch,
                              .logits = (float *)logits, .inv_norm = (float *)inv_norm, .phi_t = phi_t,
                              .grad_logits = grad_logits, .grad_x = grad_x, .grad_phi = grad_phi);
    return for_each_sample(&q, dispatch_backward_sample);
}
