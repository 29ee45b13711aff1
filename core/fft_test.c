/* fft_test.c - the FFT layer, every back end: transform sizes, the forward against a DFT summed
 * in long double (within the normwise bound u * stages that fft.h exposes), round trips, one
 * plan shared by many threads, the back ends against each other, and FFTW's wisdom: a
 * round trip through the text, and missing, empty, corrupt or truncated wisdom harmless. */
#include "fft.h"
#include "internal.h"
#include "test.h"

#include <string.h>

static const fr_fft_backend backends[] = {FR_FFT_KISSFFT, FR_FFT_FFTW, FR_FFT_FFTW_FLOAT};
enum { NB = sizeof backends / sizeof *backends };

/* A plan's transforms on double data, whatever its precision: x (N reals) -> X (bins complex,
 * re/im interleaved), and back (X consumed). */
typedef struct {
    fr__fft *f;
    int dbl;
    int64_t n, nb;
    void *x, *X, *S; /* aligned, in the plan's precision */
} tf;

static int tf_open(tf *t, fr_fft_backend b, int64_t n_min)
{
    char err[200];
    memset(t, 0, sizeof *t);
    if (fr__fft_create(&t->f, b, n_min, err, sizeof err)) {
        printf("# %s\n", err);
        return 0;
    }
    t->dbl = fr__fft_is_double(b);
    t->n = fr__fft_len(t->f);
    t->nb = fr__fft_bins(t->f);
    size_t rs = t->dbl ? sizeof(double) : sizeof(float);
    t->x = fr__fft_alloc((size_t)t->n * rs);
    t->X = fr__fft_alloc((size_t)t->nb * 2 * rs);
    t->S = fr__fft_alloc(fr__fft_scratch_bytes(t->f));
    return t->x && t->X && t->S;
}

static void tf_close(tf *t)
{
    fr__fft_free(t->f);
    free(t->x);
    free(t->X);
    free(t->S);
}

static void tf_forward(tf *t, const double *x, double *X)
{
    for (int64_t i = 0; i < t->n; i++)
        if (t->dbl)
            ((double *)t->x)[i] = x[i];
        else
            ((float *)t->x)[i] = (float)x[i];
    if (t->dbl)
        fr__fft_forward_d(t->f, t->x, t->X, t->S);
    else
        fr__fft_forward_f(t->f, t->x, t->X, t->S);
    for (int64_t i = 0; i < 2 * t->nb; i++)
        X[i] = t->dbl ? ((double *)t->X)[i] : ((float *)t->X)[i];
}

static void tf_inverse(tf *t, const double *X, double *x)
{
    for (int64_t i = 0; i < 2 * t->nb; i++)
        if (t->dbl)
            ((double *)t->X)[i] = X[i];
        else
            ((float *)t->X)[i] = (float)X[i];
    if (t->dbl)
        fr__fft_inverse_d(t->f, t->X, t->x, t->S);
    else
        fr__fft_inverse_f(t->f, t->X, t->x, t->S);
    for (int64_t i = 0; i < t->n; i++)
        x[i] = t->dbl ? ((double *)t->x)[i] : ((float *)t->x)[i];
}

/* Inputs exactly representable in float, so that every back end transforms the same data. */
static void rand_input(double *x, int64_t n, unsigned long long seed)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)t_rand(&seed);
}

