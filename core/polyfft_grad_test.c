/* polyfft_grad_test.c - on every FFT back end (each test runs once per back end, cur_fft), and
 * to ~1e-9 of exact attention's gradient on double FFTW:
 * the polyfft backward is the exact derivative of the polyfft forward
 * (central differences of fr_execute with a forced, low degree, so that the polynomial differs
 * visibly from exp), and close to exact attention's gradient when the degree comes from eps;
 * every rotation kind and mask, n = 1, odd n, dv != d, dout and target, every storage mode, the
 * recompute path for dQ (y_u over budget), column blocks, and the literal plan. */
#include "fft.h"
#include "internal.h"
#include "test.h"

#include <string.h>

static char err[300];
static fr_fft_backend cur_fft = FR_FFT_KISSFFT; /* the back end the tests run on */

typedef struct {
    fr_problem p;
    double *q, *k, *v, *up; /* up: dout, or the target */
} prob;

static void make(prob *x, fr_problem p, double B, unsigned long long seed)
{
    x->p = p;
    int64_t n = p.n;
    x->q = malloc(n * p.d * sizeof(double));
    x->k = malloc(n * p.d * sizeof(double));
    x->v = malloc(n * p.dv * sizeof(double));
    x->up = malloc(n * p.dv * sizeof(double));
    for (int64_t i = 0; i < n * p.d; i++) {
        x->q[i] = B * t_rand(&seed);
        x->k[i] = B * t_rand(&seed);
    }
    for (int64_t i = 0; i < n * p.dv; i++) {
        x->v[i] = B * t_rand(&seed);
        x->up[i] = t_rand(&seed);
    }
}

static void drop(prob *x)
{
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->up);
}

/* A polyfft plan: degree forced (>= 0) or from eps. */
static fr_plan *plan_for(const prob *x, int degree, double eps)
{
    fr_bounds b;
    if (fr_bounds_compute(&x->p, x->q, x->k, x->v, &b, err, sizeof err)) return NULL;
    fr_options o = fr_options_default();
    o.method = FR_METHOD_POLYFFT;
    o.fft = cur_fft;
    /* A forced degree is tested for its gradient, not its accuracy: no eps to certify (a row
     * recomputed exactly for some steps of a finite difference and not others would break
     * it). */
    static const double ladder[] = {1e-3, 1e-2, 3e-2, 0.1, 0.3};
    size_t steps = 1;
    if (degree >= 0) {
        o.eps = 1e30;
    } else if (fr__fft_is_double(cur_fft)) {
        o.eps = eps;
    } else {
        /* A single-precision back end cannot certify these eps (its certified rounding is some
         * 1e-3 here, core/certify.c): it runs the polynomial the double one would, at the
         * tightest eps of the ladder that it does certify. */
        double eta;
        if (fr_poly_choose_degree(b.R, b.B_v, eps, 24, &degree, &eta, err, sizeof err)) return NULL;
        steps = sizeof ladder / sizeof *ladder;
    }
    o.degree = degree;
    for (size_t s = 0; s < steps; s++) {
        if (steps > 1) o.eps = ladder[s];
        fr_plan *pl;
        int st = fr_plan_create(&pl, &x->p, &b, &o, err, sizeof err);
        if (!st) return pl;
        if (st != FR_EACCURACY) return NULL;
    }
    return NULL;
}

/* L = sum up . T through the plan's forward */
static double loss_of(fr_plan *pl, const prob *x, double *out)
{
    if (fr_execute(pl, x->q, x->k, x->v, out, NULL, err, sizeof err)) return NAN;
    double s = 0;
    for (int64_t i = 0; i < x->p.n * x->p.dv; i++)
        s += x->up[i] * out[i];
    return s;
}

