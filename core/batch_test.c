/* batch_test.c - the batch in the core against each problem run alone:
 *  - a batch of mixed problems (one scaled up) gives, entry by entry, what that problem gives
 *    alone under the same decision (bit for bit), on odd n, n = 1, dv != d, causal and window;
 *  - per-entry planning: the scaled-up problem gets a higher degree, the others keep theirs;
 *  - grouped-query attention against the same problems with k and v repeated (np.repeat's
 *    layout, built here), forward and backward (dk, dv summed over each group);
 *  - an explicit W per problem, and a shared one whose dW is the sum over the batch;
 *  - the accumulating comparison and the checks built on it; errors name the problem. */
#include "internal.h"
#include "test.h"

#include <omp.h>
#include <string.h>

static unsigned long long seed = 4242;

static double *rnd(int64_t count, double scale)
{
    double *x = malloc((size_t)(count ? count : 1) * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = scale * t_rand(&seed);
    return x;
}

static double max_diff(const double *a, const double *b, int64_t count)
{
    double m = 0;
    for (int64_t i = 0; i < count; i++) {
        double e = fabs(a[i] - b[i]);
        if (!(e <= m)) m = e;
    }
    return m;
}

/* A batch's tensors; k and v hold kv problems. */
typedef struct {
    fr_problem p;
    double *q, *k, *v, *up;
} batch;

static batch make(int64_t n, int64_t d, int64_t dv, int64_t B, int64_t KV, double scale)
{
    batch x;
    x.p = fr_problem_default(n, d, dv);
    x.p.batch = B;
    x.p.kv_batch = KV;
    KV = KV ? KV : B;
    x.q = rnd(B * n * d, scale);
    x.k = rnd(KV * n * d, scale);
    x.v = rnd(KV * n * dv, 1);
    x.up = rnd(B * n * dv, 1);
    return x;
}

static void drop(batch *x)
{
    free(x->q), free(x->k), free(x->v), free(x->up);
}

/* Problem b's forward alone, under the decision the batch made for it (method, degree and the
 * R its polynomial was fitted on): the same back end, so the same numbers. */
static int alone(const batch *x, int64_t b, const fr_plan_info *info, double *out, char *err)
{
    int64_t n = x->p.n, d = x->p.d, dv = x->p.dv, h = b / fr__group(&x->p);
    fr_problem p = fr__entry_problem(&x->p, b);
    fr_bounds bd = info->fit; /* the plan's polynomial and certificate are made on these */
    fr_options o = fr_options_default();
    o.method = info->method;
    o.degree = info->degree;
    fr_plan *pl;
    int st = fr_plan_create(&pl, &p, info->method == FR_METHOD_EXACT ? NULL : &bd, &o, err, 256);
    if (st) return st;
    st = fr_execute(pl, x->q + b * n * d, x->k + h * n * d, x->v + h * n * dv, out, NULL, err, 256);
    fr_plan_free(pl);
    return st;
}

static fr_plan *plan_of(const batch *x, fr_method m, fr_bounds **bounds, char *err)
{
    int64_t B = fr__batch(&x->p);
    *bounds = malloc((size_t)B * sizeof **bounds);
    if (fr_bounds_compute(&x->p, x->q, x->k, x->v, *bounds, err, 256)) return NULL;
    fr_options o = fr_options_default();
    o.method = m;
    fr_plan *pl;
    if (fr_plan_create(&pl, &x->p, *bounds, &o, err, 256)) return NULL;
    return pl;
}

/* Every entry of a mixed batch equals the same problem alone, for each method and shape. */
static void test_batch_equals_each_alone(void)
{
    struct {
        int64_t n, d, dv;
        int causal;
        int64_t window;
    } shapes[] = {
        {1, 4, 3, 0, -1}, {17, 4, 3, 0, -1}, {33, 6, 2, 1, -1}, {40, 4, 5, 0, 6}, {9, 2, 1, 1, 3}};
    fr_method methods[] = {FR_METHOD_AUTO, FR_METHOD_EXACT, FR_METHOD_POLYROPE, FR_METHOD_POLYFFT};
    char err[256];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++) {
            int64_t n = shapes[s].n, dv = shapes[s].dv, B = 5;
            batch x = make(n, shapes[s].d, dv, B, 0, 0.8);
            x.p.causal = shapes[s].causal;
            x.p.window = shapes[s].window;
            for (int64_t t = 0; t < n * x.p.d; t++) /* problem 3 stands out */
                x.q[3 * n * x.p.d + t] *= 2.5;
            fr_bounds *bd;
            fr_plan *pl = plan_of(&x, methods[mi], &bd, err);
            T_REQUIRE(pl, "shape %zu method %zu: %s", s, mi, err);
            double *out = malloc((size_t)(B * n * dv) * sizeof *out), *one = rnd(n * dv, 0);
            fr_exec_info info[5];
            T_REQUIRE(fr_execute(pl, x.q, x.k, x.v, out, info, err, sizeof err) == FR_OK, "%s",
                      err);
            for (int64_t b = 0; b < B; b++) {
                fr_plan_info pi;
                T_REQUIRE(fr_plan_entry_info(pl, b, &pi) == FR_OK, "entry info");
                T_CHECK(pi.entry == b && pi.bounds.R == bd[b].R, "entry %lld info", (long long)b);
                T_REQUIRE(alone(&x, b, &pi, one, err) == FR_OK, "alone: %s", err);
                double e = max_diff(out + b * n * dv, one, n * dv);
                T_CHECK(e == 0, "shape %zu method %s problem %lld: %g from alone", s,
                        fr_method_name(pi.method), (long long)b, e);
                /* The run certifies its rows again after the pass: never above the plan. */
                T_CHECK(pi.method == FR_METHOD_EXACT
                            ? info[b].a_priori_bound == 0
                            : info[b].a_priori_bound > 0 &&
                                  info[b].a_priori_bound <= pi.a_priori_bound * (1 + 1e-12),
                        "exec info bound %g, plan %g", info[b].a_priori_bound, pi.a_priori_bound);
            }
            fr_plan_free(pl);
            free(bd), free(out), free(one);
            drop(&x);
        }
}

