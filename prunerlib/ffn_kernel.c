/* A whole FFN fine-tuning epoch of a population, member after member: see ffn_kernel.py, which
   builds, caches and calls it (its one entry point, ffn_epoch, is called by ffn_kernel.epoch only). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float V __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
#define VL 16

static inline float hsum(V v) {
    V8 lo, hi; memcpy(&lo, &v, 32); memcpy(&hi, (char *)&v + 32, 32);
    V8 s8 = lo + hi;
    V4 l4, h4; memcpy(&l4, &s8, 16); memcpy(&h4, (char *)&s8 + 16, 16);
    V4 s4 = l4 + h4;
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* exp(x) to ~2 ulp (Cephes expf), branch-free so loops of it vectorise; NaN stays NaN. */
static inline float fexp(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447504019f ? -87.3365447504019f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { float f; int32_t i; } s;
    s.i = ((int32_t)n + 127) << 23;
    return y * s.f;
}

static void activate(float *a, int64_t count, int64_t act) {
    if (act == 0) {
#pragma GCC ivdep
        for (int64_t e = 0; e < count; e++) a[e] = 1.0f / (1.0f + fexp(-a[e]));
    } else if (act == 1) {
#pragma GCC ivdep
        for (int64_t e = 0; e < count; e++) a[e] = 1.0f - 2.0f / (fexp(2.0f * a[e]) + 1.0f);
    } else {
#pragma GCC ivdep
        for (int64_t e = 0; e < count; e++) a[e] = a[e] > 0.0f ? a[e] : (a[e] != a[e] ? a[e] : 0.0f);
    }
}

/* d(loss)/d(pre-activation) from d(loss)/d(activation) g and the activation's output a */
static void act_backward(float *g, const float *a, int64_t count, int64_t act) {
    if (act == 0) {
#pragma GCC ivdep
        for (int64_t e = 0; e < count; e++) g[e] = g[e] * (1.0f - a[e]) * a[e];
    } else if (act == 1) {
#pragma GCC ivdep
        for (int64_t e = 0; e < count; e++) g[e] = g[e] * (1.0f - a[e] * a[e]);
    } else {
#pragma GCC ivdep
        for (int64_t e = 0; e < count; e++) g[e] = a[e] > 0.0f ? g[e] : 0.0f;
    }
}

/* out[j][b] = sum_i W[j][i] * xT[i][b]; W (H, I) row-major, xT (I, NV*VL), out (H, NV*VL) */
static void mm_wx(const float *W, const float *xT, float *out, int64_t H, int64_t I, int64_t NV) {
    const int64_t BP = NV * VL;
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        const float *w0 = W + j * I, *w1 = w0 + I, *w2 = w1 + I, *w3 = w2 + I;
        int64_t v = 0;
        for (; v + 2 <= NV; v += 2) {
            V a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            for (int64_t i = 0; i < I; i++) {
                const V x0 = *(const V *)(xT + i * BP + v * VL), x1 = *(const V *)(xT + i * BP + (v + 1) * VL);
                a00 += w0[i] * x0; a01 += w0[i] * x1;
                a10 += w1[i] * x0; a11 += w1[i] * x1;
                a20 += w2[i] * x0; a21 += w2[i] * x1;
                a30 += w3[i] * x0; a31 += w3[i] * x1;
            }
            *(V *)(out + (j + 0) * BP + v * VL) = a00; *(V *)(out + (j + 0) * BP + (v + 1) * VL) = a01;
            *(V *)(out + (j + 1) * BP + v * VL) = a10; *(V *)(out + (j + 1) * BP + (v + 1) * VL) = a11;
            *(V *)(out + (j + 2) * BP + v * VL) = a20; *(V *)(out + (j + 2) * BP + (v + 1) * VL) = a21;
            *(V *)(out + (j + 3) * BP + v * VL) = a30; *(V *)(out + (j + 3) * BP + (v + 1) * VL) = a31;
        }
        for (; v < NV; v++) {
            V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t i = 0; i < I; i++) {
                const V x0 = *(const V *)(xT + i * BP + v * VL);
                a0 += w0[i] * x0; a1 += w1[i] * x0; a2 += w2[i] * x0; a3 += w3[i] * x0;
            }
            *(V *)(out + (j + 0) * BP + v * VL) = a0; *(V *)(out + (j + 1) * BP + v * VL) = a1;
            *(V *)(out + (j + 2) * BP + v * VL) = a2; *(V *)(out + (j + 3) * BP + v * VL) = a3;
        }
    }
    for (; j < H; j++) {
        const float *w = W + j * I;
        for (int64_t v = 0; v < NV; v++) {
            V a = {0};
            for (int64_t i = 0; i < I; i++) a += w[i] * *(const V *)(xT + i * BP + v * VL);
            *(V *)(out + j * BP + v * VL) = a;
        }
    }
}

