/* batch.c - the batch plan: every problem of a batch planned on its own bounds, one sub-plan
 * (core/plan.c) per distinct decision shared by the problems that agree, and the loop that runs
 * them, small problems side by side on one thread each.
 *
 * Grouping without deciding every problem: the decision (method, degree) only grows with the
 * bounds (a larger R or B_v never needs a lower degree, and auto's choice between methods
 * depends on the degrees alone), so when the problems' smallest and largest bounds decide alike,
 * every problem between them decides so too, and one plan made on the largest serves them all:
 * its polynomial, fitted on the largest R, is at least as accurate on every smaller R. When the
 * two corners differ, the problems (sorted by R) are cut where their own decisions change;
 * groups with the same decision are merged again while their pooled bounds still decide alike.
 * A batch of similar heads costs two decisions; each further degree about log2(batch) more. */
#include "internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fr_plan {
    fr_problem p;   /* the batch as given */
    fr_options opt; /* as given, but for auto resolved to exact in single precision */
    int auto_f32;   /* that happened: the report says why exact runs */
    int64_t nsub;
    fr__subplan **sub;
    fr_bounds *sub_bounds; /* nsub: what each sub-plan was made on (pooled over its problems) */
    int64_t *sub_of;       /* batch: problem b's sub-plan */
    fr_bounds *bounds;     /* batch: each problem's own, or NULL */
    int64_t worst;
};

/* ---- running the problems of a batch ------------------------------------------------------- */

typedef struct {
    fr__entry_fn fn;
    void *ctx;
    fr__prog *pg;
    int64_t count, done, bad; /* bad: the first failing b (count when none) */
    int bad_st;
    char *err;
    size_t errlen;
} runner;

/* Problem b; side: run beside others (one thread each), so only the count of finished problems
 * is reported (by thread 0), and the problem itself reports nothing (its threads are not the
 * reporting thread). Alone, the problem reports inside its share of the phase. */
static void run_one(runner *r, int64_t b, int thread, int side)
{
    int64_t bad;
#pragma omp atomic read
    bad = r->bad;
    if (fr__prog_canceled(r->pg) || b > bad) return;
    char e[512] = "";
    int64_t done;
#pragma omp atomic read
    done = r->done;
    fr__prog_range rg = {0, 1};
    if (!side) rg = fr__prog_narrow(r->pg, (double)done / r->count, (double)(done + 1) / r->count);
    int st = r->fn(r->ctx, b, thread, side ? NULL : r->pg, e, sizeof e);
    if (!side) fr__prog_restore(r->pg, rg);
    if (st && st != FR_ECANCELED) {
#pragma omp critical(fr_batch_bad)
        if (b < r->bad) {
#pragma omp atomic write
            r->bad = b;
            r->bad_st = st;
            fr__err(r->err, r->errlen, st, "%s", e);
        }
    }
#pragma omp atomic capture
    done = ++r->done;
    if (thread == 0 && done < r->count) fr__prog_step(r->pg, (double)done / (double)r->count);
}

int fr__for_entries(int64_t count, const unsigned char *small, int static_order, fr__entry_fn fn,
                    void *ctx, fr__prog *pg, char *err, size_t errlen)
{
    runner r = {fn, ctx, pg, count, 0, count, FR_OK, err, errlen};
    int64_t nsmall = 0;
    int64_t *list = malloc((size_t)(count ? count : 1) * sizeof *list);
    if (!list) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    for (int64_t b = 0; b < count; b++)
        if (!small || small[b]) list[nsmall++] = b;
    int T = omp_get_max_threads();
    if (T > nsmall) T = (int)nsmall;
    if (T > 1) {
#pragma omp parallel num_threads(T)
        {
            int th = omp_get_thread_num();
            /* The back ends size their teams and buffers by this: one thread each here. */
            omp_set_num_threads(1);
            if (static_order) {
#pragma omp for schedule(static)
                for (int64_t i = 0; i < nsmall; i++)
                    run_one(&r, list[i], th, 1);
            } else {
#pragma omp for schedule(dynamic, 1)
                for (int64_t i = 0; i < nsmall; i++)
                    run_one(&r, list[i], th, 1);
            }
        }
    } else {
        for (int64_t i = 0; i < nsmall; i++)
            run_one(&r, list[i], 0, 0);
    }
    for (int64_t b = 0; b < count; b++) /* the large ones, each on every thread */
        if (small && !small[b]) run_one(&r, b, 0, 0);
    free(list);
    if (r.bad < count) return r.bad_st;
    if (!fr__prog_canceled(pg)) fr__prog_report(pg, 1.0);
    if (fr__prog_canceled(pg)) return fr__prog_err(pg, err, errlen);
    return FR_OK;
}

