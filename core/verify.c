/* verify.c - the exact reference over a batch, and how far a result is from it: exact rows and
 * gradients of every problem (grouped-query heads summed like the fast paths sum them), an
 * accumulating normwise comparison, and the checks the commands report. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-thread buffers of count doubles each; NULL when out of memory. */
static double **buffers(int64_t count)
{
    int T = omp_get_max_threads();
    double **x = calloc((size_t)T, sizeof *x);
    for (int t = 0; x && t < T; t++)
        if (!(x[t] = malloc((size_t)(count ? count : 1) * sizeof **x))) {
            for (int u = 0; u < t; u++)
                free(x[u]);
            free(x);
            return NULL;
        }
    return x;
}

static void free_buffers(double **x)
{
    int T = omp_get_max_threads();
    for (int t = 0; x && t < T; t++)
        free(x[t]);
    free(x);
}

/* The caller's problem with the RoPE-family question answered once, when its W is shared (a W
 * per problem is answered per problem). */
static fr_problem settled(const fr_problem *p)
{
    fr_problem s = *p;
    s.rot.family = 0;
    if (fr__w_count(&s) == 1) fr__settle_family(&s);
    return s;
}

/* The rows argument: NULL means every row, in which case nrows must be n. */
static int check_rows(const fr_problem *p, const int64_t *rows, int64_t nrows, char *err,
                      size_t errlen)
{
    if (nrows < 0) return fr__err(err, errlen, FR_EUSAGE, "nrows = %lld < 0", (long long)nrows);
    if (!rows && nrows != p->n)
        return fr__err(err, errlen, FR_EUSAGE,
                       "all rows asked (rows = NULL) but nrows = %lld != n = %lld",
                       (long long)nrows, (long long)p->n);
    return FR_OK;
}

/* ---- the exact forward ---------------------------------------------------------------------- */

typedef struct {
    const fr_problem *p;
    const double *q, *k, *v;
    const int64_t *rows;
    int64_t nrows;
    double *out;
} rows_ctx;

static int rows_entry(void *ctx, int64_t b, int thread, fr__prog *pg, char *err, size_t errlen)
{
    (void)thread; /* writes only its own problem's output */
    const rows_ctx *c = ctx;
    const fr_problem *p = c->p;
    int64_t n = p->n, d = p->d, dv = p->dv, h = b / fr__group(p);
    fr_problem pe = fr__entry_problem(p, b);
    if (!pe.rot.family) fr__settle_family(&pe);
    int st = fr__exact_rows(&pe, c->q + b * n * d, c->k + h * n * d, c->v + h * n * dv, c->rows,
                            c->nrows, c->out + b * c->nrows * dv, pg, err, errlen);
    return fr__entry_err(p, b, st, err, errlen);
}

/* Exact problems are all alike in size: side by side when each runs on one thread. */
static unsigned char *all_small(const fr_problem *p, int64_t count, int64_t nrows)
{
    unsigned char *s = malloc((size_t)(count ? count : 1));
    if (s) memset(s, fr__exact_small(p, nrows), (size_t)(count ? count : 1));
    return s;
}

fr_status fr_exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                        const int64_t *rows, int64_t nrows, double *out, char *err, size_t errlen)
{
    return fr_exact_rows_progress(p, q, k, v, rows, nrows, out, NULL, NULL, err, errlen);
}

fr_status fr_exact_rows_progress(const fr_problem *p0, const double *q, const double *k,
                                 const double *v, const int64_t *rows, int64_t nrows, double *out,
                                 fr_progress_fn progress, void *progress_user, char *err,
                                 size_t errlen)
{
    int st = fr_problem_check(p0, err, errlen);
    if (st) return st;
    fr_problem pp = settled(p0);
    const fr_problem *p = &pp;
    if ((st = check_rows(p, rows, nrows, err, errlen))) return st;
    int64_t B = fr__batch(p);
    rows_ctx c = {p, q, k, v, rows, nrows, out};
    fr__prog pg;
    if (fr__prog_start(&pg, progress, progress_user, "exact rows"))
        return fr__prog_err(&pg, err, errlen);
    unsigned char *small = all_small(p, B, nrows);
    if (!small) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    st = fr__for_entries(B, small, 0, rows_entry, &c, &pg, err, errlen);
    free(small);
    return st;
}