static double max_abs(const double *a, int64_t cnt)
{
    double m = 0;
    for (int64_t i = 0; i < cnt; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* Normwise relative difference max |a - b| / max |b|. */
/* Normwise relative distance; against an all-zero reference (n = 1: one key, so dQ = dK = 0
 * exactly), the absolute one: rounding-level noise is then a pass, not an infinite error. */
static double rel(const double *a, const double *b, int64_t cnt)
{
    fr_diff df = fr_compare(a, b, cnt);
    return isinf(df.max_rel) ? df.max_abs : df.max_rel;
}

/* Fourth-order central differences of L at sampled entries of q, k and v against the
 * backward's gradient. The float FFTs put ~1e-7 relative noise on L, so the step is large
 * (1e-2) and the difference formula of high order (truncation ~h^4). */
static void check_fd(const char *name, fr_problem p, int degree)
{
    prob x;
    make(&x, p, 1, 77 + (unsigned long long)p.n);
    int64_t n = p.n, d = p.d, dv = p.dv;
    fr_plan *pl = plan_for(&x, degree, 1e-3);
    T_REQUIRE(pl, "%s: %s", name, err);
    double *g[3], *out = malloc(n * dv * sizeof *out);
    int64_t cnt[3] = {n * d, n * d, n * dv};
    for (int t = 0; t < 3; t++)
        g[t] = malloc(cnt[t] * sizeof(double));
    int st = fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, g[0], g[1], g[2], NULL, NULL,
                                 NULL, err, sizeof err);
    T_CHECK(st == 0, "%s: %s", name, err);
    double *ten[3] = {x.q, x.k, x.v};
    const char *tn[3] = {"dq", "dk", "dv"};
    unsigned long long seed = 5;
    const double h = 1e-2;
    for (int t = 0; !st && t < 3; t++) {
        double scale = max_abs(g[t], cnt[t]), worst = 0;
        for (int s = 0; s < 6; s++) {
            /* first and last entries, then random ones */
            int64_t e = s == 0   ? 0
                        : s == 1 ? cnt[t] - 1
                                 : (int64_t)((t_rand(&seed) + 1) / 2 * (double)cnt[t]) % cnt[t];
            double keep = ten[t][e], L[4], off[4] = {-2 * h, -h, h, 2 * h};
            for (int m = 0; m < 4; m++) {
                ten[t][e] = keep + off[m];
                L[m] = loss_of(pl, &x, out);
            }
            ten[t][e] = keep;
            double fd = (L[0] - 8 * L[1] + 8 * L[2] - L[3]) / (12 * h);
            double diff = fabs(fd - g[t][e]);
            worst = diff > worst ? diff : worst;
        }
        if (getenv("FR_TEST_VERBOSE"))
            printf("# %s %s: worst %.3g of %.3g\n", name, tn[t], worst, scale);
        T_CHECK(worst <= 2e-4 * scale + 1e-7, "%s: %s differs from differences by %.3g (max %.3g)",
                name, tn[t], worst, scale);
    }
    /* The degree is low enough that exact attention's gradient fails the same tolerance: the
     * differences above do tell the polynomial's derivative apart. */
    double *ge[3];
    for (int t = 0; t < 3; t++)
        ge[t] = malloc(cnt[t] * sizeof(double));
    if (!st && !fr_exact_backward(&p, x.q, x.k, x.v, x.up, NULL, NULL, ge[0], ge[1], ge[2], NULL,
                                  NULL, err, sizeof err)) {
        double r = rel(g[1], ge[1], cnt[1]);
        T_CHECK(r > 2e-3, "%s: degree %d is indistinguishable from exp (dk off by %.3g)", name,
                degree, r);
    }
    for (int t = 0; t < 3; t++) {
        free(g[t]);
        free(ge[t]);
    }
    free(out);
    fr_plan_free(pl);
    drop(&x);
}

/* Degree from eps; against fr_exact_backward, with dout and with target (loss and T too). */
static void check_exact(const char *name, fr_problem p, double B, double eps, double tol)
{
    prob x;
    make(&x, p, B, 1000 + (unsigned long long)p.n * 3 + (unsigned long long)p.d);
    int64_t n = p.n, d = p.d, dv = p.dv;
    fr_plan *pl = plan_for(&x, -1, eps);
    T_REQUIRE(pl, "%s: %s", name, err);
    double *f[6], *e[6];
    int64_t cnt[6] = {n * d, n * d, n * dv, n * dv, n * dv, (2 * n - 1) * d * d};
    for (int t = 0; t < 6; t++) {
        f[t] = malloc(cnt[t] * sizeof(double));
        e[t] = malloc(cnt[t] * sizeof(double));
    }
    int want_dw = p.rot.kind == FR_ROT_EXPLICIT;
    for (int target = 0; target < 2; target++) {
        const double *dout = target ? NULL : x.up, *tgt = target ? x.up : NULL;
        double lf = -1, le = -2;
        int s1 = fr_execute_backward(pl, x.q, x.k, x.v, dout, tgt, f[3], f[0], f[1], f[2],
                                     want_dw ? f[5] : NULL, &lf, NULL, err, sizeof err);
        T_CHECK(s1 == 0, "%s: %s", name, err);
        int s2 = fr_exact_backward(&p, x.q, x.k, x.v, dout, tgt, e[3], e[0], e[1], e[2],
                                   want_dw ? e[5] : NULL, &le, err, sizeof err);
        T_CHECK(s2 == 0, "%s: %s", name, err);
        if (s1 || s2) break;
        const char *tn[4] = {"dq", "dk", "dv", "t"};
        for (int t = 0; t < 4; t++) {
            double r = rel(f[t], e[t], cnt[t]);
            T_CHECK(r <= tol, "%s (%s): %s off by %.3g normwise", name, target ? "target" : "dout",
                    tn[t], r);
        }
        if (want_dw) {
            double r = rel(f[5], e[5], cnt[5]);
            T_CHECK(r <= tol, "%s (%s): dw off by %.3g normwise", name, target ? "target" : "dout",
                    r);
        }
        /* T is the forward's output, to the rounding of the threads' summation order and, in
         * single precision, of the FFTs: the forward recomputes exactly the rows its certificate
         * misses after the pass, where the backward keeps their certified fast values. */
        fr_execute(pl, x.q, x.k, x.v, f[4], NULL, err, sizeof err);
        double rt = rel(f[3], f[4], n * dv), tol_t = fr__fft_is_double(cur_fft) ? 1e-6 : 1e-5;
        T_CHECK(rt <= tol_t, "%s: t differs from the forward's by %.3g", name, rt);
        if (target) {
            double l = 0;
            for (int64_t i = 0; i < n * dv; i++)
                l += 0.5 * (f[3][i] - x.up[i]) * (f[3][i] - x.up[i]);
            T_CHECK(fabs(lf - l) <= 1e-12 * l, "%s: loss %.17g, want %.17g", name, lf, l);
            T_CHECK(fabs(lf - le) <= 10 * eps * (le + 1), "%s: loss %.6g, exact %.6g", name, lf,
                    le);
        }
    }
    for (int t = 0; t < 6; t++) {
        free(f[t]);
        free(e[t]);
    }
    fr_plan_free(pl);
    drop(&x);
}

static void test_finite_differences(void)
{
    fr_problem p = fr_problem_default(40, 4, 3);
    check_fd("rope", p, 2);
    p.causal = 1; /* rows 0..14 recomputed exactly by the forward */
    check_fd("rope causal", p, 3);
    p = fr_problem_default(37, 4, 2);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 5;
    check_fd("clip", p, 2);
    p = fr_problem_default(41, 6, 5);
    p.rot.rotary_dim = 4;
    p.rot.pairs = FR_PAIRS_HALF;
    p.window = 12;
    check_fd("partial half window", p, 2);
    p = fr_problem_default(33, 3, 4);
    p.rot.kind = FR_ROT_NONE;
    check_fd("none", p, 3);
}

static void test_fd_explicit(void)
{
    int64_t n = 35, d = 4;
    double *w = calloc((2 * n - 1) * d * d, sizeof *w);
    unsigned long long seed = 99;
    int sa[6] = {0, 1, 1, 2, 3, 3}, sb[6] = {0, 1, 2, 0, 3, 1};
    for (int64_t t = 0; t < 2 * n - 1; t++)
        for (int s = 0; s < 6; s++)
            w[(t * d + sa[s]) * d + sb[s]] = t_rand(&seed);
    fr_problem p = fr_problem_default(n, d, 3);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    check_fd("explicit sparse", p, 2);
    p.causal = 1;
    check_exact("explicit sparse causal", p, 1, 1e-4, 2e-3);
    p.causal = 0;
    check_exact("explicit sparse", p, 1, 1e-4, 2e-3);
    free(w);
}

static void test_against_exact(void)
{
    fr_problem p = fr_problem_default(41, 4, 3); /* odd n, dv != d */
    check_exact("rope interleaved", p, 1, 1e-4, 2e-3);
    p.rot.pairs = FR_PAIRS_HALF;
    check_exact("rope half", p, 1, 1e-4, 2e-3);
    p = fr_problem_default(40, 6, 2);
    p.rot.rotary_dim = 4;
    check_exact("rope partial rotary", p, 1, 1e-4, 2e-3);
    p = fr_problem_default(37, 4, 4);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 5;
    p.causal = 1;
    check_exact("clip causal", p, 1, 1e-4, 2e-3);
    p = fr_problem_default(35, 3, 5);
    p.rot.kind = FR_ROT_NONE;
    check_exact("none", p, 1, 1e-4, 2e-3);
    p = fr_problem_default(45, 4, 3);
    p.window = 9;
    check_exact("window", p, 1, 1e-4, 2e-3);
    p.causal = 1;
    p.window = 20;
    check_exact("causal window", p, 1, 1e-4, 2e-3);
    p = fr_problem_default(48, 4, 4);
    p.tau = 0.5;
    check_exact("rope tau 1/sqrt(d)", p, 1, 1e-4, 2e-3);
    check_exact("n = 1", fr_problem_default(1, 4, 2), 1, 1e-4, 2e-3);
    check_exact("n = 2", fr_problem_default(2, 2, 1), 1, 1e-4, 2e-3);
}

/* Every storage mode, the dQ recompute path and column blocks, and the literal plan, give the
 * same gradient as the default plan (same polynomial; only float rounding differs). */
static void test_modes(void)
{
    fr_problem p = fr_problem_default(47, 4, 3);
    p.causal = 1;
    prob x;
    make(&x, p, 1, 4242);
    int64_t n = p.n, d = p.d, dv = p.dv;
    fr_bounds b;
    T_REQUIRE(fr_bounds_compute(&p, x.q, x.k, x.v, &b, err, sizeof err) == 0, "%s", err);
    double coef[8], eta;
    int g = 3;
    T_REQUIRE(fr_poly_fit(b.R, g, coef, &eta, err, sizeof err) == 0, "%s", err);
    double *ref[3] = {0}, *cur[3];
    int64_t cnt[3] = {n * d, n * d, n * dv};
    for (int t = 0; t < 3; t++)
        cur[t] = malloc(cnt[t] * sizeof(double));
    int64_t rs = fr__fft_is_double(cur_fft) ? 8 : 4; /* bytes of a real in the back end */
    int64_t spec = rs * 128; /* bytes per spectrum at this n is a few hundred: budgets below */
    struct {
        const char *name;
        int literal;
        int64_t plan, exec;
        int mode;
    } cfg[] = {
        {"kernels", 0, (int64_t)1 << 30, (int64_t)1 << 30, 1},
        {"stream", 0, 0, (int64_t)1 << 30, 2},
        {"kernels, blocks of one column, dQ recomputed", 0, (int64_t)1 << 30, 1, 1},
        {"stream, blocks of one column", 0, 0, 1, 2},
        {"kernels, 10 of 35 y_u kept", 0, (int64_t)1 << 30, 10 * 4 * 47 * rs, 1},
        {"kernels, 20 of 35 y_u kept", 0, 40 * spec, 20 * 4 * 47 * rs, 1},
        {"literal", 1, 0, (int64_t)1 << 30, -1},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        fr__polyfft *pl;
        int st = fr__polyfft_create_budget(&pl, &p, coef, g, cfg[c].literal, cur_fft, 16,
                                           cfg[c].plan, cfg[c].exec, err, sizeof err);
        T_CHECK(st == 0, "%s: %s", cfg[c].name, err);
        if (st) continue;
        T_CHECK(fr__polyfft_mode(pl) == cfg[c].mode, "%s: mode %d", cfg[c].name,
                fr__polyfft_mode(pl));
        st = fr__polyfft_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, cur[0], cur[1], cur[2], NULL,
                                  NULL, NULL, err, sizeof err);
        T_CHECK(st == 0, "%s: %s", cfg[c].name, err);
        fr__polyfft_free(pl);
        if (st) continue;
        if (!ref[0]) {
            for (int t = 0; t < 3; t++) {
                ref[t] = cur[t];
                cur[t] = malloc(cnt[t] * sizeof(double));
            }
            continue;
        }
        for (int t = 0; t < 3; t++) {
            double r = rel(cur[t], ref[t], cnt[t]);
            T_CHECK(r <= 1e-5, "%s: gradient %d off by %.3g", cfg[c].name, t, r);
        }
    }
    for (int t = 0; t < 3; t++) {
        free(ref[t]);
        free(cur[t]);
    }
    drop(&x);
}

