/* cost_test.c - the cost model's shape (monotone, exact ~ n^2, polyrope ~ n, masks shrink exact)
 * and the clear-cut choices auto makes through fr_plan_create. */
#include "internal.h"
#include "test.h"

#include <string.h>

static void predict(const fr_problem *p, int g, double *t)
{
    int64_t support = p->rot.kind == FR_ROT_NONE ? p->d : 2 * p->d;
    fr_predict_times(p, g, support, t);
}

static void test_monotone_and_growth(void)
{
    double prev[FR_NMETHODS];
    for (int64_t n = 16; n <= (1 << 22); n *= 2) {
        fr_problem p = fr_problem_default(n, 8, 8);
        double t[FR_NMETHODS];
        predict(&p, 5, t);
        for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++) {
            T_CHECK(t[m] > 0, "n=%lld: %s predicted %g", (long long)n, fr_method_name(m), t[m]);
            if (n > 16)
                T_CHECK(t[m] > prev[m], "n=%lld: %s not increasing (%g after %g)", (long long)n,
                        fr_method_name(m), t[m], prev[m]);
        }
        if (n >= (1 << 16)) {
            double re = t[FR_METHOD_EXACT] / prev[FR_METHOD_EXACT];
            double rr = t[FR_METHOD_POLYROPE] / prev[FR_METHOD_POLYROPE];
            T_CHECK(re > 3.9 && re < 4.1, "exact grows by %.3f per doubling, not ~4", re);
            T_CHECK(rr > 1.9 && rr < 2.1, "polyrope grows by %.3f per doubling, not ~2", rr);
        }
        memcpy(prev, t, sizeof t);
    }
}

static void test_masks_and_applicability(void)
{
    fr_problem p = fr_problem_default(1 << 16, 8, 8);
    double full[FR_NMETHODS], t[FR_NMETHODS];
    predict(&p, 5, full);
    p.causal = 1;
    predict(&p, 5, t);
    double ratio = t[FR_METHOD_EXACT] / full[FR_METHOD_EXACT];
    T_CHECK(ratio > 0.45 && ratio < 0.55, "causal exact / full = %.3f, want ~1/2", ratio);
    p.causal = 0;
    p.window = 100;
    predict(&p, 5, t);
    ratio = t[FR_METHOD_EXACT] / full[FR_METHOD_EXACT];
    T_CHECK(ratio > 0.5 * 201.0 / p.n && ratio < 1.5 * 201.0 / p.n, "window exact / full = %.3g",
            ratio);
    /* a window wider than the sequence is no mask */
    p.window = p.n + 5;
    predict(&p, 5, t);
    T_CHECK(t[FR_METHOD_EXACT] == full[FR_METHOD_EXACT], "wide window changes exact's cost");

    /* degree < 0: the polynomial methods do not apply */
    predict(&p, -1, t);
    T_CHECK(t[FR_METHOD_EXACT] > 0, "exact %g", t[FR_METHOD_EXACT]);
    for (int m = FR_METHOD_POLYFFT; m < FR_NMETHODS; m++)
        T_CHECK(t[m] < 0, "degree -1: %s predicted %g", fr_method_name(m), t[m]);
    T_CHECK(t[FR_METHOD_AUTO] < 0, "auto has a prediction");

    /* clipped RoPE is not in the family: no polyrope; the literal algorithm is never faster */
    p = fr_problem_default(1 << 14, 4, 4);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 16;
    predict(&p, 4, t);
    T_CHECK(t[FR_METHOD_POLYROPE] < 0, "clip: polyrope predicted %g", t[FR_METHOD_POLYROPE]);
    T_CHECK(t[FR_METHOD_POLYFFT_LITERAL] > t[FR_METHOD_POLYFFT], "literal %g <= polyfft %g",
            t[FR_METHOD_POLYFFT_LITERAL], t[FR_METHOD_POLYFFT]);
    /* higher degree costs more */
    double t6[FR_NMETHODS];
    predict(&p, 6, t6);
    T_CHECK(t6[FR_METHOD_POLYFFT] > t[FR_METHOD_POLYFFT], "polyfft not increasing in degree");
}