int fr__entry_err(const fr_problem *p, int64_t b, int st, char *err, size_t errlen)
{
    if (st && fr__batch(p) > 1 && err && errlen) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "problem %lld: %s", (long long)b, tmp);
    }
    return st;
}

/* ---- classes of equal W ---------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *x, size_t len)
{
    const unsigned char *c = x;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ c[i]) * 1099511628211ULL;
    return h;
}

/* cls[b] = the first problem whose W equals problem b's bytewise (0 for a shared W): only W's
 * that differ get plans of their own. */
static int w_classes(const fr_problem *p, int64_t *cls)
{
    int64_t B = fr__batch(p), W = fr__w_count(p);
    if (W == 1) {
        memset(cls, 0, (size_t)B * sizeof *cls);
        return 1;
    }
    size_t wbytes = (size_t)((2 * p->n - 1) * p->d * p->d) * sizeof(double);
    int64_t slots = 1;
    while (slots < 2 * B)
        slots *= 2;
    uint64_t *h = malloc((size_t)B * sizeof *h);
    int64_t *table = malloc((size_t)slots * sizeof *table);
    if (!h || !table) {
        free(h), free(table);
        return 0;
    }
    for (int64_t s = 0; s < slots; s++)
        table[s] = -1;
    for (int64_t b = 0; b < B; b++) {
        const double *w = p->rot.w + b * (int64_t)(wbytes / sizeof(double));
        h[b] = hash_bytes(w, wbytes);
        cls[b] = b;
        for (int64_t s = (int64_t)(h[b] & (uint64_t)(slots - 1));; s = (s + 1) & (slots - 1)) {
            int64_t o = table[s];
            if (o < 0) {
                table[s] = b;
                break;
            }
            if (h[o] == h[b] &&
                memcmp(p->rot.w + o * (int64_t)(wbytes / sizeof(double)), w, wbytes) == 0) {
                cls[b] = o;
                break;
            }
        }
    }
    free(h), free(table);
    return 1;
}

/* ---- grouping by decision -------------------------------------------------------------------- */

typedef struct {
    int64_t first, count; /* a run of grouper.idx */
    fr_plan_info info;    /* its decision */
    fr_bounds hi;         /* its pooled bounds */
    int family;           /* its W's rot.family */
} group;

/* A decision already made for these bounds (in this W class). */
typedef struct {
    fr_bounds key;
    fr_plan_info info;
} memo;

typedef struct {
    const fr_problem *p;
    const fr_bounds *bounds;
    const fr_options *opt;
    int64_t *idx; /* problems of one W class, sorted by R */
    group *g;
    int64_t ng, cap;
    memo *m;
    int64_t nm, mcap;
    int family; /* the current W class's answer (fr__settle_family) */
    fr__fits *fits;
    char *err;
    size_t errlen;
} grouper;

/* Fieldwise smallest and largest bounds of idx[0..cnt). */
static void corners(const fr_bounds *b, const int64_t *idx, int64_t cnt, fr_bounds *lo,
                    fr_bounds *hi)
{
    *lo = *hi = b[idx[0]];
    for (int64_t i = 1; i < cnt; i++) {
        const fr_bounds *x = &b[idx[i]];
        lo->B_q = fmin(lo->B_q, x->B_q), hi->B_q = fmax(hi->B_q, x->B_q);
        lo->B_k = fmin(lo->B_k, x->B_k), hi->B_k = fmax(hi->B_k, x->B_k);
        lo->B_v = fmin(lo->B_v, x->B_v), hi->B_v = fmax(hi->B_v, x->B_v);
        lo->B = fmin(lo->B, x->B), hi->B = fmax(hi->B, x->B);
        lo->B_over_sqrt_ln_n = fmin(lo->B_over_sqrt_ln_n, x->B_over_sqrt_ln_n);
        hi->B_over_sqrt_ln_n = fmax(hi->B_over_sqrt_ln_n, x->B_over_sqrt_ln_n);
        if (x->R < lo->R) lo->R = x->R, lo->R_from = x->R_from;
        if (x->R > hi->R) hi->R = x->R, hi->R_from = x->R_from;
    }
}

static int same_decision(const fr_plan_info *a, const fr_plan_info *b)
{
    return a->method == b->method && a->degree == b->degree;
}