/* ---- the exact gradients -------------------------------------------------------------------- */

fr_status fr_exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                            const double *dout, const double *target, double *t, double *dq,
                            double *dk, double *dv, double *dw, double *loss, char *err,
                            size_t errlen)
{
    /* The batch plan's gradient loop with every problem on the exact method: the same group
     * sums and dW sums as the fast methods get. */
    fr_options o = fr_options_default();
    o.method = FR_METHOD_EXACT;
    fr_plan *pl;
    int st = fr_plan_create(&pl, p, NULL, &o, err, errlen);
    if (st) return st;
    st = fr_execute_backward(pl, q, k, v, dout, target, t, dq, dk, dv, dw, loss, NULL, err, errlen);
    fr_plan_free(pl);
    return st;
}

typedef struct {
    const fr_problem *p;
    const double *q, *k, *v, *dout, *target;
    const int64_t *rows;
    int64_t nrows;
    double *dq, *dk, *dv;
    double **tmp; /* per thread: a group's later problems' dk, dv rows */
} grows_ctx;

static void add_into(double *acc, const double *x, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        acc[i] += x[i];
}

static int grows_group(void *ctx, int64_t h, int thread, fr__prog *pg, char *err, size_t errlen)
{
    const grows_ctx *c = ctx;
    const fr_problem *p = c->p;
    int64_t n = p->n, d = p->d, dv = p->dv, g = fr__group(p), m = c->nrows;
    double *tk = c->tmp ? c->tmp[thread] : NULL, *tv = tk ? tk + m * d : NULL;
    for (int64_t e = 0; e < g; e++) {
        int64_t b = h * g + e;
        fr_problem pe = fr__entry_problem(p, b);
        if (!pe.rot.family) fr__settle_family(&pe);
        const double *up = c->dout ? c->dout : c->target;
        double *dk = e ? tk : c->dk + h * m * d, *dvv = e ? tv : c->dv + h * m * dv;
        fr__prog_range rg = fr__prog_narrow(pg, (double)e / g, (double)(e + 1) / g);
        int st = fr__exact_backward_rows(&pe, c->q + b * n * d, c->k + h * n * d, c->v + h * n * dv,
                                         c->dout ? up + b * n * dv : NULL,
                                         c->target ? up + b * n * dv : NULL, c->rows, m,
                                         c->dq + b * m * d, dk, dvv, pg, err, errlen);
        fr__prog_restore(pg, rg);
        if (st) return fr__entry_err(p, b, st, err, errlen);
        if (e) {
            add_into(c->dk + h * m * d, tk, m * d);
            add_into(c->dv + h * m * dv, tv, m * dv);
        }
    }
    return FR_OK;
}

fr_status fr_exact_backward_rows(const fr_problem *p, const double *q, const double *k,
                                 const double *v, const double *dout, const double *target,
                                 const int64_t *rows, int64_t nrows, double *dq, double *dk,
                                 double *dv, char *err, size_t errlen)
{
    return fr_exact_backward_rows_progress(p, q, k, v, dout, target, rows, nrows, dq, dk, dv, NULL,
                                           NULL, err, errlen);
}

fr_status fr_exact_backward_rows_progress(const fr_problem *p0, const double *q, const double *k,
                                          const double *v, const double *dout, const double *target,
                                          const int64_t *rows, int64_t nrows, double *dq,
                                          double *dk, double *dv, fr_progress_fn progress,
                                          void *progress_user, char *err, size_t errlen)
{
    int st = fr_problem_check(p0, err, errlen);
    if (st) return st;
    fr_problem pp = settled(p0);
    const fr_problem *p = &pp;
    if (!rows && nrows > 0) return fr__err(err, errlen, FR_EUSAGE, "rows are required");
    if (nrows == 0) return FR_OK; /* nothing asked: the outputs may be NULL */
    int64_t KV = fr__kv_batch(p), g = fr__group(p);
    grows_ctx c = {p, q, k, v, dout, target, rows, nrows, dq, dk, dv, NULL};
    fr__prog pg;
    if (fr__prog_start(&pg, progress, progress_user, "exact rows"))
        return fr__prog_err(&pg, err, errlen);
    if (g > 1 && !(c.tmp = buffers(nrows * (p->d + p->dv))))
        return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    /* Each problem's statistics pass is O(n^2 d): small enough for one thread below the exact
     * path's own threshold. */
    unsigned char *small = all_small(p, KV, p->n);
    st = small ? fr__for_entries(KV, small, 0, grows_group, &c, &pg, err, errlen)
               : fr__err(err, errlen, FR_ENOMEM, "out of memory");
    free(small);
    free_buffers(c.tmp);
    return st;
}