/* Bounds for B = 1 data without generating it: |entries| <= 1, R from the RoPE norm bound. */
static fr_bounds unit_bounds(const fr_problem *p)
{
    fr_bounds b;
    memset(&b, 0, sizeof b);
    b.B_q = b.B_k = b.B_v = b.B = 1;
    b.B_over_sqrt_ln_n = p->n > 1 ? 1 / sqrt(log((double)p->n)) : INFINITY;
    b.R = p->tau * (double)p->d; /* ||q||_2 ||k||_2 <= d for unit entries */
    b.R_from = "rope-norm";
    return b;
}

static fr_method auto_choice(const fr_problem *p, const fr_bounds *b, char *err, size_t errlen)
{
    fr_options o = fr_options_default();
    fr_plan *plan;
    int st = fr_plan_create(&plan, p, b, &o, err, errlen);
    if (st) return FR_METHOD_AUTO;
    fr_plan_info info;
    fr_plan_get_info(plan, &info);
    fr_plan_free(plan);
    return info.method;
}

static void test_auto_choices(void)
{
    char err[256] = "";
    fr_problem p = fr_problem_default(8, 8, 8);
    fr_bounds b = unit_bounds(&p);
    fr_method m = auto_choice(&p, &b, err, sizeof err);
    T_CHECK(m == FR_METHOD_EXACT, "tiny n: auto chose %s (%s)", fr_method_name(m), err);

    p = fr_problem_default(1 << 17, 8, 8);
    b = unit_bounds(&p);
    m = auto_choice(&p, &b, err, sizeof err);
    T_CHECK(m == FR_METHOD_POLYROPE, "standard RoPE at n = 2^17: auto chose %s (%s)",
            fr_method_name(m), err);

    p.causal = 1;
    m = auto_choice(&p, &b, err, sizeof err);
    T_CHECK(m == FR_METHOD_POLYROPE, "causal RoPE at n = 2^17: auto chose %s (%s)",
            fr_method_name(m), err);

    /* clipped RoPE leaves the family; at large n with small d the FFT path wins */
    p = fr_problem_default(1 << 16, 2, 2);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 64;
    b = unit_bounds(&p);
    double t[FR_NMETHODS];
    fr_predict_times(&p, 5, 4, t);
    T_CHECK(t[FR_METHOD_POLYFFT] > 0 && t[FR_METHOD_POLYFFT] < t[FR_METHOD_EXACT],
            "clip n=2^16 d=2: polyfft %g s vs exact %g s", t[FR_METHOD_POLYFFT],
            t[FR_METHOD_EXACT]);
    p.n = 1 << 20;
    fr_predict_times(&p, 5, 4, t);
    T_CHECK(t[FR_METHOD_POLYFFT] < t[FR_METHOD_EXACT] / 10,
            "clip n=2^20 d=2: polyfft %g s vs exact %g s", t[FR_METHOD_POLYFFT],
            t[FR_METHOD_EXACT]);
    p.n = 1 << 16;
    m = auto_choice(&p, &b, err, sizeof err);
    T_CHECK(m == FR_METHOD_POLYFFT, "clip n=2^16: auto chose %s (%s)", fr_method_name(m), err);

    /* huge entries: no degree <= max meets eps, auto falls back to exact */
    p = fr_problem_default(1 << 16, 8, 8);
    b = unit_bounds(&p);
    b.B_q = b.B_k = b.B = 30;
    b.R = 30 * 30; /* tau d B^2 */
    m = auto_choice(&p, &b, err, sizeof err);
    T_CHECK(m == FR_METHOD_EXACT, "huge entries: auto chose %s (%s)", fr_method_name(m), err);
}

int main(void)
{
    (void)t_rand; /* the harness's generator: these tests need no data */
    T_RUN(test_monotone_and_growth);
    T_RUN(test_masks_and_applicability);
    T_RUN(test_auto_choices);
    return t_done();
}