/* A sparse explicit W: six of the 16 entries (rows and columns 0..3 all used), random per
 * offset. */
static double *sparse_w(int64_t n, int64_t d, unsigned long long seed)
{
    double *w = calloc((2 * n - 1) * d * d, sizeof *w);
    int sa[6] = {0, 1, 1, 2, 3, 3}, sb[6] = {0, 1, 2, 0, 3, 1};
    for (int64_t t = 0; t < 2 * n - 1; t++)
        for (int s = 0; s < 6; s++)
            w[(t * d + sa[s]) * d + sb[s]] = t_rand(&seed);
    return w;
}

/* L through a polyfft plan with fixed coefficients: the polynomial must not move with W (a plan
 * from bounds would refit it to the new score bound). */
static double loss_w(const fr_problem *p, const double *coef, int g, const prob *x, int target,
                     double *out)
{
    fr__polyfft *pl;
    if (fr__polyfft_create(&pl, p, coef, g, 0, cur_fft, 16, err, sizeof err)) return NAN;
    int st = fr__polyfft_execute(pl, x->q, x->k, x->v, out, NULL, NULL, err, sizeof err);
    fr__polyfft_free(pl);
    if (st) return NAN;
    double s = 0;
    for (int64_t i = 0; i < p->n * p->dv; i++)
        s += target ? 0.5 * (out[i] - x->up[i]) * (out[i] - x->up[i]) : x->up[i] * out[i];
    return s;
}