/* Per-entry plans: a problem scaled up gets a higher degree, the others keep the degree they get
 * alone; the worst entry is the scaled one; equal decisions share one plan. */
static void test_per_entry_degrees(void)
{
    char err[256];
    int64_t n = 64, d = 4, dv = 4, B = 8;
    batch x = make(n, d, dv, B, 0, 0.9);
    for (int64_t t = 0; t < n * d; t++)
        x.q[5 * n * d + t] *= 3, x.k[5 * n * d + t] *= 3;
    fr_bounds *bd;
    fr_plan *pl = plan_of(&x, FR_METHOD_POLYROPE, &bd, err);
    T_REQUIRE(pl, "%s", err);
    fr_plan_info worst, e0;
    fr_plan_get_info(pl, &worst);
    T_CHECK(worst.entry == 5, "worst entry %lld", (long long)worst.entry);
    fr_plan_entry_info(pl, 0, &e0);
    T_CHECK(worst.degree > e0.degree, "scaled degree %d vs %d", worst.degree, e0.degree);
    T_CHECK(worst.plans >= 2 && worst.plans < B, "%lld plans for %lld problems",
            (long long)worst.plans, (long long)B);
    for (int64_t b = 0; b < B; b++) {
        fr_plan_info pi, own;
        fr_plan_entry_info(pl, b, &pi);
        fr_problem p1 = fr__entry_problem(&x.p, b);
        fr_options o = fr_options_default();
        o.method = FR_METHOD_POLYROPE;
        T_REQUIRE(fr_plan_estimate(&p1, &bd[b], &o, &own, err, sizeof err) == FR_OK, "%s", err);
        T_CHECK(pi.degree == own.degree, "problem %lld: degree %d in the batch, %d alone",
                (long long)b, pi.degree, own.degree);
        T_CHECK(pi.fit_R >= bd[b].R, "fitted on R %g < own R %g", pi.fit_R, bd[b].R);
    }
    fr_plan_free(pl);
    /* pooled: one plan, at the worst problem's degree */
    fr_options o = fr_options_default();
    o.method = FR_METHOD_POLYROPE;
    o.pool_bounds = 1;
    T_REQUIRE(fr_plan_create(&pl, &x.p, bd, &o, err, sizeof err) == FR_OK, "%s", err);
    fr_plan_info pooled;
    fr_plan_entry_info(pl, 0, &pooled);
    T_CHECK(pooled.plans == 1 && pooled.degree == worst.degree, "pooled: %lld plans, degree %d",
            (long long)pooled.plans, pooled.degree);
    fr_plan_free(pl);
    free(bd);
    drop(&x);
}

