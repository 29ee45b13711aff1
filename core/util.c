/* util.c - the small shared pieces: error formatting, checked sizes, names, defaults, buffers. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int fr__err(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

int fr__mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int64_t fr__binom(int64_t n, int64_t k)
{
    if (k < 0 || n < 0 || k > n) return 0;
    if (k > n - k) k = n - k;
    /* r * (n - k + i) / i stays exact because r * (n-k+i) is divisible by i at every step. */
    int64_t r = 1;
    for (int64_t i = 1; i <= k; i++) {
        int64_t num = n - k + i;
        if (r > INT64_MAX / num) return INT64_MAX;
        r = r * num / i;
    }
    return r;
}

int64_t fr_find_nonfinite(const double *x, int64_t count)
{
    /* Blocks tested branch-free on the exponent bits (all ones: Inf or NaN), which vectorises;
     * a block with one is searched. A batch's bounds spent a quarter of their time here. */
    enum { BLOCK = 512 };
    for (int64_t i0 = 0; i0 < count; i0 += BLOCK) {
        int64_t cnt = count - i0 < BLOCK ? count - i0 : BLOCK;
        uint64_t bad = 0;
        for (int64_t i = 0; i < cnt; i++) {
            uint64_t u;
            memcpy(&u, &x[i0 + i], sizeof u);
            bad |= (uint64_t)((u & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL);
        }
        if (bad)
            for (int64_t i = i0; i < i0 + cnt; i++)
                if (!isfinite(x[i])) return i;
    }
    return -1;
}

static const char *const method_names[FR_NMETHODS] = {
    "auto", "exact", "polyfft", "polyfft-literal", "polyrope",
};

const char *fr_method_name(fr_method m)
{
    return (m >= 0 && m < FR_NMETHODS) ? method_names[m] : "?";
}

fr_status fr_method_parse(const char *s, fr_method *m)
{
    for (int i = 0; i < FR_NMETHODS; i++)
        if (strcmp(s, method_names[i]) == 0) {
            *m = (fr_method)i;
            return FR_OK;
        }
    return FR_EUSAGE;
}

fr_options fr_options_default(void)
{
    fr_options o;
    memset(&o, 0, sizeof o);
    o.method = FR_METHOD_AUTO;
    o.eps = 1e-3;
    o.degree = -1;
    o.max_degree = 24;
    o.precision = FR_F64;
    o.fft = FR_FFT_AUTO;
    return o;
}

fr_problem fr_problem_default(int64_t n, int64_t d, int64_t dv)
{
    fr_problem p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.d = d;
    p.dv = dv;
    p.tau = d > 0 ? 1.0 / (double)d : 1.0;
    p.rot.kind = FR_ROT_ROPE;
    p.rot.base = 10000.0;
    p.rot.pairs = FR_PAIRS_INTERLEAVED;
    p.rot.pos_scale = 1.0;
    p.window = -1;
    p.batch = 1;
    return p;
}

void *fr__alloc_big(size_t bytes)
{
    const size_t HUGE = (size_t)2 << 20;
    if (bytes < 2 * HUGE) return malloc(bytes ? bytes : 1);
    size_t sz = (bytes + HUGE - 1) / HUGE * HUGE;
    void *ptr = aligned_alloc(HUGE, sz);
#ifdef MADV_HUGEPAGE
    if (ptr) madvise(ptr, sz, MADV_HUGEPAGE);
#endif
    return ptr;
}

int fr__thread_bufs_alloc(fr__thread_bufs *b, size_t bytes)
{
    int T = omp_get_max_threads(), ok = 1;
    size_t sz = (bytes + 63) / 64 * 64;
    b->n = T;
    b->p = calloc((size_t)T, sizeof *b->p);
    if (!b->p) return 0;
#pragma omp parallel reduction(&& : ok)
    {
        int t = omp_get_thread_num();
        void *q = aligned_alloc(64, sz ? sz : 64);
        if (q) memset(q, 0, sz ? sz : 64);
        b->p[t] = q;
        ok = q != NULL;
    }
    for (int t = 0; ok && t < T; t++) /* a region given fewer threads (nested) left these */
        if (!b->p[t] && (b->p[t] = aligned_alloc(64, sz ? sz : 64)))
            memset(b->p[t], 0, sz ? sz : 64);
        else
            ok = b->p[t] != NULL;
    if (!ok) fr__thread_bufs_free(b);
    return ok;
}

void fr__thread_bufs_free(fr__thread_bufs *b)
{
    if (b->p)
        for (int t = 0; t < b->n; t++)
            free(b->p[t]);
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

/* Problem b of a batch as a problem of its own (its own W, when W has one per problem). */
fr_problem fr__entry_problem(const fr_problem *p, int64_t b)
{
    fr_problem e = *p;
    if (fr__w_count(p) > 1) {
        e.rot.w = p->rot.w + b * (2 * p->n - 1) * p->d * p->d;
        e.rot.family = 0; /* a W of its own: not known yet */
    }
    e.rot.w_count = 1;
    e.batch = 1;
    e.kv_batch = 1;
    return e;
}