/* ---- comparing ------------------------------------------------------------------------------ */

static void finish(fr_diff *acc)
{
    /* Normwise: an entrywise relative error explodes on the near-zero entries that attention
     * outputs (averages of V) are full of, and says nothing about the answer's quality. */
    if (isnan(acc->max_abs))
        acc->max_rel = NAN;
    else if (acc->ref_max > 0)
        acc->max_rel = acc->max_abs / acc->ref_max;
    else
        acc->max_rel = acc->max_abs > 0 ? INFINITY : 0;
}

/* acc = max(acc, x), where a NaN on either side wins and stays. */
static void max_into(double *acc, double x)
{
    if (!isnan(*acc) && !(x <= *acc)) *acc = x;
}

void fr_diff_add(fr_diff *acc, const double *got, const double *ref, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        max_into(&acc->max_abs, fabs(got[i] - ref[i]));
        acc->ref_max = fmax(acc->ref_max, fabs(ref[i]));
    }
    acc->count += count;
    finish(acc);
}

void fr_diff_merge(fr_diff *acc, const fr_diff *other)
{
    max_into(&acc->max_abs, other->max_abs);
    acc->ref_max = fmax(acc->ref_max, other->ref_max);
    acc->count += other->count;
    finish(acc);
}

fr_diff fr_compare(const double *got, const double *ref, int64_t count)
{
    fr_diff d = {0, 0, 0, 0};
    fr_diff_add(&d, got, ref, count);
    return d;
}

/* ---- checking a forward --------------------------------------------------------------------- */

typedef struct {
    const fr_problem *p;
    const double *q, *k, *v, *out;
    const int64_t *rows;
    int64_t nrows;
    double **ref, **got; /* per thread: nrows x dv */
    fr_diff *per;
} check_ctx;

static int check_entry(void *ctx, int64_t b, int thread, fr__prog *pg, char *err, size_t errlen)
{
    const check_ctx *c = ctx;
    const fr_problem *p = c->p;
    int64_t n = p->n, d = p->d, dv = p->dv, h = b / fr__group(p), m = c->nrows;
    fr_problem pe = fr__entry_problem(p, b);
    if (!pe.rot.family) fr__settle_family(&pe);
    double *ref = c->ref[thread], *got = c->got[thread];
    int st = fr__exact_rows(&pe, c->q + b * n * d, c->k + h * n * d, c->v + h * n * dv, c->rows, m,
                            ref, pg, err, errlen);
    if (st) return fr__entry_err(p, b, st, err, errlen);
    const double *o = c->out + b * n * dv;
    for (int64_t t = 0; t < m; t++)
        memcpy(got + t * dv, o + (c->rows ? c->rows[t] : t) * dv, (size_t)dv * sizeof *got);
    memset(&c->per[b], 0, sizeof c->per[b]);
    fr_diff_add(&c->per[b], got, ref, m * dv);
    return FR_OK;
}

fr_status fr_check_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                        const double *out, const int64_t *rows, int64_t nrows, fr_diff *per,
                        fr_diff *all, char *err, size_t errlen)
{
    return fr_check_rows_progress(p, q, k, v, out, rows, nrows, per, all, NULL, NULL, err, errlen);
}

