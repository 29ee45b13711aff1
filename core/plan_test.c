/* plan_test.c - the plan's decisions: counts without enumeration agree with the enumeration the
 * polyfft plan does, and each method gets the degree its own arithmetic needs. */
#include "test.h"

#include "fastrope_planner.h"

#include <string.h>

static fr_bounds bounds_of(double R, double Bv)
{
    fr_bounds b;
    memset(&b, 0, sizeof b);
    b.B_q = b.B_k = b.B_v = b.B = Bv;
    b.R = R;
    b.R_from = "test";
    return b;
}

/* fr_plan_estimate's closed forms against the counts of a built polyfft plan (which enumerates
 * every multi-index and merges kernels by their values). */
static void test_closed_form_counts_match_the_enumeration(void)
{
    struct {
        fr_rot_kind kind;
        int64_t n, d, rotary, clip;
        fr_pairs pairs;
    } cases[] = {
        {FR_ROT_ROPE, 9, 4, 0, 0, FR_PAIRS_INTERLEAVED},  {FR_ROT_ROPE, 12, 6, 4, 0, FR_PAIRS_HALF},
        {FR_ROT_ROPE, 1, 4, 0, 0, FR_PAIRS_INTERLEAVED},  {FR_ROT_CLIP, 15, 4, 0, 3, FR_PAIRS_HALF},
        {FR_ROT_CLIP, 8, 4, 0, 0, FR_PAIRS_INTERLEAVED},  {FR_ROT_CLIP, 6, 2, 0, 40, FR_PAIRS_HALF},
        {FR_ROT_NONE, 11, 3, 0, 0, FR_PAIRS_INTERLEAVED},
    };
    char err[256];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int g = 0; g <= 4; g++) {
            fr_problem p = fr_problem_default(cases[c].n, cases[c].d, 3);
            p.rot.kind = cases[c].kind;
            p.rot.rotary_dim = cases[c].rotary;
            p.rot.clip = cases[c].clip;
            p.rot.pairs = cases[c].pairs;
            /* Small scores, so that even degree 0 can be vouched for at this eps. */
            fr_bounds b = bounds_of(1e-3, 1);
            fr_options o = fr_options_default();
            o.method = FR_METHOD_POLYFFT;
            o.degree = g;
            o.eps = 0.5;
            fr_plan_info est, built;
            int st = fr_plan_estimate(&p, &b, &o, &est, err, sizeof err);
            T_REQUIRE(st == FR_OK, "estimate: %s", err);
            fr_plan *pl;
            st = fr_plan_create(&pl, &p, &b, &o, err, sizeof err);
            T_REQUIRE(st == FR_OK, "create: %s", err);
            fr_plan_get_info(pl, &built);
            fr_plan_free(pl);
            T_CHECK(est.alphas == built.alphas && est.q_monomials == built.q_monomials &&
                        est.k_monomials == built.k_monomials && est.kernels == built.kernels &&
                        est.ffts == built.ffts && est.fft_size == built.fft_size,
                    "case %zu g %d: estimate %lld/%lld/%lld/%lld ffts %lld N %lld, plan "
                    "%lld/%lld/%lld/%lld ffts %lld N %lld",
                    c, g, (long long)est.alphas, (long long)est.q_monomials,
                    (long long)est.k_monomials, (long long)est.kernels, (long long)est.ffts,
                    (long long)est.fft_size, (long long)built.alphas, (long long)built.q_monomials,
                    (long long)built.k_monomials, (long long)built.kernels, (long long)built.ffts,
                    (long long)built.fft_size);
        }
}

/* Each method and FFT back end is certified on its own arithmetic (core/certify.c): at an eps
 * that double precision meets easily, single-precision transforms cannot vouch for a row of
 * 4096 keys, and the refusal says so; auto then takes a method whose arithmetic can. */
