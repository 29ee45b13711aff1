/* bounds.c - entry bounds and the score bound R (ALGORITHM.md 2).
 *
 * R must bound every |s_ij| without forming the scores, and it should be as small as possible
 * because the polynomial degree (hence the cost) grows with it. Three bounds apply in different
 * situations; the smallest wins and R_from names it. */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relative slack for the rounding in the bound's own arithmetic, so R stays an upper bound of
 * the scores as the exact engine computes them. */
#define ROUNDING_SLACK (1 + 1e-12)

/* The tensors of fr_bounds_compute (double) or fr_bounds_compute_f32 (float): one code path,
 * each float widened exactly as it is read, so that float data get the bounds its double copy
 * would get, to the bit. */
typedef struct {
    const double *d;
    const float *f;
} tensor;

static double at(tensor x, int64_t i)
{
    return x.f ? (double)x.f[i] : x.d[i];
}

static tensor offset(tensor x, int64_t i)
{
    return x.f ? (tensor){NULL, x.f + i} : (tensor){x.d + i, NULL};
}

static int64_t find_nonfinite(tensor x, int64_t count)
{
    if (!x.f) return fr_find_nonfinite(x.d, count);
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x.f[i])) return i;
    return -1;
}

static int check_finite(const char *name, tensor x, int64_t count, char *err, size_t errlen)
{
    int64_t i = find_nonfinite(x, count);
    if (i < 0) return FR_OK;
    return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value (%g) at flat index %lld",
                   name, at(x, i), (long long)i);
}

/* Column-wise max |x_ia| into colmax[cols], and max over rows of ||x_i||_2. Inlined once per
 * element type (f32 a constant), so that neither loop tests the type per element. */
static inline __attribute__((always_inline)) void
row_col_max_of(tensor x, int f32, int64_t rows, int64_t cols, double *colmax, double *rownorm)
{
    *rownorm = 0;
    for (int64_t a = 0; a < cols; a++)
        colmax[a] = 0;
    for (int64_t i = 0; i < rows; i++) {
        double s = 0;
        for (int64_t a = 0; a < cols; a++) {
            double e = fabs(f32 ? (double)x.f[i * cols + a] : x.d[i * cols + a]);
            s += e * e;
            if (e > colmax[a]) colmax[a] = e;
        }
        if (s > *rownorm) *rownorm = s;
    }
    *rownorm = sqrt(*rownorm);
}

static void row_col_max(tensor x, int64_t rows, int64_t cols, double *colmax, double *rownorm)
{
    if (x.f)
        row_col_max_of(x, 1, rows, cols, colmax, rownorm);
    else
        row_col_max_of(x, 0, rows, cols, colmax, rownorm);
}

/* An upper bound on ||W||_2: sigma_max^2 = lambda_max(W^T W) is at most both the largest
 * Gershgorin row sum of W^T W and ||W||_F^2. Gershgorin is tight for (near-)orthogonal W,
 * where the Frobenius norm overestimates by sqrt(d). */
static double spectral_upper(const double *w, int64_t d, double *m)
{
    double fro = 0;
    for (int64_t e = 0; e < d * d; e++)
        fro += w[e] * w[e];
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            m[i * d + j] = 0;
    for (int64_t k = 0; k < d; k++)
        for (int64_t i = 0; i < d; i++) {
            double x = w[k * d + i];
            if (x == 0) continue;
            for (int64_t j = 0; j < d; j++)
                m[i * d + j] += x * w[k * d + j];
        }
    double g = 0;
    for (int64_t i = 0; i < d; i++) {
        double s = 0;
        for (int64_t j = 0; j < d; j++)
            s += fabs(m[i * d + j]);
        if (s > g) g = s;
    }
    return sqrt(fmin(g, fro));
}