/* dW against fourth-order central differences of the polyfft forward in the entries of W: in
 * the support and out of it (a zero entry moves P(s) through s like any other), at the extreme
 * and random kept offsets; masked offsets get exactly zero. */
static void check_dw_fd(const char *name, fr_problem p, int g, int target)
{
    int64_t n = p.n, d = p.d, dv = p.dv, L = 2 * n - 1, dd = d * d;
    double *w = sparse_w(n, d, 31 + (unsigned long long)n);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    prob x;
    make(&x, p, 1, 500 + (unsigned long long)n);
    fr_bounds b;
    double coef[8], eta;
    T_REQUIRE(fr_bounds_compute(&p, x.q, x.k, x.v, &b, err, sizeof err) == 0, "%s", err);
    T_REQUIRE(fr_poly_fit(b.R, g, coef, &eta, err, sizeof err) == 0, "%s", err);
    fr__polyfft *pl;
    T_REQUIRE(fr__polyfft_create(&pl, &p, coef, g, 0, cur_fft, 16, err, sizeof err) == 0, "%s",
              err);
    double *dw = malloc(L * dd * sizeof *dw), *out = malloc(n * dv * sizeof *out);
    double *gq = malloc(n * d * sizeof *gq), *gk = malloc(n * d * sizeof *gk),
           *gv = malloc(n * dv * sizeof *gv);
    int st = fr__polyfft_backward(pl, x.q, x.k, x.v, target ? NULL : x.up, target ? x.up : NULL,
                                  NULL, gq, gk, gv, dw, NULL, NULL, err, sizeof err);
    T_CHECK(st == 0, "%s: %s", name, err);
    int64_t lo = -(n - 1), hi = n - 1;
    if (p.window >= 0 && p.window < n - 1) {
        lo = -p.window;
        hi = p.window;
    }
    if (p.causal && hi > 0) hi = 0;
    int masked_ok = 1;
    for (int64_t t = 0; t < L; t++)
        if (t - (n - 1) < lo || t - (n - 1) > hi)
            for (int64_t e = 0; e < dd; e++)
                masked_ok &= dw[t * dd + e] == 0;
    T_CHECK(masked_ok, "%s: dw is not zero at masked offsets", name);
    double scale = max_abs(dw, L * dd), worst = 0, h = 1e-2;
    unsigned long long seed = 17;
    for (int s = 0; !st && s < 14; s++) {
        int64_t delta = s == 0   ? lo
                        : s == 1 ? hi
                        : s == 2 ? 0
                                 : lo + (int64_t)((t_rand(&seed) + 1) / 2 * (double)(hi - lo + 1)) %
                                            (hi - lo + 1);
        int64_t e = s == 3   ? 0         /* (0, 0): in the support */
                    : s == 4 ? 2 * d + 3 /* (2, 3): out of it */
                             : (int64_t)((t_rand(&seed) + 1) / 2 * (double)dd) % dd;
        double *cell = w + (delta + n - 1) * dd + e, keep = *cell, Ls[4];
        double off[4] = {-2 * h, -h, h, 2 * h};
        for (int m = 0; m < 4; m++) {
            *cell = keep + off[m];
            Ls[m] = loss_w(&p, coef, g, &x, target, out);
        }
        *cell = keep;
        double fd = (Ls[0] - 8 * Ls[1] + 8 * Ls[2] - Ls[3]) / (12 * h);
        double diff = fabs(fd - dw[(delta + n - 1) * dd + e]);
        worst = diff > worst ? diff : worst;
    }
    if (getenv("FR_TEST_VERBOSE")) printf("# %s dw: worst %.3g of %.3g\n", name, worst, scale);
    T_CHECK(worst <= 2e-4 * scale + 1e-7, "%s: dw differs from differences by %.3g (max %.3g)",
            name, worst, scale);
    /* and the degree is low enough that exact attention's dW is visibly different */
    double *ew = malloc(L * dd * sizeof *ew);
    if (!st && !fr_exact_backward(&p, x.q, x.k, x.v, target ? NULL : x.up, target ? x.up : NULL,
                                  NULL, gq, gk, gv, ew, NULL, err, sizeof err)) {
        double r = rel(dw, ew, L * dd);
        T_CHECK(r > 2e-3, "%s: degree %d is indistinguishable from exp (dw off by %.3g)", name, g,
                r);
    }
    fr__polyfft_free(pl);
    free(ew);
    free(dw);
    free(out);
    free(gq);
    free(gk);
    free(gv);
    free(w);
    drop(&x);
}