static void test_fast_size(void)
{
    /* KissFFT: even with a 2,3,5-smooth half; FFTW: even and 7-smooth. */
    int64_t kiss[][2] = {{1, 2}, {8, 8}, {2047, 2048}, {15, 16}, {29, 30}, {43, 48}, {13, 16}};
    int64_t fftw[][2] = {{1, 2}, {8, 8}, {2047, 2048}, {13, 14}, {29, 30}, {43, 48}, {97, 98}};
    for (size_t i = 0; i < sizeof kiss / sizeof *kiss; i++) {
        int64_t s = fr__fft_fast_size(FR_FFT_KISSFFT, kiss[i][0]);
        T_CHECK(s == kiss[i][1], "kissfft %lld -> %lld", (long long)kiss[i][0], (long long)s);
        s = fr__fft_fast_size(FR_FFT_FFTW, fftw[i][0]);
        T_CHECK(s == fftw[i][1], "fftw %lld -> %lld", (long long)fftw[i][0], (long long)s);
    }
    for (int b = 0; b < NB; b++)
        for (int64_t m = 1; m < 3000; m += 7) {
            int64_t s = fr__fft_fast_size(backends[b], m), r = s;
            int maxp = backends[b] == FR_FFT_KISSFFT ? 5 : 7;
            if (backends[b] == FR_FFT_KISSFFT) r /= 2;
            for (int p = 2; p <= maxp; p++)
                while (r % p == 0)
                    r /= p;
            T_CHECK(s >= m && s % 2 == 0 && r == 1, "%s: size %lld for %lld",
                    fr_fft_name(backends[b]), (long long)s, (long long)m);
            /* the smallest such size: no fast size between m and s */
            if (s - 2 >= m)
                T_CHECK(fr__fft_fast_size(backends[b], s - 2) == s, "%s: %lld skipped",
                        fr_fft_name(backends[b]), (long long)(s - 2));
        }
}

static void test_stages(void)
{
    T_CHECK(fr__fft_stage_count(FR_FFT_FFTW, 1024) == 10, "%d",
            fr__fft_stage_count(FR_FFT_FFTW, 1024));
    T_CHECK(fr__fft_stage_count(FR_FFT_KISSFFT, 1 << 20) == 20, "%d",
            fr__fft_stage_count(FR_FFT_KISSFFT, 1 << 20));
    T_CHECK(fr__fft_stage_count(FR_FFT_FFTW, 2 * 3 * 5 * 7) == 1 + 2 + 3 + 3, "%d",
            fr__fft_stage_count(FR_FFT_FFTW, 210));
    T_CHECK(fr__fft_unit_roundoff(FR_FFT_FFTW) == 0x1.0p-53, "double u");
    T_CHECK(fr__fft_unit_roundoff(FR_FFT_KISSFFT) == 0x1.0p-24 &&
                fr__fft_unit_roundoff(FR_FFT_FFTW_FLOAT) == 0x1.0p-24,
            "single u");
}

/* ||X - DFT(x)||_2 / ||DFT(x)||_2, the DFT summed in long double with exact phases. */
static double forward_error(tf *t, const double *x)
{
    int64_t n = t->n, nb = t->nb;
    double *X = malloc(2 * nb * sizeof *X), e2 = 0, r2 = 0;
    tf_forward(t, x, X);
    for (int64_t k = 0; k < nb; k++) {
        long double re = 0, im = 0;
        for (int64_t j = 0; j < n; j++) {
            long double ph = -2 * 3.141592653589793238462643383279502884L *
                             (long double)((k * j) % n) / (long double)n;
            re += x[j] * cosl(ph);
            im += x[j] * sinl(ph);
        }
        /* bins 1 .. N/2 - 1 stand for two of the full spectrum */
        double w = (k == 0 || 2 * k == n) ? 1 : 2;
        e2 += w * (double)((X[2 * k] - re) * (X[2 * k] - re) +
                           (X[2 * k + 1] - im) * (X[2 * k + 1] - im));
        r2 += w * (double)(re * re + im * im);
    }
    free(X);
    return sqrt(e2 / r2);
}

