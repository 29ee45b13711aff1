/* exact_test.c - fr_exact_rows against a naive O(n^2 d^2) attention written here from first
 * principles (explicit W_delta matrices, full score rows), for every rotation kind and mask. */
#include "internal.h"
#include "test.h"

#include <float.h>
#include <omp.h>
#include <string.h>

/* W_delta of (clipped) RoPE, built as a product of plane rotations, one per pair. */
static void naive_rope_w(int64_t d, int64_t r, double base, int half, double pos_scale,
                         int64_t clip, int64_t delta, double *w)
{
    if (clip >= 0) delta = delta > clip ? clip : delta < -clip ? -clip : delta;
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b < d; b++)
            w[a * d + b] = a == b;
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a = half ? m : 2 * m, b = half ? m + r / 2 : 2 * m + 1;
        double ang = ((double)delta / pos_scale) * pow(base, -(2.0 * m) / (double)r);
        w[a * d + a] = cos(ang);
        w[b * d + b] = cos(ang);
        w[a * d + b] = -sin(ang); /* column-vector rotation [[c, -s], [s, c]] */
        w[b * d + a] = sin(ang);
    }
}

/* All 2n-1 matrices of a problem of kind ROPE/CLIP/NONE from first principles. */
static double *naive_w_all(const fr_problem *p)
{
    int64_t n = p->n, d = p->d, r = p->rot.rotary_dim ? p->rot.rotary_dim : d;
    double *w = malloc((size_t)((2 * n - 1) * d * d) * sizeof *w);
    for (int64_t t = 0; t < 2 * n - 1; t++) {
        if (p->rot.kind == FR_ROT_EXPLICIT)
            memcpy(w + t * d * d, p->rot.w + t * d * d, (size_t)(d * d) * sizeof *w);
        else
            naive_rope_w(d, p->rot.kind == FR_ROT_NONE ? 0 : r, p->rot.base,
                         p->rot.pairs == FR_PAIRS_HALF, p->rot.pos_scale,
                         p->rot.kind == FR_ROT_CLIP ? p->rot.clip : -1, t - (n - 1), w + t * d * d);
    }
    return w;
}

/* T_i for one row i: every score of the row, masked, then a max-subtracted softmax. */
static void naive_row(const fr_problem *p, const double *w, const double *q, const double *k,
                      const double *v, int64_t i, double *out)
{
    int64_t n = p->n, d = p->d, dv = p->dv;
    double *s = malloc((size_t)n * sizeof *s);
    double mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        int keep = (!p->causal || j <= i) && (p->window < 0 || llabs(j - i) <= p->window);
        s[j] = NAN;
        if (!keep) continue;
        const double *wd = w + (j - i + n - 1) * d * d;
        double acc = 0;
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++)
                acc += q[i * d + a] * wd[a * d + b] * k[j * d + b];
        s[j] = p->tau * acc;
        if (s[j] > mx) mx = s[j];
    }
    double den = 0;
    for (int64_t o = 0; o < dv; o++)
        out[o] = 0;
    for (int64_t j = 0; j < n; j++) {
        if (isnan(s[j])) continue;
        double e = exp(s[j] - mx);
        den += e;
        for (int64_t o = 0; o < dv; o++)
            out[o] += e * v[j * dv + o];
    }
    for (int64_t o = 0; o < dv; o++)
        out[o] /= den;
    free(s);
}

typedef struct {
    double *q, *k, *v;
} qkv;

static qkv make_qkv(const fr_problem *p, double scale, unsigned long long seed)
{
    qkv x;
    x.q = malloc((size_t)(p->n * p->d) * sizeof(double));
    x.k = malloc((size_t)(p->n * p->d) * sizeof(double));
    x.v = malloc((size_t)(p->n * p->dv) * sizeof(double));
    for (int64_t e = 0; e < p->n * p->d; e++)
        x.q[e] = scale * t_rand(&seed);
    for (int64_t e = 0; e < p->n * p->d; e++)
        x.k[e] = scale * t_rand(&seed);
    for (int64_t e = 0; e < p->n * p->dv; e++)
        x.v[e] = scale * t_rand(&seed);
    return x;
}