static void test_dw(void)
{
    fr_problem p = fr_problem_default(22, 4, 3);
    check_dw_fd("dw", p, 2, 0);
    check_dw_fd("dw degree 3 target", p, 3, 1);
    p.causal = 1; /* rows 0..14 exact: both routes */
    check_dw_fd("dw causal", p, 3, 0);
    p.causal = 0;
    p.window = 8; /* rows 0..7 and 14..21 exact */
    check_dw_fd("dw window", p, 2, 1);
    p = fr_problem_default(27, 4, 5);
    p.causal = 1;
    p.window = 21;
    p.tau = 0.5;
    check_dw_fd("dw causal window tau", p, 3, 0);
    /* every row recomputed exactly: dW is exact attention's */
    int64_t n = 7, d = 4;
    double *w = sparse_w(n, d, 8);
    p = fr_problem_default(n, d, 3);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    check_exact("explicit n = 7", p, 1, 1e-4, 2e-3);
    p.causal = 1;
    check_exact("explicit n = 7 causal", p, 1, 1e-4, 2e-3);
    free(w);
    /* a support that leaves the last columns of Q and K out (the monomials still line up with
     * rows of stride d) */
    n = 30;
    w = calloc((2 * n - 1) * d * d, sizeof *w);
    unsigned long long seed = 5;
    for (int64_t t = 0; t < 2 * n - 1; t++) {
        w[t * d * d] = t_rand(&seed);
        w[t * d * d + d + 1] = t_rand(&seed);
        w[t * d * d + 1] = t_rand(&seed);
    }
    p = fr_problem_default(n, d, 3);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    check_exact("explicit, support in columns 0..1 of 4", p, 1, 1e-4, 2e-3);
    free(w);
}