/* G[j][i] = sum_{b < nb} D[j][b] * X[b][i]; D (H, BP), X (nb, NI*VL), G (H, NI*VL) */
static void mm_dx(const float *D, int64_t BP, const float *X, int64_t nb, float *G, int64_t H, int64_t NI) {
    const int64_t IP = NI * VL;
    int64_t j = 0;
    for (; j + 4 <= H; j += 4) {
        const float *d0 = D + j * BP, *d1 = d0 + BP, *d2 = d1 + BP, *d3 = d2 + BP;
        int64_t v = 0;
        for (; v + 2 <= NI; v += 2) {
            V a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            for (int64_t b = 0; b < nb; b++) {
                const V x0 = *(const V *)(X + b * IP + v * VL), x1 = *(const V *)(X + b * IP + (v + 1) * VL);
                a00 += d0[b] * x0; a01 += d0[b] * x1;
                a10 += d1[b] * x0; a11 += d1[b] * x1;
                a20 += d2[b] * x0; a21 += d2[b] * x1;
                a30 += d3[b] * x0; a31 += d3[b] * x1;
            }
            *(V *)(G + (j + 0) * IP + v * VL) = a00; *(V *)(G + (j + 0) * IP + (v + 1) * VL) = a01;
            *(V *)(G + (j + 1) * IP + v * VL) = a10; *(V *)(G + (j + 1) * IP + (v + 1) * VL) = a11;
            *(V *)(G + (j + 2) * IP + v * VL) = a20; *(V *)(G + (j + 2) * IP + (v + 1) * VL) = a21;
            *(V *)(G + (j + 3) * IP + v * VL) = a30; *(V *)(G + (j + 3) * IP + (v + 1) * VL) = a31;
        }
        for (; v < NI; v++) {
            V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t b = 0; b < nb; b++) {
                const V x0 = *(const V *)(X + b * IP + v * VL);
                a0 += d0[b] * x0; a1 += d1[b] * x0; a2 += d2[b] * x0; a3 += d3[b] * x0;
            }
            *(V *)(G + (j + 0) * IP + v * VL) = a0; *(V *)(G + (j + 1) * IP + v * VL) = a1;
            *(V *)(G + (j + 2) * IP + v * VL) = a2; *(V *)(G + (j + 3) * IP + v * VL) = a3;
        }
    }
    for (; j < H; j++) {
        const float *d = D + j * BP;
        for (int64_t v = 0; v < NI; v++) {
            V a = {0};
            for (int64_t b = 0; b < nb; b++) a += d[b] * *(const V *)(X + b * IP + v * VL);
            *(V *)(G + j * IP + v * VL) = a;
        }
    }
}

/* One optimiser update of n parameters p (gradient g, row stride gs, rows of length cols), as
   torch.optim.Adam / SGD do it after Masks.mask_grads (g *= keep). */
