/* stats.c - the score bound R from per-tensor reductions, for callers that stream tensors one
 * at a time and never hold Q and K together (fastrope check).
 *
 * R must come out bit-identical to fr_bounds_compute's on the same data (a user compares check's
 * table with run's report), so the reductions and the combination below repeat bounds.c's
 * arithmetic operation for operation: row sums of squares in column order, maxima, then the
 * rope-norm / spectral / support bounds with the same slack. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDING_SLACK (1 + 1e-12) /* as in bounds.c */

void fr_stats_rows(const double *x, int64_t rows, int64_t cols, double *col_max, double *max_row_sq)
{
    double best = *max_row_sq;
    for (int64_t i = 0; i < rows; i++) {
        const double *r = x + i * cols;
        double s = 0;
        /* Sequential in a: the same rounding as bounds.c (no reassociation is allowed). */
        for (int64_t a = 0; a < cols; a++) {
            double e = fabs(r[a]);
            s += e * e;
        }
        for (int64_t a = 0; a < cols; a++) {
            double e = fabs(r[a]);
            col_max[a] = e > col_max[a] ? e : col_max[a];
        }
        if (s > best) best = s;
    }
    *max_row_sq = best;
}

/* bounds.c's support_sum for the rotations known by parameters (no explicit W). */
static double support_sum(const fr_problem *p, const double *mq, const double *mk)
{
    int64_t n = p->n, d = p->d;
    double best = 0;
    if (p->rot.kind == FR_ROT_NONE) {
        for (int64_t a = 0; a < d; a++)
            best += mq[a] * mk[a];
        return best;
    }
    int64_t lim = n - 1;
    if (p->rot.kind == FR_ROT_CLIP && p->rot.clip < lim) lim = p->rot.clip;
    int64_t *pa = malloc((size_t)d * sizeof *pa), *pb = malloc((size_t)d * sizeof *pb);
    double *freq = malloc((size_t)d * sizeof *freq);
    char *paired = malloc((size_t)d);
    if (!pa || !pb || !freq || !paired) {
        best = INFINITY;
        goto done;
    }
    int64_t np = fr__rope_pairs(p, pa, pb, freq);
    double fixed = 0;
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

int fr_bounds_from_stats(const fr_problem *p, double q_row_sq, double k_row_sq,
                         const double *q_col_max, const double *k_col_max, double B_v,
                         fr_bounds *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    if (p->rot.kind == FR_ROT_EXPLICIT)
        return fr__err(err, errlen, FR_EUSAGE,
                       "bounds from statistics need a rotation given by parameters, not an "
                       "explicit W");
    int64_t n = p->n, d = p->d;
    for (int64_t a = 0; a < d; a++) {
        out->B_q = fmax(out->B_q, q_col_max[a]);
        out->B_k = fmax(out->B_k, k_col_max[a]);
    }
    out->B_v = B_v;
    out->B = fmax(out->B_q, fmax(out->B_k, out->B_v));
    out->B_over_sqrt_ln_n = n > 1 ? out->B / sqrt(log((double)n)) : INFINITY;
    double qn = sqrt(q_row_sq), kn = sqrt(k_row_sq), tau = p->tau;
    out->R = INFINITY;
    out->R_from = "";
    int rope_norm = p->rot.kind == FR_ROT_NONE || p->rot.kind == FR_ROT_ROPE ||
                    (p->rot.kind == FR_ROT_CLIP && p->rot.clip >= n - 1);
    if (rope_norm) {
        out->R = tau * qn * kn;
        out->R_from = "rope-norm";
    }
    double wnorm = 1;
    double spectral = tau * wnorm * qn * kn;
    if (spectral < out->R) {
        out->R = spectral;
        out->R_from = "spectral";
    }
    double support = tau * support_sum(p, q_col_max, k_col_max);
    if (support < out->R) {
        out->R = support;
        out->R_from = "support";
    }
    out->R *= ROUNDING_SLACK;
    return FR_OK;
}
