/* stats_test.c - fr_bounds_from_stats on streamed reductions gives fr_bounds_compute's bounds to
 * the bit (fastrope check's R must equal run's), for every parameterised rotation, batches,
 * odd n and n = 1, with the rows fed in arbitrary pieces. */
#include "internal.h"
#include "test.h"

#include <string.h>

static double *rnd(int64_t cnt, double scale, unsigned long long seed)
{
    double *x = malloc((size_t)cnt * sizeof *x);
    for (int64_t e = 0; e < cnt; e++)
        x[e] = scale * t_rand(&seed) * (e % 7 == 3 ? 3 : 1); /* uneven columns */
    return x;
}

/* Reductions of rows x cols fed in pieces of `piece` rows, as a streaming reader would. */
static void reduce(const double *x, int64_t rows, int64_t cols, int64_t piece, double *colmax,
                   double *rowsq)
{
    memset(colmax, 0, (size_t)cols * sizeof *colmax);
    *rowsq = 0;
    for (int64_t i = 0; i < rows; i += piece)
        fr_stats_rows(x + i * cols, rows - i < piece ? rows - i : piece, cols, colmax, rowsq);
}

static int same(const fr_bounds *got, const fr_bounds *ref)
{
    return got->R == ref->R && strcmp(got->R_from, ref->R_from) == 0 && got->B_q == ref->B_q &&
           got->B_k == ref->B_k && got->B_v == ref->B_v && got->B == ref->B &&
           got->B_over_sqrt_ln_n == ref->B_over_sqrt_ln_n;
}

/* Each problem of the batch streamed on its own gives its bounds to the bit, and so the pool of
 * those gives the pool of fr_bounds_compute's (what check reports for a set, run for a batch). */
static void same_as_compute(fr_problem p, int64_t batch, const char *what)
{
    int64_t n = p.n, d = p.d, dv = p.dv;
    double *q = rnd(batch * n * d, 1.3, 1 + (unsigned long long)n),
           *k = rnd(batch * n * d, 0.7, 2 + (unsigned long long)d),
           *v = rnd(batch * n * dv, 2.1, 3);
    char err[256];
    fr_bounds ref[4], got[4], rp, gp;
    p.batch = batch;
    int st = fr_bounds_compute(&p, q, k, v, ref, err, sizeof err);
    T_REQUIRE(st == 0, "%s: %s", what, err);
    double *mq = malloc((size_t)d * sizeof *mq), *mk = malloc((size_t)d * sizeof *mk),
           *mv = malloc((size_t)dv * sizeof *mv), qs, ks, vs;
    for (int64_t e = 0; e < batch; e++) {
        reduce(q + e * n * d, n, d, 3, mq, &qs);
        reduce(k + e * n * d, n, d, 5, mk, &ks);
        reduce(v + e * n * dv, n, dv, 2, mv, &vs);
        double bv = 0;
        for (int64_t a = 0; a < dv; a++)
            bv = fmax(bv, mv[a]);
        st = fr_bounds_from_stats(&p, qs, ks, mq, mk, bv, &got[e], err, sizeof err);
        T_CHECK(st == 0, "%s: %s", what, err);
        T_CHECK(same(&got[e], &ref[e]), "%s, problem %lld: R %.17g (%s) vs %.17g (%s)", what,
                (long long)e, got[e].R, got[e].R_from, ref[e].R, ref[e].R_from);
    }
    fr_bounds_pool(ref, batch, &rp);
    fr_bounds_pool(got, batch, &gp);
    T_CHECK(same(&gp, &rp), "%s: pooled R %.17g vs %.17g", what, gp.R, rp.R);
    free(q), free(k), free(v), free(mq), free(mk), free(mv);
}

static void test_rotations(void)
{
    int64_t ns[] = {1, 2, 17, 64};
    for (int in = 0; in < 4; in++) {
        int64_t n = ns[in];
        fr_problem p = fr_problem_default(n, 6, 3);
        same_as_compute(p, 1, "rope");
        same_as_compute(p, 3, "rope batch 3");
        p.rot.pairs = FR_PAIRS_HALF;
        p.rot.rotary_dim = 4;
        p.tau = 0.37;
        same_as_compute(p, 2, "rope half rotary 4");
        p = fr_problem_default(n, 6, 5);
        p.rot.kind = FR_ROT_NONE;
        same_as_compute(p, 2, "none");
        p.rot.kind = FR_ROT_CLIP;
        p.rot.clip = 2;
        same_as_compute(p, 2, "clip 2");
        p.rot.clip = n + 3;
        same_as_compute(p, 1, "clip >= n");
    }
}

/* The batch form, grouped-query included (4 query problems on 2 key/value problems), gives
 * fr_bounds_compute's bounds of every problem to the bit. */