fr_status fr_check_rows_progress(const fr_problem *p0, const double *q, const double *k,
                                 const double *v, const double *out, const int64_t *rows,
                                 int64_t nrows, fr_diff *per, fr_diff *all, fr_progress_fn progress,
                                 void *progress_user, char *err, size_t errlen)
{
    int st = fr_problem_check(p0, err, errlen);
    if (st) return st;
    fr_problem pp = settled(p0);
    const fr_problem *p = &pp;
    if ((st = check_rows(p, rows, nrows, err, errlen))) return st;
    int64_t B = fr__batch(p);
    check_ctx c = {p,
                   q,
                   k,
                   v,
                   out,
                   rows,
                   nrows,
                   buffers(nrows * p->dv),
                   buffers(nrows * p->dv),
                   per ? per : malloc((size_t)B * sizeof *per)};
    unsigned char *small = all_small(p, B, nrows);
    if (!c.ref || !c.got || !c.per || !small)
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory checking against exact attention");
    fr__prog pg;
    if (!st && fr__prog_start(&pg, progress, progress_user, "exact rows"))
        st = fr__prog_err(&pg, err, errlen);
    if (!st) st = fr__for_entries(B, small, 0, check_entry, &c, &pg, err, errlen);
    if (!st && all) {
        memset(all, 0, sizeof *all);
        for (int64_t b = 0; b < B; b++)
            fr_diff_merge(all, &c.per[b]);
    }
    free_buffers(c.ref), free_buffers(c.got), free(small);
    if (c.per != per) free(c.per);
    return st;
}

/* ---- checking gradients --------------------------------------------------------------------- */

typedef struct {
    const fr_problem *p;
    const double *q, *k, *v, *dout, *target;
    const double *g[FR_NGRADS]; /* the gradients checked */
    const int64_t *rows;        /* NULL: every row, and dW */
    int64_t nrows;
    double **buf;    /* per thread: exact dq, dk, dv (dk, dv summed over the group), one dW,
                      * and the rows gathered */
    double **dw_sum; /* per thread: a shared W's exact dW summed */
    fr_diff *per;    /* batch x FR_NGRADS */
} gcheck_ctx;

/* got[t] = x's row rows[t] (width w), for t < m. */
static void gather(const double *x, const int64_t *rows, int64_t m, int64_t w, double *got)
{
    for (int64_t t = 0; t < m; t++)
        memcpy(got + t * w, x + (rows ? rows[t] : t) * w, (size_t)w * sizeof *got);
}

static int gcheck_group(void *ctx, int64_t h, int thread, fr__prog *pg, char *err, size_t errlen)
{
    const gcheck_ctx *c = ctx;
    const fr_problem *p = c->p;
    int64_t n = p->n, d = p->d, dv = p->dv, gs = fr__group(p), m = c->nrows;
    int64_t wsize = (2 * n - 1) * d * d, W = fr__w_count(p);
    int with_dw = c->g[FR_GRAD_DW] && !c->rows;
    double *eq = c->buf[thread], *ek = eq + m * d, *ev = ek + m * d, *tk = ev + m * dv;
    double *tv = tk + m * d, *ew = tv + m * dv, *got = ew + (with_dw ? wsize : 0);
    for (int64_t e = 0; e < gs; e++) {
        int64_t b = h * gs + e;
        fr_problem pe = fr__entry_problem(p, b);
        if (!pe.rot.family) fr__settle_family(&pe);
        const double *up = c->dout ? c->dout : c->target;
        const double *q = c->q + b * n * d, *k = c->k + h * n * d, *v = c->v + h * n * dv;
        const double *dout = c->dout ? up + b * n * dv : NULL;
        const double *target = c->target ? up + b * n * dv : NULL;
        double *dk = e ? tk : ek, *dvv = e ? tv : ev;
        int st = c->rows ? fr__exact_backward_rows(&pe, q, k, v, dout, target, c->rows, m, eq, dk,
                                                   dvv, pg, err, errlen)
                         : fr__exact_backward(&pe, q, k, v, dout, target, NULL, eq, dk, dvv,
                                              with_dw ? ew : NULL, NULL, pg, err, errlen);
        if (st) return fr__entry_err(p, b, st, err, errlen);
        if (e) {
            add_into(ek, tk, m * d);
            add_into(ev, tv, m * dv);
        }
        fr_diff *pd = c->per + b * FR_NGRADS;
        gather(c->g[FR_GRAD_DQ] + b * n * d, c->rows, m, d, got);
        fr_diff_add(&pd[FR_GRAD_DQ], got, eq, m * d);
        if (with_dw && W > 1)
            fr_diff_add(&pd[FR_GRAD_DW], c->g[FR_GRAD_DW] + b * wsize, ew, wsize);
        else if (with_dw)
            add_into(c->dw_sum[thread], ew, wsize);
    }
    fr_diff *ph = c->per + h * FR_NGRADS;
    gather(c->g[FR_GRAD_DK] + h * n * d, c->rows, m, d, got);
    fr_diff_add(&ph[FR_GRAD_DK], got, ek, m * d);
    gather(c->g[FR_GRAD_DV] + h * n * dv, c->rows, m, dv, got);
    fr_diff_add(&ph[FR_GRAD_DV], got, ev, m * dv);
    return FR_OK;
}

