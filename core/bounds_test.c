/* bounds_test.c - the entry bounds and the score bound R: R really bounds every |s_ij| (computed
 * naively here with W_delta from the RoPE definition or the explicit tensor), and each kind of
 * bound is the one reported when it is the smallest. */
#include "internal.h"
#include "test.h"

#include <string.h>

static void def_rope(int64_t d, int64_t r, int half, double pos, double *w)
{
    for (int64_t e = 0; e < d * d; e++)
        w[e] = (e / d == e % d);
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a = half ? m : 2 * m, b = half ? m + r / 2 : 2 * m + 1;
        double t = pos / pow(10000.0, 2.0 * m / r);
        w[a * d + a] = w[b * d + b] = cos(t);
        w[a * d + b] = -sin(t);
        w[b * d + a] = sin(t);
    }
}

/* max |s_ij| over the batch by brute force. */
static double naive_max_score(const fr_problem *p, const double *q, const double *k, int64_t batch)
{
    int64_t n = p->n, d = p->d;
    double *w = malloc((size_t)(d * d) * sizeof *w), m = 0;
    for (int64_t bt = 0; bt < batch; bt++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                int64_t delta = j - i;
                if (p->rot.kind == FR_ROT_EXPLICIT)
                    memcpy(w, p->rot.w + (delta + n - 1) * d * d, (size_t)(d * d) * sizeof *w);
                else if (p->rot.kind == FR_ROT_NONE)
                    def_rope(d, 0, 0, 0, w);
                else {
                    int64_t c = p->rot.kind == FR_ROT_CLIP ? p->rot.clip : n;
                    def_rope(d, d, p->rot.pairs == FR_PAIRS_HALF,
                             (double)(delta > c    ? c
                                      : delta < -c ? -c
                                                   : delta),
                             w);
                }
                const double *qi = q + (bt * n + i) * d, *kj = k + (bt * n + j) * d;
                double s = 0;
                for (int64_t a = 0; a < d; a++)
                    for (int64_t b = 0; b < d; b++)
                        s += qi[a] * w[a * d + b] * kj[b];
                m = fmax(m, fabs(p->tau * s));
            }
    free(w);
    return m;
}

static double *rnd(int64_t cnt, double scale, unsigned long long seed)
{
    double *x = malloc((size_t)cnt * sizeof *x);
    for (int64_t e = 0; e < cnt; e++)
        x[e] = scale * t_rand(&seed);
    return x;
}

static void test_R_bounds_scores(void)
{
    enum { N = 31, D = 6, DV = 3, BATCH = 2 };
    double *q = rnd(BATCH * N * D, 2, 1), *k = rnd(BATCH * N * D, 3, 2),
           *v = rnd(BATCH * N * DV, 1, 3);
    double *w = rnd((2 * N - 1) * D * D, 1, 4);
    char err[256];
    for (int kind = 0; kind < 4; kind++) {
        fr_problem p = fr_problem_default(N, D, DV);
        p.rot.kind = (fr_rot_kind)kind;
        p.rot.clip = 4;
        p.rot.w = w;
        p.rot.pairs = FR_PAIRS_HALF;
        p.batch = BATCH;
        fr_bounds each[BATCH], b;
        T_REQUIRE(fr_bounds_compute(&p, q, k, v, each, err, sizeof err) == FR_OK, "%s", err);
        for (int e = 0; e < BATCH; e++) {
            double se = naive_max_score(&p, q + e * N * D, k + e * N * D, 1);
            T_CHECK(se <= each[e].R, "kind %d entry %d: max |s| %g exceeds R %g", kind, e, se,
                    each[e].R);
        }
        fr_bounds_pool(each, BATCH, &b);
        double smax = naive_max_score(&p, q, k, BATCH);
        T_CHECK(smax <= b.R, "kind %d: max |s| %g exceeds R %g (%s)", kind, smax, b.R, b.R_from);
        /* and it is not absurdly loose for these dense random inputs */
        T_CHECK(b.R < 20 * smax, "kind %d: R %g vs max |s| %g (%s)", kind, b.R, smax, b.R_from);
    }
    free(q);
    free(k);
    free(v);
    free(w);
}