static int add_group(grouper *gr, int64_t first, int64_t count, const fr_plan_info *info,
                     const fr_bounds *hi)
{
    if (gr->ng == gr->cap) {
        int64_t cap = gr->cap ? 2 * gr->cap : 8;
        group *g = realloc(gr->g, (size_t)cap * sizeof *g);
        if (!g) return fr__err(gr->err, gr->errlen, FR_ENOMEM, "out of memory planning");
        gr->g = g, gr->cap = cap;
    }
    gr->g[gr->ng++] = (group){first, count, *info, *hi, gr->family};
    return FR_OK;
}

/* The decision for bounds x in problem b's W class (remembered: the search below asks for some
 * bounds more than once). Failures are not remembered; they end the planning or are retried. */
static int decide_for(grouper *gr, int64_t b, const fr_bounds *x, fr_plan_info *info, char *err,
                      size_t errlen)
{
    for (int64_t i = 0; x && i < gr->nm; i++)
        if (memcmp(&gr->m[i].key, x, sizeof *x) == 0) {
            *info = gr->m[i].info;
            return FR_OK;
        }
    fr_problem pe = fr__entry_problem(gr->p, b);
    pe.rot.family = gr->family;
    int st = fr__subplan_decide(&pe, x, gr->opt, gr->fits, info, err, errlen);
    if (st) return fr__entry_err(gr->p, b, st, err, errlen);
    if (x && gr->nm == gr->mcap) {
        int64_t cap = gr->mcap ? 2 * gr->mcap : 16;
        memo *m = realloc(gr->m, (size_t)cap * sizeof *m);
        if (!m) return FR_OK; /* only a cache */
        gr->m = m, gr->mcap = cap;
    }
    if (x) gr->m[gr->nm++] = (memo){*x, *info};
    return FR_OK;
}

/* Problem idx[i]'s own decision is unlike ref's (or fails for want of accuracy). */
static int differs(grouper *gr, int64_t i, const fr_plan_info *ref, int *st)
{
    fr_plan_info info;
    char why[512];
    int64_t b = gr->idx[i];
    *st = decide_for(gr, b, &gr->bounds[b], &info, why, sizeof why);
    if (*st == FR_EACCURACY) *st = FR_OK, info.degree = -2; /* unlike any decision */
    if (*st) fr__err(gr->err, gr->errlen, *st, "%s", why);
    return !same_decision(&info, ref);
}

/* Groups over idx[first, first + cnt): corners that decide alike make one group. Otherwise the
 * range is cut where the problems' own decisions change along R (a binary search: along R they
 * only grow, up to B_v's say), or in halves when they do not change along R at all. A failure
 * is the failing problem's own: a range fails only through a problem that fails alone. */
static int split(grouper *gr, int64_t first, int64_t cnt)
{
    fr_bounds lo, hi;
    fr_plan_info ilo, ihi, i0;
    const int64_t *idx = gr->idx + first;
    corners(gr->bounds, idx, cnt, &lo, &hi);
    int st = decide_for(gr, idx[cnt - 1], &hi, &ihi, gr->err, gr->errlen);
    if (cnt == 1) return st ? st : add_group(gr, first, 1, &ihi, &hi);
    if (!st && (st = decide_for(gr, idx[0], &lo, &ilo, gr->err, gr->errlen)) == FR_OK &&
        same_decision(&ilo, &ihi))
        return add_group(gr, first, cnt, &ihi, &hi);
    if (st && st != FR_EACCURACY) return st; /* a usage error holds for every problem */
    if ((st = decide_for(gr, idx[0], &gr->bounds[idx[0]], &i0, gr->err, gr->errlen))) return st;
    int64_t a = first + 1, z = first + cnt; /* the first differing one is in [a, z] */
    while (a < z) {
        int64_t mid = a + (z - a) / 2;
        int d = differs(gr, mid, &i0, &st);
        if (st) return st;
        if (d)
            z = mid;
        else
            a = mid + 1;
    }
    int64_t cut = a < first + cnt ? a - first : cnt / 2;
    if ((st = split(gr, first, cut))) return st;
    return split(gr, first + cut, cnt - cut);
}

static int by_R(const void *a, const void *b, void *bounds)
{
    const fr_bounds *bd = bounds;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (bd[i].R != bd[j].R) return bd[i].R < bd[j].R ? -1 : 1;
    return (i > j) - (i < j);
}

/* Neighbouring groups (by R) with the same decision become one while their pooled bounds still
 * decide alike: the halving above cuts runs of equal decisions at its boundaries. */
