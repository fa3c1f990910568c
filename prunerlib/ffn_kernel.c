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
   torch.optim.Adam / SGD do it after Masks.mask_grads (g *= keep). Its multiply-adds are spelt
   out as fmaf and nothing else is contracted: left to GCC, some were contracted one way in the
   vector loop and another in its scalar part, so a weight's rounding depended on where in the
   array it sat, which leaving out removed units (kept_units) moves. For Adam without weight
   decay these are the contractions GCC chose in its vector loop. */
__attribute__((optimize("fp-contract=off")))
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
                if (wd != 0.0f) gc = fmaf(pr[c], wd, gc);  /* as torch: inf * 0 must not make a NaN */
                const float mc = fmaf(0.1f, gc - mr[c], mr[c]);
                const float sc = fmaf(sr[c], 0.999f, 0.001f * gc * gc);
                mr[c] = mc; sr[c] = sc;
                pr[c] = fmaf(-step_size, mc / (sqrtf(sc) / bc2_sqrt + 1e-8f), pr[c]);
            }
        }
    } else {
        for (int64_t r = 0; r < rows; r++) {
            float *pr = p + r * cols, *mr = m + r * cols;
            const float *gr = g + r * gs, *kr = keep ? keep + r * cols : 0;
#pragma GCC ivdep
            for (int64_t c = 0; c < cols; c++) {
                float gc = kr ? gr[c] * kr[c] : gr[c];
                if (wd != 0.0f) gc = fmaf(pr[c], wd, gc);
                if (mom != 0.0f) {
                    gc = step == 1.0 ? gc : fmaf(mr[c], mom, gc);
                    mr[c] = gc;
                }
                pr[c] = fmaf(-lr, gc, pr[c]);
            }
        }
    }
}

static float *scratch(int64_t n) {
    float *q = aligned_alloc(64, ((n * 4 + 63) / 64) * 64);
    if (q) memset(q, 0, n * 4);
    return q;
}

/* Scratch for one member's epoch, sized for the widest hidden layer (H units). */
typedef struct { float *xT, *xr, *a, *z, *da, *G1, *G2, *lse; int64_t *y; } Work;

/* Every step of one epoch for one member with H hidden units: weights w1 (H, I) and w2
   (C, H + 1), moments m1, s1, m2, s2 (s*: NULL for SGD), gradient masks k1, k2 (or NULL). */
static void member_epoch(Work *wk, int64_t H, int64_t I, int64_t C, float *w1, float *w2, float *m1, float *m2,
                         float *s1, float *s2, const float *k1, const float *k2, float lr, float wd, float mom,
                         int64_t kind, int64_t act, int64_t step0, const float *table, const int64_t *labels,
                         int64_t n, const int64_t *order, int64_t B, float *losses) {
    const int64_t NV = (B + VL - 1) / VL, BP = NV * VL, NI = (I + VL - 1) / VL, IP = NI * VL;
    const int64_t H1 = H + 1, steps = (n + B - 1) / B;
    float *xT = wk->xT, *xr = wk->xr, *a = wk->a, *z = wk->z, *da = wk->da, *G1 = wk->G1, *G2 = wk->G2, *lse = wk->lse;
    int64_t *y = wk->y;
    for (int64_t st = 0; st < steps; st++) {
        const int64_t lo = st * B, nb = n - lo < B ? n - lo : B;
        const int64_t *rows = order + lo;
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
        losses[st] = total / (float)nb;
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
        update(w1, G1, 1, H * I, H * I, k1, m1, s1, kind, lr, wd, mom, step);
        update(w2, G2, 1, C * H1, C * H1, k2, m2, s2, kind, lr, wd, mom, step);
    }
}

/* A removed hidden unit (its incoming and outgoing weights masked and zero, their moments
   zero, as a fresh stage leaves them) adds exactly nothing anywhere: every sum over units gets
   +-0 from it, and its masked gradients leave its weights and moments at zero. Its rows and
   columns are left out (the kept ones are copied into the c* buffers and back), so a member
   that lost half its units trains in about half the time, with every other number bit for bit
   what the full width gives (tests/test_population.py). `rows`: fc1-shaped (H, I) arrays,
   `cols`: fc2-shaped (C, H + 1), the masks first; NULL entries are skipped. Returns the count
   of units kept, their indices in `units`. */
static int64_t kept_units(int64_t H, int64_t I, int64_t C, const float *const *rows, const float *const *cols,
                          int64_t sets, int64_t *units) {
    int64_t n = 0;
    for (int64_t h = 0; h < H; h++) {
        int used = !rows[0] || !cols[0];  /* a layer without masks keeps every unit */
        for (int64_t s = 0; !used && s < sets; s++) {
            for (int64_t i = 0; !used && rows[s] && i < I; i++) used = rows[s][h * I + i] != 0.0f;
            for (int64_t c = 0; !used && cols[s] && c < C; c++) used = cols[s][c * (H + 1) + h] != 0.0f;
        }
        if (used) units[n++] = h;
    }
    return n;
}

