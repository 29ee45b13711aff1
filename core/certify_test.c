/* certify_test.c - the certificate is a bound: over a sweep of problems (sizes from 1 to 4096,
 * head dimensions, entry sizes, eps from 1e-2 to 1e-8, every mask and rotation, every fast
 * method, normal and uniform entries, many seeds), every row of every run the plan accepts is
 * within the reported bounds of exact attention, and within eps; and the formulas behave (the
 * stage count, gamma, the keys a row needs). */
#include "internal.h"
#include "test.h"

#include <string.h>

static char err[400];

static void test_formulas(void)
{
    T_CHECK(fr__fft_stages(1024) == 12, "2^10: %g", fr__fft_stages(1024));
    T_CHECK(fr__fft_stages(2 * 3 * 5 * 7) == 2 + 1 + 2 + 3 + 3, "210: %g", fr__fft_stages(210));
    T_CHECK(fr__gamma(10, 0x1p-53) > 10 * 0x1p-53 && fr__gamma(10, 0x1p-53) < 10.001 * 0x1p-53,
            "gamma");
    T_CHECK(isinf(fr__gamma(1 << 25, 0x1p-24)), "m u >= 1");
    /* keys_needed is the smallest kappa whose prior bound meets the target. */
    double E = 1e-6, F = 2e-6, Bv = 1.5, R = 1.3, eta = 1e-4, target = 1e-5;
    double M = fr__keys_needed(E, F, Bv, R, eta, target);
    T_CHECK(isfinite(M) && M >= 1, "M = %g", M);
    T_CHECK(fr__row_bound_prior(E, F, Bv, M, R, eta) <= target, "at M: %g",
            fr__row_bound_prior(E, F, Bv, M, R, eta));
    T_CHECK(M == 1 || fr__row_bound_prior(E, F, Bv, M - 1, R, eta) > target, "at M - 1");
    T_CHECK(isinf(fr__keys_needed(E, F, Bv, R, eta, 1e-20)), "unreachable target");
    /* A row bound from the computed denominator: larger D, smaller bound; none at D <= 0. */
    T_CHECK(fr__row_bound(E, F, Bv, 10) < fr__row_bound(E, F, Bv, 5), "monotone");
    T_CHECK(isinf(fr__row_bound(E, F, Bv, 0)) && isinf(fr__row_bound(E, F, Bv, -1)), "D <= 0");
}

/* normal (Box-Muller) or uniform entries, then scaled so that max |x| = B exactly */
static void fill(double *x, int64_t cnt, double B, int normal, unsigned long long *seed)
{
    double mx = 0;
    for (int64_t i = 0; i < cnt; i++) {
        if (normal) {
            double u1 = 0.5 * (t_rand(seed) + 1) + 1e-12, u2 = t_rand(seed);
            x[i] = sqrt(-2 * log(u1)) * cos(M_PI * u2);
        } else {
            x[i] = t_rand(seed);
        }
        mx = fmax(mx, fabs(x[i]));
    }
    for (int64_t i = 0; i < cnt; i++)
        x[i] = mx > 0 ? x[i] * B / mx : 0;
}

typedef struct {
    int runs, refused, recomputed_runs;
    double worst_ratio; /* observed / a_priori_bound over the accepted runs */
} tally;

