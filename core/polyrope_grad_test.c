/* polyrope_grad_test.c - the factorised path's backward against independent computations:
 *  - central finite differences of polyrope's own forward (fr_execute through a plan with a
 *    forced degree): the backward must be its exact derivative, to ~1e-7 normwise;
 *  - the exact softmax gradients (fr_exact_backward) within a tolerance that follows eps;
 *  - T and the loss against the forward;
 *  - several threads against one (the chunked sliding sums of both sweeps). */
#include "internal.h"
#include "test.h"

#include <omp.h>
#include <string.h>
#include <sys/resource.h>

static unsigned long long seed = 777;

/* make_plan's plans rotate with the two-level tables of large problems (at any n). */
static int split_rotation;

static double *rnd(int64_t count, double scale)
{
    double *x = malloc((size_t)(count ? count : 1) * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = scale * t_rand(&seed);
    return x;
}

static double *zeros(int64_t count)
{
    return calloc((size_t)(count ? count : 1), sizeof(double));
}

/* degree >= 0 forces it; otherwise eps chooses. */
static fr_plan *make_plan(const fr_problem *p, const double *q, const double *k, const double *v,
                          int degree, double eps)
{
    char err[256] = "";
    fr_bounds b;
    if (fr_bounds_compute(p, q, k, v, &b, err, sizeof err)) {
        printf("#   bounds: %s\n", err);
        return NULL;
    }
    fr_options o = fr_options_default();
    o.method = FR_METHOD_POLYROPE;
    o.degree = degree;
    /* A forced degree is tested for its gradient, not its accuracy: an eps it certifies. */
    o.eps = degree >= 0 ? 1e30 : eps;
    fr_plan *pl = NULL;
    if (fr_plan_create(&pl, p, &b, &o, err, sizeof err)) printf("#   plan: %s\n", err);
    if (pl && split_rotation && fr__polyrope_split_rotation(fr__plan_polyrope(pl))) {
        fr_plan_free(pl);
        return NULL;
    }
    return pl;
}

/* L = sum dout . T, or 1/2 |T - E|^2, through the plan's forward. */
static double loss_of(fr_plan *pl, const fr_problem *p, const double *q, const double *k,
                      const double *v, const double *dout, const double *target, double *tbuf)
{
    char err[256];
    if (fr_execute(pl, q, k, v, tbuf, NULL, err, sizeof err)) {
        printf("#   forward: %s\n", err);
        return NAN;
    }
    double s = 0;
    for (int64_t e = 0; e < p->n * p->dv; e++)
        s += target ? 0.5 * (tbuf[e] - target[e]) * (tbuf[e] - target[e]) : dout[e] * tbuf[e];
    return s;
}

/* max |fd - an| / max(max |an|, 1e-2) over one tensor x (count entries) whose analytic gradient
 * is an; fd by the fourth-order central stencil (truncation ~ h^4, rounding ~ 1e-14 / h). The
 * floor keeps gradients that vanish (n = 1, window 0: T_i = v_i) from dividing noise by zero.
 * Every entry when few, else a deterministic sample of them. */
static double fd_tensor(fr_plan *pl, const fr_problem *p, double *q, double *k, double *v,
                        double *x, int64_t count, const double *an, const double *dout,
                        const double *target, double *tbuf)
{
    const double h = 1e-3;
    double num = 0, den = 1e-2;
    int64_t stride = count > 60 ? count / 53 : 1;
    for (int64_t e = 0; e < count; e += stride) {
        double keep = x[e], f[4], off[4] = {h, -h, 2 * h, -2 * h};
        for (int t = 0; t < 4; t++) {
            x[e] = keep + off[t];
            f[t] = loss_of(pl, p, q, k, v, dout, target, tbuf);
        }
        x[e] = keep;
        double fd = (8 * (f[0] - f[1]) - (f[2] - f[3])) / (12 * h), diff = fabs(fd - an[e]);
        if (!(diff <= num)) num = diff; /* NaN propagates */
    }
    for (int64_t e = 0; e < count; e++)
        if (fabs(an[e]) > den) den = fabs(an[e]);
    return num / den;
}

/* The backward through the plan against finite differences of the same plan's forward; the
 * worst relative error of dq, dk, dv (and T, the loss) is returned. */
static double check_fd(const fr_problem *p, int degree, double scale, int use_target,
                       const char *what)
{
    int64_t n = p->n, d = p->d, dv = p->dv;
    double *q = rnd(n * d, scale), *k = rnd(n * d, scale), *v = rnd(n * dv, 1);
    double *up = rnd(n * dv, 1), *tbuf = zeros(n * dv), *t = zeros(n * dv);
    double *dq = zeros(n * d), *dk = zeros(n * d), *dvv = zeros(n * dv);
    double worst = 1e300, loss = NAN;
    char err[256] = "";
    fr_plan *pl = make_plan(p, q, k, v, degree, 1e-3);
    if (pl) {
        const double *dout = use_target ? NULL : up, *target = use_target ? up : NULL;
        int st = fr_execute_backward(pl, q, k, v, dout, target, t, dq, dk, dvv, NULL, &loss, NULL,
                                     err, sizeof err);
        if (st) {
            printf("#   %s: backward: %s\n", what, err);
        } else {
            double l0 = loss_of(pl, p, q, k, v, dout, target, tbuf);
            double et = fr_compare(t, tbuf, n * dv).max_abs;
            double el = use_target ? fabs(loss - l0) / fabs(l0) : 0;
            double e1 = fd_tensor(pl, p, q, k, v, q, n * d, dq, dout, target, tbuf);
            double e2 = fd_tensor(pl, p, q, k, v, k, n * d, dk, dout, target, tbuf);
            double e3 = fd_tensor(pl, p, q, k, v, v, n * dv, dvv, dout, target, tbuf);
            worst = et > 1e-13 || el > 1e-13 ? 1 : 0;
            if (worst) printf("#   %s: |T - forward| %.3g, loss rel %.3g\n", what, et, el);
            if (e1 > worst || e1 != e1) worst = e1;
            if (e2 > worst || e2 != e2) worst = e2;
            if (e3 > worst || e3 != e3) worst = e3;
            if (!(worst < 1e-7))
                printf("#   %s: fd errors dq %.3g dk %.3g dv %.3g\n", what, e1, e2, e3);
        }
    }
    fr_plan_free(pl);
    free(q), free(k), free(v), free(up), free(tbuf), free(t), free(dq), free(dk), free(dvv);
    return worst;
}

/* Masks at sizes with one block, several blocks and partial blocks, windows narrower and wider
 * than a block (32 rows here), with dout and with target. */
static void test_fd_masks(void)
{
    int64_t ns[] = {1, 2, 7, 13, 75, 150};
    struct {
        int causal;
        int64_t window;
    } masks[] = {{0, -1}, {1, -1}, {0, 0}, {0, 3}, {0, 40}, {1, 0}, {1, 5}, {1, 45}};
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (size_t b = 0; b < sizeof masks / sizeof *masks; b++) {
            fr_problem p = fr_problem_default(ns[a], 4, (a & 1) ? 3 : 4);
            p.causal = masks[b].causal;
            p.window = masks[b].window;
            char what[96];
            snprintf(what, sizeof what, "n=%lld causal=%d window=%lld", (long long)p.n, p.causal,
                     (long long)p.window);
            double e = check_fd(&p, 3, 1.0, (int)(a + b) & 1, what);
            T_CHECK(e < 1e-7, "%s: relative error %.3g", what, e);
        }
}

static void test_fd_rotations(void)
{
    for (int c = 0; c < 8; c++) {
        fr_problem p = fr_problem_default(c == 7 ? 1 : 23, 6, c == 0 ? 2 : 5);
        p.causal = c & 1;
        const char *what = "interleaved, dv 2";
        if (c == 1) p.rot.pairs = FR_PAIRS_HALF, what = "half";
        if (c == 2) p.rot.base = 7.5, what = "base 7.5";
        if (c == 3) p.rot.pos_scale = 2.5, what = "pos_scale 2.5";
        if (c == 4) p.rot.rotary_dim = 4, p.rot.pairs = FR_PAIRS_HALF, what = "rotary_dim 4 half";
        if (c == 5) p.rot.kind = FR_ROT_NONE, what = "none";
        if (c == 6) p.tau = 1 / sqrt(6.0), p.window = 4, p.causal = 1, what = "sdpa tau, window";
        if (c == 7) what = "n = 1";
        /* Degree 0 at sdpa's larger R has eta >= 1: P could be negative, so no plan can vouch
         * for it (the plan refuses); its gradient is tested at the other scales. */
        for (int g = c == 6 ? 2 : 0; g <= 4; g += 2)
            for (int tg = 0; tg < 2; tg++) {
                double e = check_fd(&p, g, 0.8, tg, what);
                T_CHECK(e < 1e-7, "%s g=%d target=%d: relative error %.3g", what, g, tg, e);
            }
    }
}

/* The two-level rotation tables of large problems (core/polyrope.c): the backward rotates back
 * with the same cos and sin as the forward, so it stays the forward's exact derivative. */
static void test_fd_split_rotation(void)
{
    split_rotation = 1;
    for (int c = 0; c < 4; c++) {
        fr_problem p = fr_problem_default(75, 6, 4);
        p.causal = c & 1;
        const char *what = "interleaved";
        if (c == 1) p.rot.pairs = FR_PAIRS_HALF, what = "half";
        if (c == 2) p.rot.pos_scale = 2.5, p.window = 20, what = "pos_scale 2.5, window";
        if (c == 3) p.rot.rotary_dim = 4, what = "rotary_dim 4";
        double e = check_fd(&p, 3, 0.8, c & 1, what);
        T_CHECK(e < 1e-7, "%s: relative error %.3g", what, e);
    }
    split_rotation = 0;
}

/* The backward keeps one array of size n, the row weights w (n x (dv + 1)), and no rotated copy
 * of q, k or [V, 1] (each 16 MB here). Run first, in a fresh process, so that the high-water
 * resident size just before the call is the inputs' and outputs'. Not under AddressSanitizer. */
static void test_memory(void)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("#   skipped under AddressSanitizer\n");
#else
    int64_t n = (int64_t)1 << 18, d = 8, dv = 8;
    double bytes = (double)(n * d) * sizeof(double), w = (double)(n * (dv + 1)) * sizeof(double);
    fr_problem p = fr_problem_default(n, d, dv);
    p.causal = 1;
    double coef[3] = {1, 1, 0.5};
    double *q = rnd(n * d, 0.5), *k = rnd(n * d, 0.5), *v = rnd(n * dv, 1), *up = rnd(n * dv, 1);
    double *dq = rnd(n * d, 1), *dk = rnd(n * d, 1), *dvv = rnd(n * dv, 1); /* touched */
    fr__polyrope *pl;
    char err[256] = "";
    int st = fr__polyrope_create(&pl, &p, coef, 2, err, sizeof err);
    T_REQUIRE(st == FR_OK, "create: %s", err);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    st = fr__polyrope_backward(pl, q, k, v, up, NULL, NULL, dq, dk, dvv, NULL, NULL, err,
                               sizeof err);
    getrusage(RUSAGE_SELF, &r1);
    T_CHECK(st == FR_OK, "backward: %s", err);
    double grew = (double)(r1.ru_maxrss - r0.ru_maxrss) * 1024;
    T_CHECK(grew < w + bytes / 4, "the call grew the resident size by %.1f MB (w is %.1f MB)",
            grew / (1 << 20), w / (1 << 20));
    printf("#   resident size grew by %.2f MB during the call (w: %.2f MB)\n", grew / (1 << 20),
           w / (1 << 20));
    fr__polyrope_free(pl);
    free(q), free(k), free(v), free(up), free(dq), free(dk), free(dvv);
#endif
}