static void batch_same_as_compute(fr_problem p, const char *what)
{
    enum { B = 4, KV = 2 };
    int64_t n = p.n, d = p.d, dv = p.dv;
    double *q = rnd(B * n * d, 0.9, 7 + (unsigned long long)n), *k = rnd(KV * n * d, 1.1, 8),
           *v = rnd(KV * n * dv, 0.5, 9);
    double qs[B], ks[KV], bv[KV], *mq = malloc((size_t)(B * d) * sizeof *mq),
                                  *mk = malloc((size_t)(KV * d) * sizeof *mk),
                                  *mv = malloc((size_t)dv * sizeof *mv);
    char err[256];
    fr_bounds ref[B], got[B];
    p.batch = B, p.kv_batch = KV;
    T_REQUIRE(fr_bounds_compute(&p, q, k, v, ref, err, sizeof err) == 0, "%s: %s", what, err);
    for (int64_t b = 0; b < B; b++)
        reduce(q + b * n * d, n, d, 4, mq + b * d, &qs[b]);
    for (int64_t h = 0; h < KV; h++) {
        double vs;
        reduce(k + h * n * d, n, d, 3, mk + h * d, &ks[h]);
        reduce(v + h * n * dv, n, dv, 7, mv, &vs);
        bv[h] = 0;
        for (int64_t a = 0; a < dv; a++)
            bv[h] = fmax(bv[h], mv[a]);
    }
    int st = fr_bounds_from_stats_batch(&p, qs, ks, mq, mk, bv, got, err, sizeof err);
    T_REQUIRE(st == 0, "%s: %s", what, err);
    for (int64_t b = 0; b < B; b++)
        T_CHECK(same(&got[b], &ref[b]), "%s, problem %lld: R %.17g (%s) vs %.17g (%s)", what,
                (long long)b, got[b].R, got[b].R_from, ref[b].R, ref[b].R_from);
    free(q), free(k), free(v), free(mq), free(mk), free(mv);
}

static void test_batch_form(void)
{
    int64_t ns[] = {1, 17, 300};
    for (int in = 0; in < 3; in++) {
        fr_problem p = fr_problem_default(ns[in], 8, 3);
        batch_same_as_compute(p, "rope");
        p.rot.pairs = FR_PAIRS_HALF;
        p.rot.rotary_dim = 4;
        batch_same_as_compute(p, "rope half rotary 4");
        p.rot.kind = FR_ROT_CLIP;
        p.rot.clip = 5;
        batch_same_as_compute(p, "clip 5");
        p.rot.kind = FR_ROT_NONE;
        batch_same_as_compute(p, "none");
    }
    /* past the trigonometry table's size: the offsets computed one by one, still the same */
    batch_same_as_compute(fr_problem_default(16500, 128, 1), "rope, no table");
}

/* The support bound wins when one column dominates: the case where R is not just tau qn kn. */
static void test_support_wins(void)
{
    fr_problem p = fr_problem_default(9, 4, 2);
    p.rot.kind = FR_ROT_NONE;
    double q[9 * 4] = {0}, k[9 * 4] = {0}, v[9 * 2] = {0}, mq[4] = {0}, mk[4] = {0}, qs = 0, ks = 0;
    for (int i = 0; i < 9; i++)
        q[i * 4] = 1, k[i * 4 + 1] = 1, q[i * 4 + 2] = 0.1;
    char err[256];
    fr_bounds ref, got;
    T_REQUIRE(fr_bounds_compute(&p, q, k, v, &ref, err, sizeof err) == 0, "%s", err);
    fr_stats_rows(q, 9, 4, mq, &qs);
    fr_stats_rows(k, 9, 4, mk, &ks);
    T_REQUIRE(fr_bounds_from_stats(&p, qs, ks, mq, mk, 0, &got, err, sizeof err) == 0, "%s", err);
    T_CHECK(strcmp(ref.R_from, "support") == 0, "support should win, got %s", ref.R_from);
    T_CHECK(got.R == ref.R && got.R == 0, "R %g vs %g", got.R, ref.R);
}

static void test_explicit_refused(void)
{
    fr_problem p = fr_problem_default(3, 2, 1);
    p.rot.kind = FR_ROT_EXPLICIT;
    double w[5 * 4] = {0}, m[2] = {0};
    p.rot.w = w;
    fr_bounds b;
    char err[256] = "";
    T_CHECK(fr_bounds_from_stats(&p, 0, 0, m, m, 0, &b, err, sizeof err) == FR_EUSAGE, "status");
    T_CHECK(strstr(err, "explicit") != NULL, "message: %s", err);
    err[0] = 0;
    T_CHECK(fr_bounds_from_stats_batch(&p, m, m, m, m, m, &b, err, sizeof err) == FR_EUSAGE,
            "batch status");
    T_CHECK(strstr(err, "explicit") != NULL, "batch message: %s", err);
}

int main(void)
{
    T_RUN(test_rotations);
    T_RUN(test_batch_form);
    T_RUN(test_support_wins);
    T_RUN(test_explicit_refused);
    return t_done();
}
