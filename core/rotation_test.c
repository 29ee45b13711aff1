/* rotation_test.c - W_delta, problem checks, RoPE-family recognition, the support and the
 * per-position rotation, against matrices written here from the RoPE definition. */
#include "internal.h"
#include "test.h"

#include <string.h>

/* R_delta from the definition, pair by pair: [[c, -s], [s, c]] at rows/cols (a, b). */
static void def_rope(int64_t d, int64_t r, double base, int half, double pos_scale, double pos,
                     double *w)
{
    for (int64_t e = 0; e < d * d; e++)
        w[e] = (e / d == e % d);
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a = half ? m : 2 * m, b = half ? m + r / 2 : 2 * m + 1;
        double t = pos / pos_scale / pow(base, 2.0 * m / r);
        w[a * d + a] = w[b * d + b] = cos(t);
        w[a * d + b] = -sin(t);
        w[b * d + a] = sin(t);
    }
}

static double maxdiff(const double *a, const double *b, int64_t cnt)
{
    double m = 0;
    for (int64_t i = 0; i < cnt; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static void test_matrices(void)
{
    double w[100], want[100];
    fr_problem p = fr_problem_default(50, 10, 1);
    for (int half = 0; half <= 1; half++) {
        p.rot.pairs = half ? FR_PAIRS_HALF : FR_PAIRS_INTERLEAVED;
        p.rot.rotary_dim = half ? 6 : 0;
        p.rot.base = half ? 500 : 10000;
        p.rot.pos_scale = half ? 3 : 1;
        int64_t r = half ? 6 : 10;
        for (int64_t delta = -49; delta <= 49; delta += 7) {
            p.rot.kind = FR_ROT_ROPE;
            fr_rotation_matrix(&p, delta, w);
            def_rope(10, r, p.rot.base, half, p.rot.pos_scale, (double)delta, want);
            T_CHECK(maxdiff(w, want, 100) < 1e-15, "rope delta %lld", (long long)delta);
            p.rot.kind = FR_ROT_CLIP;
            p.rot.clip = 5;
            fr_rotation_matrix(&p, delta, w);
            def_rope(10, r, p.rot.base, half, p.rot.pos_scale,
                     (double)(delta > 5    ? 5
                              : delta < -5 ? -5
                                           : delta),
                     want);
            T_CHECK(maxdiff(w, want, 100) < 1e-15, "clip delta %lld", (long long)delta);
        }
    }
    p.rot.kind = FR_ROT_NONE;
    fr_rotation_matrix(&p, 3, w);
    def_rope(10, 0, 1, 0, 1, 0, want);
    T_CHECK(maxdiff(w, want, 100) == 0, "NONE is the identity");
    /* the first pair at delta = 1 with base 10000: theta_0 = 1 */
    p = fr_problem_default(4, 2, 1);
    fr_rotation_matrix(&p, 1, w);
    T_CHECK(fabs(w[0] - cos(1.0)) < 1e-16 && fabs(w[1] + sin(1.0)) < 1e-16 &&
                fabs(w[2] - sin(1.0)) < 1e-16,
            "R_1 = [[cos 1, -sin 1], [sin 1, cos 1]]: %g %g %g %g", w[0], w[1], w[2], w[3]);
}

static int check_msg(fr_problem p, int want_status, const char *want_sub)
{
    char err[256] = "";
    int st = fr_problem_check(&p, err, sizeof err);
    int ok = st == want_status && (!want_sub || strstr(err, want_sub));
    if (!ok)
        printf("#   status %d (want %d), message '%s' (want '%s')\n", st, want_status, err,
               want_sub ? want_sub : "");
    return ok;
}

static void test_problem_check(void)
{
    fr_problem p = fr_problem_default(8, 7, 3);
    T_CHECK(check_msg(p, FR_EUSAGE, "RoPE needs an even head dimension, got d = 7"), "odd d");
    p.rot.kind = FR_ROT_NONE;
    T_CHECK(check_msg(p, FR_OK, NULL), "odd d without rotation is fine");
    p = fr_problem_default(8, 8, 3);
    T_CHECK(check_msg(p, FR_OK, NULL), "default");
    p.rot.rotary_dim = 5;
    T_CHECK(check_msg(p, FR_EUSAGE, "even rotary dimension, got 5"), "odd r");
    p.rot.rotary_dim = 10;
    T_CHECK(check_msg(p, FR_EUSAGE, "exceeds the head dimension"), "r > d");
    p.rot.rotary_dim = 0;
    p.rot.base = 0;
    T_CHECK(check_msg(p, FR_EUSAGE, "base"), "base 0");
    p.rot.base = 10000;
    p.rot.pos_scale = -1;
    T_CHECK(check_msg(p, FR_EUSAGE, "position scale"), "pos_scale < 0");
    p.rot.pos_scale = 1;
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = -2;
    T_CHECK(check_msg(p, FR_EUSAGE, "clip >= 0"), "clip < 0");
    p.rot.kind = FR_ROT_EXPLICIT;
    T_CHECK(check_msg(p, FR_EUSAGE, "W tensor"), "explicit without W");
    p = fr_problem_default(0, 8, 3);
    T_CHECK(check_msg(p, FR_EINPUT, "n = 0"), "n = 0");
    p = fr_problem_default(4, 8, 0);
    T_CHECK(check_msg(p, FR_EINPUT, "dv = 0"), "dv = 0");
    p = fr_problem_default(4, 8, 2);
    p.tau = NAN;
    T_CHECK(check_msg(p, FR_EUSAGE, "tau"), "tau NaN");
    p.tau = 0;
    T_CHECK(check_msg(p, FR_EUSAGE, "tau"), "tau 0");
    p = fr_problem_default(INT64_MAX / 4, 8, 2);
    T_CHECK(check_msg(p, FR_EINPUT, "too large"), "overflowing n");
    p = fr_problem_default(4, 8, 2);
    p.window = 0;
    T_CHECK(check_msg(p, FR_OK, NULL), "window 0 (diagonal only) is valid");
}

/* The [2n-1][d][d] tensor of a RoPE problem from the definition. */
static double *rope_tensor(int64_t n, int64_t d, int half)
{
    double *w = malloc((size_t)((2 * n - 1) * d * d) * sizeof *w);
    for (int64_t t = 0; t < 2 * n - 1; t++)
        def_rope(d, d, 10000, half, 1, (double)(t - (n - 1)), w + t * d * d);
    return w;
}

static void test_family(void)
{
    fr_problem p = fr_problem_default(20, 4, 2);
    char why[192];
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why), "ROPE");
    p.rot.kind = FR_ROT_NONE;
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why), "NONE");
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 5;
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why) && strstr(why, "clip"),
            "clip 5 < 19: %s", why);
    p.rot.clip = 19;
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why), "clip 19 = n - 1 never bites");

    double *w = rope_tensor(20, 4, 1);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-12, why, sizeof why), "explicit RoPE W: %s", why);
    w[(5 + 19) * 16 + 3] += 0.3; /* W_5 */
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why) &&
                strstr(why, "W_5 differs from W_1^5 by 0.3"),
            "perturbed W_5: '%s'", why);
    w[(5 + 19) * 16 + 3] -= 0.3;
    w[(-1 + 19) * 16 + 0] += 1e-6; /* W_-1 */
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why) && strstr(why, "W_-1"),
            "perturbed W_-1: '%s'", why);
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-5, why, sizeof why), "within a loose tolerance: %s",
            why);
    w[(-1 + 19) * 16 + 0] -= 1e-6;
    w[19 * 16 + 5] = 2; /* W_0 */
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why) && strstr(why, "W_0"),
            "W_0 != I: '%s'", why);
    w[19 * 16 + 5] = 1;
    for (int64_t t = 0; t < 39; t++) /* W_delta = (2 I)^delta: a power family, not orthogonal */
        for (int64_t e = 0; e < 16; e++)
            w[t * 16 + e] = e % 5 == 0 ? pow(2, (double)(t - 19)) : 0;
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, why, sizeof why) && strstr(why, "orthogonal"),
            "scaled: '%s'", why);
    free(w);
}

