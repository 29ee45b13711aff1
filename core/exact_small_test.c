/* exact_small_test.c - the small exact kernel against attention in long double written here
 * from the definition (W_delta entry by entry, every score of the row), within the exact
 * engine's certified rounding bound, and against the engine itself; and the batch's plans
 * that run it (masks, grouped-query, one W per problem). */
#include "internal.h"
#include "test.h"

#include <string.h>

/* W_delta[a][b] in long double: a plane rotation per pair, angle (delta / pos_scale) theta_m,
 * clipped offsets held at the clip; an explicit W as given. */
static void naive_w(const fr_problem *p, int64_t delta, long double *w)
{
    int64_t d = p->d, r = p->rot.rotary_dim ? p->rot.rotary_dim : d;
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        const double *x = p->rot.w + (delta + p->n - 1) * d * d;
        for (int64_t e = 0; e < d * d; e++)
            w[e] = x[e];
        return;
    }
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b < d; b++)
            w[a * d + b] = a == b;
    if (p->rot.kind == FR_ROT_NONE) return;
    if (p->rot.kind == FR_ROT_CLIP)
        delta = delta > p->rot.clip ? p->rot.clip : delta < -p->rot.clip ? -p->rot.clip : delta;
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a = p->rot.pairs == FR_PAIRS_HALF ? m : 2 * m;
        int64_t b = p->rot.pairs == FR_PAIRS_HALF ? m + r / 2 : 2 * m + 1;
        long double t = (long double)delta / p->rot.pos_scale *
                        powl(p->rot.base, -2.0L * (long double)m / (long double)r);
        w[a * d + a] = w[b * d + b] = cosl(t);
        w[a * d + b] = -sinl(t);
        w[b * d + a] = sinl(t);
    }
}

/* T (n x dv) and each row's log-sum-exp, in long double. */
static void naive(const fr_problem *p, const double *q, const double *k, const double *v,
                  double *out, double *lse)
{
    int64_t n = p->n, d = p->d, dv = p->dv;
    long double *w = malloc((size_t)(d * d) * sizeof *w), *s = malloc((size_t)n * sizeof *s);
    for (int64_t i = 0; i < n; i++) {
        long double mx = -INFINITY, den = 0;
        for (int64_t j = 0; j < n; j++) {
            s[j] = NAN;
            if ((p->causal && j > i) || (p->window >= 0 && llabs(j - i) > p->window)) continue;
            naive_w(p, j - i, w);
            long double acc = 0;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++)
                    acc += (long double)q[i * d + a] * w[a * d + b] * k[j * d + b];
            s[j] = p->tau * acc;
            if (s[j] > mx) mx = s[j];
        }
        for (int64_t o = 0; o < dv; o++) {
            long double num = 0;
            den = 0;
            for (int64_t j = 0; j < n; j++)
                if (!isnan(s[j])) {
                    den += expl(s[j] - mx);
                    num += expl(s[j] - mx) * v[j * dv + o];
                }
            out[i * dv + o] = (double)(num / den);
        }
        lse[i] = (double)(mx + logl(den));
    }
    free(w);
    free(s);
}

static double *rand_array(int64_t count, double scale, unsigned long long *seed)
{
    double *x = malloc((size_t)count * sizeof *x);
    for (int64_t e = 0; e < count; e++)
        x[e] = scale * t_rand(seed);
    return x;
}

static double max_diff(const double *a, const double *b, int64_t count)
{
    double e = 0;
    for (int64_t i = 0; i < count; i++) {
        double x = fabs(a[i] - b[i]);
        if (!(x <= e)) e = x; /* NaN propagates */
    }
    return e;
}

/* An explicit W equal to p's RoPE matrices (a RoPE family given as numbers). */
static double *rope_as_explicit(const fr_problem *p)
{
    int64_t n = p->n, d = p->d;
    double *w = malloc((size_t)((2 * n - 1) * d * d) * sizeof *w);
    for (int64_t t = 0; t < 2 * n - 1; t++)
        fr_rotation_matrix(p, t - (n - 1), w + t * d * d);
    return w;
}

/* One problem through the small kernel: within the certified bound of the long-double
 * definition (T and lse), and of the engine. */
