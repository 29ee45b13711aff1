/* backward.c - exact gradients in double precision: the engine of backward_impl.h (ALGORITHM.md
 * 7, FlashAttention-2 style) instantiated for double, behind fr_exact_backward and
 * fr_exact_backward_rows, and the argument checks every backward makes. */
/* -std=c11 turns off the contraction of a * b + c into one fused multiply-add, and with it
 * half the machine's peak (see exact.c). */
#pragma GCC optimize("fp-contract=fast")

#include "internal.h"
#include "tiles.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define REAL double
#define RV fr__vd
#define NV FR_VW
#define EXPR exp
#define X(name) name##_f64
#define ROTATE_CHUNK(p, x, i0, cnt, out) fr__rotate_rows(p, x, i0, cnt, out)
#define FORWARD_LSE(p, q, k, v, out, lse, pg, err, errlen)                                         \
    fr__exact_rows_lse(p, q, k, v, out, lse, pg, err, errlen)
#include "backward_impl.h"

static int check_rows(const int64_t *rows, int64_t nrows, int64_t n, char *err, size_t errlen)
{
    if (nrows < 0)
        return fr__err(err, errlen, FR_EUSAGE, "exact backward: nrows = %lld < 0",
                       (long long)nrows);
    if (!rows && nrows != n)
        return fr__err(err, errlen, FR_EUSAGE,
                       "exact backward: all rows asked (rows = NULL) but nrows = %lld != n = %lld",
                       (long long)nrows, (long long)n);
    for (int64_t t = 0; rows && t < nrows; t++)
        if (rows[t] < 0 || rows[t] >= n)
            return fr__err(err, errlen, FR_EUSAGE, "exact backward: row %lld is outside 0..%lld",
                           (long long)rows[t], (long long)(n - 1));
    return FR_OK;
}

int fr__backward_check(const fr_problem *p, const char *who, const double *q, const double *k,
                       const double *v, const double *dout, const double *target, const double *dq,
                       const double *dk, const double *dv, char *err, size_t errlen)
{
    return backward_check_f64(p, who, q, k, v, dout, target, dq, dk, dv, err, errlen);
}

int fr__exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                       const double *dout, const double *target, double *t, double *dq, double *dk,
                       double *dv, double *dw, double *loss, fr__prog *pg, char *err, size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (!st)
        st =
            fr__backward_check(p, "exact backward", q, k, v, dout, target, dq, dk, dv, err, errlen);
    if (st) return st;
    return backward_f64(p, q, k, v, dout, target, NULL, p->n, t, dq, dk, dv, dw, loss,
                        FR_EXACT_PAR_MIN_SCORES, pg, err, errlen);
}

int fr__exact_backward_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                            const double *dout, const double *target, const int64_t *rows,
                            int64_t nrows, double *dq, double *dk, double *dv, fr__prog *pg,
                            char *err, size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (st || (st = check_rows(rows, nrows, p->n, err, errlen))) return st;
    if (nrows == 0) return FR_OK; /* nothing asked: the outputs may be NULL */
    if ((st = fr__backward_check(p, "exact backward", q, k, v, dout, target, dq, dk, dv, err,
                                 errlen)))
        return st;
    return backward_f64(p, q, k, v, dout, target, rows, nrows, NULL, dq, dk, dv, NULL, NULL,
                        FR_EXACT_PAR_MIN_SCORES, pg, err, errlen);
}

int fr__exact_backward_par(const fr_problem *p, const double *q, const double *k, const double *v,
                           const double *dout, const int64_t *rows, int64_t nrows, double *dq,
                           double *dk, double *dv, double *dw, double par_min, char *err,
                           size_t errlen)
{
    return backward_f64(p, q, k, v, dout, NULL, rows, nrows, NULL, dq, dk, dv, dw, NULL, par_min,
                        NULL, err, errlen);
}
