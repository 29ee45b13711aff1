/* progress_test.c - progress reports and cancellation: every method stops with FR_ECANCELED
 * when the callback asks (at a phase's start, and in the middle of its engine's loops, the
 * engine then freeing everything: the SAN build checks the leaks), reports come from the calling
 * thread only, in order, at a bounded rate. */
#include "internal.h"
#include "test.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

static unsigned long long seed = 4242;

static double *rnd(int64_t count, double scale)
{
    double *x = malloc((size_t)count * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = scale * t_rand(&seed);
    return x;
}

static float *to_f32(const double *x, int64_t count)
{
    float *y = malloc((size_t)count * sizeof *y);
    for (int64_t i = 0; i < count; i++)
        y[i] = (float)x[i];
    return y;
}

typedef struct {
    int64_t n, d, dv;
    double *q, *k, *v, *up, *out, *dq, *dk, *dvv;
} data;

static data make(int64_t n, int64_t d, int64_t dv, double scale)
{
    data x = {
        n,    d,    dv,  rnd(n * d, scale), rnd(n * d, scale), rnd(n * dv, 1), rnd(n * dv, 1), NULL,
        NULL, NULL, NULL};
    x.out = malloc((size_t)(n * dv) * sizeof(double));
    x.dq = malloc((size_t)(n * d) * sizeof(double));
    x.dk = malloc((size_t)(n * d) * sizeof(double));
    x.dvv = malloc((size_t)(n * dv) * sizeof(double));
    return x;
}

static void drop(data *x)
{
    free(x->q), free(x->k), free(x->v), free(x->up), free(x->out), free(x->dq), free(x->dk);
    free(x->dvv);
}

/* ---- inside the engines: a progress whose first step reports, and cancels ------------------- */

typedef struct {
    int calls;
    double first;
} rec;

static int cancel_now(void *user, const char *phase, double fraction)
{
    (void)phase;
    rec *r = user;
    if (!r->calls++) r->first = fraction;
    return 1;
}

/* Started quietly, then armed: the engine's first step reads the clock and reports at once. */
static void arm(fr__prog *pg, rec *r)
{
    memset(r, 0, sizeof *r);
    fr__prog_start(pg, NULL, NULL, "test");
    pg->fn = cancel_now;
    pg->user = r;
    pg->next = 0;
}

#define CANCELED(call, what)                                                                       \
    do {                                                                                           \
        fr__prog pg;                                                                               \
        rec r;                                                                                     \
        arm(&pg, &r);                                                                              \
        int st_ = (call);                                                                          \
        T_CHECK(st_ == FR_ECANCELED && r.calls == 1 && r.first >= 0 && r.first < 1 &&              \
                    strstr(err, "canceled"),                                                       \
                "%s: status %d, %d calls, first at %g: %s", what, st_, r.calls, r.first, err);     \
    } while (0)

static void test_exact_cancels_inside(void)
{
    char err[256] = "";
    fr_problem p = fr_problem_default(300, 4, 3);
    data x = make(300, 4, 3, 1);
    CANCELED(fr__exact_rows(&p, x.q, x.k, x.v, NULL, p.n, x.out, &pg, err, sizeof err), "exact");
    CANCELED(fr__exact_backward(&p, x.q, x.k, x.v, x.up, NULL, NULL, x.dq, x.dk, x.dvv, NULL, NULL,
                                &pg, err, sizeof err),
             "exact backward");
    p.causal = 1;
    int64_t rows[3] = {0, 17, 299};
    CANCELED(fr__exact_backward_rows(&p, x.q, x.k, x.v, x.up, NULL, rows, 3, x.dq, x.dk, x.dvv, &pg,
                                     err, sizeof err),
             "exact backward rows");
    /* single precision */
    float *q = to_f32(x.q, 300 * 4), *k = to_f32(x.k, 300 * 4), *v = to_f32(x.v, 300 * 3);
    float *up = to_f32(x.up, 300 * 3), *o = malloc(300 * 4 * sizeof *o);
    float *gq = malloc(300 * 4 * sizeof *gq), *gk = malloc(300 * 4 * sizeof *gk);
    float *gv = malloc(300 * 3 * sizeof *gv);
    CANCELED(fr__exact_rows_f32(&p, q, k, v, NULL, p.n, o, &pg, err, sizeof err), "exact f32");
    CANCELED(fr__exact_backward_f32(&p, q, k, v, up, NULL, NULL, gq, gk, gv, NULL, NULL, &pg, err,
                                    sizeof err),
             "exact f32 backward");
    free(q), free(k), free(v), free(up), free(o), free(gq), free(gk), free(gv);
    drop(&x);
}

static void test_polyfft_cancels_inside(void)
{
    char err[256] = "";
    for (int causal = 0; causal < 2; causal++) {
        fr_problem p = fr_problem_default(256, 2, 3);
        p.causal = causal;
        data x = make(256, 2, 3, 0.5);
        fr_bounds b;
        T_REQUIRE(fr_bounds_compute(&p, x.q, x.k, x.v, &b, err, sizeof err) == 0, "%s", err);
        double coef[5], eta;
        T_REQUIRE(fr_poly_fit(b.R, 4, coef, &eta, err, sizeof err) == 0, "%s", err);
        fr__polyfft *pl;
        T_REQUIRE(fr__polyfft_create(&pl, &p, coef, 4, 0, FR_FFT_AUTO, 0, err, sizeof err) == 0,
                  "%s", err);
        CANCELED(fr__polyfft_execute(pl, x.q, x.k, x.v, x.out, NULL, &pg, err, sizeof err),
                 "polyfft");
        CANCELED(fr__polyfft_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, x.dq, x.dk, x.dvv, NULL,
                                      NULL, &pg, err, sizeof err),
                 "polyfft backward");
        fr__polyfft_free(pl);
        drop(&x);
    }
}

