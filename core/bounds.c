/* bounds.c - entry bounds and the score bound R (ALGORITHM.md 2).
 *
 * R must bound every |s_ij| without forming the scores, and it should be as small as possible
 * because the polynomial degree (hence the cost) grows with it. Three bounds apply in different
 * situations; the smallest wins and R_from names it. */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Relative slack for the rounding in the bound's own arithmetic, so R stays an upper bound of
 * the scores as the exact engine computes them. */
#define ROUNDING_SLACK (1 + 1e-12)

static int check_finite(const char *name, const double *x, int64_t count, char *err, size_t errlen)
{
    int64_t i = fr_find_nonfinite(x, count);
    if (i < 0) return FR_OK;
    return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value (%g) at flat index %lld",
                   name, x[i], (long long)i);
}

/* Column-wise max |x_ia| into colmax[cols], and max over rows of ||x_i||_2. */
static void row_col_max(const double *x, int64_t rows, int64_t cols, double *colmax,
                        double *rownorm)
{
    *rownorm = 0;
    for (int64_t a = 0; a < cols; a++)
        colmax[a] = 0;
    for (int64_t i = 0; i < rows; i++) {
        double s = 0;
        for (int64_t a = 0; a < cols; a++) {
            double e = fabs(x[i * cols + a]);
            s += e * e;
            if (e > colmax[a]) colmax[a] = e;
        }
        if (s > *rownorm) *rownorm = s;
    }
    *rownorm = sqrt(*rownorm);
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

/* max over offsets of sum_{a,b} |W_delta[a,b]| mq[a] mk[b] (entries outside S contribute 0). */
double fr__support_sum(const fr_problem *p, const double *mq, const double *mk)
{
    int64_t n = p->n, d = p->d;
    double best = 0;
    if (p->rot.kind == FR_ROT_NONE) {
        for (int64_t a = 0; a < d; a++)
            best += mq[a] * mk[a];
        return best;
    }
    if (p->rot.kind == FR_ROT_EXPLICIT) {
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
    /* RoPE and clipped RoPE: only the offsets that occur (clipped ones repeat), O(d) each. */
    int64_t lim = n - 1;
    if (p->rot.kind == FR_ROT_CLIP && p->rot.clip < lim) lim = p->rot.clip;
    int64_t *pa = malloc((size_t)d * sizeof *pa), *pb = malloc((size_t)d * sizeof *pb);
    double *freq = malloc((size_t)d * sizeof *freq);
    char *paired = malloc((size_t)d); /* coordinates in some rotated pair */
    if (!pa || !pb || !freq || !paired) {
        best = INFINITY; /* a valid, useless bound: another bound wins */
        goto done;
    }
    int64_t np = fr__rope_pairs(p, pa, pb, freq);
    double fixed = 0; /* coordinates outside every pair keep weight 1 */
    memset(paired, 0, (size_t)d);
    for (int64_t m = 0; m < np; m++)
        paired[pa[m]] = paired[pb[m]] = 1;
    for (int64_t a = 0; a < d; a++)
        if (!paired[a]) fixed += mq[a] * mk[a];
    for (int64_t delta = -lim; delta <= lim; delta++) {
        double s = fixed;
        for (int64_t m = 0; m < np; m++) {
            double ang = (double)delta * freq[m];
            double c = fabs(cos(ang)), sn = fabs(sin(ang));
            int64_t a = pa[m], b = pb[m];
            s += c * (mq[a] * mk[a] + mq[b] * mk[b]) + sn * (mq[a] * mk[b] + mq[b] * mk[a]);
        }
        if (s > best) best = s;
    }
done:
    free(pa);
    free(pb);
    free(freq);
    free(paired);
    return best;
}

void fr__bounds_finish(const fr_problem *p, double qn, double kn, double wnorm, const double *mq,
                       const double *mk, fr_bounds *out)
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
    double support = tau * fr__support_sum(p, mq, mk);
    if (support < out->R) {
        out->R = support;
        out->R_from = "support";
    }
    out->R *= ROUNDING_SLACK;
}

int fr_bounds_compute(const fr_problem *p, const double *q, const double *k, const double *v,
                      int64_t batch, fr_bounds *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    if (batch < 1)
        return fr__err(err, errlen, FR_EUSAGE, "batch must be >= 1, got %lld", (long long)batch);
    int64_t n = p->n, d = p->d, dv = p->dv, nq, nv;
    if (!fr__mul_ok(batch, n * d, &nq) || !fr__mul_ok(batch, n * dv, &nv))
        return fr__err(err, errlen, FR_EINPUT, "batch too large");
    if ((st = check_finite("q", q, nq, err, errlen)) ||
        (st = check_finite("k", k, nq, err, errlen)) ||
        (st = check_finite("v", v, nv, err, errlen)))
        return st;

    double *mq = malloc((size_t)d * sizeof *mq), *mk = malloc((size_t)d * sizeof *mk),
           *mv = malloc((size_t)dv * sizeof *mv), *w2 = malloc((size_t)(d * d) * sizeof *w2);
    if (!mq || !mk || !mv || !w2) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory computing the bounds");
        goto done;
    }
    double qn, kn, vn;
    row_col_max(q, batch * n, d, mq, &qn);
    row_col_max(k, batch * n, d, mk, &kn);
    row_col_max(v, batch * n, dv, mv, &vn);
    for (int64_t a = 0; a < d; a++) {
        out->B_q = fmax(out->B_q, mq[a]);
        out->B_k = fmax(out->B_k, mk[a]);
    }
    for (int64_t a = 0; a < dv; a++)
        out->B_v = fmax(out->B_v, mv[a]);
    double wnorm = 1; /* every W_delta of NONE, ROPE and CLIP is a rotation */
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        wnorm = 0;
        for (int64_t t = 0; t < 2 * n - 1; t++)
            wnorm = fmax(wnorm, spectral_upper(p->rot.w + t * d * d, d, w2));
    }
    fr__bounds_finish(p, qn, kn, wnorm, mq, mk, out);
done:
    free(mq);
    free(mk);
    free(mv);
    free(w2);
    return st;
}
