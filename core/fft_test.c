/* fft_test.c - the real FFT layer against a naive DFT in double, round trips, and sharing one
 * plan across threads. */
#include "fft.h"
#include "test.h"

#include <string.h>

/* max |X - DFT(x)| / max |DFT(x)| for one length. */
static double forward_error(int64_t n_min, unsigned long long seed, int64_t *n_out)
{
    fr__fft *f;
    char err[200];
    if (fr__fft_create(&f, n_min, err, sizeof err)) return INFINITY;
    int64_t n = fr__fft_len(f), nb = fr__fft_bins(f);
    *n_out = n;
    float *x = malloc(n * sizeof *x);
    fr__cpx *X = malloc(nb * sizeof *X), *S = malloc(n / 2 * sizeof *S);
    for (int64_t t = 0; t < n; t++)
        x[t] = (float)t_rand(&seed);
    fr__fft_forward(f, x, X, S);
    double emax = 0, ref = 0;
    for (int64_t k = 0; k < nb; k++) {
        double re = 0, im = 0;
        for (int64_t t = 0; t < n; t++) {
            double ph = -2 * M_PI * (double)((k * t) % n) / (double)n;
            re += x[t] * cos(ph);
            im += x[t] * sin(ph);
        }
        emax = fmax(emax, hypot(X[k].re - re, X[k].im - im));
        ref = fmax(ref, hypot(re, im));
    }
    free(x);
    free(X);
    free(S);
    fr__fft_free(f);
    return emax / ref;
}

static void test_fast_size(void)
{
    T_CHECK(fr__fft_fast_size(1) == 2, "%lld", (long long)fr__fft_fast_size(1));
    T_CHECK(fr__fft_fast_size(8) == 8, "%lld", (long long)fr__fft_fast_size(8));
    T_CHECK(fr__fft_fast_size(2 * 1024 - 1) == 2048, "%lld", (long long)fr__fft_fast_size(2047));
    T_CHECK(fr__fft_fast_size(15) == 16, "%lld", (long long)fr__fft_fast_size(15));
    T_CHECK(fr__fft_fast_size(29) == 30, "%lld", (long long)fr__fft_fast_size(29)); /* 15 = 3*5 */
    T_CHECK(fr__fft_fast_size(43) == 48, "%lld", (long long)fr__fft_fast_size(43)); /* 24 */
    for (int64_t m = 1; m < 3000; m += 7) {
        int64_t s = fr__fft_fast_size(m);
        T_CHECK(s >= m && s % 2 == 0, "size %lld for %lld", (long long)s, (long long)m);
    }
}

static void test_against_dft(void)
{
    /* Even and odd half-lengths, composite (2*3*5) and powers of two, and the tiny ones. */
    int64_t sizes[] = {1, 2, 3, 6, 10, 14, 30, 50, 64, 90, 250, 256, 360, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int64_t n = 0;
        double e = forward_error(sizes[i], 7 + i, &n);
        T_CHECK(e < 3e-6, "N = %lld: relative error %.3g", (long long)n, e);
    }
}

static void test_round_trip(void)
{
    int64_t sizes[] = {2, 6, 30, 98, 1000, 4096, 6000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        fr__fft *f;
        char err[200];
        T_REQUIRE(fr__fft_create(&f, sizes[s], err, sizeof err) == 0, "%s", err);
        int64_t n = fr__fft_len(f);
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        int64_t nb = fr__fft_bins(f);
        fr__cpx *X = malloc(nb * sizeof *X), *X0 = malloc(nb * sizeof *X0);
        fr__cpx *S = malloc(n / 2 * sizeof *S);
        unsigned long long seed = 3 + s;
        for (int64_t t = 0; t < n; t++)
            x[t] = (float)t_rand(&seed);
        fr__fft_forward(f, x, X, S);
        memcpy(X0, X, nb * sizeof *X);
        fr__fft_inverse(f, X, y, S);
        double e = 0;
        for (int64_t t = 0; t < n; t++)
            e = fmax(e, fabs(y[t] / (double)n - x[t]));
        T_CHECK(e < 2e-6, "N = %lld: round trip error %.3g", (long long)n, e);
        T_CHECK(memcmp(X, X0, nb * sizeof *X) == 0, "N = %lld: the inverse wrote its input",
                (long long)n);
        free(x);
        free(y);
        free(X);
        free(X0);
        free(S);
        fr__fft_free(f);
    }
}

/* One plan, many threads at once: every result must equal the serial one bit for bit. */
static void test_shared_plan(void)
{
    fr__fft *f;
    char err[200];
    T_REQUIRE(fr__fft_create(&f, 3000, err, sizeof err) == 0, "%s", err);
    int64_t n = fr__fft_len(f), nb = fr__fft_bins(f);
    enum { J = 16 };
    float *x = malloc(J * n * sizeof *x), *y = malloc(J * n * sizeof *y);
    fr__cpx *ser = malloc(J * nb * sizeof *ser), *par = malloc(J * nb * sizeof *par);
    float *yser = malloc(J * n * sizeof *yser);
    unsigned long long seed = 11;
    for (int64_t t = 0; t < J * n; t++)
        x[t] = (float)t_rand(&seed);
    fr__cpx *S = malloc(n / 2 * sizeof *S);
    for (int j = 0; j < J; j++) {
        fr__fft_forward(f, x + j * n, ser + j * nb, S);
        fr__fft_inverse(f, ser + j * nb, yser + j * n, S);
    }
    free(S);
    for (int rep = 0; rep < 4; rep++) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(4)
        for (int j = 0; j < J; j++) {
            fr__cpx *Sj = malloc(n / 2 * sizeof *Sj);
            fr__fft_forward(f, x + j * n, par + j * nb, Sj);
            fr__fft_inverse(f, par + j * nb, y + j * n, Sj);
            free(Sj);
        }
        T_CHECK(memcmp(y, yser, J * n * sizeof *y) == 0, "threads changed the result");
    }
    free(x);
    free(y);
    free(ser);
    free(par);
    free(yser);
    fr__fft_free(f);
}

int main(void)
{
    T_RUN(test_fast_size);
    T_RUN(test_against_dft);
    T_RUN(test_round_trip);
    T_RUN(test_shared_plan);
    return t_done();
}