static void update(float *p, float *g, int64_t rows, int64_t cols, int64_t gs, const float *keep,
                   float *m, float *s, int64_t kind, float lr, float wd, float mom, double step) {
    if (kind == 0) {
        const double bc1 = 1.0 - pow(0.9, step), bc2 = 1.0 - pow(0.999, step);
        const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
        for (int64_t r = 0; r < rows; r++) {
            float *pr = p + r * cols, *mr = m + r * cols, *sr = s + r * cols;
            const float *gr = g + r * gs, *kr = keep ? keep + r * cols : 0;
#pragma GCC ivdep
            for (int64_t c = 0; c < cols; c++) {
                float gc = kr ? gr[c] * kr[c] : gr[c];
                if (wd != 0.0f) gc = gc + pr[c] * wd;  /* as torch: inf * 0 must not make a NaN */
                const float mc = mr[c] + 0.1f * (gc - mr[c]);
                const float sc = sr[c] * 0.999f + 0.001f * gc * gc;
                mr[c] = mc; sr[c] = sc;
                pr[c] = pr[c] - step_size * (mc / (sqrtf(sc) / bc2_sqrt + 1e-8f));
            }
        }
    } else {
        for (int64_t r = 0; r < rows; r++) {
            float *pr = p + r * cols, *mr = m + r * cols;
            const float *gr = g + r * gs, *kr = keep ? keep + r * cols : 0;
#pragma GCC ivdep
            for (int64_t c = 0; c < cols; c++) {
                float gc = kr ? gr[c] * kr[c] : gr[c];
                if (wd != 0.0f) gc = gc + pr[c] * wd;
                if (mom != 0.0f) {
                    gc = step == 1.0 ? gc : mr[c] * mom + gc;
                    mr[c] = gc;
                }
                pr[c] = pr[c] - lr * gc;
            }
        }
    }
}

static float *scratch(int64_t n) {
    float *q = aligned_alloc(64, ((n * 4 + 63) / 64) * 64);
    if (q) memset(q, 0, n * 4);
    return q;
}

/* Every step of one epoch for every member. W1 (K, H, I), W2 (K, C, H + 1): weights with the
   bias as last column (the table's last column is 1). M*, S*: Adam's moments (M*: SGD's
   momentum buffers). keep*: 0/1 masks or NULL. idx (K, n): each member's example order.
   losses (K, ceil(n / B)): each step's mean cross-entropy, before the update. */