static void test_degree_follows_each_methods_arithmetic(void)
{
    char err[256];
    fr_problem p = fr_problem_default(4096, 4, 4);
    fr_bounds b = bounds_of(1.0, 1.0);
    fr_options o = fr_options_default();
    fr_plan_info fft, rope;
    o.eps = 1e-4;
    o.method = FR_METHOD_POLYFFT;
    o.fft = FR_FFT_FFTW;
    T_REQUIRE(fr_plan_estimate(&p, &b, &o, &fft, err, sizeof err) == FR_OK, "%s", err);
    o.method = FR_METHOD_POLYROPE;
    T_REQUIRE(fr_plan_estimate(&p, &b, &o, &rope, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(rope.degree >= 0 && fft.degree >= 0, "polyrope %d, polyfft %d", rope.degree,
            fft.degree);
    T_CHECK(rope.a_priori_bound <= o.eps && fft.a_priori_bound <= o.eps, "bounds %g %g > eps",
            rope.a_priori_bound, fft.a_priori_bound);
    T_CHECK(fft.a_priori_bound >= fft.poly_bound + fft.rounding_bound * (1 - 1e-12),
            "a-priori bound below its parts");

    fr_plan *pl = NULL;
    o.method = FR_METHOD_POLYFFT;
    o.fft = FR_FFT_KISSFFT;
    int st = fr_plan_create(&pl, &p, &b, &o, err, sizeof err);
    T_CHECK(st == FR_EACCURACY && strstr(err, "single-precision") && !strstr(err, "--"),
            "KissFFT at 1e-4: %d %s", st, err);
    o.fft = FR_FFT_AUTO; /* auto's back end: one that certifies, FFTW in double */
    st = fr_plan_create(&pl, &p, &b, &o, err, sizeof err);
    T_REQUIRE(st == FR_OK, "%s", err);
    fr_plan_info info;
    fr_plan_get_info(pl, &info);
    T_CHECK(info.fft == FR_FFT_FFTW, "auto's back end: %s", fr_fft_name(info.fft));
    fr_plan_free(pl);
    o.eps = 1e-8;
    o.method = FR_METHOD_POLYROPE;
    st = fr_plan_create(&pl, &p, &b, &o, err, sizeof err);
    T_CHECK(st == FR_OK, "polyrope at 1e-8: %s", err);
    if (!st) {
        fr_plan_get_info(pl, &info);
        T_CHECK(info.a_priori_bound <= 1e-8, "bound %g", info.a_priori_bound);
        fr_plan_free(pl);
    }
}

/* A degree over the maximum is a row for estimates, an error for a forced method, and exact
 * for auto. */
static void test_large_entries(void)
{
    char err[256];
    fr_problem p = fr_problem_default(4096, 4, 4);
    fr_bounds b = bounds_of(50, 10);
    fr_options o = fr_options_default();
    fr_plan_info info;
    T_REQUIRE(fr_plan_estimate(&p, &b, &o, &info, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(info.method == FR_METHOD_EXACT && info.degree < 0, "auto: %s degree %d",
            fr_method_name(info.method), info.degree);
    o.method = FR_METHOD_POLYROPE;
    T_REQUIRE(fr_plan_estimate(&p, &b, &o, &info, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(info.degree < 0, "forced estimate has degree %d", info.degree);
    fr_plan *pl = NULL;
    T_CHECK(fr_plan_create(&pl, &p, &b, &o, err, sizeof err) == FR_EACCURACY, "create: %s", err);
}

/* When auto falls back to exact, its reason names what stopped the fast methods: the
 * polynomial, the plans' size, the certified rounding, or (one each) the last two. */
static void test_auto_names_what_stopped_the_fast_methods(void)
{
    static const struct {
        int64_t d;
        double B, eps;
        const char *says;
    } cases[] = {
        {8, 10, 1e-3, "no polynomial degree"},
        {8, 3, 1e-2, "plans exceed"},
        {4, 1, 1e-12, "arithmetic can certify"},
        {8, 2, 1e-6, "one's plan is too large and the other's arithmetic"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char err[512];
        fr_problem p = fr_problem_default(4096, cases[c].d, cases[c].d);
        p.tau = 1.0 / (double)cases[c].d;
        fr_bounds b;
        T_REQUIRE(fr_bounds_uniform(&p, cases[c].B, &b, err, sizeof err) == FR_OK, "%s", err);
        fr_options o = fr_options_default();
        o.eps = cases[c].eps;
        fr_plan_info info;
        T_REQUIRE(fr_plan_estimate(&p, &b, &o, &info, err, sizeof err) == FR_OK, "%s", err);
        T_CHECK(info.method == FR_METHOD_EXACT && strstr(info.reason, cases[c].says),
                "d = %lld, B = %g, eps = %g: %s, \"%s\"", (long long)cases[c].d, cases[c].B,
                cases[c].eps, fr_method_name(info.method), info.reason);
    }
    /* In the mixed case each forced method's refusal says its own reason. */
    fr_problem p = fr_problem_default(4096, 8, 8);
    p.tau = 1.0 / 8;
    fr_bounds b;
    char err[512];
    T_REQUIRE(fr_bounds_uniform(&p, 2, &b, err, sizeof err) == FR_OK, "%s", err);
    fr_options o = fr_options_default();
    o.eps = 1e-6;
    fr_plan *pl = NULL;
    o.method = FR_METHOD_POLYROPE;
    T_CHECK(fr_plan_create(&pl, &p, &b, &o, err, sizeof err) == FR_EACCURACY &&
                strstr(err, "rounding bound"),
            "polyrope: %s", err);
    o.method = FR_METHOD_POLYFFT;
    T_CHECK(fr_plan_create(&pl, &p, &b, &o, err, sizeof err) == FR_EACCURACY &&
                strstr(err, "a plan can hold"),
            "polyfft: %s", err);
}

int main(void)
{
    T_RUN(test_closed_form_counts_match_the_enumeration);
    T_RUN(test_degree_follows_each_methods_arithmetic);
    T_RUN(test_large_entries);
    T_RUN(test_auto_names_what_stopped_the_fast_methods);
    return t_done();
}