static void test_against_dft(void)
{
    /* Even and odd half-lengths, composite (2*3*5*7) and powers of two, and the tiny ones. */
    int64_t sizes[] = {1, 2, 3, 6, 10, 14, 30, 50, 64, 90, 98, 250, 256, 360, 420, 1000, 2048};
    for (int b = 0; b < NB; b++)
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            tf t;
            T_REQUIRE(tf_open(&t, backends[b], sizes[i]), "plan");
            double *x = malloc(t.n * sizeof *x);
            rand_input(x, t.n, 7 + i);
            double e = forward_error(&t, x);
            double bound =
                fr__fft_unit_roundoff(backends[b]) * fr__fft_stage_count(backends[b], t.n);
            T_CHECK(e <= bound, "%s N = %lld: relative error %.3g above u * stages = %.3g",
                    fr_fft_name(backends[b]), (long long)t.n, e, bound);
            /* ... and not vacuously: the arithmetic is the back end's precision */
            T_CHECK(t.n < 8 || e > bound / 1e4, "%s N = %lld: error %.3g, suspiciously small",
                    fr_fft_name(backends[b]), (long long)t.n, e);
            free(x);
            tf_close(&t);
        }
}

static void test_round_trip(void)
{
    /* 4096: FFTW measures its plan from this size on (fft_fftw.c) */
    int64_t sizes[] = {2, 6, 30, 98, 1000, 2100, 4096};
    for (int b = 0; b < NB; b++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            tf t;
            T_REQUIRE(tf_open(&t, backends[b], sizes[s]), "plan");
            int64_t n = t.n;
            double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y),
                   *X = malloc(2 * t.nb * sizeof *X);
            rand_input(x, n, 3 + s);
            tf_forward(&t, x, X);
            tf_inverse(&t, X, y);
            double e = 0;
            for (int64_t i = 0; i < n; i++)
                e = fmax(e, fabs(y[i] / (double)n - x[i]));
            double tol =
                2 * fr__fft_unit_roundoff(backends[b]) * fr__fft_stage_count(backends[b], n);
            T_CHECK(e < tol, "%s N = %lld: round trip error %.3g", fr_fft_name(backends[b]),
                    (long long)n, e);
            free(x);
            free(y);
            free(X);
            tf_close(&t);
        }
}

/* The back ends agree with each other to their precisions, on mixed-radix sizes too. */
static void test_backends_agree(void)
{
    int64_t sizes[] = {50, 360, 2000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        double *X[NB], ref = 0;
        int64_t n0 = 0, nb0 = 0;
        double *x = NULL;
        for (int b = 0; b < NB; b++) {
            /* one length for all: the largest of the back ends' fast sizes */
            int64_t m = fr__fft_fast_size(FR_FFT_KISSFFT, sizes[s]);
            while (fr__fft_fast_size(FR_FFT_FFTW, m) != m)
                m = fr__fft_fast_size(FR_FFT_KISSFFT, m + 1);
            tf t;
            T_REQUIRE(tf_open(&t, backends[b], m), "plan");
            T_REQUIRE(t.n == m, "%s planned %lld for %lld", fr_fft_name(backends[b]),
                      (long long)t.n, (long long)m);
            if (!x) {
                x = malloc(m * sizeof *x);
                rand_input(x, m, 17 + s);
            }
            n0 = t.n;
            nb0 = t.nb;
            X[b] = malloc(2 * t.nb * sizeof *X[b]);
            tf_forward(&t, x, X[b]);
            tf_close(&t);
        }
        for (int64_t i = 0; i < 2 * nb0; i++)
            ref = fmax(ref, fabs(X[1][i]));
        for (int b = 0; b < NB; b++) {
            double e = 0;
            for (int64_t i = 0; i < 2 * nb0; i++)
                e = fmax(e, fabs(X[b][i] - X[1][i]));
            double tol = 4 * fr__fft_unit_roundoff(backends[b]) *
                         fr__fft_stage_count(backends[b], n0) * sqrt((double)n0);
            T_CHECK(e <= tol * ref, "N = %lld: %s differs from fftw by %.3g (max %.3g)",
                    (long long)n0, fr_fft_name(backends[b]), e / ref, tol);
        }
        for (int b = 0; b < NB; b++)
            free(X[b]);
        free(x);
    }
}