static void test_polyrope_cancels_inside(void)
{
    char err[256] = "";
    for (int causal = 0; causal < 2; causal++) {
        fr_problem p = fr_problem_default(300, 2, 3);
        p.causal = causal;
        data x = make(300, 2, 3, 0.5);
        fr_bounds b;
        T_REQUIRE(fr_bounds_compute(&p, x.q, x.k, x.v, &b, err, sizeof err) == 0, "%s", err);
        double coef[5], eta;
        T_REQUIRE(fr_poly_fit(b.R, 4, coef, &eta, err, sizeof err) == 0, "%s", err);
        fr__polyrope *pl;
        T_REQUIRE(fr__polyrope_create(&pl, &p, coef, 4, err, sizeof err) == 0, "%s", err);
        for (int threads = 0; threads < 2; threads++) {
            /* threads: the sweeps' parallel versions, whose workers poll the flag */
            if (threads) fr__polyrope_set_par_units(pl, 0);
            CANCELED(fr__polyrope_execute(pl, x.q, x.k, x.v, x.out, NULL, &pg, err, sizeof err),
                     "polyrope");
            CANCELED(fr__polyrope_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, x.dq, x.dk, x.dvv,
                                           NULL, &pg, err, sizeof err),
                     "polyrope backward");
        }
        fr__polyrope_free(pl);
        drop(&x);
    }
}

/* ---- through the API: every method, forward and backward, canceled at its phase's start -------
 */

typedef struct {
    const char *cancel_in; /* the phase to cancel in */
    int calls;
} stopper;

static int stop_in(void *user, const char *phase, double fraction)
{
    (void)fraction;
    stopper *s = user;
    s->calls++;
    return strcmp(phase, s->cancel_in) == 0;
}