int fr__rope_abs_build(const fr_problem *p, fr__rope_abs *t)
{
    memset(t, 0, sizeof *t);
    if (p->rot.kind != FR_ROT_ROPE && p->rot.kind != FR_ROT_CLIP) return 0;
    int64_t d = p->d, lim = p->n - 1;
    if (p->rot.kind == FR_ROT_CLIP && p->rot.clip < lim) lim = p->rot.clip;
    /* Past this the table costs more memory than its trigonometry saves time (32 MB). */
    if ((2 * lim + 1) * d > ((int64_t)1 << 22)) return 0;
    double *freq = malloc((size_t)d * sizeof *freq);
    t->pa = malloc((size_t)d * sizeof *t->pa);
    t->pb = malloc((size_t)d * sizeof *t->pb);
    if (!freq || !t->pa || !t->pb) goto fail;
    t->np = fr__rope_pairs(p, t->pa, t->pb, freq);
    t->lim = lim;
    if (!(t->cs = malloc((size_t)((2 * lim + 1) * t->np * 2) * sizeof *t->cs))) goto fail;
    for (int64_t delta = -lim; delta <= lim; delta++)
        for (int64_t m = 0; m < t->np; m++) {
            double ang = (double)delta * freq[m], *e = t->cs + ((delta + lim) * t->np + m) * 2;
            e[0] = fabs(cos(ang)), e[1] = fabs(sin(ang));
        }
    free(freq);
    return 1;
fail:
    free(freq);
    fr__rope_abs_free(t);
    return 0;
}

void fr__rope_abs_free(fr__rope_abs *t)
{
    free(t->pa), free(t->pb), free(t->cs);
    memset(t, 0, sizeof *t);
}

/* The pairs' weights, offset-free: w[2m] = mq_a mk_a + mq_b mk_b (the cos terms) and
 * w[2m + 1] = mq_a mk_b + mq_b mk_a (the sin terms) for pair m = (a, b); and the part of the
 * coordinates outside every pair (weight 1 at every offset), returned. */
static double pair_weights(const fr_problem *p, const fr__rope_abs *t, const double *mq,
                           const double *mk, double *w)
{
    double fixed = 0;
    char *paired = calloc((size_t)p->d, 1);
    if (!paired) return INFINITY; /* a valid, useless bound: another bound wins */
    for (int64_t m = 0; m < t->np; m++) {
        int64_t a = t->pa[m], b = t->pb[m];
        paired[a] = paired[b] = 1;
        w[2 * m] = mq[a] * mk[a] + mq[b] * mk[b];
        w[2 * m + 1] = mq[a] * mk[b] + mq[b] * mk[a];
    }
    for (int64_t a = 0; a < p->d; a++)
        if (!paired[a]) fixed += mq[a] * mk[a];
    free(paired);
    return fixed;
}

/* One offset's sum, e holding its |cos|, |sin| per pair. The same arithmetic in the same order
 * whether e comes from a table or from the angles just computed: R must not depend on which. */
static double offset_sum(int64_t np, const double *e, const double *w, double fixed)
{
    double s = fixed;
    for (int64_t m = 0; m < np; m++)
        s += e[2 * m] * w[2 * m] + e[2 * m + 1] * w[2 * m + 1];
    return s;
}

