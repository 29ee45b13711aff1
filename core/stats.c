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

static fr_status refuse_explicit(const fr_problem *p, char *err, size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    if (p->rot.kind == FR_ROT_EXPLICIT)
        return fr__err(err, errlen, FR_EUSAGE,
                       "bounds from statistics need a rotation given by parameters, not an "
                       "explicit W");
    return FR_OK;
}

static void from_stats(const fr_problem *p, double q_row_sq, double k_row_sq,
                       const double *q_col_max, const double *k_col_max, double B_v,
                       const fr__rope_abs *tab, fr_bounds *out)
{
    memset(out, 0, sizeof *out);
    for (int64_t a = 0; a < p->d; a++) {
        out->B_q = fmax(out->B_q, q_col_max[a]);
        out->B_k = fmax(out->B_k, k_col_max[a]);
    }
    out->B_v = B_v;
    fr__bounds_finish(p, sqrt(q_row_sq), sqrt(k_row_sq), 1, q_col_max, k_col_max, tab, out);
}

fr_status fr_bounds_from_stats(const fr_problem *p, double q_row_sq, double k_row_sq,
                               const double *q_col_max, const double *k_col_max, double B_v,
                               fr_bounds *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int st = refuse_explicit(p, err, errlen);
    if (!st) from_stats(p, q_row_sq, k_row_sq, q_col_max, k_col_max, B_v, NULL, out);
    return st;
}

fr_status fr_bounds_from_stats_batch(const fr_problem *p, const double *q_row_sq,
                                     const double *k_row_sq, const double *q_col_max,
                                     const double *k_col_max, const double *B_v, fr_bounds *out,
                                     char *err, size_t errlen)
{
    int64_t B = fr__batch(p), g = fr__group(p), d = p->d;
    memset(out, 0, (size_t)B * sizeof *out);
    int st = refuse_explicit(p, err, errlen);
    if (st) return st;
    /* The RoPE support bound's trigonometry depends on the shape only: computed once here, it
     * was most of a many-headed dump's bounds when every head built its own. */
    fr__rope_abs tab;
    fr__rope_abs_build(p, &tab);
#pragma omp parallel for schedule(static) if (B > 1 && B * p->n * d >= (1 << 18))
    for (int64_t b = 0; b < B; b++) {
        int64_t h = b / g;
        from_stats(p, q_row_sq[b], k_row_sq[h], q_col_max + b * d, k_col_max + h * d, B_v[h], &tab,
                   &out[b]);
    }
    fr__rope_abs_free(&tab);
    return FR_OK;
}

fr_status fr_bounds_uniform(const fr_problem *p, double B, fr_bounds *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    if (!(B >= 0) || !isfinite(B))
        return fr__err(err, errlen, FR_EUSAGE, "entry bound B = %g must be finite and >= 0", B);
    int64_t d = p->d;
    double *m = malloc((size_t)d * sizeof *m);
    if (!m) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    for (int64_t a = 0; a < d; a++)
        m[a] = B;
    out->B_q = out->B_k = out->B_v = B;
    /* Every row has ||x||_2 <= B sqrt(d); an explicit W without data (support_hint entries of
     * size <= 1) has spectral norm <= its support size. */
    double wnorm = 1;
    if (p->rot.kind == FR_ROT_EXPLICIT && !p->rot.w) wnorm = (double)p->rot.support_hint;
    double rn = B * sqrt((double)d);
    fr__bounds_finish(p, rn, rn, wnorm, m, m, NULL, out);
    free(m);
    return FR_OK;
}