static void test_api_cancels_every_method(void)
{
    char err[256];
    const fr_method ms[] = {FR_METHOD_EXACT, FR_METHOD_POLYFFT, FR_METHOD_POLYROPE};
    fr_problem p = fr_problem_default(64, 2, 2);
    p.batch = 3;
    data x = make(64 * 3, 2, 2, 0.3);
    fr_bounds b[3];
    T_REQUIRE(fr_bounds_compute(&p, x.q, x.k, x.v, b, err, sizeof err) == 0, "%s", err);
    for (int m = 0; m < 3; m++) {
        fr_options o = fr_options_default();
        o.method = ms[m];
        o.eps = 1e-2;
        stopper s = {"plan", 0};
        o.progress = stop_in;
        o.progress_user = &s;
        fr_plan *pl = NULL;
        T_CHECK(fr_plan_create(&pl, &p, b, &o, err, sizeof err) == FR_ECANCELED && !pl,
                "%s: plan not canceled", fr_method_name(ms[m]));
        s.cancel_in = "forward pass";
        T_REQUIRE(fr_plan_create(&pl, &p, b, &o, err, sizeof err) == 0, "%s", err);
        T_CHECK(fr_execute(pl, x.q, x.k, x.v, x.out, NULL, err, sizeof err) == FR_ECANCELED,
                "%s: forward not canceled", fr_method_name(ms[m]));
        T_CHECK(fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, x.dq, x.dk, x.dvv, NULL,
                                    NULL, NULL, err, sizeof err) == FR_OK,
                "%s: backward: %s", fr_method_name(ms[m]), err);
        s.cancel_in = "backward pass";
        T_CHECK(fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, x.dq, x.dk, x.dvv, NULL,
                                    NULL, NULL, err, sizeof err) == FR_ECANCELED &&
                    strstr(err, "backward pass canceled"),
                "%s: backward not canceled: %s", fr_method_name(ms[m]), err);
        fr_plan_free(pl);
    }
    /* single precision */
    fr_options o = fr_options_default();
    o.precision = FR_F32;
    stopper s = {"forward pass", 0};
    o.progress = stop_in;
    o.progress_user = &s;
    fr_plan *pl;
    float *q = to_f32(x.q, 3 * 64 * 2), *out = malloc(3 * 64 * 2 * sizeof *out);
    T_REQUIRE(fr_bounds_compute_f32(&p, q, q, q, b, err, sizeof err) == 0, "%s", err);
    T_REQUIRE(fr_plan_create(&pl, &p, b, &o, err, sizeof err) == 0, "%s", err);
    T_CHECK(fr_execute_f32(pl, q, q, q, out, NULL, err, sizeof err) == FR_ECANCELED, "f32");
    s.cancel_in = "backward pass";
    T_CHECK(fr_execute_backward_f32(pl, q, q, q, NULL, q, NULL, out, out, out, NULL, NULL, NULL,
                                    err, sizeof err) == FR_ECANCELED,
            "f32 backward");
    fr_plan_free(pl);
    /* the checking tools' exact reference */
    int64_t rows[2] = {1, 63};
    s.cancel_in = "exact rows";
    T_CHECK(fr_exact_rows_progress(&p, x.q, x.k, x.v, rows, 2, x.out, stop_in, &s, err,
                                   sizeof err) == FR_ECANCELED,
            "exact rows");
    T_CHECK(fr_exact_backward_rows_progress(&p, x.q, x.k, x.v, x.up, NULL, rows, 2, x.dq, x.dk,
                                            x.dvv, stop_in, &s, err, sizeof err) == FR_ECANCELED,
            "exact backward rows");
    fr_diff all[FR_NGRADS];
    T_CHECK(fr_check_rows_progress(&p, x.q, x.k, x.v, x.out, rows, 2, NULL, all, stop_in, &s, err,
                                   sizeof err) == FR_ECANCELED,
            "check rows");
    T_CHECK(fr_check_backward_rows_progress(&p, x.q, x.k, x.v, x.up, NULL, x.dq, x.dk, x.dvv, NULL,
                                            rows, 2, NULL, all, stop_in, &s, err,
                                            sizeof err) == FR_ECANCELED,
            "check backward rows");
    s.cancel_in = "none";
    T_CHECK(fr_exact_rows_progress(&p, x.q, x.k, x.v, rows, 2, x.out, stop_in, &s, err,
                                   sizeof err) == FR_OK,
            "exact rows: %s", err);
    free(q), free(out);
    drop(&x);
}