/* k and v repeated g times along the problems (HF's repeat_kv, numpy's np.repeat(k, g, 0)). */
static batch repeated(const batch *x)
{
    int64_t B = fr__batch(&x->p), g = fr__group(&x->p), n = x->p.n, d = x->p.d, dv = x->p.dv;
    batch r = *x;
    r.p.kv_batch = 0;
    r.k = malloc((size_t)(B * n * d) * sizeof *r.k);
    r.v = malloc((size_t)(B * n * dv) * sizeof *r.v);
    for (int64_t b = 0; b < B; b++) {
        memcpy(r.k + b * n * d, x->k + (b / g) * n * d, (size_t)(n * d) * sizeof *r.k);
        memcpy(r.v + b * n * dv, x->v + (b / g) * n * dv, (size_t)(n * dv) * sizeof *r.v);
    }
    return r;
}

static void test_grouped_query(void)
{
    char err[256];
    fr_method methods[] = {FR_METHOD_EXACT, FR_METHOD_POLYROPE, FR_METHOD_POLYFFT};
    for (int causal = 0; causal < 2; causal++)
        for (size_t mi = 0; mi < 3; mi++) {
            int64_t n = 23, d = 4, dv = 3, B = 6, KV = 2, g = 3;
            batch x = make(n, d, dv, B, KV, 0.7);
            x.p.causal = causal;
            batch r = repeated(&x);
            fr_bounds *b1, *b2;
            fr_plan *p1 = plan_of(&x, methods[mi], &b1, err),
                    *p2 = plan_of(&r, methods[mi], &b2, err);
            T_REQUIRE(p1 && p2, "%s", err);
            for (int64_t b = 0; b < B; b++)
                T_CHECK(memcmp(&b1[b], &b2[b], sizeof b1[b]) == 0, "bounds of problem %lld",
                        (long long)b);
            double *o1 = rnd(B * n * dv, 0), *o2 = rnd(B * n * dv, 0);
            T_REQUIRE(fr_execute(p1, x.q, x.k, x.v, o1, NULL, err, sizeof err) == FR_OK, "%s", err);
            T_REQUIRE(fr_execute(p2, r.q, r.k, r.v, o2, NULL, err, sizeof err) == FR_OK, "%s", err);
            T_CHECK(max_diff(o1, o2, B * n * dv) == 0, "%s: forward differs",
                    fr_method_name(methods[mi]));
            /* backward: dq alike, dk and dv the sums of the repeated problems' */
            double *dq1 = rnd(B * n * d, 0), *dk1 = rnd(KV * n * d, 0), *dv1 = rnd(KV * n * dv, 0);
            double *dq2 = rnd(B * n * d, 0), *dk2 = rnd(B * n * d, 0), *dv2 = rnd(B * n * dv, 0);
            double l1 = 0, l2 = 0;
            T_REQUIRE(fr_execute_backward(p1, x.q, x.k, x.v, NULL, x.up, NULL, dq1, dk1, dv1, NULL,
                                          &l1, NULL, err, sizeof err) == FR_OK,
                      "%s", err);
            T_REQUIRE(fr_execute_backward(p2, r.q, r.k, r.v, NULL, r.up, NULL, dq2, dk2, dv2, NULL,
                                          &l2, NULL, err, sizeof err) == FR_OK,
                      "%s", err);
            T_CHECK(max_diff(dq1, dq2, B * n * d) == 0 && l1 == l2, "dq or loss differ");
            double worst = 0;
            for (int64_t h = 0; h < KV; h++)
                for (int64_t t = 0; t < n * d; t++) {
                    double s = 0, sv = 0;
                    for (int64_t e = 0; e < g; e++)
                        s += dk2[(h * g + e) * n * d + t];
                    worst = fmax(worst, fabs(s - dk1[h * n * d + t]));
                    if (t < n * dv) {
                        for (int64_t e = 0; e < g; e++)
                            sv += dv2[(h * g + e) * n * dv + t];
                        worst = fmax(worst, fabs(sv - dv1[h * n * dv + t]));
                    }
                }
            T_CHECK(worst < 1e-13, "%s causal %d: group sums of dk, dv off by %g",
                    fr_method_name(methods[mi]), causal, worst);
            /* the exact gradients of the grouped problem, as the check sees them */
            fr_diff all[FR_NGRADS];
            T_REQUIRE(fr_check_backward_rows(&x.p, x.q, x.k, x.v, NULL, x.up, dq1, dk1, dv1, NULL,
                                             NULL, n, NULL, all, err, sizeof err) == FR_OK,
                      "%s", err);
            double tol = methods[mi] == FR_METHOD_EXACT ? 1e-13 : 1e-2;
            T_CHECK(all[FR_GRAD_DQ].max_abs < tol && all[FR_GRAD_DK].max_abs < tol &&
                        all[FR_GRAD_DV].max_abs < tol && all[FR_GRAD_DK].count == KV * n * d,
                    "%s: check %g %g %g", fr_method_name(methods[mi]), all[0].max_abs,
                    all[1].max_abs, all[2].max_abs);
            fr_plan_free(p1), fr_plan_free(p2);
            free(b1), free(b2), free(o1), free(o2);
            free(dq1), free(dk1), free(dv1), free(dq2), free(dk2), free(dv2);
            free(r.k), free(r.v);
            drop(&x);
        }
}

