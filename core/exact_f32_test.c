/* exact_f32_test.c - the single-precision exact engine against the double one (itself tested
 * against a first-principles attention in exact_test), on the same float inputs: relative 1e-5
 * (normwise per row: the largest error of a row over the largest entry of its reference row),
 * for every rotation kind, mask, odd n, n = 1, dv != d, row subsets, and both of its softmax
 * paths (the a-priori shift and the running maximum). */
#include "internal.h"
#include "test.h"

#include <string.h>

typedef struct {
    float *q, *k, *v;
    double *qd, *kd, *vd; /* the same values, for the double reference */
} qkv;

static qkv make_qkv(const fr_problem *p, double scale, unsigned long long seed)
{
    qkv x;
    int64_t nq = p->n * p->d, nv = p->n * p->dv;
    x.q = malloc((size_t)nq * sizeof *x.q);
    x.k = malloc((size_t)nq * sizeof *x.k);
    x.v = malloc((size_t)nv * sizeof *x.v);
    x.qd = malloc((size_t)nq * sizeof *x.qd);
    x.kd = malloc((size_t)nq * sizeof *x.kd);
    x.vd = malloc((size_t)nv * sizeof *x.vd);
    for (int64_t e = 0; e < nq; e++)
        x.qd[e] = x.q[e] = (float)(scale * t_rand(&seed));
    for (int64_t e = 0; e < nq; e++)
        x.kd[e] = x.k[e] = (float)(scale * t_rand(&seed));
    for (int64_t e = 0; e < nv; e++)
        x.vd[e] = x.v[e] = (float)(scale * t_rand(&seed));
    return x;
}

static void free_qkv(qkv x)
{
    free(x.q);
    free(x.k);
    free(x.v);
    free(x.qd);
    free(x.kd);
    free(x.vd);
}

/* Worst normwise relative error of the float engine on the rows against the double one; a
 * negative value when either fails. */
static double check_rows(const fr_problem *p, const qkv *x, const int64_t *rows, int64_t nrows)
{
    int64_t dv = p->dv;
    float *got = malloc((size_t)(nrows * dv) * sizeof *got);
    double *want = malloc((size_t)(nrows * dv) * sizeof *want);
    char err[256] = "";
    double worst = -1;
    if (fr__exact_rows_f32(p, x->q, x->k, x->v, rows, nrows, got, NULL, err, sizeof err) != FR_OK ||
        fr_exact_rows(p, x->qd, x->kd, x->vd, rows, nrows, want, err, sizeof err) != FR_OK) {
        printf("#   failed: %s\n", err);
    } else {
        worst = 0;
        for (int64_t t = 0; t < nrows; t++) {
            double scale = 0, e = 0;
            for (int64_t o = 0; o < dv; o++)
                scale = fmax(scale, fabs(want[t * dv + o]));
            for (int64_t o = 0; o < dv; o++) {
                double eo = fabs((double)got[t * dv + o] - want[t * dv + o]);
                if (!(eo <= e)) e = eo; /* NaN propagates */
            }
            double rel = e / fmax(scale, 1e-300);
            if (!(rel <= worst)) worst = rel;
        }
    }
    free(got);
    free(want);
    return worst;
}

static void check_masks(fr_problem p, double scale, unsigned long long seed)
{
    qkv x = make_qkv(&p, scale, seed);
    const int64_t windows[] = {-1, 0, 3, 150};
    for (int causal = 0; causal <= 1; causal++)
        for (size_t wi = 0; wi < sizeof windows / sizeof *windows; wi++) {
            p.causal = causal;
            p.window = windows[wi];
            double e = check_rows(&p, &x, NULL, p.n);
            T_CHECK(e >= 0 && e <= 1e-5, "kind %d n %lld d %lld dv %lld causal %d window %lld: %g",
                    (int)p.rot.kind, (long long)p.n, (long long)p.d, (long long)p.dv, causal,
                    (long long)p.window, e);
        }
    free_qkv(x);
}

static void test_rope(void)
{
    check_masks(fr_problem_default(37, 6, 5), 1.0, 1);
    /* several row and key blocks, so that masks cross block boundaries */
    check_masks(fr_problem_default(301, 8, 3), 1.0, 2);
    fr_problem p = fr_problem_default(211, 16, 40);
    p.tau = 1 / sqrt(16.0);
    check_masks(p, 2.0, 3);
}

static void test_rope_half_partial(void)
{
    fr_problem p = fr_problem_default(53, 6, 7);
    p.rot.pairs = FR_PAIRS_HALF;
    p.rot.rotary_dim = 4;
    p.rot.pos_scale = 2.5;
    p.rot.base = 100;
    check_masks(p, 1.0, 4);
}

static void test_none(void)
{
    fr_problem p = fr_problem_default(50, 5, 17);
    p.rot.kind = FR_ROT_NONE;
    p.tau = 1 / sqrt(5.0);
    check_masks(p, 1.0, 5);
}

static void test_clip(void)
{
    fr_problem p = fr_problem_default(290, 8, 4);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 3;
    check_masks(p, 1.0, 6);
    p.rot.clip = 200; /* the clip straddles key blocks */
    p.rot.pairs = FR_PAIRS_HALF;
    check_masks(p, 1.0, 7);
}