static void test_entry_bounds(void)
{
    fr_problem p = fr_problem_default(5, 2, 3);
    double q[10] = {0}, k[10] = {0}, v[15] = {0};
    q[3] = -2.5;
    k[9] = 1.5;
    v[14] = -4;
    fr_bounds b;
    char err[256];
    T_REQUIRE(fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(b.B_q == 2.5 && b.B_k == 1.5 && b.B_v == 4 && b.B == 4, "B %g %g %g %g", b.B_q, b.B_k,
            b.B_v, b.B);
    T_CHECK(fabs(b.B_over_sqrt_ln_n - 4 / sqrt(log(5.0))) < 1e-15, "B/sqrt(ln n) %g",
            b.B_over_sqrt_ln_n);
    p.n = 1;
    T_REQUIRE(fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(isinf(b.B_over_sqrt_ln_n), "n = 1 gives inf, got %g", b.B_over_sqrt_ln_n);
}

static void test_rejects_nonfinite(void)
{
    fr_problem p = fr_problem_default(4, 2, 2);
    double v[16] = {0}; /* a batch of 2 */
    fr_bounds b[2];
    p.batch = 2;
    char err[256];
    v[13] = INFINITY;
    double q2[16] = {0}, k2[16] = {0};
    T_CHECK(fr_bounds_compute(&p, q2, k2, v, b, err, sizeof err) == FR_EINPUT, "Inf in v accepted");
    T_CHECK(strstr(err, "v") && strstr(err, "13"), "message names v and 13: %s", err);
    v[13] = 0;
    k2[2] = NAN;
    T_CHECK(fr_bounds_compute(&p, q2, k2, v, b, err, sizeof err) == FR_EINPUT, "NaN in k accepted");
    T_CHECK(strncmp(err, "k ", 2) == 0 && strstr(err, "index 2"), "message names k and 2: %s", err);
}

static void test_each_bound_wins(void)
{
    char err[256];
    fr_bounds b;
    /* rope-norm: dense random rows (the support bound adds |c| + |s| > 1 weights) */
    {
        fr_problem p = fr_problem_default(16, 4, 1);
        double *q = rnd(64, 1, 5), *k = rnd(64, 1, 6), *v = rnd(16, 1, 7);
        T_REQUIRE(fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) == FR_OK, "%s", err);
        T_CHECK(strcmp(b.R_from, "rope-norm") == 0, "dense RoPE: %s", b.R_from);
        double qn = 0, kn = 0;
        for (int i = 0; i < 16; i++) {
            double a = 0, c = 0;
            for (int t = 0; t < 4; t++) {
                a += q[i * 4 + t] * q[i * 4 + t];
                c += k[i * 4 + t] * k[i * 4 + t];
            }
            qn = fmax(qn, sqrt(a));
            kn = fmax(kn, sqrt(c));
        }
        T_CHECK(fabs(b.R - 0.25 * qn * kn) <= 1e-11 * b.R, "R %g vs tau |q| |k| %g", b.R,
                0.25 * qn * kn);
        free(q);
        free(k);
        free(v);
    }
    /* support: q lives on pair 0, k on pair 1: every score is 0 and only S sees it */
    {
        fr_problem p = fr_problem_default(9, 4, 1);
        double q[36] = {0}, k[36] = {0}, v[9] = {0};
        for (int i = 0; i < 9; i++) {
            q[i * 4 + 0] = 1;
            k[i * 4 + 2] = 1;
        }
        T_REQUIRE(fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) == FR_OK, "%s", err);
        T_CHECK(strcmp(b.R_from, "support") == 0 && b.R == 0, "disjoint pairs: %s R %g", b.R_from,
                b.R);
    }
    /* spectral: W_delta = I/2 (not a rotation), rows on different axes (so the support's
     * coordinate-wise maxima overestimate) */
    {
        enum { N = 8, D = 4 };
        fr_problem p = fr_problem_default(N, D, 1);
        double *w = calloc((2 * N - 1) * D * D, sizeof *w), q[N * D] = {0}, k[N * D] = {0},
               v[N] = {0};
        for (int t = 0; t < 2 * N - 1; t++)
            for (int a = 0; a < D; a++)
                w[t * D * D + a * D + a] = 0.5;
        for (int i = 0; i < N; i++) {
            q[i * D + i % D] = 1;
            k[i * D + (i + 1) % D] = 1;
        }
        p.rot.kind = FR_ROT_EXPLICIT;
        p.rot.w = w;
        T_REQUIRE(fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) == FR_OK, "%s", err);
        T_CHECK(strcmp(b.R_from, "spectral") == 0, "I/2: %s", b.R_from);
        T_CHECK(fabs(b.R - 0.25 * 0.5) < 1e-12, "R = tau/2 = 0.125, got %g", b.R);
        T_CHECK(naive_max_score(&p, q, k, 1) <= b.R, "bound holds");
        free(w);
    }
}

int main(void)
{
    T_RUN(test_R_bounds_scores);
    T_RUN(test_entry_bounds);
    T_RUN(test_rejects_nonfinite);
    T_RUN(test_each_bound_wins);
    return t_done();
}