static void test_errors(void)
{
    int64_t n = 20, d = 2;
    double *w = calloc((2 * n - 1) * d * d, sizeof *w);
    for (int64_t t = 0; t < 2 * n - 1; t++)
        w[t * d * d] = w[t * d * d + 3] = 1;
    fr_problem p = fr_problem_default(n, d, 2);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    prob x;
    make(&x, p, 1, 3);
    fr_plan *pl = plan_for(&x, 2, 1e-3);
    T_REQUIRE(pl, "%s", err);
    double *dw = malloc((2 * n - 1) * d * d * sizeof *dw), g[3][40];
    int st = fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, g[0], g[1], g[2], dw, NULL,
                                 NULL, err, sizeof err);
    T_CHECK(st == 0, "dw: %d %s", st, err);
    x.v[7] = NAN;
    st = fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, g[0], g[1], g[2], NULL, NULL,
                             NULL, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "v"), "NaN: %d %s", st, err);
    x.v[7] = 0.5;
    /* An upstream gradient a float transform would flush to zero, or overflow: refused there
     * (the gradient would otherwise be wrong without a trace), computed on double. */
    static const double scales[] = {1e-35, 1e20, 1};
    for (int s = 0; s < 3; s++) {
        for (int64_t e = 0; e < n * 2; e++)
            x.up[e] *= scales[s];
        st = fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, g[0], g[1], g[2], NULL, NULL,
                                 NULL, err, sizeof err);
        int refused = !fr__fft_is_double(cur_fft) && scales[s] != 1;
        T_CHECK(refused ? st == FR_EACCURACY && strstr(err, "upstream gradient") : st == 0,
                "dout x %g on %s: %d %s", scales[s], fr_fft_name(cur_fft), st, err);
        for (int64_t e = 0; e < n * 2; e++)
            x.up[e] /= scales[s];
    }
    fr_plan_free(pl);
    free(dw);
    free(w);
    drop(&x);
}