/* One case: plan, certified execution, exact reference, every row checked. */
static void one_case(const fr_problem *p, const double *q, const double *k, const double *v,
                     fr_method m, double eps, tally *t, const char *label)
{
    int64_t n = p->n, dv = p->dv;
    fr_bounds b;
    T_REQUIRE(fr_bounds_compute(p, q, k, v, &b, err, sizeof err) == 0, "%s: %s", label, err);
    fr_options o = fr_options_default();
    o.method = m;
    o.eps = eps;
    fr_plan *pl;
    int st = fr_plan_create(&pl, p, &b, &o, err, sizeof err);
    if (st == FR_EACCURACY || (st == FR_EUSAGE && m == FR_METHOD_POLYROPE)) {
        t->refused++;
        return;
    }
    T_REQUIRE(st == 0, "%s: plan: %s", label, err);
    fr_plan_info info;
    fr_plan_get_info(pl, &info);
    double *out = malloc((size_t)(n * dv + 1) * sizeof *out),
           *ref = malloc((size_t)(n * dv + 1) * sizeof *ref);
    fr_exec_info ex;
    st = fr_execute(pl, q, k, v, out, &ex, err, sizeof err);
    T_CHECK(st == 0, "%s: execute: %s", label, err);
    if (!st) st = fr_exact_rows(p, q, k, v, NULL, n, ref, err, sizeof err);
    int64_t recomputed = ex.rows_recomputed;
    double rounding = ex.rounding_bound;
    if (!st && info.method != FR_METHOD_EXACT) {
        t->runs++;
        t->recomputed_runs += recomputed > 0;
        double bound = info.poly_bound + rounding, obs = 0;
        T_CHECK(info.a_priori_bound <= eps, "%s: a-priori bound %.3g above eps %.3g", label,
                info.a_priori_bound, eps);
        T_CHECK(rounding <= info.rounding_bound,
                "%s: certified rounding %.3g above the plan's %.3g", label, rounding,
                info.rounding_bound);
        T_CHECK(recomputed <= info.rows_exact, "%s: %lld rows recomputed, plan said at most %lld",
                label, (long long)recomputed, (long long)info.rows_exact);
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < dv; c++)
                obs = fmax(obs, fabs(out[i * dv + c] - ref[i * dv + c]));
        T_CHECK(obs <= bound && obs <= eps,
                "%s: %s degree %d: observed %.3g, certified %.3g (poly %.3g + rounding %.3g), "
                "eps %.3g",
                label, fr_method_name(info.method), info.degree, obs, bound, info.poly_bound,
                rounding, eps);
        if (bound > 0) t->worst_ratio = fmax(t->worst_ratio, obs / bound);
    }
    free(out);
    free(ref);
    fr_plan_free(pl);
}

static void test_sweep(void)
{
    static const int64_t ns[] = {1, 2, 3, 17, 64, 255, 1000, 4096};
    static const double Bs[] = {0.25, 0.5, 1, 2, 3};
    static const double epss[] = {1e-2, 1e-3, 1e-4, 1e-6, 1e-8};
    static const fr_method ms[] = {FR_METHOD_POLYROPE, FR_METHOD_POLYFFT, FR_METHOD_POLYFFT_LITERAL,
                                   FR_METHOD_AUTO};
    unsigned long long seed = 0x5eed1234abcdULL;
    tally t = {0, 0, 0, 0};
    int cases = 0;
    for (int rep = 0; rep < 160; rep++) {
        /* mostly small problems; a few large ones */
        int64_t n = ns[rep % 8 == 7 && rep % 3 ? 6 : (int)((t_rand(&seed) + 1) * 3.5)];
        if (rep % 16 == 15) n = 4096;
        int64_t d = 2 * (1 + (int64_t)((t_rand(&seed) + 1) * 2)); /* 2 .. 8, even */
        int64_t dv = 1 + (int64_t)((t_rand(&seed) + 1) * 2.5);
        double B = Bs[(int)((t_rand(&seed) + 1) * 2.5) % 5];
        double eps = epss[rep % 5];
        int normal = rep & 1;
        fr_method m = ms[(rep / 5) % 4];
        if (m == FR_METHOD_POLYFFT_LITERAL && n > 255) m = FR_METHOD_POLYFFT;
        if (m == FR_METHOD_POLYFFT && n * d > 8192 && eps < 1e-5) m = FR_METHOD_POLYROPE;
        fr_problem p = fr_problem_default(n, d, dv);
        int rot = (rep / 3) % 5, mask = (rep / 7) % 4;
        p.rot.kind = rot == 0 ? FR_ROT_NONE : rot == 3 ? FR_ROT_CLIP : FR_ROT_ROPE;
        if (rot == 2) p.rot.pairs = FR_PAIRS_HALF;
        if (rot == 3) p.rot.clip = 1 + (n > 8 ? n / 8 : 0);
        if (rot == 4) p.tau = 1 / sqrt((double)d);
        p.causal = mask & 1;
        p.window = mask & 2 ? 1 + n / 5 : -1;
        double *q = malloc((size_t)(n * d) * sizeof *q), *k = malloc((size_t)(n * d) * sizeof *k),
               *v = malloc((size_t)(n * dv) * sizeof *v);
        fill(q, n * d, B, normal, &seed);
        fill(k, n * d, B, normal, &seed);
        fill(v, n * dv, B, normal, &seed);
        char label[160];
        snprintf(label, sizeof label, "n %lld d %lld dv %lld B %g eps %g rot %d mask %d %s %s",
                 (long long)n, (long long)d, (long long)dv, B, eps, rot, mask,
                 normal ? "normal" : "uniform", fr_method_name(m));
        one_case(&p, q, k, v, m, eps, &t, label);
        cases++;
        free(q), free(k), free(v);
    }
    printf("# %d cases: %d certified runs (%d with rows recomputed), %d refused; worst observed / "
           "certified bound %.3g\n",
           cases, t.runs, t.recomputed_runs, t.refused, t.worst_ratio);
    T_CHECK(t.runs > cases / 3, "too few runs certified: %d of %d", t.runs, cases);
}

