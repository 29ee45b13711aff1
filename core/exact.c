/* exact.c - the exact reference in double precision: the engine of exact_impl.h instantiated
 * for double, behind fr_exact_rows.
 *
 * Every fast path is judged against this and its speed compared with it, so it is both exact
 * (double precision throughout: inputs, products, exps and sums) and fast (register-tiled
 * score blocks, the exp and the P V product fused in cache, masked blocks skipped whole). */
/* -std=c11 turns off the contraction of a * b + c into one fused multiply-add, and with it
 * half the machine's peak: the micro-kernels are written as products and sums and want FMAs
 * (one rounding instead of two, which only helps the accuracy). */
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
/* exp(-600) ~ 2.6e-261: far inside the normal range (2.2e-308), whatever the block's sums. */
#define SHIFT_MAX 600.0
#define X(name) name##_f64
#define ROTATE_CHUNK(p, x, i0, cnt, out) fr__rotate_rows(p, x, i0, cnt, out)
#include "exact_impl.h"

/* Below this many scores a thread team costs more than it saves. */
int fr__exact_small(const fr_problem *p, int64_t nrows)
{
    return (double)nrows * (double)p->n < FR_EXACT_PAR_MIN_SCORES;
}

int fr__exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                   const int64_t *rows, int64_t nrows, double *out, fr__prog *pg, char *err,
                   size_t errlen)
{
    return exact_rows_f64(p, q, k, v, rows, nrows, out, NULL, pg, err, errlen);
}

int fr__exact_rows_lse(const fr_problem *p, const double *q, const double *k, const double *v,
                       double *out, double *lse, fr__prog *pg, char *err, size_t errlen)
{
    return exact_rows_f64(p, q, k, v, NULL, p->n, out, lse, pg, err, errlen);
}