/* An explicit W per problem (two of them equal: one plan), and a shared W's dW summed. */
static void test_explicit_w(void)
{
    char err[256];
    int64_t n = 7, d = 2, dv = 2, B = 3, ws = (2 * n - 1) * d * d;
    batch x = make(n, d, dv, B, 0, 0.6);
    memcpy(x.q + 2 * n * d, x.q, (size_t)(n * d) * sizeof *x.q); /* problem 2 = problem 0 */
    memcpy(x.k + 2 * n * d, x.k, (size_t)(n * d) * sizeof *x.k);
    memcpy(x.v + 2 * n * dv, x.v, (size_t)(n * dv) * sizeof *x.v);
    double *w = rnd(B * ws, 0.5);
    memcpy(w + 2 * ws, w, (size_t)ws * sizeof *w);
    x.p.rot.kind = FR_ROT_EXPLICIT;
    x.p.rot.w = w;
    x.p.rot.w_count = B;
    for (int m = 0; m < 2; m++) {
        fr_method meth = m ? FR_METHOD_POLYFFT : FR_METHOD_EXACT;
        fr_bounds *bd;
        fr_plan *pl = plan_of(&x, meth, &bd, err);
        T_REQUIRE(pl, "%s", err);
        fr_plan_info info;
        fr_plan_get_info(pl, &info);
        T_CHECK(info.plans == 2, "%s: %lld plans for 2 distinct W", fr_method_name(meth),
                (long long)info.plans);
        double *out = rnd(B * n * dv, 0), *one = rnd(n * dv, 0);
        double *dq = rnd(B * n * d, 0), *dk = rnd(B * n * d, 0), *dvv = rnd(B * n * dv, 0);
        double *dw = rnd(B * ws, 0), *dw1 = rnd(ws, 0), *g1 = rnd(n * d, 0), *g2 = rnd(n * d, 0),
               *g3 = rnd(n * dv, 0);
        T_REQUIRE(fr_execute(pl, x.q, x.k, x.v, out, NULL, err, sizeof err) == FR_OK, "%s", err);
        T_REQUIRE(fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, dq, dk, dvv, dw, NULL,
                                      NULL, err, sizeof err) == FR_OK,
                  "%s", err);
        double e = 0, ew = 0;
        for (int64_t b = 0; b < B; b++) {
            fr_plan_info pi;
            fr_plan_entry_info(pl, b, &pi);
            T_REQUIRE(alone(&x, b, &pi, one, err) == FR_OK, "%s", err);
            e = fmax(e, max_diff(out + b * n * dv, one, n * dv));
            fr_problem p1 = fr__entry_problem(&x.p, b);
            T_REQUIRE(fr_exact_backward(&p1, x.q + b * n * d, x.k + b * n * d, x.v + b * n * dv,
                                        x.up + b * n * dv, NULL, NULL, g1, g2, g3, dw1, NULL, err,
                                        sizeof err) == FR_OK,
                      "%s", err);
            ew = fmax(ew, max_diff(dw + b * ws, dw1, ws));
        }
        T_CHECK(e == 0, "%s: forward %g from alone", fr_method_name(meth), e);
        T_CHECK(ew < (m ? 1e-2 : 1e-13), "%s: dW %g from alone", fr_method_name(meth), ew);
        fr_plan_free(pl);
        free(bd), free(out), free(one), free(dq), free(dk), free(dvv), free(dw), free(dw1);
        free(g1), free(g2), free(g3);
    }
    /* one W for the batch: dW is the sum of every problem's */
    x.p.rot.w_count = 1;
    double *dq = rnd(B * n * d, 0), *dk = rnd(B * n * d, 0), *dvv = rnd(B * n * dv, 0);
    double *dw = rnd(ws, 0), *sum = calloc((size_t)ws, sizeof *sum), *dw1 = rnd(ws, 0);
    T_REQUIRE(fr_exact_backward(&x.p, x.q, x.k, x.v, x.up, NULL, NULL, dq, dk, dvv, dw, NULL, err,
                                sizeof err) == FR_OK,
              "%s", err);
    for (int64_t b = 0; b < B; b++) {
        fr_problem p1 = fr__entry_problem(&x.p, b);
        T_REQUIRE(fr_exact_backward(&p1, x.q + b * n * d, x.k + b * n * d, x.v + b * n * dv,
                                    x.up + b * n * dv, NULL, NULL, dq, dk, dvv, dw1, NULL, err,
                                    sizeof err) == FR_OK,
                  "%s", err);
        for (int64_t t = 0; t < ws; t++)
            sum[t] += dw1[t];
    }
    T_CHECK(max_diff(dw, sum, ws) < 1e-14, "shared dW %g from the sum", max_diff(dw, sum, ws));
    free(dq), free(dk), free(dvv), free(dw), free(sum), free(dw1), free(w);
    drop(&x);
}