int ffn_epoch(int64_t K, int64_t H, int64_t I, int64_t C,
              float *W1, float *W2, float *M1, float *M2, float *S1, float *S2,
              const float *keep1, const float *keep2,
              const float *lr, const float *wd, const float *mom, int64_t kind, int64_t act, int64_t step0,
              const float *table, const int64_t *labels, int64_t n, const int64_t *idx, int64_t B,
              float *losses) {
    const int64_t NV = (B + VL - 1) / VL, BP = NV * VL, NI = (I + VL - 1) / VL, IP = NI * VL;
    const int64_t H1 = H + 1, steps = (n + B - 1) / B;
    float *xT = scratch(I * BP), *xr = scratch(BP * IP), *a = scratch(H1 * BP), *z = scratch(C * BP);
    float *da = scratch(H * BP), *G1 = scratch(H * IP), *G2 = scratch(C * H1), *lse = scratch(BP);
    int64_t *y = malloc(BP * sizeof(int64_t));
    int ok = xT && xr && a && z && da && G1 && G2 && lse && y;
    for (int64_t k = 0; ok && k < K; k++) {
        float *w1 = W1 + k * H * I, *w2 = W2 + k * C * H1;
        for (int64_t st = 0; st < steps; st++) {
            const int64_t lo = st * B, nb = n - lo < B ? n - lo : B;
            const int64_t *rows = idx + k * n + lo;
            /* gather: rows as xr (nb, IP) and as xT (I, BP); padding stays 0 */
            for (int64_t b = 0; b < nb; b++) {
                const float *src = table + rows[b] * I;
                memcpy(xr + b * IP, src, I * 4);
                for (int64_t i = 0; i < I; i++) xT[i * BP + b] = src[i];
                y[b] = labels[rows[b]];
            }
            for (int64_t b = nb; b < BP; b++) for (int64_t i = 0; i < I; i++) xT[i * BP + b] = 0.0f;
            /* forward */
            mm_wx(w1, xT, a, H, I, NV);
            activate(a, H * BP, act);
            if (nb < BP)  /* padding columns out of every sum (inf * 0 would be NaN) */
                for (int64_t h = 0; h < H; h++) memset(a + h * BP + nb, 0, (BP - nb) * 4);
            for (int64_t c = 0; c < C; c++) {
                const float *wc = w2 + c * H1;
                for (int64_t v = 0; v < NV; v++) {
                    V acc = {0};
                    for (int64_t h = 0; h < H; h++) acc += wc[h] * *(const V *)(a + h * BP + v * VL);
                    *(V *)(z + c * BP + v * VL) = acc + wc[H];
                }
            }
            /* cross-entropy and its gradient: z becomes dz = (softmax - onehot) / nb */
            float total = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                float mx = z[b];
                for (int64_t c = 1; c < C; c++) mx = z[c * BP + b] > mx ? z[c * BP + b] : mx;
                float sum = 0.0f;
                for (int64_t c = 0; c < C; c++) sum += fexp(z[c * BP + b] - mx);
                lse[b] = mx + logf(sum);
                total += lse[b] - z[y[b] * BP + b];
            }
            losses[k * steps + st] = total / (float)nb;
            const float inv = 1.0f / (float)nb;
            for (int64_t c = 0; c < C; c++) {
                float *zc = z + c * BP;
                for (int64_t b = 0; b < nb; b++) zc[b] = (fexp(zc[b] - lse[b]) - (y[b] == c ? 1.0f : 0.0f)) * inv;
                for (int64_t b = nb; b < BP; b++) zc[b] = 0.0f;
            }
            /* backward */
            for (int64_t h = 0; h < H; h++) {
                for (int64_t v = 0; v < NV; v++) {
                    V acc = {0};
                    for (int64_t c = 0; c < C; c++) acc += w2[c * H1 + h] * *(const V *)(z + c * BP + v * VL);
                    *(V *)(da + h * BP + v * VL) = acc;
                }
            }
            act_backward(da, a, H * BP, act);
            for (int64_t c = 0; c < C; c++) {
                float bias = 0.0f;
                for (int64_t b = 0; b < nb; b++) bias += z[c * BP + b];
                for (int64_t h = 0; h < H; h++) {
                    V acc = {0};
                    for (int64_t v = 0; v < NV; v++) acc += *(const V *)(z + c * BP + v * VL) * *(const V *)(a + h * BP + v * VL);
                    G2[c * H1 + h] = hsum(acc);
                }
                G2[c * H1 + H] = bias;
            }
            mm_dx(da, BP, xr, nb, G1, H, NI);
            /* update */
            const double step = (double)(step0 + st + 1);
            /* G1's rows packed to the weights' stride, so each layer updates as one flat array:
               rows of 22 or 41 are too short for the vector loop, and a step spent more time in
               their remainders than in fc1's forward pass */
            for (int64_t h = 1; h < H; h++) memmove(G1 + h * I, G1 + h * IP, I * 4);
            update(w1, G1, 1, H * I, H * I, keep1 ? keep1 + k * H * I : 0, M1 + k * H * I,
                   S1 ? S1 + k * H * I : 0, kind, lr[k], wd[k], mom[k], step);
            update(w2, G2, 1, C * H1, C * H1, keep2 ? keep2 + k * C * H1 : 0, M2 + k * C * H1,
                   S2 ? S2 + k * C * H1 : 0, kind, lr[k], wd[k], mom[k], step);
        }
    }
    free(xT); free(xr); free(a); free(z); free(da); free(G1); free(G2); free(lse); free(y);
    return ok ? 0 : 1;
}
