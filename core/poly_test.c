/* poly_test.c - the Chebyshev fit, its certified eta (checked on a denser independent grid in
 * long double), and the degree choice (minimal, refusing when it must). */
#include "internal.h"
#include "test.h"

#include <string.h>

static char err[300];

/* True max relative error of the monomial form on a grid of 200001 points plus random ones,
 * in long double: independent of the certification grid. */
static double true_rel_err(const double *c, int g, double R)
{
    long double emax = 0;
    unsigned long long seed = 77;
    for (int i = 0; i <= 220000; i++) {
        long double x = i <= 200000 ? -R + 2.0L * R * i / 200000 : R * t_rand(&seed);
        long double p = c[g];
        for (int k = g - 1; k >= 0; k--)
            p = p * x + c[k];
        long double e = fabsl(p - expl(x)) / expl(x);
        if (e > emax) emax = e;
    }
    return (double)emax;
}

static void test_eta_certifies(void)
{
    double Rs[] = {0.05, 0.3, 1, 2, 4, 8};
    for (size_t i = 0; i < sizeof Rs / sizeof *Rs; i++)
        for (int g = 0; g <= 16; g++) {
            double c[32], eta;
            T_REQUIRE(fr_poly_fit(Rs[i], g, c, &eta, err, sizeof err) == 0, "%s", err);
            double e = true_rel_err(c, g, Rs[i]);
            T_CHECK(e <= eta, "R = %g, g = %d: true error %.4g above certified eta %.4g", Rs[i], g,
                    e, eta);
            /* Not wildly pessimistic either (where rounding does not dominate). */
            if (e > 1e-12)
                T_CHECK(eta <= 1.5 * e, "R = %g, g = %d: eta %.4g vs true %.4g", Rs[i], g, eta, e);
        }
}

static void test_fit_values(void)
{
    double c[8], eta;
    /* Small R: the interpolant is close to the Taylor series. */
    T_REQUIRE(fr_poly_fit(0.01, 4, c, &eta, err, sizeof err) == 0, "%s", err);
    double taylor[5] = {1, 1, 0.5, 1.0 / 6, 1.0 / 24};
    for (int k = 0; k <= 3; k++)
        T_CHECK(fabs(c[k] - taylor[k]) < 1e-3 * taylor[k] + 1e-9, "c_%d = %.17g", k, c[k]);
    T_CHECK(eta < 1e-12, "eta %.3g", eta);
    /* Chebyshev beats Taylor's error by ~2^g on [-1, 1]: degree 5 is ~1e-4. */
    T_REQUIRE(fr_poly_fit(1, 5, c, &eta, err, sizeof err) == 0, "%s", err);
    T_CHECK(eta > 1e-5 && eta < 2e-4, "R = 1, g = 5: eta %.3g", eta);
    /* R = 0: P = 1 exactly. */
    T_REQUIRE(fr_poly_fit(0, 3, c, &eta, err, sizeof err) == 0, "%s", err);
    T_CHECK(c[0] == 1 && c[1] == 0 && c[2] == 0 && c[3] == 0 && eta == 0, "R = 0");
    T_CHECK(fr_poly_fit(-1, 3, c, &eta, err, sizeof err) == FR_EINPUT, "negative R");
    T_CHECK(fr_poly_fit(NAN, 3, c, &eta, err, sizeof err) == FR_EINPUT, "NaN R");
    T_CHECK(fr_poly_fit(1, -1, c, &eta, err, sizeof err) == FR_EUSAGE, "negative degree");
}