/* Many small problems run side by side; a plan executed by two threads at once gives both the
 * same numbers as one execution (the plan is only read). */
static void test_side_by_side_and_reentrant(void)
{
    char err[256];
    int64_t n = 16, d = 4, dv = 4, B = 200;
    batch x = make(n, d, dv, B, 0, 1);
    for (int m = 0; m < 3; m++) {
        fr_method meth = m == 0 ? FR_METHOD_EXACT : m == 1 ? FR_METHOD_POLYROPE : FR_METHOD_POLYFFT;
        fr_bounds *bd;
        fr_plan *pl = plan_of(&x, meth, &bd, err);
        T_REQUIRE(pl, "%s", err);
        double *ref = rnd(B * n * dv, 0), *o[2] = {rnd(B * n * dv, 0), rnd(B * n * dv, 0)};
        T_REQUIRE(fr_execute(pl, x.q, x.k, x.v, ref, NULL, err, sizeof err) == FR_OK, "%s", err);
        int st[2];
#pragma omp parallel num_threads(2)
        {
            int t = omp_get_thread_num();
            char e[256];
            st[t] = fr_execute(pl, x.q, x.k, x.v, o[t], NULL, e, sizeof e);
        }
        T_CHECK(st[0] == FR_OK && st[1] == FR_OK, "concurrent executions failed");
        T_CHECK(max_diff(ref, o[0], B * n * dv) == 0 && max_diff(ref, o[1], B * n * dv) == 0,
                "%s: concurrent executions differ", fr_method_name(meth));
        fr_plan_free(pl);
        free(bd), free(ref), free(o[0]), free(o[1]);
    }
    drop(&x);
}

