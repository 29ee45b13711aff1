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
    double support = tau * fr__support_sum(p, q_col_max, k_col_max);
    if (support < out->R) {
        out->R = support;
        out->R_from = "support";
    }
    out->R *= ROUNDING_SLACK;
    return FR_OK;
}