static int merge(grouper *gr, int64_t g0)
{
    int64_t out = g0;
    for (int64_t i = g0; i < gr->ng; i++) {
        if (out > g0) {
            group *a = &gr->g[out - 1];
            const group *b = &gr->g[i];
            if (same_decision(&a->info, &b->info) && a->first + a->count == b->first) {
                fr_bounds pair[2] = {a->hi, b->hi}, hi, lo;
                const int64_t two[2] = {0, 1};
                fr_plan_info info;
                corners(pair, two, 2, &lo, &hi);
                char why[512]; /* not merging is no error */
                int st =
                    decide_for(gr, gr->idx[b->first + b->count - 1], &hi, &info, why, sizeof why);
                if (!st && same_decision(&info, &a->info)) {
                    a->count += b->count;
                    a->hi = hi;
                    a->info = info;
                    continue;
                }
                if (st && st != FR_EACCURACY) return fr__err(gr->err, gr->errlen, st, "%s", why);
            }
        }
        gr->g[out++] = gr->g[i];
    }
    gr->ng = out;
    return FR_OK;
}

/* The groups of every W class into gr: idx lists the problems class by class (in the order of
 * their first problems), each class's sorted by R. */
static int group_all(grouper *gr, const int64_t *cls, int64_t B)
{
    const fr_options *opt = gr->opt;
    int64_t *start = calloc((size_t)B + 1, sizeof *start); /* counting sort by class */
    if (!start) return fr__err(gr->err, gr->errlen, FR_ENOMEM, "out of memory planning");
    for (int64_t b = 0; b < B; b++)
        start[cls[b] + 1]++;
    for (int64_t c = 0; c < B; c++)
        start[c + 1] += start[c];
    for (int64_t b = 0; b < B; b++) /* cls[b] <= b: a class's slots are filled in order */
        gr->idx[start[cls[b]]++] = b;
    int st = FR_OK;
    for (int64_t c = 0, first = 0; c < B && !st; c++) {
        if (cls[c] != c) continue;
        int64_t cnt = start[c] - first, g0 = gr->ng;
        gr->nm = 0;                                  /* the remembered decisions are this class's */
        fr_problem pc = fr__entry_problem(gr->p, c); /* the RoPE-family question, once per W */
        fr__settle_family(&pc);
        gr->family = pc.rot.family;
        if (!gr->bounds || opt->method == FR_METHOD_EXACT || opt->pool_bounds) {
            /* One plan for the class, on the bounds pooled over the whole batch: what one plan
             * for a batch has always been made on. */
            fr_bounds hi;
            fr_plan_info info;
            memset(&hi, 0, sizeof hi);
            if (gr->bounds) fr_bounds_pool(gr->bounds, B, &hi);
            st = decide_for(gr, c, gr->bounds ? &hi : NULL, &info, gr->err, gr->errlen);
            if (!st) st = add_group(gr, first, cnt, &info, &hi);
        } else {
            qsort_r(gr->idx + first, (size_t)cnt, sizeof *gr->idx, by_R, (void *)gr->bounds);
            st = split(gr, first, cnt);
            if (!st) st = merge(gr, g0);
        }
        first = start[c];
    }
    free(start);
    return st;
}

/* ---- the plan ------------------------------------------------------------------------------- */

/* The worst problem: the highest degree, then the largest R; one that no degree serves (exact by
 * auto's fallback, or exact asked) ranks above any degree. */
static int64_t worst_entry(const fr_plan *pl)
{
    int64_t B = fr__batch(&pl->p), best = 0;
    for (int64_t b = 1; b < B; b++) {
        const fr_plan_info *x = fr__subplan_info(pl->sub[pl->sub_of[b]]);
        const fr_plan_info *y = fr__subplan_info(pl->sub[pl->sub_of[best]]);
        int rx = x->degree < 0 ? 1 << 30 : x->degree, ry = y->degree < 0 ? 1 << 30 : y->degree;
        double Rx = pl->bounds ? pl->bounds[b].R : 0, Ry = pl->bounds ? pl->bounds[best].R : 0;
        if (rx > ry || (rx == ry && Rx > Ry)) best = b;
    }
    return best;
}