/* The scores the methods form are within fr__score_error (plus the exact chain's rounding) of
 * the problem's exact scores, at positions where the angles' rounding dominates: rows rotated in
 * double by position i and j, against long double angles and sums. The earlier bound
 * (gamma_{d+2} R', no angle term) is some 10^4 times too small there. */
static void test_score_error_covers_the_angles(void)
{
    int64_t n = 1 << 17, d = 8;
    fr_problem p = fr_problem_default(n, d, d);
    p.tau = 1.0 / sqrt((double)d);
    double *q = calloc((size_t)(n * d), sizeof *q), *k = calloc((size_t)(n * d), sizeof *k);
    double *v = calloc((size_t)(n * d), sizeof *v);
    unsigned long long seed = 11;
    for (int64_t x = 0; x < n * d; x++) {
        q[x] = t_rand(&seed);
        k[x] = t_rand(&seed);
        v[x] = t_rand(&seed);
    }
    fr_bounds b;
    T_REQUIRE(fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) == FR_OK, "%s", err);
    double Rp = fmax(b.R, fmax(b.R_norm, b.R_abs));
    double bound = fr__score_error(&p, &b, 0x1p-53, 1) + 2 * fr__gamma((double)d + 2, 0x1p-53) * Rp;
    double worst = 0;
    int64_t pos[][2] = {{n - 1, 0}, {0, n - 1}, {n - 1, n - 2}, {n / 2 + 7, n - 3}, {99991, 5}};
    for (size_t c = 0; c < sizeof pos / sizeof *pos; c++) {
        int64_t i = pos[c][0], j = pos[c][1];
        double qr[8], kr[8];
        fr__rotate_rows(&p, q, i, 1, qr);
        fr__rotate_rows(&p, k, j, 1, kr);
        double s = 0;
        for (int64_t t = 0; t < d; t++)
            s += p.tau * qr[t] * kr[t];
        long double ref = 0;
        for (int64_t m = 0; m < d / 2; m++) {
            long double th = powl((long double)p.rot.base, -2.0L * m / d);
            long double ai = i * th, aj = j * th;
            long double qa = q[i * d + 2 * m], qb = q[i * d + 2 * m + 1];
            long double ka = k[j * d + 2 * m], kb = k[j * d + 2 * m + 1];
            long double xa = qa * cosl(ai) - qb * sinl(ai), xb = qa * sinl(ai) + qb * cosl(ai);
            long double ya = ka * cosl(aj) - kb * sinl(aj), yb = ka * sinl(aj) + kb * cosl(aj);
            ref += xa * ya + xb * yb;
        }
        ref *= p.tau;
        worst = fmax(worst, fabs((double)(s - ref)));
    }
    printf("# scores at positions up to %lld: error %.3g, bound %.3g, the chain's alone %.3g\n",
           (long long)(n - 1), worst, bound, 2 * fr__gamma((double)d + 2, 0x1p-53) * Rp);
    T_CHECK(worst <= bound, "score error %g above its bound %g", worst, bound);
    T_CHECK(worst > 2 * fr__gamma((double)d + 2, 0x1p-53) * Rp,
            "the angles' rounding should show here: %g", worst);
    free(q);
    free(k);
    free(v);
}

int main(void)
{
    T_RUN(test_formulas);
    T_RUN(test_score_error_covers_the_angles);
    T_RUN(test_sweep);
    return t_done();
}