static void test_support(void)
{
    fr_problem p = fr_problem_default(9, 6, 1);
    p.rot.rotary_dim = 4;
    p.rot.pairs = FR_PAIRS_HALF;
    fr__support s;
    char err[256];
    T_REQUIRE(fr__support_build(&p, &s, err, sizeof err) == FR_OK, "%s", err);
    /* pairs (0,2), (1,3): 8 entries; fixed coordinates 4, 5: 2 entries */
    T_CHECK(s.ns == 10, "|S| = %lld", (long long)s.ns);
    double w[36];
    for (int64_t e = 0; e < s.ns; e++) {
        T_CHECK(s.a[e] == s.b[e] || abs(s.a[e] - s.b[e]) == 2, "(%d, %d) in S", s.a[e], s.b[e]);
        for (int64_t delta = -8; delta <= 8; delta++) {
            def_rope(6, 4, 10000, 1, 1, (double)delta, w);
            T_CHECK(fabs(s.w[e * 17 + delta + 8] - w[s.a[e] * 6 + s.b[e]]) < 1e-15, "kernel value");
        }
    }
    fr__support_free(&s);
    p.rot.kind = FR_ROT_NONE;
    T_REQUIRE(fr__support_build(&p, &s, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(s.ns == 6, "NONE: |S| = d, got %lld", (long long)s.ns);
    fr__support_free(&s);
}

/* The RoPE kinds' tables (built per pair and position) equal fr_rotation_matrix's entries bit
 * for bit at every offset, and the support is the entries non-zero at some offset. */
static void support_matches(const char *name, fr_problem p)
{
    fr__support s;
    char err[256];
    T_REQUIRE(fr__support_build(&p, &s, err, sizeof err) == FR_OK, "%s: %s", name, err);
    int64_t n = p.n, d = p.d, nd = 2 * n - 1;
    double *w = malloc(d * d * sizeof *w);
    char *in = calloc(d * d, 1);
    int bad = 0;
    for (int64_t t = 0; t < nd; t++) {
        fr_rotation_matrix(&p, t - (n - 1), w);
        for (int64_t e = 0; e < d * d; e++)
            in[e] |= w[e] != 0;
        for (int64_t j = 0; j < s.ns; j++)
            bad += memcmp(&s.w[j * nd + t], &w[s.a[j] * d + s.b[j]], sizeof(double)) != 0;
    }
    int64_t ns = 0;
    for (int64_t e = 0; e < d * d; e++)
        ns += in[e];
    T_CHECK(bad == 0, "%s: %d table entries differ from the matrices", name, bad);
    T_CHECK(ns == s.ns, "%s: |S| %lld, the matrices have %lld non-zero entries", name,
            (long long)s.ns, (long long)ns);
    free(w);
    free(in);
    fr__support_free(&s);
}

static void test_support_tables(void)
{
    fr_problem p = fr_problem_default(37, 8, 2);
    support_matches("rope", p);
    p.rot.pos_scale = 2.5;
    p.rot.base = 500;
    p.rot.pairs = FR_PAIRS_HALF;
    p.rot.rotary_dim = 6;
    support_matches("rope, scaled, half pairs, partial", p);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 4;
    support_matches("clip 4", p);
    p.rot.clip = 0;
    support_matches("clip 0 (every offset the identity)", p);
    p.rot.clip = 100;
    support_matches("clip past n", p);
    support_matches("n = 1", fr_problem_default(1, 4, 1));
}

/* (R_i x).(R_j y) = x W_{j-i} y^T: what lets the exact and polyrope paths rotate once. */
static void test_rotate_rows(void)
{
    enum { N = 23, D = 6 };
    unsigned long long sd = 3;
    double x[N * D], y[N * D], rx[N * D], ry[N * D], w[D * D];
    for (int e = 0; e < N * D; e++) {
        x[e] = t_rand(&sd);
        y[e] = t_rand(&sd);
    }
    double *wt = rope_tensor(N, D, 0);
    for (int variant = 0; variant < 3; variant++) {
        fr_problem p = fr_problem_default(N, D, 1);
        if (variant == 1) {
            p.rot.pairs = FR_PAIRS_HALF;
            p.rot.rotary_dim = 4;
            p.rot.pos_scale = 0.5;
        }
        if (variant == 2) {
            p.rot.kind = FR_ROT_EXPLICIT;
            p.rot.w = wt;
        }
        fr__rotate_rows(&p, x, 0, N, rx);
        fr__rotate_rows(&p, y, 5, N - 5, ry + 5 * D); /* an offset start */
        fr__rotate_rows(&p, y, 0, 5, ry);
        double worst = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                fr_rotation_matrix(&p, j - i, w);
                double a = 0, b = 0;
                for (int u = 0; u < D; u++)
                    a += rx[i * D + u] * ry[j * D + u];
                for (int u = 0; u < D; u++)
                    for (int t = 0; t < D; t++)
                        b += x[i * D + u] * w[u * D + t] * y[j * D + t];
                worst = fmax(worst, fabs(a - b));
            }
        T_CHECK(worst < 1e-14, "variant %d: rotated dot differs by %g", variant, worst);
    }
    free(wt);
}

/* The one tolerance: an explicit RoPE W computed from angles passes at any length (the powers
 * it is compared with drift by a rounding per factor), a W off by 1e-10 somewhere does not (the
 * exact and polyrope paths would use W_1^delta there), and the answer kept in rot.family is
 * what the methods read. */
static void test_family_tolerance(void)
{
    int64_t n = 3000, d = 6, dd = d * d;
    fr_problem p = fr_problem_default(n, d, 2);
    double *w = malloc((size_t)((2 * n - 1) * dd) * sizeof *w);
    for (int64_t t = 0; t < 2 * n - 1; t++)
        fr_rotation_matrix(&p, t - (n - 1), w + t * dd);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    char why[200];
    T_CHECK(fr__rope_family(&p, why, sizeof why), "explicit RoPE at n = 3000 refused: %s", why);
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-13, NULL, 0),
            "a fixed 1e-13 should refuse it: the powers drift past it");
    w[(1700 + n - 1) * dd + 7] += 1e-10;
    T_CHECK(!fr__rope_family(&p, why, sizeof why) && strstr(why, "W_1700"),
            "a W off by 1e-10 at delta 1700 taken for a family: %s", why);
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-9, NULL, 0), "a fixed 1e-9 should take it");
    fr__settle_family(&p);
    T_CHECK(p.rot.family == -1, "settled %d", p.rot.family);
    p.rot.family = 1; /* a plan's copy that knows: nobody recomputes */
    T_CHECK(fr__rope_family(&p, NULL, 0) == 1, "the kept answer is not used");
    free(w);
}