fr_status fr_plan_create(fr_plan **out, const fr_problem *p, const fr_bounds *bounds,
                         const fr_options *opt, char *err, size_t errlen)
{
    *out = NULL;
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    if (opt->precision != FR_F64 && opt->precision != FR_F32)
        return fr__err(err, errlen, FR_EUSAGE, "unknown precision %d", (int)opt->precision);
    /* Single precision is built for exact attention, the method real activations need (their
     * score bounds put them outside the fast methods' regime); auto then means exact. */
    fr_options o1 = *opt;
    int auto_f32 = opt->precision == FR_F32 && opt->method == FR_METHOD_AUTO;
    if (auto_f32) o1.method = FR_METHOD_EXACT;
    if (o1.precision == FR_F32 && o1.method != FR_METHOD_EXACT)
        return fr__err(err, errlen, FR_EUSAGE,
                       "method %s has no single-precision path (precision f32 runs exact "
                       "attention only)",
                       fr_method_name(o1.method));
    opt = &o1;
    if (opt->fft < FR_FFT_AUTO || opt->fft >= FR_NFFTS)
        return fr__err(err, errlen, FR_EUSAGE, "unknown FFT back end %d", (int)opt->fft);
    int64_t B = fr__batch(p);
    for (int64_t b = 0; bounds && b < B; b++)
        if (!isfinite(bounds[b].R)) /* fr_bounds_compute says so; bounds from elsewhere too */
            return fr__entry_err(
                p, b,
                fr__err(err, errlen, FR_EINPUT, "the scores overflow: their bound R is not finite"),
                err, errlen);
    fr_problem pp = *p;
    pp.rot.family = 0; /* not the caller's to say */
    fr_plan *pl = calloc(1, sizeof *pl);
    int64_t *cls = malloc((size_t)B * sizeof *cls);
    grouper gr = {
        &pp,  bounds, opt,   malloc((size_t)B * sizeof(int64_t)), NULL, 0, 0, NULL, 0, 0, 0,
        NULL, err,    errlen};
    gr.fits = fr__fits_new();
    if (!pl || !cls || !gr.idx || !gr.fits) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory creating the plan");
        goto done;
    }
    pl->p = pp;
    pl->opt = *opt;
    pl->auto_f32 = auto_f32;
    pl->sub_of = malloc((size_t)B * sizeof *pl->sub_of);
    if (bounds && (pl->bounds = malloc((size_t)B * sizeof *pl->bounds)))
        memcpy(pl->bounds, bounds, (size_t)B * sizeof *bounds);
    if (!pl->sub_of || (bounds && !pl->bounds) || !w_classes(p, cls)) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory creating the plan");
        goto done;
    }
    fr__prog pg;
    if (fr__prog_start(&pg, opt->progress, opt->progress_user, "plan")) {
        st = fr__prog_err(&pg, err, errlen);
        goto done;
    }
    if ((st = group_all(&gr, cls, B))) goto done;
    pl->sub = calloc((size_t)gr.ng, sizeof *pl->sub);
    pl->sub_bounds = malloc((size_t)gr.ng * sizeof *pl->sub_bounds);
    if (!pl->sub || !pl->sub_bounds) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory creating the plan");
        goto done;
    }
    pl->nsub = gr.ng;
    for (int64_t s = 0; s < gr.ng && !st; s++) {
        if (fr__prog_step(&pg, (double)s / (double)gr.ng)) {
            st = fr__prog_err(&pg, err, errlen);
            break;
        }
        const group *g = &gr.g[s];
        int64_t b0 = gr.idx[g->first];
        fr_problem pe = fr__entry_problem(&pp, b0);
        pe.rot.family = g->family;
        pl->sub_bounds[s] = g->hi;
        st =
            fr__subplan_create(&pl->sub[s], &pe, bounds ? &g->hi : NULL, opt, gr.fits, err, errlen);
        fr__entry_err(p, b0, st, err, errlen);
        for (int64_t i = 0; i < g->count; i++)
            pl->sub_of[gr.idx[g->first + i]] = s;
    }
    if (!st) pl->worst = worst_entry(pl);
    if (!st && fr__prog_report(&pg, 1.0)) st = fr__prog_err(&pg, err, errlen);
done:
    free(cls);
    free(gr.idx);
    free(gr.g);
    free(gr.m);
    fr__fits_free(gr.fits);
    if (st) {
        fr_plan_free(pl);
        return st;
    }
    *out = pl;
    return FR_OK;
}

fr_status fr_plan_entry_info(const fr_plan *pl, int64_t b, fr_plan_info *info)
{
    if (b < 0 || b >= fr__batch(&pl->p))
        return fr__err(NULL, 0, FR_EUSAGE, "no problem %lld", (long long)b);
    int64_t s = pl->sub_of[b];
    *info = *fr__subplan_info(pl->sub[s]);
    info->entry = b;
    info->plans = pl->nsub;
    if (pl->bounds)
        info->bounds = pl->bounds[b];
    else
        memset(&info->bounds, 0, sizeof info->bounds);
    info->fit_R = info->degree >= 0 ? pl->sub_bounds[s].R : 0;
    if (pl->bounds)
        info->fit = pl->sub_bounds[s];
    else
        memset(&info->fit, 0, sizeof info->fit);
    if (pl->auto_f32) info->reason = "single precision: exact attention is its only method";
    return FR_OK;
}