/* Double FFTW: at a degree where the polynomial is exp to ~1e-13, the gradient is exact
 * attention's to ~1e-9 (float FFTs stop near 1e-6), with every mask. */
static void test_double_precise(void)
{
    if (!fr__fft_is_double(cur_fft)) return;
    fr_problem ps[3];
    ps[0] = fr_problem_default(61, 4, 3);
    ps[1] = ps[0];
    ps[1].causal = 1;
    ps[2] = fr_problem_default(50, 4, 4);
    ps[2].rot.kind = FR_ROT_CLIP;
    ps[2].rot.clip = 7;
    ps[2].window = 20;
    for (int k = 0; k < 3; k++) {
        prob x;
        fr_problem p = ps[k];
        make(&x, p, 1, 31 + k);
        int64_t n = p.n, d = p.d, dv = p.dv, cnt[3] = {n * d, n * d, n * dv};
        fr_plan *pl = plan_for(&x, 12, 1e-3);
        T_REQUIRE(pl, "%s", err);
        double *f[3], *e[3];
        for (int t = 0; t < 3; t++) {
            f[t] = malloc(cnt[t] * sizeof(double));
            e[t] = malloc(cnt[t] * sizeof(double));
        }
        int s1 = fr_execute_backward(pl, x.q, x.k, x.v, x.up, NULL, NULL, f[0], f[1], f[2], NULL,
                                     NULL, NULL, err, sizeof err);
        int s2 = fr_exact_backward(&p, x.q, x.k, x.v, x.up, NULL, NULL, e[0], e[1], e[2], NULL,
                                   NULL, err, sizeof err);
        T_CHECK(s1 == 0 && s2 == 0, "problem %d: %s", k, err);
        for (int t = 0; !s1 && !s2 && t < 3; t++) {
            double r = rel(f[t], e[t], cnt[t]);
            T_CHECK(r <= 1e-9, "problem %d: gradient %d off by %.3g normwise", k, t, r);
        }
        for (int t = 0; t < 3; t++) {
            free(f[t]);
            free(e[t]);
        }
        fr_plan_free(pl);
        drop(&x);
    }
}