/* An explicit W that is RoPE in disguise: gradients rotate back through W, not R. */
static void test_fd_explicit(void)
{
    fr_problem rope = fr_problem_default(19, 4, 3);
    rope.rot.base = 3;
    int64_t n = rope.n, d = rope.d;
    double *w = malloc((size_t)(2 * n - 1) * d * d * sizeof *w);
    for (int64_t t = 0; t < 2 * n - 1; t++)
        fr_rotation_matrix(&rope, t - (n - 1), w + t * d * d);
    fr_problem p = rope;
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    for (int m = 0; m < 3; m++) {
        p.causal = m == 1;
        p.window = m == 2 ? 5 : -1;
        double e = check_fd(&p, 4, 1.0, m == 2, "explicit");
        T_CHECK(e < 1e-7, "explicit W, mask %d: relative error %.3g", m, e);
    }
    free(w);
}

/* Against exact softmax gradients: eps bounds the forward's error, and the gradient's error
 * follows it within a modest factor (the same polynomial error, differentiated). */
static void test_vs_exact(void)
{
    for (int c = 0; c < 7; c++) {
        fr_problem p = fr_problem_default(c == 6 ? 1 : 97, 8, c == 2 ? 3 : 8);
        p.causal = c == 1 || c == 4;
        p.window = c >= 3 && c < 6 ? 17 : -1;
        if (c == 2) p.rot.pairs = FR_PAIRS_HALF, p.rot.rotary_dim = 6;
        if (c == 5) p.rot.kind = FR_ROT_NONE;
        double eps = 1e-6;
        int64_t n = p.n, d = p.d, dv = p.dv;
        double *q = rnd(n * d, 1), *k = rnd(n * d, 1), *v = rnd(n * dv, 1), *up = rnd(n * dv, 1);
        double *g1[3] = {zeros(n * d), zeros(n * d), zeros(n * dv)};
        double *g2[3] = {zeros(n * d), zeros(n * d), zeros(n * dv)};
        double l1 = 0, l2 = 0;
        char err[256] = "";
        fr_plan *pl = make_plan(&p, q, k, v, -1, eps);
        T_CHECK(pl != NULL, "case %d: no plan", c);
        int tg = c & 1;
        const double *dout = tg ? NULL : up, *target = tg ? up : NULL;
        int st = pl ? fr_execute_backward(pl, q, k, v, dout, target, NULL, g1[0], g1[1], g1[2],
                                          NULL, &l1, NULL, err, sizeof err)
                    : FR_EUSAGE;
        T_CHECK(st == FR_OK, "case %d: %s", c, err);
        int st2 = fr_exact_backward(&p, q, k, v, dout, target, NULL, g2[0], g2[1], g2[2], NULL, &l2,
                                    err, sizeof err);
        T_CHECK(st2 == FR_OK, "exact: %s", err);
        if (!st && !st2) {
            const char *names[3] = {"dq", "dk", "dv"};
            int64_t cnt[3] = {n * d, n * d, n * dv};
            for (int x = 0; x < 3; x++) {
                fr_diff df = fr_compare(g1[x], g2[x], cnt[x]);
                if (n == 1) df.max_rel = df.max_abs; /* dq = dk = 0: one key, no dependence */
                T_CHECK(df.max_rel <= 10 * eps, "case %d %s: normwise error %.3g", c, names[x],
                        df.max_rel);
            }
            if (tg) T_CHECK(fabs(l1 - l2) <= 10 * eps * fabs(l2), "loss %.17g vs %.17g", l1, l2);
        }
        fr_plan_free(pl);
        free(q), free(k), free(v), free(up);
        for (int x = 0; x < 3; x++)
            free(g1[x]), free(g2[x]);
    }
}