/* One plan, many threads at once: every result must equal the serial one bit for bit. */
static void test_shared_plan(void)
{
    for (int b = 0; b < NB; b++) {
        tf t;
        T_REQUIRE(tf_open(&t, backends[b], 3000), "plan");
        int64_t n = t.n, nb = t.nb;
        size_t rs = t.dbl ? sizeof(double) : sizeof(float);
        int64_t sn = fr__fft_stride(n / 2 + 1) * 2, sb = fr__fft_stride(nb) * 2; /* reals */
        enum { J = 16 };
        char *x = fr__fft_alloc(J * sn * rs), *y = fr__fft_alloc(J * sn * rs);
        char *yser = fr__fft_alloc(J * sn * rs), *Xs = fr__fft_alloc(J * sb * rs);
        memset(yser, 0, J * sn * rs);
        unsigned long long seed = 11;
        for (int64_t i = 0; i < J * sn; i++)
            if (t.dbl)
                ((double *)x)[i] = t_rand(&seed);
            else
                ((float *)x)[i] = (float)t_rand(&seed);
        for (int j = 0; j < J; j++) {
            void *xj = x + j * sn * rs, *Xj = Xs + j * sb * rs, *yj = yser + j * sn * rs;
            if (t.dbl) {
                fr__fft_forward_d(t.f, xj, Xj, t.S);
                fr__fft_inverse_d(t.f, Xj, yj, t.S);
            } else {
                fr__fft_forward_f(t.f, xj, Xj, t.S);
                fr__fft_inverse_f(t.f, Xj, yj, t.S);
            }
        }
        for (int rep = 0; rep < 4; rep++) {
            memset(y, 0, J * sn * rs);
#pragma omp parallel for schedule(dynamic, 1) num_threads(4)
            for (int j = 0; j < J; j++) {
                void *Sj = fr__fft_alloc(fr__fft_scratch_bytes(t.f));
                void *xj = x + j * sn * rs, *Xj = Xs + j * sb * rs, *yj = y + j * sn * rs;
                if (t.dbl) {
                    fr__fft_forward_d(t.f, xj, Xj, Sj);
                    fr__fft_inverse_d(t.f, Xj, yj, Sj);
                } else {
                    fr__fft_forward_f(t.f, xj, Xj, Sj);
                    fr__fft_inverse_f(t.f, Xj, yj, Sj);
                }
                free(Sj);
            }
            T_CHECK(memcmp(y, yser, J * sn * rs) == 0, "%s: threads changed the result",
                    fr_fft_name(backends[b]));
        }
        free(x);
        free(y);
        free(yser);
        free(Xs);
        tf_close(&t);
    }
}

/* Wisdom: what planning learnt comes back out as text that imports again; text that is not
 * wisdom (empty, garbage, truncated, with a valid block first) is refused and harms nothing:
 * the planners still plan and transform correctly. */