void fr_plan_get_info(const fr_plan *pl, fr_plan_info *info)
{
    fr_plan_entry_info(pl, pl->worst, info);
}

void fr_plan_free(fr_plan *pl)
{
    if (!pl) return;
    for (int64_t s = 0; pl->sub && s < pl->nsub; s++)
        fr__subplan_free(pl->sub[s]);
    free(pl->sub);
    free(pl->sub_bounds);
    free(pl->sub_of);
    free(pl->bounds);
    free(pl);
}

fr__polyrope *fr__plan_polyrope(fr_plan *pl)
{
    return fr__subplan_polyrope(pl->sub[pl->sub_of[0]]);
}

/* ---- executing --------------------------------------------------------------------------------
 */

static unsigned char *small_entries(const fr_plan *pl)
{
    int64_t B = fr__batch(&pl->p);
    unsigned char *s = malloc((size_t)B);
    if (s)
        for (int64_t b = 0; b < B; b++)
            s[b] = (unsigned char)fr__subplan_small(pl->sub[pl->sub_of[b]]);
    return s;
}

typedef struct {
    const fr_plan *pl;
    const double *q, *k, *v;
    double *out;
    fr_exec_info *info;
} fwd_ctx;

static int fwd_entry(void *ctx, int64_t b, int thread, fr__prog *pg, char *err, size_t errlen)
{
    (void)thread; /* writes only its own problem's output */
    const fwd_ctx *c = ctx;
    const fr_problem *p = &c->pl->p;
    int64_t n = p->n, d = p->d, dv = p->dv, h = b / fr__group(p);
    fr_exec_info tmp, *ex = c->info ? &c->info[b] : &tmp;
    int st = fr__subplan_execute(c->pl->sub[c->pl->sub_of[b]], c->q + b * n * d, c->k + h * n * d,
                                 c->v + h * n * dv, c->out + b * n * dv, ex, pg, err, errlen);
    return fr__entry_err(p, b, st, err, errlen);
}

/* A plan runs in the precision it was made for: its tensors' type is part of the plan. */
static int check_precision(const fr_plan *pl, fr_precision want, char *err, size_t errlen)
{
    if (pl->opt.precision == want) return FR_OK;
    return fr__err(err, errlen, FR_EUSAGE,
                   want == FR_F32 ? "the plan is double precision: run it with fr_execute"
                                  : "the plan is single precision (precision = FR_F32): run it "
                                    "with fr_execute_f32");
}

fr_status fr_execute(const fr_plan *pl, const double *q, const double *k, const double *v,
                     double *out, fr_exec_info *info, char *err, size_t errlen)
{
    int st0 = check_precision(pl, FR_F64, err, errlen);
    if (st0) return st0;
    fwd_ctx c = {pl, q, k, v, out, info};
    fr__prog pg;
    if (fr__prog_start(&pg, pl->opt.progress, pl->opt.progress_user, "forward pass"))
        return fr__prog_err(&pg, err, errlen);
    unsigned char *small = small_entries(pl);
    if (!small) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    int st = fr__for_entries(fr__batch(&pl->p), small, 0, fwd_entry, &c, &pg, err, errlen);
    free(small);
    return st;
}

/* Gradients go by key/value problem: the g query problems that share one run one after another
 * on one thread, summing their dk and dv into its slot, so no two threads write one place. One
 * code path for both precisions: the tensors are addressed by their element size, and only the
 * sub-plan's call and the sums see the type. */
typedef struct {
    const fr_plan *pl;
    int f32;
    size_t size; /* bytes per element */
    const void *q, *k, *v, *dout, *target;
    void *t, *dq, *dk, *dv, *dw;
    double *loss; /* batch: each problem's */
    fr_exec_info *info;
    void **tmp;    /* per thread: dk, dv of a group's later problems */
    void **dw_sum; /* per thread: a shared W's dW summed, then one problem's */
} bwd_ctx;

/* Element e of x (NULL stays NULL). */
static void *elem(const void *x, int64_t e, size_t size)
{
    return x ? (char *)x + e * (int64_t)size : NULL;
}

static void add_into(void *acc, const void *x, int64_t count, int f32)
{
    if (f32) {
        float *a = acc;
        const float *b = x;
        for (int64_t i = 0; i < count; i++)
            a[i] += b[i];
    } else {
        double *a = acc;
        const double *b = x;
        for (int64_t i = 0; i < count; i++)
            a[i] += b[i];
    }
}