/* max over offsets of sum_{a,b} |W_delta[a,b]| mq[a] mk[b] (entries outside S contribute 0). */
double fr__support_sum(const fr_problem *p, const double *mq, const double *mk,
                       const fr__rope_abs *tab)
{
    int64_t n = p->n, d = p->d;
    double best = 0;
    if (p->rot.kind == FR_ROT_NONE) {
        for (int64_t a = 0; a < d; a++)
            best += mq[a] * mk[a];
        return best;
    }
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        if (!p->rot.w) /* an estimate without data: support_hint entries of size <= 1 */
            return (double)p->rot.support_hint * mq[0] * mk[0];
        for (int64_t t = 0; t < 2 * n - 1; t++) {
            const double *w = p->rot.w + t * d * d;
            double s = 0;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++)
                    s += fabs(w[a * d + b]) * mq[a] * mk[b];
            if (s > best) best = s;
        }
        return best;
    }
    /* RoPE kinds: only the offsets that occur (clipped ones repeat), O(d) each, with the
     * trigonometry from the batch's table, or from a table of its own when it fits. */
    fr__rope_abs own;
    if (!(tab && tab->cs) && fr__rope_abs_build(p, &own)) {
        best = fr__support_sum(p, mq, mk, &own);
        fr__rope_abs_free(&own);
        return best;
    }
    double *w = malloc(2 * (size_t)d * sizeof *w);
    if (!w) return INFINITY;
    if (tab && tab->cs) {
        double fixed = pair_weights(p, tab, mq, mk, w);
        for (int64_t delta = -tab->lim; delta <= tab->lim; delta++) {
            double s = offset_sum(tab->np, tab->cs + (delta + tab->lim) * tab->np * 2, w, fixed);
            if (s > best) best = s;
        }
        free(w);
        return best;
    }
    /* Too long for a table: the angles offset by offset. */
    int64_t lim = n - 1;
    if (p->rot.kind == FR_ROT_CLIP && p->rot.clip < lim) lim = p->rot.clip;
    double *freq = malloc((size_t)d * sizeof *freq), *e = malloc(2 * (size_t)d * sizeof *e);
    fr__rope_abs one = {0, 0, malloc((size_t)d * sizeof(int64_t)),
                        malloc((size_t)d * sizeof(int64_t)), e};
    if (!freq || !e || !one.pa || !one.pb) {
        best = INFINITY; /* a valid, useless bound: another bound wins */
        goto done;
    }
    one.np = fr__rope_pairs(p, one.pa, one.pb, freq);
    double fixed = pair_weights(p, &one, mq, mk, w);
    for (int64_t delta = -lim; delta <= lim; delta++) {
        for (int64_t m = 0; m < one.np; m++) {
            double ang = (double)delta * freq[m];
            e[2 * m] = fabs(cos(ang)), e[2 * m + 1] = fabs(sin(ang));
        }
        double s = offset_sum(one.np, e, w, fixed);
        if (s > best) best = s;
    }
done:
    free(freq), free(e), free(one.pa), free(one.pb), free(w);
    return best;
}

/* sum over S of max_delta |W_delta[a,b]| mq[a] mk[b]: every term of the multinomial expansion
 * in absolute value at once (certify.c's S_abs); for RoPE kinds each cos entry reaches 1 at
 * delta = 0 and each sin entry is taken as 1 (an upper bound) whenever some offset is not 0. */
static double support_abs_sum(const fr_problem *p, const double *mq, const double *mk)
{
    int64_t n = p->n, d = p->d;
    double s = 0;
    if (p->rot.kind == FR_ROT_NONE) {
        for (int64_t a = 0; a < d; a++)
            s += mq[a] * mk[a];
        return s;
    }
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        if (!p->rot.w) return (double)p->rot.support_hint * mq[0] * mk[0];
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++) {
                double wm = 0;
                for (int64_t t = 0; t < 2 * n - 1; t++)
                    wm = fmax(wm, fabs(p->rot.w[(t * d + a) * d + b]));
                s += wm * mq[a] * mk[b];
            }
        return s;
    }
    int64_t lim = n - 1;
    if (p->rot.kind == FR_ROT_CLIP && p->rot.clip < lim) lim = p->rot.clip;
    double sn = lim > 0 ? 1 : 0;
    int64_t *pa = malloc((size_t)d * sizeof *pa), *pb = malloc((size_t)d * sizeof *pb);
    double *freq = malloc((size_t)d * sizeof *freq);
    char *paired = calloc((size_t)d, 1);
    if (!pa || !pb || !freq || !paired) {
        s = INFINITY; /* valid and useless: the fast methods then refuse */
        goto done;
    }
    int64_t np = fr__rope_pairs(p, pa, pb, freq);
    for (int64_t m = 0; m < np; m++) {
        int64_t a = pa[m], b = pb[m];
        paired[a] = paired[b] = 1;
        s += mq[a] * mk[a] + mq[b] * mk[b] + sn * (mq[a] * mk[b] + mq[b] * mk[a]);
    }
    for (int64_t a = 0; a < d; a++)
        if (!paired[a]) s += mq[a] * mk[a];
