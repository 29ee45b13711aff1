/* polyfft_kernels_t.h - the kernel spectra in one precision (REAL, CPX: core/real_t.h),
 * instantiated twice by core/polyfft_kernels.c, whose kernel_values and kernel_jobs it uses.
 * No include guard: see core/real_t.h. */
#include "real_t.h"

/* h += the circulant column of kernel monomial c times scale. */
static void T_(kernel_table_add)(const fr__polyfft *pl, int64_t c, double scale, REAL *h)
{
    enum { CH = 512 };
    double v[CH];
    int64_t N = pl->N;
    for (int64_t d0 = pl->lo; d0 <= pl->hi; d0 += CH) {
        int64_t len = pl->hi - d0 + 1 < CH ? pl->hi - d0 + 1 : CH;
        kernel_values(pl, c, scale, d0, len, v);
        int64_t i = 0;
        for (; i < len && d0 + i <= 0; i++)
            h[-(d0 + i)] += (REAL)v[i];
        for (; i < len; i++)
            h[N - (d0 + i)] += (REAL)v[i];
    }
}

void T_(fr__polyfft_kernel_spectrum)(const fr__polyfft *pl, int64_t c, double scale, void *buf,
                                     CPX *C)
{
    void *x, *X, *scr;
    fr__polyfft_area(pl, buf, &x, &X, &scr);
    memset(x, 0, (size_t)pl->N * sizeof(REAL));
    T_(kernel_table_add)(pl, c, scale, x);
    FFT_FORWARD(pl->fft, x, C, scr);
}

/* One transform: kernel a's spectrum, or with b >= 0 an even and an odd kernel's at once. */
static void T_(kernel_job)(const fr__polyfft *pl, int64_t a, int64_t b, void *buf, REAL *const *out)
{
    int64_t nb = pl->nb;
    double scale = 1.0 / (double)pl->N; /* the inverse transform's */
    void *x, *X, *scr;
    fr__polyfft_area(pl, buf, &x, &X, &scr);
    CPX *C = X;
    memset(x, 0, (size_t)pl->N * sizeof(REAL));
    T_(kernel_table_add)(pl, a, scale, x);
    if (b >= 0) T_(kernel_table_add)(pl, b, scale, x);
    FFT_FORWARD(pl->fft, x, C, scr);
    for (int k = 0; k < 2; k++) {
        int64_t c = k ? b : a;
        if (c < 0) break;
        REAL *o = out[c];
        /* An even kernel's spectrum is real, an odd one's imaginary: alone, the other part is
         * rounding; paired, it is the other kernel's. */
        if (pl->kpar[c] == FR_PAR_EVEN)
            for (int64_t i = 0; i < nb; i++)
                o[i] = C[i].re;
        else if (pl->kpar[c] == FR_PAR_ODD)
            for (int64_t i = 0; i < nb; i++)
                o[i] = C[i].im;
        else
            memcpy(o, C, (size_t)nb * sizeof *C);
    }
}

int T_(fr__polyfft_kernel_spectra)(const fr__polyfft *pl, const int64_t *list, int64_t cnt,
                                   REAL *const *out, const fr__thread_bufs *tb)
{
    int64_t *job, nj = kernel_jobs(pl, list, cnt, &job);
    if (nj < 0) return 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = 0; j < nj; j++)
        T_(kernel_job)(pl, job[2 * j], job[2 * j + 1], tb->p[omp_get_thread_num()], out);
    free(job);
    return 1;
}