static void test_wisdom(void)
{
    tf t;
    T_REQUIRE(tf_open(&t, FR_FFT_FFTW, 1000), "plan"); /* wisdom to export */
    tf_close(&t);
    T_REQUIRE(tf_open(&t, FR_FFT_FFTW_FLOAT, 1000), "plan");
    tf_close(&t);
    char *w = fr_fft_wisdom_export();
    T_REQUIRE(w && strstr(w, "fftw_wisdom") && strstr(w, "fftwf_wisdom"), "export: %s",
              w ? w : "NULL");
    T_CHECK(fr_fft_wisdom_import(w) == FR_OK, "its own export refused");
    size_t len = strlen(w);
    char *cut = malloc(len + 64);
    memcpy(cut, w, len / 2);
    cut[len / 2] = '\0';
    const char *bad[] = {"",
                         "   \n",
                         "not wisdom",
                         "(fftw-3.3.10 fftw_wisdom #x1 #x2 #x3 #x4\n",
                         "(fftw-9.9 fftw_wisdom (nonsense 1 2 3))",
                         ")(",
                         "\x01\xff((((",
                         cut};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        T_CHECK(fr_fft_wisdom_import(bad[i]) == FR_EINPUT, "bad wisdom %zu accepted", i);
    /* a valid block then garbage: refused as a whole text */
    snprintf(cut, len + 64, "%.*s garbage", (int)len, w);
    T_CHECK(fr_fft_wisdom_import(cut) == FR_EINPUT, "trailing garbage accepted");
    free(cut);
    free(w);
    /* still planning and transforming right, at a size the wisdom has and one it has not */
    int64_t sizes[] = {1000, 2310};
    for (int b = 1; b < NB; b++)
        for (int s = 0; s < 2; s++) {
            T_REQUIRE(tf_open(&t, backends[b], sizes[s]), "plan after bad wisdom");
            double *x = malloc(t.n * sizeof *x), *y = malloc(t.n * sizeof *y),
                   *X = malloc(2 * t.nb * sizeof *X);
            rand_input(x, t.n, 5);
            tf_forward(&t, x, X);
            tf_inverse(&t, X, y);
            double e = 0;
            for (int64_t i = 0; i < t.n; i++)
                e = fmax(e, fabs(y[i] / (double)t.n - x[i]));
            T_CHECK(e < 1e-5, "%s N = %lld after bad wisdom: round trip %.3g",
                    fr_fft_name(backends[b]), (long long)t.n, e);
            free(x);
            free(y);
            free(X);
            tf_close(&t);
        }
}

static void test_names(void)
{
    for (int b = 0; b < FR_NFFTS; b++) {
        fr_fft_backend got;
        T_CHECK(fr_fft_parse(fr_fft_name((fr_fft_backend)b), &got) == FR_OK && (int)got == b,
                "name %s", fr_fft_name((fr_fft_backend)b));
    }
    fr_fft_backend got;
    T_CHECK(fr_fft_parse("fftw-double", &got) == FR_EUSAGE, "unknown name accepted");
    T_CHECK(fr__fft_resolve(FR_FFT_AUTO) != FR_FFT_AUTO, "auto unresolved");
}

/* auto: single precision where its rounding does not bind and it is faster by the cost model;
 * double FFTW where single precision needs a higher degree or cannot reach eps at all. */
static void test_choose(void)
{
    fr_problem p = fr_problem_default(65536, 4, 4);
    int g;
    fr_fft_backend b = fr__fft_choose(&p, 8, 5, 5, &g);
    double ts[FR_NMETHODS], td[FR_NMETHODS];
    fr_predict_times_cost(NULL, &p, 5, 8, b, ts);
    fr_predict_times_cost(NULL, &p, 5, 8, FR_FFT_FFTW, td);
    T_CHECK(g == 5 && ts[FR_METHOD_POLYFFT] <= td[FR_METHOD_POLYFFT], "same degree: %s (g %d)",
            fr_fft_name(b), g);
    b = fr__fft_choose(&p, 8, -1, 9, &g);
    T_CHECK(b == FR_FFT_FFTW && g == 9, "single impossible: %s (g %d)", fr_fft_name(b), g);
    b = fr__fft_choose(&p, 8, 14, 6, &g);
    T_CHECK(b == FR_FFT_FFTW && g == 6, "single binding: %s (g %d)", fr_fft_name(b), g);
    b = fr__fft_choose(&p, 8, -1, -1, &g);
    T_CHECK(b == FR_FFT_AUTO && g == -1, "none: %s (g %d)", fr_fft_name(b), g);
}

int main(void)
{
    T_RUN(test_fast_size);
    T_RUN(test_stages);
    T_RUN(test_against_dft);
    T_RUN(test_round_trip);
    T_RUN(test_backends_agree);
    T_RUN(test_shared_plan);
    T_RUN(test_wisdom);
    T_RUN(test_names);
    T_RUN(test_choose);
    return t_done();
}