static void free_qkv(qkv x)
{
    free(x.q);
    free(x.k);
    free(x.v);
}

/* Max relative error (entry error over the largest reference entry) of fr_exact_rows on the
 * given rows against the naive rows; negative when fr_exact_rows fails. */
static double check_rows(const fr_problem *p, const qkv *x, const int64_t *rows, int64_t nrows)
{
    double *w = naive_w_all(p);
    double *got = malloc((size_t)(nrows * p->dv) * sizeof *got);
    double *want = malloc((size_t)(p->dv) * sizeof *want);
    char err[256] = "";
    int st = fr_exact_rows(p, x->q, x->k, x->v, rows, nrows, got, err, sizeof err);
    double worst = -1;
    if (st == FR_OK) {
        worst = 0;
        for (int64_t t = 0; t < nrows; t++) {
            naive_row(p, w, x->q, x->k, x->v, rows ? rows[t] : t, want);
            double scale = 0, e = 0;
            for (int64_t o = 0; o < p->dv; o++)
                scale = fmax(scale, fabs(want[o]));
            for (int64_t o = 0; o < p->dv; o++) {
                double eo = fabs(got[t * p->dv + o] - want[o]);
                if (!(eo <= e)) e = eo; /* NaN propagates */
            }
            double rel = e / fmax(scale, 1e-300);
            if (!(rel <= worst)) worst = rel;
        }
    } else {
        printf("#   fr_exact_rows failed: %s\n", err);
    }
    free(w);
    free(got);
    free(want);
    return worst;
}

/* Every mask combination on one problem. */
static void check_masks(fr_problem p, double scale, unsigned long long seed, double tol)
{
    qkv x = make_qkv(&p, scale, seed);
    const int64_t windows[] = {-1, 0, 3, 150};
    for (int causal = 0; causal <= 1; causal++)
        for (size_t wi = 0; wi < sizeof windows / sizeof *windows; wi++) {
            p.causal = causal;
            p.window = windows[wi];
            double e = check_rows(&p, &x, NULL, p.n);
            T_CHECK(e >= 0 && e <= tol, "kind %d n %lld d %lld causal %d window %lld: rel err %g",
                    (int)p.rot.kind, (long long)p.n, (long long)p.d, causal, (long long)p.window,
                    e);
        }
    free_qkv(x);
}

static void test_rope_interleaved(void)
{
    fr_problem p = fr_problem_default(37, 6, 5);
    check_masks(p, 1.0, 1, 1e-12);
}

static void test_rope_multi_block(void)
{
    /* n spans several key and row blocks, so masks cross block boundaries. */
    fr_problem p = fr_problem_default(301, 8, 3);
    check_masks(p, 1.0, 2, 1e-12);
}

static void test_rope_half_partial(void)
{
    fr_problem p = fr_problem_default(45, 8, 9);
    p.rot.pairs = FR_PAIRS_HALF;
    p.rot.rotary_dim = 4;
    p.rot.pos_scale = 2.5;
    p.rot.base = 100;
    check_masks(p, 1.0, 3, 1e-12);
    p.rot.pairs = FR_PAIRS_INTERLEAVED;
    check_masks(p, 1.0, 4, 1e-12);
}

static void test_n1(void)
{
    fr_problem p = fr_problem_default(1, 4, 3);
    qkv x = make_qkv(&p, 1.0, 5);
    double out[3];
    char err[256];
    T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 1, out, err, sizeof err) == FR_OK, "%s", err);
    for (int o = 0; o < 3; o++)
        T_CHECK(out[o] == x.v[o], "n = 1 gives V itself: %.17g vs %.17g", out[o], x.v[o]);
    /* so does every row of a window 0, and the first row under a causal mask */
    p = fr_problem_default(40, 4, 3);
    free_qkv(x);
    x = make_qkv(&p, 1.0, 6);
    double o40[120];
    p.window = 0;
    T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 40, o40, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(memcmp(o40, x.v, sizeof o40) == 0, "window 0 is not V itself");
    p.window = -1;
    p.causal = 1;
    T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 40, o40, err, sizeof err) == FR_OK, "%s", err);
    T_CHECK(memcmp(o40, x.v, 3 * sizeof *o40) == 0, "causal row 0 is not V_0");
    free_qkv(x);
}