static int bwd_group(void *ctx, int64_t h, int thread, fr__prog *pg, char *err, size_t errlen)
{
    const bwd_ctx *c = ctx;
    const fr_problem *p = &c->pl->p;
    int64_t n = p->n, d = p->d, dv = p->dv, g = fr__group(p), wsize = (2 * n - 1) * d * d;
    size_t z = c->size;
    int shared_w = c->dw && fr__w_count(p) == 1;
    void *tk = c->tmp ? c->tmp[thread] : NULL, *tv = elem(tk, n * d, z);
    void *tw = shared_w ? elem(c->dw_sum[thread], wsize, z) : NULL;
    for (int64_t e = 0; e < g; e++) {
        int64_t b = h * g + e;
        const fr__subplan *sp = c->pl->sub[c->pl->sub_of[b]];
        const void *q = elem(c->q, b * n * d, z), *k = elem(c->k, h * n * d, z),
                   *v = elem(c->v, h * n * dv, z), *dout = elem(c->dout, b * n * dv, z),
                   *target = elem(c->target, b * n * dv, z);
        void *t = elem(c->t, b * n * dv, z), *dq = elem(c->dq, b * n * d, z);
        void *dk = e ? tk : elem(c->dk, h * n * d, z), *dvv = e ? tv : elem(c->dv, h * n * dv, z);
        void *dw = !c->dw ? NULL : shared_w ? tw : elem(c->dw, b * wsize, z);
        double *loss = c->target ? &c->loss[b] : NULL;
        fr_exec_info tmp, *ex = c->info ? &c->info[b] : &tmp;
        fr__prog_range rg = fr__prog_narrow(pg, (double)e / g, (double)(e + 1) / g);
        int st = c->f32 ? fr__subplan_backward_f32(sp, q, k, v, dout, target, t, dq, dk, dvv, dw,
                                                   loss, ex, pg, err, errlen)
                        : fr__subplan_backward(sp, q, k, v, dout, target, t, dq, dk, dvv, dw, loss,
                                               ex, pg, err, errlen);
        fr__prog_restore(pg, rg);
        if (st) return fr__entry_err(p, b, st, err, errlen);
        if (e) {
            add_into(elem(c->dk, h * n * d, z), tk, n * d, c->f32);
            add_into(elem(c->dv, h * n * dv, z), tv, n * dv, c->f32);
        }
        if (shared_w) add_into(c->dw_sum[thread], tw, wsize, c->f32);
    }
    return FR_OK;
}

/* Per-thread buffers of count elements of size bytes each (T of them), zeroed; NULL when out of
 * memory. */
static void **thread_buffers(int64_t T, int64_t count, size_t size)
{
    void **x = calloc((size_t)T, sizeof *x);
    for (int64_t t = 0; x && t < T; t++)
        if (!(x[t] = calloc((size_t)count, size))) {
            for (int64_t u = 0; u < t; u++)
                free(x[u]);
            free(x);
            return NULL;
        }
    return x;
}

static void free_buffers(void **x, int64_t T)
{
    for (int64_t t = 0; x && t < T; t++)
        free(x[t]);
    free(x);
}

/* fr_execute_backward in either precision (c holds the tensors); *loss the batch's sum. */
static int backward_batch(bwd_ctx *c, double *loss, char *err, size_t errlen)
{
    const fr_plan *pl = c->pl;
    const fr_problem *p = &pl->p;
    int st = check_precision(pl, c->f32 ? FR_F32 : FR_F64, err, errlen);
    if (st) return st;
    if ((c->dout == NULL) == (c->target == NULL))
        return fr__err(err, errlen, FR_EUSAGE, "give exactly one of dout and target");
    if (!c->q || !c->k || !c->v || !c->dq || !c->dk || !c->dv)
        return fr__err(err, errlen, FR_EUSAGE, "q, k, v, dq, dk and dv are required");
    int64_t B = fr__batch(p), KV = fr__kv_batch(p), g = fr__group(p), n = p->n;
    int64_t wsize = (2 * n - 1) * p->d * p->d, T = omp_get_max_threads();
    int shared_w = c->dw && fr__w_count(p) == 1;
    /* Later problems of a group write their dk, dv here before adding; a shared W's dW goes to
     * the first half of its thread's buffer (the sum) through the second (one problem's). */
    c->loss = calloc((size_t)B, sizeof *c->loss);
    if (g > 1) c->tmp = thread_buffers(T, n * (p->d + p->dv), c->size);
    if (shared_w) c->dw_sum = thread_buffers(T, 2 * wsize, c->size);
    unsigned char *small = malloc((size_t)KV);
    if (!c->loss || (g > 1 && !c->tmp) || (shared_w && !c->dw_sum) || !small) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory for the gradients");
        goto done;
    }
    for (int64_t h = 0; h < KV; h++) {
        small[h] = 1;
        for (int64_t e = 0; e < g; e++)
            small[h] &= (unsigned char)fr__subplan_small(pl->sub[pl->sub_of[h * g + e]]);
    }
    /* A shared W's sums go in a fixed order (contiguous runs per thread, then the threads in
     * turn), so that dW does not change from run to run. */
    fr__prog pg;
    if (fr__prog_start(&pg, pl->opt.progress, pl->opt.progress_user, "backward pass")) {
        st = fr__prog_err(&pg, err, errlen);
        goto done;
    }
    st = fr__for_entries(KV, small, shared_w, bwd_group, c, &pg, err, errlen);
    if (!st && shared_w) {
        memset(c->dw, 0, (size_t)wsize * c->size);
        for (int64_t th = 0; th < T; th++)
            add_into(c->dw, c->dw_sum[th], wsize, c->f32);
    }
    if (!st && c->target && loss) {
        *loss = 0;
        for (int64_t b = 0; b < B; b++)
            *loss += c->loss[b];
    }