/* ---- the reports: one thread, in order, each phase ending at 1, a few a second ------------- */

typedef struct {
    pthread_t self;
    int calls, other_thread, backwards, out_of_range;
    double last;
    char phase[32], phases[128];
} watcher;

static int watch(void *user, const char *phase, double fraction)
{
    watcher *w = user;
    w->calls++;
    if (!pthread_equal(pthread_self(), w->self)) w->other_thread++;
    if (!(fraction >= 0 && fraction <= 1)) w->out_of_range++;
    if (strcmp(phase, w->phase) != 0) {
        snprintf(w->phase, sizeof w->phase, "%s", phase);
        size_t len = strlen(w->phases);
        snprintf(w->phases + len, sizeof w->phases - len, "%s%s", len ? "," : "", phase);
    } else if (fraction < w->last) {
        w->backwards++;
    }
    w->last = fraction;
    return 0;
}

static void test_reports(void)
{
    char err[256];
    fr_problem p = fr_problem_default(2048, 8, 4);
    p.batch = 2;
    data x = make(2048 * 2, 8, 4, 1);
    watcher w = {pthread_self(), 0, 0, 0, 0, 0, "", ""};
    fr_options o = fr_options_default();
    o.method = FR_METHOD_EXACT;
    o.progress = watch;
    o.progress_user = &w;
    fr_plan *pl;
    T_REQUIRE(fr_plan_create(&pl, &p, NULL, &o, err, sizeof err) == 0, "%s", err);
    T_REQUIRE(fr_execute(pl, x.q, x.k, x.v, x.out, NULL, err, sizeof err) == 0, "%s", err);
    T_CHECK(w.last == 1, "the forward pass ends at %g", w.last);
    T_REQUIRE(fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, x.dq, x.dk, x.dvv, NULL,
                                  NULL, NULL, err, sizeof err) == 0,
              "%s", err);
    T_CHECK(w.last == 1, "the backward pass ends at %g", w.last);
    T_CHECK(strcmp(w.phases, "plan,forward pass,backward pass") == 0, "phases %s", w.phases);
    T_CHECK(!w.other_thread && !w.backwards && !w.out_of_range,
            "%d calls: %d from another thread, %d backwards, %d out of [0, 1]", w.calls,
            w.other_thread, w.backwards, w.out_of_range);
    fr_plan_free(pl);
    drop(&x);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int count(void *user, const char *phase, double fraction)
{
    (void)phase, (void)fraction;
    ++*(int *)user;
    return 0;
}

/* Steps as fast as they come for 0.6 s: the callback hears of a few. */
static void test_rate_bounded(void)
{
    int calls = 0;
    fr__prog pg;
    fr__prog_start(&pg, count, &calls, "spin");
    double t0 = now();
    int64_t steps = 0;
    while (now() - t0 < 0.6)
        for (int i = 0; i < 1000; i++, steps++)
            fr__prog_step(&pg, 0.5);
    /* the start, then one each 0.2 s at most */
    T_CHECK(calls >= 2 && calls <= 5, "%d calls over %lld steps", calls, (long long)steps);
}

int main(void)
{
    T_RUN(test_exact_cancels_inside);
    T_RUN(test_polyfft_cancels_inside);
    T_RUN(test_polyrope_cancels_inside);
    T_RUN(test_api_cancels_every_method);
    T_RUN(test_reports);
    T_RUN(test_rate_bounded);
    return t_done();
}