static void test_none_and_sdpa(void)
{
    fr_problem p = fr_problem_default(50, 5, 7);
    p.rot.kind = FR_ROT_NONE;
    p.tau = 1 / sqrt(5.0);
    check_masks(p, 1.0, 6, 1e-12);
}

static void test_clip(void)
{
    fr_problem p = fr_problem_default(290, 8, 4);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 3;
    check_masks(p, 1.0, 7, 1e-12);
    p.rot.clip = 0; /* W is R_0 = I inside, constant rotations never apply: still clip mode */
    p.n = 40;
    check_masks(p, 1.0, 8, 1e-12);
    p.rot.clip = 200; /* straddles blocks at |delta| = 200 */
    p.n = 290;
    p.rot.pairs = FR_PAIRS_HALF;
    check_masks(p, 1.0, 9, 1e-12);
}

static void test_clip_really_differs(void)
{
    /* guards against a clip that is silently ignored */
    fr_problem p = fr_problem_default(30, 4, 2);
    qkv x = make_qkv(&p, 1.0, 10);
    double a[60], b[60];
    char err[256];
    T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 30, a, err, sizeof err) == FR_OK, "%s", err);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 2;
    T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 30, b, err, sizeof err) == FR_OK, "%s", err);
    fr_diff df = fr_compare(a, b, 60);
    T_CHECK(df.max_abs > 1e-3, "clipped and plain RoPE agree (%g)", df.max_abs);
    free_qkv(x);
}

static void test_explicit_rope_equals_rope(void)
{
    fr_problem p = fr_problem_default(67, 6, 4);
    p.rot.pairs = FR_PAIRS_HALF;
    double *w = naive_w_all(&p);
    qkv x = make_qkv(&p, 1.0, 11);
    double *a = malloc(67 * 4 * sizeof *a), *b = malloc(67 * 4 * sizeof *b);
    char err[256];
    for (int causal = 0; causal <= 1; causal++) {
        p.causal = causal;
        p.rot.kind = FR_ROT_ROPE;
        p.rot.w = NULL;
        T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 67, a, err, sizeof err) == FR_OK, "%s",
                  err);
        p.rot.kind = FR_ROT_EXPLICIT;
        p.rot.w = w;
        T_REQUIRE(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 67, b, err, sizeof err) == FR_OK, "%s",
                  err);
        fr_diff df = fr_compare(b, a, 67 * 4);
        T_CHECK(df.max_abs < 1e-12, "explicit RoPE W differs from RoPE by %g", df.max_abs);
    }
    check_masks(p, 1.0, 12, 1e-12);
    free(a);
    free(b);
    free(w);
    free_qkv(x);
}

static void test_explicit_general(void)
{
    /* a random sparse-ish W: no per-position rotation, goes through the support */
    fr_problem p = fr_problem_default(140, 4, 3);
    unsigned long long s = 13;
    double *w = malloc((size_t)(279 * 16) * sizeof *w);
    for (int64_t e = 0; e < 279 * 16; e++) {
        double u = t_rand(&s);
        w[e] = (e % 16 == 1 || e % 16 == 6) ? 0 : u; /* two entries outside the support */
    }
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    T_CHECK(!fr_rotation_is_rope_family(&p, 1e-9, NULL, 0), "random W recognised as RoPE family");
    check_masks(p, 1.0, 14, 1e-12);
    free(w);
}

static void test_rows_subset(void)
{
    const int64_t rows[] = {299, 0, 17, 128, 127, 17, 255, 3};
    fr_problem p = fr_problem_default(300, 8, 5);
    fr_rot_kind kinds[] = {FR_ROT_ROPE, FR_ROT_CLIP};
    for (int kk = 0; kk < 2; kk++)
        for (int causal = 0; causal <= 1; causal++) {
            p.rot.kind = kinds[kk];
            p.rot.clip = 5;
            p.causal = causal;
            p.window = causal ? 40 : -1;
            qkv x = make_qkv(&p, 1.0, 15 + causal);
            double e = check_rows(&p, &x, rows, 8);
            T_CHECK(e >= 0 && e <= 1e-12, "rows subset kind %d causal %d: rel err %g", kk, causal,
                    e);
            e = check_rows(&p, &x, rows + 2, 1);
            T_CHECK(e >= 0 && e <= 1e-12, "single row: rel err %g", e);
            free_qkv(x);
        }
}