done:
    free(pa);
    free(pb);
    free(freq);
    free(paired);
    return s;
}

void fr__bounds_finish(const fr_problem *p, double qn, double kn, double wnorm, const double *mq,
                       const double *mk, const fr__rope_abs *tab, fr_bounds *out)
{
    int64_t n = p->n;
    out->B = fmax(out->B_q, fmax(out->B_k, out->B_v));
    out->B_over_sqrt_ln_n = n > 1 ? out->B / sqrt(log((double)n)) : INFINITY;
    double tau = p->tau;
    out->R = INFINITY;
    out->R_from = "";
    /* Per-position rotations preserve norms, so Cauchy-Schwarz on the rotated rows. */
    int rope_norm = p->rot.kind == FR_ROT_NONE || p->rot.kind == FR_ROT_ROPE ||
                    (p->rot.kind == FR_ROT_CLIP && p->rot.clip >= n - 1);
    if (rope_norm) {
        out->R = tau * qn * kn;
        out->R_from = "rope-norm";
    }
    double spectral = tau * wnorm * qn * kn;
    if (spectral < out->R) {
        out->R = spectral;
        out->R_from = "spectral";
    }
    double support = tau * fr__support_sum(p, mq, mk, tab);
    if (support < out->R) {
        out->R = support;
        out->R_from = "support";
    }
    out->R *= ROUNDING_SLACK;
    out->R_norm = tau * wnorm * qn * kn * ROUNDING_SLACK;
    out->R_abs = tau * support_abs_sum(p, mq, mk) * ROUNDING_SLACK;
}

/* The reductions of one tensor's problem: column maxima and the largest row norm. */
typedef struct {
    double *colmax; /* cols per problem */
    double *rownorm;
} reductions;

/* Each problem's maxima of rows x cols entries (problem e at x + e * rows * cols). */
static void reduce_problems(tensor x, int64_t count, int64_t rows, int64_t cols, reductions *r)
{
#pragma omp parallel for schedule(static) if (count > 1 && count * rows * cols >= (1 << 18))
    for (int64_t e = 0; e < count; e++)
        row_col_max(offset(x, e * rows * cols), rows, cols, r->colmax + e * cols, &r->rownorm[e]);
}

static double max_of(const double *x, int64_t count)
{
    double m = 0;
    for (int64_t i = 0; i < count; i++)
        m = fmax(m, x[i]);
    return m;
}

static int compute(const fr_problem *p, tensor q, tensor k, tensor v, fr_bounds *out, char *err,
                   size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    int64_t B = fr__batch(p), KV = fr__kv_batch(p), g = fr__group(p), W = fr__w_count(p);
    int64_t n = p->n, d = p->d, dv = p->dv;
    memset(out, 0, (size_t)B * sizeof *out);
    if ((st = check_finite("q", q, B * n * d, err, errlen)) ||
        (st = check_finite("k", k, KV * n * d, err, errlen)) ||
        (st = check_finite("v", v, KV * n * dv, err, errlen)))
        return st;

    /* Key and value sides once per key/value problem, W once per W: grouped heads share them. */
    reductions rq = {malloc((size_t)(B * d) * sizeof(double)), malloc((size_t)B * sizeof(double))};
    reductions rk = {malloc((size_t)(KV * d) * sizeof(double)),
                     malloc((size_t)KV * sizeof(double))};
    reductions rv = {malloc((size_t)(KV * dv) * sizeof(double)),
                     malloc((size_t)KV * sizeof(double))};
    double *wnorm = malloc((size_t)W * sizeof *wnorm), *w2 = malloc((size_t)(d * d) * sizeof *w2);
    fr__rope_abs tab = {0, 0, NULL, NULL, NULL};
    if (!rq.colmax || !rq.rownorm || !rk.colmax || !rk.rownorm || !rv.colmax || !rv.rownorm ||
        !wnorm || !w2) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory computing the bounds");
        goto done;
    }
    if (B > 1) fr__rope_abs_build(p, &tab); /* the angles are the batch's, not the data's */
    reduce_problems(q, B, n, d, &rq);
    reduce_problems(k, KV, n, d, &rk);
    reduce_problems(v, KV, n, dv, &rv);
    for (int64_t w = 0; w < W; w++) {
        wnorm[w] = 1; /* every W_delta of NONE, ROPE and CLIP is a rotation */
        if (p->rot.kind == FR_ROT_EXPLICIT) {
            const double *pw = p->rot.w + w * (2 * n - 1) * d * d;
            wnorm[w] = 0;
            for (int64_t t = 0; t < 2 * n - 1; t++)
                wnorm[w] = fmax(wnorm[w], spectral_upper(pw + t * d * d, d, w2));
        }
    }