/* Every thread takes a chunk of blocks (the threshold lowered to 0 for the test: by default a
 * problem this small runs on one thread), in both sweeps: the same answer as one thread, to
 * rounding. */
static void test_threads(void)
{
    for (int c = 0; c < 3; c++) {
        fr_problem p = fr_problem_default(6000, 8, 8);
        p.causal = c == 1 || c == 2;
        p.window = c == 2 ? 700 : -1;
        int64_t n = p.n, d = p.d, dv = p.dv;
        double *q = rnd(n * d, 1), *k = rnd(n * d, 1), *v = rnd(n * dv, 1), *up = rnd(n * dv, 1);
        double *g[2][3];
        for (int r = 0; r < 2; r++) {
            g[r][0] = zeros(n * d), g[r][1] = zeros(n * d), g[r][2] = zeros(n * dv);
        }
        fr_plan *pl = make_plan(&p, q, k, v, 2, 1e-3);
        T_REQUIRE(pl != NULL && fr__plan_polyrope(pl), "no polyrope plan");
        fr__polyrope_set_par_units(fr__plan_polyrope(pl), 0);
        int nt = omp_get_max_threads();
        char err[256] = "";
        for (int r = 0; r < 2; r++) {
            omp_set_num_threads(r ? 1 : (nt > 2 ? nt : 3));
            int st = fr_execute_backward(pl, q, k, v, up, NULL, NULL, g[r][0], g[r][1], g[r][2],
                                         NULL, NULL, NULL, err, sizeof err);
            T_CHECK(st == FR_OK, "case %d: %s", c, err);
        }
        omp_set_num_threads(nt);
        for (int x = 0; x < 3; x++) {
            fr_diff df = fr_compare(g[0][x], g[1][x], x == 2 ? n * dv : n * d);
            T_CHECK(df.max_rel < 1e-11, "case %d tensor %d: threads vs one: %.3g", c, x,
                    df.max_rel);
        }
        fr_plan_free(pl);
        free(q), free(k), free(v), free(up);
        for (int r = 0; r < 2; r++)
            for (int x = 0; x < 3; x++)
                free(g[r][x]);
    }
}