/* The units' rows of fc1-shaped (H, I) `full` to or from (n, I) `part`. */
static void rows_of(float *full, float *part, const int64_t *units, int64_t n, int64_t I, int out) {
    for (int64_t j = 0; j < n; j++) {
        if (out) memcpy(part + j * I, full + units[j] * I, I * 4); else memcpy(full + units[j] * I, part + j * I, I * 4);
    }
}

/* The units' columns (and the bias column) of fc2-shaped (C, H + 1) `full` to or from (C, n + 1) `part`. */
static void cols_of(float *full, float *part, const int64_t *units, int64_t n, int64_t H, int64_t C, int out) {
    for (int64_t c = 0; c < C; c++) {
        float *f = full + c * (H + 1), *q = part + c * (n + 1);
        for (int64_t j = 0; j < n; j++) { if (out) q[j] = f[units[j]]; else f[units[j]] = q[j]; }
        if (out) q[n] = f[H]; else f[H] = q[n];
    }
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
    const int64_t H1 = H + 1, steps = (n + B - 1) / B, L1 = H * I, L2 = C * H1;
    Work wk = {scratch(I * BP), scratch(BP * IP), scratch(H1 * BP), scratch(C * BP), scratch(H * BP),
               scratch(H * IP), scratch(C * H1), scratch(BP), malloc(BP * sizeof(int64_t))};
    /* a member's kept units, and its weights, moments and masks (cs1, cs2 only for Adam) cut to them */
    int64_t *units = malloc((H + 1) * sizeof(int64_t));
    float *cw1 = scratch(L1), *cm1 = scratch(L1), *cs1 = scratch(L1), *ck1 = scratch(L1);
    float *cw2 = scratch(L2), *cm2 = scratch(L2), *cs2 = scratch(L2), *ck2 = scratch(L2);
    int ok = wk.xT && wk.xr && wk.a && wk.z && wk.da && wk.G1 && wk.G2 && wk.lse && wk.y && units
             && cw1 && cm1 && cs1 && ck1 && cw2 && cm2 && cs2 && ck2;
    for (int64_t k = 0; ok && k < K; k++) {
        float *w1 = W1 + k * L1, *w2 = W2 + k * L2, *m1 = M1 + k * L1, *m2 = M2 + k * L2;
        float *s1 = S1 ? S1 + k * L1 : 0, *s2 = S2 ? S2 + k * L2 : 0;
        const float *k1 = keep1 ? keep1 + k * L1 : 0, *k2 = keep2 ? keep2 + k * L2 : 0;
        const float *const rows[] = {k1, w1, m1, s1}, *const cols[] = {k2, w2, m2, s2};
        const int64_t h = kept_units(H, I, C, rows, cols, 4, units);
        if (h == H) {
            member_epoch(&wk, H, I, C, w1, w2, m1, m2, s1, s2, k1, k2, lr[k], wd[k], mom[k], kind, act, step0,
                         table, labels, n, idx + k * n, B, losses + k * steps);
            continue;
        }
        rows_of(w1, cw1, units, h, I, 1); rows_of(m1, cm1, units, h, I, 1);
        cols_of(w2, cw2, units, h, H, C, 1); cols_of(m2, cm2, units, h, H, C, 1);
        rows_of((float *)k1, ck1, units, h, I, 1); cols_of((float *)k2, ck2, units, h, H, C, 1);
        if (s1) { rows_of(s1, cs1, units, h, I, 1); cols_of(s2, cs2, units, h, H, C, 1); }
        member_epoch(&wk, h, I, C, cw1, cw2, cm1, cm2, s1 ? cs1 : 0, s2 ? cs2 : 0, ck1, ck2, lr[k], wd[k], mom[k],
                     kind, act, step0, table, labels, n, idx + k * n, B, losses + k * steps);
        rows_of(w1, cw1, units, h, I, 0); rows_of(m1, cm1, units, h, I, 0);
        cols_of(w2, cw2, units, h, H, C, 0); cols_of(m2, cm2, units, h, H, C, 0);
        if (s1) { rows_of(s1, cs1, units, h, I, 0); cols_of(s2, cs2, units, h, H, C, 0); }
    }
    free(wk.xT); free(wk.xr); free(wk.a); free(wk.z); free(wk.da); free(wk.G1); free(wk.G2); free(wk.lse); free(wk.y);
    free(units); free(cw1); free(cm1); free(cs1); free(ck1); free(cw2); free(cm2); free(cs2); free(ck2);
    return ok ? 0 : 1;
}