/* The chosen degree meets eps through the polynomial's bound; the one below does not. */
static void test_choose_minimal(void)
{
    double Rs[] = {0.2, 0.5, 1, 2, 3};
    double epss[] = {1e-2, 1e-3, 1e-4, 1e-8};
    for (size_t i = 0; i < sizeof Rs / sizeof *Rs; i++)
        for (size_t j = 0; j < sizeof epss / sizeof *epss; j++) {
            double R = Rs[i], eps = epss[j], Bv = 1, eta, c[32];
            int g;
            int st = fr_poly_choose_degree(R, Bv, eps, 24, &g, &eta, err, sizeof err);
            T_REQUIRE(st == 0, "R %g eps %g: %s", R, eps, err);
            T_CHECK(fr_a_priori_bound(eta, Bv) < eps, "R %g eps %g: bound %.3g", R, eps,
                    fr_a_priori_bound(eta, Bv));
            if (g > 0) {
                double e1;
                fr_poly_fit(R, g - 1, c, &e1, err, sizeof err);
                T_CHECK(fr_a_priori_bound(e1, Bv) >= eps,
                        "R %g eps %g: degree %d chosen but %d meets it", R, eps, g, g - 1);
            }
        }
    /* At R = 1, eps = 1e-3 the answer is degree 5 (eta ~ 1e-4; degree 4 gives ~1e-3). */
    int g;
    double eta;
    T_REQUIRE(fr_poly_choose_degree(1, 1, 1e-3, 24, &g, &eta, err, sizeof err) == 0, "%s", err);
    T_CHECK(g == 5, "R = 1: degree %d", g);
}

static void test_choose_refuses(void)
{
    int g;
    double eta;
    /* Above max degree, in API terms. */
    int st = fr_poly_choose_degree(6, 1, 1e-3, 4, &g, &eta, err, sizeof err);
    T_CHECK(st == FR_EACCURACY && strstr(err, "max_degree") && !strstr(err, "--"),
            "max degree: %d (%s)", st, err);
    /* V = 0: degree 0. */
    st = fr_poly_choose_degree(3, 0, 1e-6, 24, &g, &eta, err, sizeof err);
    T_CHECK(st == 0 && g == 0, "B_v = 0: %d, degree %d", st, g);
    T_CHECK(fr_poly_choose_degree(1, 1, 0, 24, &g, &eta, err, sizeof err) == FR_EUSAGE, "eps = 0");
    /* R = 0 (n = 1 with a zero row, or zero Q): degree 0 is exact. */
    st = fr_poly_choose_degree(0, 1, 1e-4, 24, &g, &eta, err, sizeof err);
    T_CHECK(st == 0 && g == 0 && eta == 0, "R = 0: %d, degree %d, eta %g", st, g, eta);
    /* An infinite R is an overflow, said as such. */
    st = fr_poly_fit(INFINITY, 3, (double[4]){0}, &eta, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "overflow"), "R = inf: %d (%s)", st, err);
}

/* The Chebyshev-tail estimate of the degree eps needs agrees with the certified search where
 * both apply (within one degree: the search certifies on a grid with a safety factor, the
 * estimate bounds the interpolation error), grows with R and with 1/eps, and says "more than
 * the cap" when the cap is not enough. */
static void test_needed_degree(void)
{
    double Rs[] = {0.25, 1, 2, 4, 6};
    double epss[] = {1e-2, 1e-4, 1e-6, 1e-8};
    int prev_R[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < sizeof Rs / sizeof *Rs; i++) {
        int prev_eps = 0;
        for (size_t j = 0; j < sizeof epss / sizeof *epss; j++) {
            double R = Rs[i], eps = epss[j], eta;
            int g, need = fr__poly_needed_degree(R, 1, eps, 1000);
            T_REQUIRE(fr_poly_choose_degree(R, 1, eps, 64, &g, &eta, err, sizeof err) == 0, "%s",
                      err);
            T_CHECK(need >= g - 1 && need <= g + 1, "R %g eps %g: estimate %d, search %d", R, eps,
                    need, g);
            T_CHECK(need >= prev_eps, "R %g: degree falls as eps shrinks", R);
            T_CHECK(need >= prev_R[j], "eps %g: degree falls as R grows", eps);
            prev_eps = prev_R[j] = need;
        }
    }
    int need16 = fr__poly_needed_degree(16, 1, 1e-3, 1000);
    T_CHECK(need16 > 24 && need16 < 200, "R = 16, eps 1e-3: %d", need16);
    T_CHECK(fr__poly_needed_degree(16, 1, 1e-3, 30) == 31, "the cap");
    T_CHECK(fr__poly_needed_degree(5000, 1, 1e-3, 1000) == 1001, "far beyond");
    T_CHECK(fr__poly_needed_degree(3, 0, 1e-3, 1000) == 0, "B_v = 0");
}

int main(void)
{
    T_RUN(test_eta_certifies);
    T_RUN(test_fit_values);
    T_RUN(test_choose_minimal);
    T_RUN(test_choose_refuses);
    T_RUN(test_needed_degree);
    return t_done();
}