/* fr_diff accumulates like one comparison of everything; the checks are per entry and over all. */
static void test_compare_and_check(void)
{
    double got[6] = {1, 2, 3, 4, 5, 6}, ref[6] = {1, 2.5, 3, 4, 5, -8};
    fr_diff a = {0}, b = {0}, c = {0};
    fr_diff_add(&a, got, ref, 6);
    fr_diff_add(&b, got, ref, 2);
    fr_diff_add(&c, got + 2, ref + 2, 4);
    fr_diff_merge(&b, &c);
    T_CHECK(a.max_abs == 14 && a.ref_max == 8 && a.max_rel == 14.0 / 8 && a.count == 6,
            "diff %g %g %g %lld", a.max_abs, a.ref_max, a.max_rel, (long long)a.count);
    T_CHECK(memcmp(&a, &b, sizeof a) == 0, "merged differs");
    got[1] = NAN;
    fr_diff nan = fr_compare(got, ref, 6);
    T_CHECK(isnan(nan.max_abs) && isnan(nan.max_rel), "NaN is not kept: %g", nan.max_abs);
    fr_diff_merge(&a, &nan);
    T_CHECK(isnan(a.max_abs), "a NaN merged in is lost");
    double z[2] = {0, 0}, one[2] = {0, 1e-300};
    fr_diff zz = fr_compare(one, z, 2);
    T_CHECK(isinf(zz.max_rel), "reference all zero: max_rel %g", zz.max_rel);

    char err[256];
    int64_t n = 12, d = 4, dv = 3, B = 3, rows[3] = {0, 5, 11};
    batch x = make(n, d, dv, B, 0, 1);
    double *out = rnd(B * n * dv, 0);
    T_REQUIRE(fr_exact_rows(&x.p, x.q, x.k, x.v, NULL, n, out, err, sizeof err) == FR_OK, "%s",
              err);
    out[(1 * n + 5) * dv + 2] += 1e-3; /* problem 1, row 5 */
    fr_diff per[3], all;
    T_REQUIRE(fr_check_rows(&x.p, x.q, x.k, x.v, out, rows, 3, per, &all, err, sizeof err) == FR_OK,
              "%s", err);
    T_CHECK(per[0].max_abs == 0 && per[2].max_abs == 0 && fabs(per[1].max_abs - 1e-3) < 1e-15,
            "per entry %g %g %g", per[0].max_abs, per[1].max_abs, per[2].max_abs);
    T_CHECK(all.max_abs == per[1].max_abs && all.count == B * 3 * dv, "all %g count %lld",
            all.max_abs, (long long)all.count);
    /* rows of the batch-aware reference are the full reference's */
    double *sub = rnd(B * 3 * dv, 0);
    out[(1 * n + 5) * dv + 2] -= 1e-3;
    T_REQUIRE(fr_exact_rows(&x.p, x.q, x.k, x.v, rows, 3, sub, err, sizeof err) == FR_OK, "%s",
              err);
    double e = 0;
    for (int64_t bb = 0; bb < B; bb++)
        for (int t = 0; t < 3; t++)
            e = fmax(e, max_diff(sub + (bb * 3 + t) * dv, out + (bb * n + rows[t]) * dv, dv));
    T_CHECK(e == 0, "rows differ by %g", e);
    free(out), free(sub);
    drop(&x);
}