fr_status fr_check_backward_rows(const fr_problem *p, const double *q, const double *k,
                                 const double *v, const double *dout, const double *target,
                                 const double *dq, const double *dk, const double *dv,
                                 const double *dw, const int64_t *rows, int64_t nrows, fr_diff *per,
                                 fr_diff *all, char *err, size_t errlen)
{
    return fr_check_backward_rows_progress(p, q, k, v, dout, target, dq, dk, dv, dw, rows, nrows,
                                           per, all, NULL, NULL, err, errlen);
}

fr_status fr_check_backward_rows_progress(const fr_problem *p0, const double *q, const double *k,
                                          const double *v, const double *dout, const double *target,
                                          const double *dq, const double *dk, const double *dv,
                                          const double *dw, const int64_t *rows, int64_t nrows,
                                          fr_diff *per, fr_diff *all, fr_progress_fn progress,
                                          void *progress_user, char *err, size_t errlen)
{
    int st = fr_problem_check(p0, err, errlen);
    if (st) return st;
    fr_problem pp = settled(p0);
    const fr_problem *p = &pp;
    if ((st = check_rows(p, rows, nrows, err, errlen))) return st;
    if ((dout == NULL) == (target == NULL))
        return fr__err(err, errlen, FR_EUSAGE, "give exactly one of dout and target");
    int64_t B = fr__batch(p), KV = fr__kv_batch(p), n = p->n, d = p->d, dvd = p->dv;
    int64_t m = nrows, wsize = (2 * n - 1) * d * d, T = omp_get_max_threads();
    int with_dw = dw && !rows, shared_w = with_dw && fr__w_count(p) == 1;
    int64_t wide = d > dvd ? d : dvd;
    gcheck_ctx c = {p,
                    q,
                    k,
                    v,
                    dout,
                    target,
                    {dq, dk, dv, dw},
                    rows,
                    nrows,
                    NULL,
                    NULL,
                    per ? per : malloc((size_t)(B * FR_NGRADS) * sizeof *per)};
    int64_t bsize = 3 * m * d + 2 * m * dvd + (with_dw ? wsize : 0) + m * wide;
    if (c.per) memset(c.per, 0, (size_t)(B * FR_NGRADS) * sizeof *c.per);
    c.buf = buffers(bsize);
    if (shared_w && (c.dw_sum = buffers(wsize)))
        for (int64_t t = 0; t < T; t++)
            memset(c.dw_sum[t], 0, (size_t)wsize * sizeof(double));
    unsigned char *small = all_small(p, KV, n);
    if (!c.per || !c.buf || (shared_w && !c.dw_sum) || !small)
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory checking the gradients");
    fr__prog pg;
    if (!st && fr__prog_start(&pg, progress, progress_user, "exact rows"))
        st = fr__prog_err(&pg, err, errlen);
    if (!st) st = fr__for_entries(KV, small, shared_w, gcheck_group, &c, &pg, err, errlen);
    if (!st && shared_w) { /* the sum in the order fr_execute_backward's is made */
        double *sum = c.buf[0];
        memset(sum, 0, (size_t)wsize * sizeof *sum);
        for (int64_t t = 0; t < T; t++)
            add_into(sum, c.dw_sum[t], wsize);
        fr_diff_add(&c.per[FR_GRAD_DW], dw, sum, wsize);
    }
    if (!st && all) {
        memset(all, 0, FR_NGRADS * sizeof *all);
        for (int64_t b = 0; b < B; b++)
            for (int g = 0; g < FR_NGRADS; g++)
                fr_diff_merge(&all[g], &c.per[b * FR_NGRADS + g]);
    }
    free_buffers(c.buf), free_buffers(c.dw_sum), free(small);
    if (c.per != per) free(c.per);
    return st;
}