static void check_one(const char *name, fr_problem p, double scale, unsigned long long seed)
{
    int64_t n = p.n, d = p.d, dv = p.dv;
    double *q = rand_array(n * d, scale, &seed), *k = rand_array(n * d, scale, &seed),
           *v = rand_array(n * dv, 1, &seed);
    double *got = malloc((size_t)(n * dv) * sizeof *got), *eng = malloc((size_t)(n * dv) * 8),
           *ref = malloc((size_t)(n * dv) * sizeof *ref), *lse = malloc((size_t)n * 8),
           *lref = malloc((size_t)n * 8);
    char err[256] = "";
    fr__settle_family(&p);
    T_CHECK(fr__small_exact_fits(&p), "%s: the kernel should take n = %lld", name, (long long)n);
    fr__small_exact *se = NULL;
    int st = fr__small_exact_create(&se, &p, err, sizeof err);
    if (!st) st = fr__small_exact_rows(se, q, k, v, got, lse, err, sizeof err);
    T_CHECK(st == FR_OK, "%s: %s", name, err);
    if (!st) st = fr__exact_rows(&p, q, k, v, NULL, n, eng, NULL, err, sizeof err);
    T_CHECK(st == FR_OK, "%s: engine: %s", name, err);
    fr_bounds b;
    if (!st) st = fr_bounds_compute(&p, q, k, v, &b, err, sizeof err);
    if (!st) {
        naive(&p, q, k, v, ref, lref);
        double Rp = fmax(b.R, fmax(b.R_norm, b.R_abs));
        double bound =
            fr__exact_round(&p, &b, FR_U_DOUBLE, fr__exact_shifted(&p, &b, FR_U_DOUBLE), d);
        double e = max_diff(got, ref, n * dv), ee = max_diff(got, eng, n * dv);
        T_CHECK(bound < 1e-9 && e <= bound, "%s: |T - T_ref| = %.3g above the certified %.3g", name,
                e, bound);
        T_CHECK(ee <= 2 * bound, "%s: %.3g from the engine (bound %.3g)", name, ee, bound);
        /* lse = m + log(sum): the log's and the sum's roundings relative to |lse| and 1. */
        double le = max_diff(lse, lref, n);
        T_CHECK(le <= 1e-12 * (1 + 2 * Rp), "%s: lse off by %.3g", name, le);
    }
    fr__small_exact_free(se);
    free(q), free(k), free(v), free(got), free(eng), free(ref), free(lse), free(lref);
}

/* Every rotation the kernel takes, at sizes around its key block and limit, with each mask. */
static void test_against_definition(void)
{
    const int64_t ns[] = {1, 2, 7, 37, 64, 100, FR_SMALL_EXACT_MAX_N};
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (int mask = 0; mask < 4; mask++) {
            int64_t n = ns[a];
            fr_problem p = fr_problem_default(n, 4, 4);
            p.causal = mask & 1;
            p.window = mask & 2 ? 5 + n / 3 : -1;
            char name[96];
            snprintf(name, sizeof name, "rope n=%lld mask=%d", (long long)n, mask);
            check_one(name, p, 1, 11 + (unsigned long long)(a * 4 + mask));
        }
    fr_problem p = fr_problem_default(37, 6, 3); /* dv != d, half pairs, partial rotation */
    p.rot.pairs = FR_PAIRS_HALF;
    p.rot.rotary_dim = 4;
    p.rot.base = 500;
    p.rot.pos_scale = 2.5;
    p.tau = 0.3;
    check_one("half pairs, rotary_dim 4, base 500, scale 2.5", p, 1, 5);
    p = fr_problem_default(31, 8, 9);
    p.rot.kind = FR_ROT_NONE;
    p.causal = 1;
    check_one("no rotation, causal", p, 1, 6);
    p = fr_problem_default(23, 4, 2);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 22; /* never bites at n = 23: a per-position rotation */
    p.window = 4;
    check_one("clip n - 1", p, 1, 7);
    p = fr_problem_default(19, 4, 5);
    double *w = rope_as_explicit(&p);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    check_one("explicit W of the RoPE family", p, 1, 8);
    free(w);
    /* Scores far beyond the engine's a-priori shift (2 M > 600): the row maximum holds them. */
    p = fr_problem_default(50, 4, 4);
    p.tau = 80;
    p.causal = 1;
    check_one("scores up to ~1000", p, 2, 9);
    p = fr_problem_default(45, 16, 4);
    p.rot.base = 10;
    check_one("d = 16", p, 3, 10);
}

/* What it does not take goes to the engine. */
static void test_fits(void)
{
    fr_problem p = fr_problem_default(FR_SMALL_EXACT_MAX_N + 1, 4, 4);
    T_CHECK(!fr__small_exact_fits(&p), "n above the limit taken");
    p = fr_problem_default(40, 4, 4);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 5;
    T_CHECK(!fr__small_exact_fits(&p), "a clip that bites taken");
    double *w = calloc((size_t)(79 * 16), sizeof *w);
    for (int64_t t = 0; t < 79; t++) /* a different permutation-like W per offset */
        for (int64_t a = 0; a < 4; a++)
            w[t * 16 + a * 4 + (a + t) % 4] = 1;
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    fr__settle_family(&p);
    T_CHECK(!fr__small_exact_fits(&p), "an explicit W outside the RoPE family taken");
    fr__small_exact *se = NULL;
    char err[128] = "";
    T_CHECK(fr__small_exact_create(&se, &p, err, sizeof err) == FR_EUSAGE && !se,
            "created for a problem it does not fit");
    free(w);
}