static int cancel_at_half(void *user, const char *phase, double fraction)
{
    ++*(int *)user;
    return strcmp(phase, "plan") != 0 && fraction >= 0.5;
}

static void test_errors(void)
{
    char err[256];
    batch x = make(8, 4, 2, 4, 3, 1);
    fr_bounds bd[4];
    T_CHECK(fr_bounds_compute(&x.p, x.q, x.k, x.v, bd, err, sizeof err) == FR_EINPUT &&
                strstr(err, "kv_batch"),
            "kv_batch 3 of 4: %s", err);
    x.p.kv_batch = 2;
    x.p.rot.kind = FR_ROT_EXPLICIT;
    x.p.rot.w = x.q;
    x.p.rot.w_count = 3;
    T_CHECK(fr_problem_check(&x.p, err, sizeof err) == FR_EINPUT && strstr(err, "w_count"),
            "w_count 3: %s", err);
    x.p.rot = fr_problem_default(8, 4, 2).rot;
    /* a problem whose scores overflow is named */
    x.q[2 * 8 * 4 + 5] = 1e160;
    x.k[1 * 8 * 4 + 5] = 1e160; /* problem 2 reads k problem 1 */
    T_CHECK(fr_bounds_compute(&x.p, x.q, x.k, x.v, bd, err, sizeof err) == FR_EINPUT &&
                strstr(err, "problem 2") && strstr(err, "overflow"),
            "overflow: %s", err);
    x.q[2 * 8 * 4 + 5] = 0.5;
    x.k[1 * 8 * 4 + 5] = 0.5;
    /* a forced method that cannot serve one problem fails naming it */
    for (int64_t t = 0; t < 8 * 4; t++)
        x.q[3 * 8 * 4 + t] *= 40;
    T_REQUIRE(fr_bounds_compute(&x.p, x.q, x.k, x.v, bd, err, sizeof err) == FR_OK, "%s", err);
    fr_options o = fr_options_default();
    o.method = FR_METHOD_POLYROPE;
    o.max_degree = 8;
    fr_plan *pl;
    T_CHECK(fr_plan_create(&pl, &x.p, bd, &o, err, sizeof err) == FR_EACCURACY &&
                strstr(err, "problem 3"),
            "forced polyrope: %s", err);
    /* auto falls back to exact for that problem only */
    o.method = FR_METHOD_AUTO;
    T_REQUIRE(fr_plan_create(&pl, &x.p, bd, &o, err, sizeof err) == FR_OK, "%s", err);
    fr_plan_info w;
    fr_plan_get_info(pl, &w);
    T_CHECK(w.entry == 3 && w.method == FR_METHOD_EXACT, "worst %lld %s", (long long)w.entry,
            fr_method_name(w.method));
    fr_plan_free(pl);
    /* cancelling */
    int calls = 0;
    o.method = FR_METHOD_EXACT;
    o.progress = cancel_at_half;
    o.progress_user = &calls;
    T_REQUIRE(fr_plan_create(&pl, &x.p, NULL, &o, err, sizeof err) == FR_OK, "%s", err);
    double *out = rnd(4 * 8 * 2, 0);
    T_CHECK(fr_execute(pl, x.q, x.k, x.v, out, NULL, err, sizeof err) == FR_ECANCELED && calls,
            "not cancelled (%d calls): %s", calls, err);
    fr_plan_free(pl);
    o.precision = FR_F32; /* single precision is exact only (batch_f32_test) */
    o.method = FR_METHOD_POLYFFT;
    T_CHECK(fr_plan_create(&pl, &x.p, bd, &o, err, sizeof err) == FR_EUSAGE, "f32 polyfft plan");
    free(out);
    drop(&x);
}

int main(void)
{
    T_RUN(test_batch_equals_each_alone);
    T_RUN(test_per_entry_degrees);
    T_RUN(test_grouped_query);
    T_RUN(test_explicit_w);
    T_RUN(test_side_by_side_and_reentrant);
    T_RUN(test_compare_and_check);
    T_RUN(test_errors);
    return t_done();
}