#pragma omp parallel for schedule(static) if (B > 1 && B * n * d >= (1 << 18))
    for (int64_t b = 0; b < B; b++) {
        int64_t h = b / g;
        fr_problem pe = fr__entry_problem(p, b);
        fr_bounds *o = &out[b];
        o->B_q = max_of(rq.colmax + b * d, d);
        o->B_k = max_of(rk.colmax + h * d, d);
        o->B_v = max_of(rv.colmax + h * dv, dv);
        fr__bounds_finish(&pe, rq.rownorm[b], rk.rownorm[h], wnorm[W > 1 ? b : 0],
                          rq.colmax + b * d, rk.colmax + h * d, &tab, o);
    }
    /* Finite entries can still give scores beyond the double range (entries ~1e160, or a huge
     * tau): every method would then compute NaN, so it is the input's fault, said here once. */
    for (int64_t b = 0; b < B && !st; b++)
        if (!isfinite(out[b].R)) {
            char who[48] = "";
            if (B > 1) snprintf(who, sizeof who, "problem %lld: ", (long long)b);
            st = fr__err(err, errlen, FR_EINPUT,
                         "%sthe scores overflow: their bound R is not finite (largest entries "
                         "|q| %.3g, |k| %.3g, scale tau %.3g)",
                         who, out[b].B_q, out[b].B_k, p->tau);
        }
done:
    free(rq.colmax), free(rq.rownorm), free(rk.colmax), free(rk.rownorm);
    free(rv.colmax), free(rv.rownorm), free(wnorm), free(w2);
    fr__rope_abs_free(&tab);
    return st;
}

fr_status fr_bounds_compute(const fr_problem *p, const double *q, const double *k, const double *v,
                            fr_bounds *out, char *err, size_t errlen)
{
    return compute(p, (tensor){q, NULL}, (tensor){k, NULL}, (tensor){v, NULL}, out, err, errlen);
}

fr_status fr_bounds_compute_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                                fr_bounds *out, char *err, size_t errlen)
{
    return compute(p, (tensor){NULL, q}, (tensor){NULL, k}, (tensor){NULL, v}, out, err, errlen);
}

void fr_bounds_pool(const fr_bounds *b, int64_t count, fr_bounds *out)
{
    memset(out, 0, sizeof *out);
    out->R_from = "";
    for (int64_t e = 0; e < count; e++) {
        out->B_q = fmax(out->B_q, b[e].B_q);
        out->B_k = fmax(out->B_k, b[e].B_k);
        out->B_v = fmax(out->B_v, b[e].B_v);
        out->B = fmax(out->B, b[e].B);
        out->B_over_sqrt_ln_n = fmax(out->B_over_sqrt_ln_n, b[e].B_over_sqrt_ln_n);
        if (e == 0 || b[e].R > out->R) {
            out->R = b[e].R;
            out->R_from = b[e].R_from;
        }
    }
}