/* A row with one kept key is that key's value to the bit (gradients subtract T from V). */
static void test_single_key_rows(void)
{
    unsigned long long seed = 3;
    fr_problem p = fr_problem_default(9, 4, 3);
    double *q = rand_array(9 * 4, 5, &seed), *k = rand_array(9 * 4, 5, &seed),
           *v = rand_array(9 * 3, 1, &seed), out[27];
    char err[128] = "";
    for (int c = 0; c < 3; c++) {
        p.causal = c != 1;
        p.window = c >= 1 ? 0 : -1;
        p.n = c == 2 ? 1 : 9;
        fr__small_exact *se = NULL;
        int st = fr__small_exact_create(&se, &p, err, sizeof err);
        if (!st) st = fr__small_exact_rows(se, q, k, v, out, NULL, err, sizeof err);
        T_REQUIRE(st == FR_OK, "%s", err);
        int64_t rows = c == 0 ? 1 : p.n; /* causal: row 0; window 0 and n = 1: every row */
        T_CHECK(memcmp(out, v, (size_t)(rows * 3) * sizeof *v) == 0, "case %d: not V exactly", c);
        fr__small_exact_free(se);
    }
    free(q), free(k), free(v);
}

static void test_nonfinite_input(void)
{
    unsigned long long seed = 4;
    fr_problem p = fr_problem_default(8, 4, 4);
    double *q = rand_array(32, 1, &seed), *k = rand_array(32, 1, &seed),
           *v = rand_array(32, 1, &seed), out[32];
    k[13] = NAN;
    fr__small_exact *se = NULL;
    char err[128] = "";
    T_REQUIRE(fr__small_exact_create(&se, &p, err, sizeof err) == FR_OK, "%s", err);
    int st = fr__small_exact_rows(se, q, k, v, out, NULL, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "k has a non-finite value at flat index 13"),
            "got %d: %s", st, err);
    fr__small_exact_free(se);
    free(q), free(k), free(v);
}

/* A batch through fr_execute (exact and auto), grouped-query and with one W per problem: every
 * problem as the engine computes it on its own slices. */
static void check_batch(const char *name, fr_problem p, fr_method m)
{
    int64_t B = p.batch, KV = p.kv_batch ? p.kv_batch : B, n = p.n, d = p.d, dv = p.dv;
    int64_t g = B / KV;
    unsigned long long seed = 21;
    double *q = rand_array(B * n * d, 1, &seed), *k = rand_array(KV * n * d, 1, &seed),
           *v = rand_array(KV * n * dv, 1, &seed);
    double *out = malloc((size_t)(B * n * dv) * 8), *one = malloc((size_t)(n * dv) * 8);
    fr_bounds *b = malloc((size_t)B * sizeof *b);
    char err[256] = "";
    fr_options o = fr_options_default();
    o.method = m;
    fr_plan *pl = NULL;
    int st = fr_bounds_compute(&p, q, k, v, b, err, sizeof err);
    if (!st) st = fr_plan_create(&pl, &p, b, &o, err, sizeof err);
    if (!st) st = fr_execute(pl, q, k, v, out, NULL, err, sizeof err);
    T_REQUIRE(st == FR_OK, "%s: %s", name, err);
    fr_plan_info info;
    fr_plan_get_info(pl, &info);
    T_CHECK(info.method == FR_METHOD_EXACT, "%s: ran %s", name, fr_method_name(info.method));
    double worst = 0;
    for (int64_t e = 0; e < B && !st; e++) {
        fr_problem pe = fr__entry_problem(&p, e);
        int64_t h = e / g;
        st = fr__exact_rows(&pe, q + e * n * d, k + h * n * d, v + h * n * dv, NULL, n, one, NULL,
                            err, sizeof err);
        worst = fmax(worst, max_diff(out + e * n * dv, one, n * dv));
    }
    T_CHECK(st == FR_OK && worst <= 1e-13, "%s: %.3g from the engine (%s)", name, worst, err);
    fr_plan_free(pl);
    free(q), free(k), free(v), free(out), free(one), free(b);
}

static void test_batch(void)
{
    fr_problem p = fr_problem_default(64, 4, 4);
    p.batch = 40;
    check_batch("batch of 40, n = 64", p, FR_METHOD_EXACT);
    check_batch("batch of 40, auto", p, FR_METHOD_AUTO);
    p = fr_problem_default(33, 6, 5);
    p.batch = 12;
    p.kv_batch = 4;
    p.causal = 1;
    p.window = 9;
    check_batch("grouped-query, causal window, odd n, dv != d", p, FR_METHOD_EXACT);
    /* One W per problem: RoPE families of different bases. */
    p = fr_problem_default(17, 4, 4);
    p.batch = 3;
    int64_t per = (2 * 17 - 1) * 16;
    double *w = malloc((size_t)(3 * per) * sizeof *w);
    for (int e = 0; e < 3; e++) {
        fr_problem pr = p;
        pr.rot.base = 10.0 * (e + 1);
        double *we = rope_as_explicit(&pr);
        memcpy(w + e * per, we, (size_t)per * sizeof *w);
        free(we);
    }
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    p.rot.w_count = 3;
    check_batch("one explicit W per problem", p, FR_METHOD_EXACT);
    p.rot.w_count = 1; /* and a clip that bites, which the engine takes */
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 3;
    check_batch("clipped RoPE (the engine's)", p, FR_METHOD_EXACT);
    free(w);
}

int main(void)
{
    T_RUN(test_against_definition);
    T_RUN(test_fits);
    T_RUN(test_single_key_rows);
    T_RUN(test_nonfinite_input);
    T_RUN(test_batch);
    return t_done();
}