/* A polynomial negative on the scores: an error, as in the forward; and the argument checks. */
static void test_errors(void)
{
    fr_problem p = fr_problem_default(20, 4, 2);
    p.causal = 1;
    double *q = rnd(80, 1), *k = rnd(80, 1), *v = rnd(40, 1), *up = rnd(40, 1);
    double dq[80], dk[80], dv[40];
    double coef[2] = {-1, 0.1};
    fr__polyrope *pl;
    char err[256] = "";
    int st = fr__polyrope_create(&pl, &p, coef, 1, err, sizeof err);
    T_REQUIRE(st == FR_OK, "create: %s", err);
    st =
        fr__polyrope_backward(pl, q, k, v, up, NULL, NULL, dq, dk, dv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EACCURACY && strstr(err, "denominator"), "status %d (%s)", st, err);
    st = fr__polyrope_backward(pl, q, k, v, up, up, NULL, dq, dk, dv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE, "dout and target both: status %d", st);
    q[5] = NAN;
    st =
        fr__polyrope_backward(pl, q, k, v, up, NULL, NULL, dq, dk, dv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "q"), "NaN in q: status %d (%s)", st, err);
    fr__polyrope_free(pl);
    free(q), free(k), free(v), free(up);
}

/* One kept key per query (window 0, or n = 1): T_i = v_i, so dq = dk = 0 exactly and dV = G. */
static void test_single_key(void)
{
    for (int c = 0; c < 3; c++) {
        fr_problem p = fr_problem_default(c == 2 ? 1 : 40, 4, 3);
        p.window = c < 2 ? 0 : -1;
        p.causal = c == 1;
        int64_t n = p.n, d = p.d, dv = p.dv;
        double *q = rnd(n * d, 1), *k = rnd(n * d, 1), *v = rnd(n * dv, 1), *up = rnd(n * dv, 1);
        double *dq = zeros(n * d), *dk = zeros(n * d), *dvv = zeros(n * dv);
        fr_plan *pl = make_plan(&p, q, k, v, 3, 1e-3);
        T_REQUIRE(pl != NULL, "no plan");
        char err[256] = "";
        int st = fr_execute_backward(pl, q, k, v, up, NULL, NULL, dq, dk, dvv, NULL, NULL, NULL,
                                     err, sizeof err);
        T_CHECK(st == FR_OK, "%s", err);
        double mq = 0, e = 0;
        for (int64_t i = 0; i < n * d; i++)
            mq = fmax(mq, fmax(fabs(dq[i]), fabs(dk[i])));
        for (int64_t i = 0; i < n * dv; i++)
            e = fmax(e, fabs(dvv[i] - up[i]));
        T_CHECK(mq == 0, "case %d: |dq|, |dk| up to %.3g, want 0", c, mq);
        T_CHECK(e < 1e-15, "case %d: |dV - G| = %.3g", c, e);
        fr_plan_free(pl);
        free(q), free(k), free(v), free(up), free(dq), free(dk), free(dvv);
    }
}

int main(void)
{
    T_RUN(test_memory);
    T_RUN(test_fd_masks);
    T_RUN(test_fd_rotations);
    T_RUN(test_fd_explicit);
    T_RUN(test_fd_split_rotation);
    T_RUN(test_vs_exact);
    T_RUN(test_threads);
    T_RUN(test_single_key);
    T_RUN(test_errors);
    return t_done();
}