static void test_large_entries(void)
{
    /* B = 30: scores reach thousands; the running maximum must keep exp finite. */
    fr_problem p = fr_problem_default(130, 8, 4);
    p.tau = 1 / sqrt(8.0);
    qkv x = make_qkv(&p, 30.0, 17);
    double e = check_rows(&p, &x, NULL, p.n);
    T_CHECK(e >= 0 && e <= 1e-12, "B = 30: rel err %g", e);
    p.causal = 1;
    p.window = 7;
    e = check_rows(&p, &x, NULL, p.n);
    T_CHECK(e >= 0 && e <= 1e-12, "B = 30 masked: rel err %g", e);
    free_qkv(x);
}

static void test_shift_edges(void)
{
    /* Every score of row i equals -M_i (k_j = -q_i's direction), the far end of the shifted
     * softmax's range: weights exp(-2 M_i) down to e^-590, still normal numbers; and rows on
     * both sides of the shift's limit (2 M = 600; beyond ~709, e^-2M underflows), so that blocks of
     * shifted rows and blocks that fall back to the running maximum are both exercised. */
    fr_problem p = fr_problem_default(200, 4, 3);
    p.rot.kind = FR_ROT_NONE;
    p.tau = 1;
    qkv x = make_qkv(&p, 1.0, 23);
    for (int64_t i = 0; i < p.n; i++) {
        double c = i < 100 ? 295.0 * (double)i / 99 : 340.0 + 0.8 * (double)(i - 100);
        x.q[i * 4 + 0] = c;
        x.q[i * 4 + 1] = x.q[i * 4 + 2] = x.q[i * 4 + 3] = 0;
        x.k[i * 4 + 0] = -1;
        x.k[i * 4 + 1] = x.k[i * 4 + 2] = x.k[i * 4 + 3] = 0;
    }
    double e = check_rows(&p, &x, NULL, p.n);
    T_CHECK(e >= 0 && e <= 1e-12, "equal scores at -M: rel err %g", e);
    /* distinct scores spread over [-2M, 0] */
    for (int64_t j = 0; j < p.n; j++)
        x.k[j * 4 + 0] = -1 + 2.0 * (double)j / (double)(p.n - 1);
    e = check_rows(&p, &x, NULL, p.n);
    T_CHECK(e >= 0 && e <= 1e-12, "spread scores: rel err %g", e);
    p.causal = 1;
    e = check_rows(&p, &x, NULL, p.n);
    T_CHECK(e >= 0 && e <= 1e-12, "spread scores, causal: rel err %g", e);
    free_qkv(x);
}

static void test_dv_widths(void)
{
    /* dv across the P V kernel's tile widths (1, 2 and 4+ vectors, and remainders), d odd */
    const int64_t dvs[] = {1, 8, 9, 16, 17, 24, 33, 40, 64, 72};
    for (size_t t = 0; t < sizeof dvs / sizeof *dvs; t++) {
        fr_problem p = fr_problem_default(70, 3, dvs[t]);
        p.rot.kind = FR_ROT_NONE;
        qkv x = make_qkv(&p, 1.0, 40 + t);
        double e = check_rows(&p, &x, NULL, p.n);
        T_CHECK(e >= 0 && e <= 1e-12, "dv = %lld: rel err %g", (long long)dvs[t], e);
        free_qkv(x);
    }
}