/* The table's rotation is fr__rotate_rows's to the bit, for both pair conventions, a partial
 * rotation, a position scale and a clip that never bites; kinds it cannot hold get no table. */
static void test_rope_table(void)
{
    unsigned long long seed = 17;
    for (int c = 0; c < 4; c++) {
        fr_problem p = fr_problem_default(41, 6, 6);
        if (c == 1) p.rot.pairs = FR_PAIRS_HALF, p.rot.rotary_dim = 4;
        if (c == 2) p.rot.pos_scale = 3.5, p.rot.base = 77;
        if (c == 3) p.rot.kind = FR_ROT_CLIP, p.rot.clip = 40;
        double x[41 * 6], a[41 * 6], b[41 * 6];
        for (int e = 0; e < 41 * 6; e++)
            x[e] = 3 * t_rand(&seed);
        fr__rope_table t;
        T_REQUIRE(fr__rope_table_build(&p, &t), "case %d: no table", c);
        fr__rotate_rows(&p, x, 5, 30, a);
        fr__rope_table_rotate(&t, x, 6, 5, 30, b);
        T_CHECK(memcmp(a, b, sizeof(double) * 30 * 6) == 0, "case %d: differs", c);
        fr__rope_table_free(&t);
    }
    fr_problem p = fr_problem_default(41, 6, 6);
    fr__rope_table t;
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 3;
    T_CHECK(!fr__rope_table_build(&p, &t) && !t.cs, "a clip that bites has a table");
    p.rot.kind = FR_ROT_NONE;
    T_CHECK(!fr__rope_table_build(&p, &t) && !t.cs, "no rotation has a table");
}

int main(void)
{
    T_RUN(test_matrices);
    T_RUN(test_problem_check);
    T_RUN(test_family);
    T_RUN(test_family_tolerance);
    T_RUN(test_support);
    T_RUN(test_support_tables);
    T_RUN(test_rotate_rows);
    T_RUN(test_rope_table);
    return t_done();
}