static void test_explicit(void)
{
    /* an explicit W equal to RoPE (the rotated path), then a general one (the support path) */
    fr_problem r = fr_problem_default(67, 6, 4);
    int64_t nd = 2 * r.n - 1, dd = r.d * r.d;
    double *w = malloc((size_t)(nd * dd) * sizeof *w);
    for (int64_t t = 0; t < nd; t++)
        fr_rotation_matrix(&r, t - (r.n - 1), w + t * dd);
    fr_problem p = r;
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    T_CHECK(fr_rotation_is_rope_family(&p, 1e-13, NULL, 0), "explicit RoPE not recognised");
    check_masks(p, 1.0, 8);
    unsigned long long s = 9;
    for (int64_t e = 0; e < nd * dd; e++)
        w[e] = (e % dd == 1 || e % dd == 7) ? 0 : t_rand(&s);
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, NULL, 0), "random W taken for RoPE");
    check_masks(p, 1.0, 10);
    free(w);
}

static void test_n1_and_rows(void)
{
    fr_problem p = fr_problem_default(1, 4, 3);
    qkv x = make_qkv(&p, 1.0, 11);
    double e = check_rows(&p, &x, NULL, 1);
    T_CHECK(e >= 0 && e <= 1e-6, "n = 1: %g", e);
    free_qkv(x);
    const int64_t rows[] = {299, 0, 17, 128, 127, 17, 255, 3};
    p = fr_problem_default(300, 8, 5);
    p.causal = 1;
    p.window = 40;
    x = make_qkv(&p, 1.0, 12);
    e = check_rows(&p, &x, rows, 8);
    T_CHECK(e >= 0 && e <= 1e-5, "row subset: %g", e);
    free_qkv(x);
}

static void test_dv_widths(void)
{
    /* dv across the P V kernel's tile widths in float (16 lanes a vector) and remainders */
    const int64_t dvs[] = {1, 15, 16, 17, 32, 33, 64, 65, 128, 130};
    for (size_t t = 0; t < sizeof dvs / sizeof *dvs; t++) {
        fr_problem p = fr_problem_default(70, 3, dvs[t]);
        p.rot.kind = FR_ROT_NONE;
        qkv x = make_qkv(&p, 1.0, 20 + t);
        double e = check_rows(&p, &x, NULL, p.n);
        T_CHECK(e >= 0 && e <= 1e-5, "dv = %lld: %g", (long long)dvs[t], e);
        free_qkv(x);
    }
}

static void test_both_softmax_paths(void)
{
    /* Row i's scores are all -M_i, the far end of the shifted range, with M_i on both sides of
     * the float shift's limit (2 M = 80; beyond ~87 e^-2M leaves the normal range): rows of
     * small bounds take the shift, the others the running maximum. */
    fr_problem p = fr_problem_default(200, 4, 3);
    p.rot.kind = FR_ROT_NONE;
    p.tau = 1;
    qkv x = make_qkv(&p, 1.0, 13);
    for (int64_t i = 0; i < p.n; i++) {
        float c = i < 100 ? 39.5f * (float)i / 99 : 45.0f + 0.5f * (float)(i - 100);
        x.q[i * 4] = c;
        x.k[i * 4] = -1;
        for (int a = 1; a < 4; a++)
            x.q[i * 4 + a] = x.k[i * 4 + a] = 0;
    }
    for (int64_t e = 0; e < p.n * 4; e++) {
        x.qd[e] = x.q[e];
        x.kd[e] = x.k[e];
    }
    double e = check_rows(&p, &x, NULL, p.n);
    T_CHECK(e >= 0 && e <= 1e-5, "scores at -M: %g", e);
    /* and large random entries (scores in the hundreds): the running maximum throughout */
    fr_problem p2 = fr_problem_default(130, 8, 4);
    p2.tau = 1 / sqrt(8.0);
    qkv y = make_qkv(&p2, 30.0, 14);
    e = check_rows(&p2, &y, NULL, p2.n);
    /* the scores' own rounding, ~1e-7 of hundreds, moves the weights by ~1e-5 */
    T_CHECK(e >= 0 && e <= 1e-3, "B = 30: %g", e);
    free_qkv(x);
    free_qkv(y);
}

static void test_errors(void)
{
    fr_problem p = fr_problem_default(10, 4, 4);
    qkv x = make_qkv(&p, 1.0, 15);
    float out[40];
    char err[256] = "";
    x.k[13] = NAN;
    T_CHECK(fr__exact_rows_f32(&p, x.q, x.k, x.v, NULL, 10, out, NULL, err, sizeof err) ==
                FR_EINPUT,
            "NaN in k accepted");
    T_CHECK(strstr(err, "k has a non-finite value at flat index 13") != NULL, "message: %s", err);
    x.k[13] = 0;
    x.v[2] = INFINITY;
    T_CHECK(fr__exact_rows_f32(&p, x.q, x.k, x.v, NULL, 10, out, NULL, err, sizeof err) ==
                FR_EINPUT,
            "Inf in v accepted");
    T_CHECK(fr__exact_rows_f32(&p, x.q, x.k, x.v, NULL, 9, out, NULL, err, sizeof err) == FR_EUSAGE,
            "nrows != n with rows = NULL accepted");
    free_qkv(x);
}

int main(void)
{
    T_RUN(test_rope);
    T_RUN(test_rope_half_partial);
    T_RUN(test_none);
    T_RUN(test_clip);
    T_RUN(test_explicit);
    T_RUN(test_n1_and_rows);
    T_RUN(test_dv_widths);
    T_RUN(test_both_softmax_paths);
    T_RUN(test_errors);
    return t_done();
}