done:
    free_buffers(c->tmp, T);
    free_buffers(c->dw_sum, T);
    free(c->loss), free(small);
    return st;
}

fr_status fr_execute_backward(const fr_plan *pl, const double *q, const double *k, const double *v,
                              const double *dout, const double *target, double *t, double *dq,
                              double *dk, double *dv, double *dw, double *loss, fr_exec_info *info,
                              char *err, size_t errlen)
{
    bwd_ctx c = {.pl = pl,
                 .size = sizeof(double),
                 .q = q,
                 .k = k,
                 .v = v,
                 .dout = dout,
                 .target = target,
                 .t = t,
                 .dq = dq,
                 .dk = dk,
                 .dv = dv,
                 .dw = dw,
                 .info = info};
    return backward_batch(&c, loss, err, errlen);
}

typedef struct {
    const fr_plan *pl;
    const float *q, *k, *v;
    float *out;
    fr_exec_info *info;
} fwd_f32_ctx;

static int fwd_entry_f32(void *ctx, int64_t b, int thread, fr__prog *pg, char *err, size_t errlen)
{
    (void)thread; /* writes only its own problem's output */
    const fwd_f32_ctx *c = ctx;
    const fr_problem *p = &c->pl->p;
    int64_t n = p->n, d = p->d, dv = p->dv, h = b / fr__group(p);
    fr_exec_info tmp, *ex = c->info ? &c->info[b] : &tmp;
    int st =
        fr__subplan_execute_f32(c->pl->sub[c->pl->sub_of[b]], c->q + b * n * d, c->k + h * n * d,
                                c->v + h * n * dv, c->out + b * n * dv, ex, pg, err, errlen);
    return fr__entry_err(p, b, st, err, errlen);
}

fr_status fr_execute_f32(const fr_plan *pl, const float *q, const float *k, const float *v,
                         float *out, fr_exec_info *info, char *err, size_t errlen)
{
    int st = check_precision(pl, FR_F32, err, errlen);
    if (st) return st;
    fwd_f32_ctx c = {pl, q, k, v, out, info};
    fr__prog pg;
    if (fr__prog_start(&pg, pl->opt.progress, pl->opt.progress_user, "forward pass"))
        return fr__prog_err(&pg, err, errlen);
    unsigned char *small = small_entries(pl);
    if (!small) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    st = fr__for_entries(fr__batch(&pl->p), small, 0, fwd_entry_f32, &c, &pg, err, errlen);
    free(small);
    return st;
}

fr_status fr_execute_backward_f32(const fr_plan *pl, const float *q, const float *k, const float *v,
                                  const float *dout, const float *target, float *t, float *dq,
                                  float *dk, float *dv, float *dw, float *loss, fr_exec_info *info,
                                  char *err, size_t errlen)
{
    bwd_ctx c = {.pl = pl,
                 .f32 = 1,
                 .size = sizeof(float),
                 .q = q,
                 .k = k,
                 .v = v,
                 .dout = dout,
                 .target = target,
                 .t = t,
                 .dq = dq,
                 .dk = dk,
                 .dv = dv,
                 .dw = dw,
                 .info = info};
    double sum = 0;
    int st = backward_batch(&c, &sum, err, errlen);
    if (!st && target && loss) *loss = (float)sum;
    return st;
}