static void test_inside_parallel_batch(void)
{
    /* Called from inside a batch loop that is itself parallel: same answers as serial. */
    fr_problem p = fr_problem_default(200, 4, 4);
    p.causal = 1;
    enum { NB = 4 };
    qkv x[NB];
    double *serial = malloc(NB * 200 * 4 * sizeof *serial),
           *par = malloc(NB * 200 * 4 * sizeof *par);
    int st_all = 0;
    for (int b = 0; b < NB; b++) {
        x[b] = make_qkv(&p, 1.0, 20 + b);
        st_all |= fr_exact_rows(&p, x[b].q, x[b].k, x[b].v, NULL, 200, serial + b * 800, NULL, 0);
    }
#pragma omp parallel for reduction(| : st_all)
    for (int b = 0; b < NB; b++)
        st_all |= fr_exact_rows(&p, x[b].q, x[b].k, x[b].v, NULL, 200, par + b * 800, NULL, 0);
    T_CHECK(st_all == 0, "a call failed");
    T_CHECK(memcmp(serial, par, NB * 800 * sizeof *par) == 0, "nested call differs");
    for (int b = 0; b < NB; b++)
        free_qkv(x[b]);
    free(serial);
    free(par);
}

static void test_errors(void)
{
    fr_problem p = fr_problem_default(5, 4, 2);
    qkv x = make_qkv(&p, 1.0, 30);
    double out[10];
    char err[256] = "";
    x.k[7] = NAN;
    T_CHECK(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 5, out, err, sizeof err) == FR_EINPUT,
            "NaN in k accepted");
    T_CHECK(strstr(err, "k") && strstr(err, "7"), "message names k and index 7: %s", err);
    x.k[7] = 0;
    int64_t bad = 5;
    T_CHECK(fr_exact_rows(&p, x.q, x.k, x.v, &bad, 1, out, err, sizeof err) == FR_EUSAGE,
            "row 5 of 5 accepted");
    T_CHECK(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 4, out, err, sizeof err) == FR_EUSAGE,
            "nrows != n accepted");
    p.d = 3;
    T_CHECK(fr_exact_rows(&p, x.q, x.k, x.v, NULL, 5, out, err, sizeof err) == FR_EUSAGE,
            "odd d accepted for RoPE");
    free_qkv(x);
}

/* The vector exp (libmvec) the engine relies on stays within glibc's documented 4 ulp of the
 * scalar exp (measured: 3 ulp at worst, on ~2% of arguments; results are weighted averages, so
 * this costs far less than the 1e-12 the engine promises). */
#pragma omp declare simd notinbranch
extern double exp(double);

static double scalar_exp(double x)
{
    return exp(x);
}
static double (*volatile scalar_exp_ptr)(double) = scalar_exp;

static void test_vector_exp_accuracy(void)
{
    enum { N = 1 << 16 };
    double *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    unsigned long long s = 40;
    for (int i = 0; i < N; i++)
        x[i] = (i % 4 == 0 ? 700 : 40) * t_rand(&s);
    x[0] = -INFINITY;
    x[1] = -800;
    x[2] = 0;
#pragma omp simd
    for (int i = 0; i < N; i++)
        y[i] = exp(x[i]);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double r = scalar_exp_ptr(x[i]);
        double ulp = r > 0 ? nextafter(r, INFINITY) - r : DBL_MIN;
        double e = fabs(y[i] - r) / ulp;
        if (!(e <= worst)) worst = e;
    }
    T_CHECK(y[0] == 0 && y[1] == 0 && y[2] == 1, "exp(-inf), exp(-800), exp(0) = %g %g %g", y[0],
            y[1], y[2]);
    T_CHECK(worst <= 4, "vector exp differs from scalar exp by %g ulp", worst);
    printf("# vector exp vs scalar exp: max %.2f ulp over %d values\n", worst, N);
    free(x);
    free(y);
}

int main(void)
{
    T_RUN(test_rope_interleaved);
    T_RUN(test_rope_multi_block);
    T_RUN(test_rope_half_partial);
    T_RUN(test_n1);
    T_RUN(test_none_and_sdpa);
    T_RUN(test_clip);
    T_RUN(test_clip_really_differs);
    T_RUN(test_explicit_rope_equals_rope);
    T_RUN(test_explicit_general);
    T_RUN(test_rows_subset);
    T_RUN(test_large_entries);
    T_RUN(test_shift_edges);
    T_RUN(test_dv_widths);
    T_RUN(test_inside_parallel_batch);
    T_RUN(test_errors);
    T_RUN(test_vector_exp_accuracy);
    return t_done();
}