/* Rows the plan cannot certify before the pass are computed exactly by the backward, gradients
 * and all: with every row so (exact_keys above any row's keys) the fast backward is exact
 * attention's, dW included. */
static void check_all_exact(const char *name, fr_problem p)
{
    prob x;
    make(&x, p, 1, 77 + (unsigned long long)p.n);
    int64_t n = p.n, d = p.d, dv = p.dv;
    fr_bounds b;
    double coef[8], eta;
    T_REQUIRE(fr_bounds_compute(&p, x.q, x.k, x.v, &b, err, sizeof err) == 0, "%s", err);
    T_REQUIRE(fr_poly_fit(b.R, 4, coef, &eta, err, sizeof err) == 0, "%s", err);
    fr__polyfft *pl;
    T_REQUIRE(fr__polyfft_create(&pl, &p, coef, 4, 0, cur_fft, n + 1, err, sizeof err) == 0, "%s",
              err);
    int want_dw = p.rot.kind == FR_ROT_EXPLICIT;
    int64_t cnt[5] = {n * d, n * d, n * dv, n * dv, (2 * n - 1) * d * d};
    double *f[5], *e[5];
    for (int t = 0; t < 5; t++) {
        f[t] = calloc((size_t)cnt[t], sizeof(double));
        e[t] = calloc((size_t)cnt[t], sizeof(double));
    }
    int s1 = fr__polyfft_backward(pl, x.q, x.k, x.v, x.up, NULL, f[3], f[0], f[1], f[2],
                                  want_dw ? f[4] : NULL, NULL, NULL, err, sizeof err);
    T_CHECK(s1 == 0, "%s: %s", name, err);
    int s2 = fr_exact_backward(&p, x.q, x.k, x.v, x.up, NULL, e[3], e[0], e[1], e[2],
                               want_dw ? e[4] : NULL, NULL, err, sizeof err);
    T_CHECK(s2 == 0, "%s: %s", name, err);
    for (int t = 0; t < (want_dw ? 5 : 4) && !s1 && !s2; t++)
        T_CHECK(rel(f[t], e[t], cnt[t]) <= 1e-12, "%s: output %d off by %.3g", name, t,
                rel(f[t], e[t], cnt[t]));
    for (int t = 0; t < 5; t++)
        free(f[t]), free(e[t]);
    fr__polyfft_free(pl);
    drop(&x);
}

static void test_all_rows_exact(void)
{
    fr_problem p = fr_problem_default(48, 4, 4);
    p.causal = 1;
    p.window = 3;
    check_all_exact("causal window 3", p);
    int64_t n = 7, d = 4;
    double *w = sparse_w(n, d, 8);
    p = fr_problem_default(n, d, 3);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    check_all_exact("explicit n = 7", p);
    p.causal = 1;
    check_all_exact("explicit n = 7 causal", p);
    free(w);
    check_all_exact("n = 1", fr_problem_default(1, 4, 2));
    check_all_exact("n = 2", fr_problem_default(2, 2, 1));
}

int main(void)
{
    fr_fft_backend all[3] = {FR_FFT_KISSFFT, FR_FFT_FFTW, FR_FFT_FFTW_FLOAT};
    for (int b = 0; b < 3; b++) {
        cur_fft = all[b];
        printf("# FFT back end %s\n", fr_fft_name(cur_fft));
        T_RUN(test_finite_differences);
        T_RUN(test_fd_explicit);
        T_RUN(test_against_exact);
        T_RUN(test_modes);
        T_RUN(test_dw);
        T_RUN(test_errors);
        T_RUN(test_double_precise);
        T_RUN(test_all_rows_exact);
    }
    return t_done();
}
