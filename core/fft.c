/* fft.c - real FFTs over KissFFT's complex transform, safe to share across threads.
 *
 * Why not kiss_fftr/kiss_fftri directly: they run the half-length complex FFT into the cfg's own
 * tmpbuf (st->tmpbuf in kiss_fftr.c), so one cfg cannot be shared by threads, and a cfg per
 * thread costs ~20 MB at N = 2^21. kiss_fft() with distinct input and output only reads its
 * cfg (twiddles, factors), so we run it ourselves, into the caller's scratch buffer instead
 * of a shared one, and do kiss_fftr's split/merge step (the "super twiddles") between that
 * buffer and the caller's spectrum. The arithmetic is the
 * same as kiss_fftr's, twiddles computed in double. */
#include "fft.h"

#include "internal.h"

#include <kiss_fft.h>
#include <math.h>
#include <stdlib.h>

struct fr__fft {
    int64_t n;             /* real length N (even) */
    int64_t m;             /* complex length N/2 */
    kiss_fft_cfg fwd, inv; /* complex transforms of length m */
    fr__cpx *tw;           /* super twiddles e^{-i pi ((k+1)/m + 1/2)}, k = 0..m/2-1 (forward) */
};

int64_t fr__fft_fast_size(int64_t n_min)
{
    if (n_min < 2) n_min = 2;
    int64_t half = (n_min + 1) / 2;
    for (;; half++) {
        int64_t r = half;
        while (r % 2 == 0)
            r /= 2;
        while (r % 3 == 0)
            r /= 3;
        while (r % 5 == 0)
            r /= 5;
        if (r == 1) return 2 * half;
    }
}

int fr__fft_create(fr__fft **out, int64_t n_min, char *err, size_t errlen)
{
    *out = NULL;
    int64_t n = fr__fft_fast_size(n_min);
    if (n / 2 > INT32_MAX)
        return fr__err(err, errlen, FR_EUSAGE, "FFT length %lld too large", (long long)n);
    fr__fft *f = calloc(1, sizeof *f);
    if (!f) return fr__err(err, errlen, FR_ENOMEM, "out of memory planning an FFT");
    f->n = n;
    f->m = n / 2;
    f->fwd = kiss_fft_alloc((int)f->m, 0, NULL, NULL);
    f->inv = kiss_fft_alloc((int)f->m, 1, NULL, NULL);
    f->tw = malloc((size_t)(f->m / 2 + 1) * sizeof *f->tw);
    if (!f->fwd || !f->inv || !f->tw) {
        fr__fft_free(f);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory planning an FFT of length %lld",
                       (long long)n);
    }
    for (int64_t k = 0; k < f->m / 2 + 1; k++) {
        double ph = -M_PI * ((double)(k + 1) / (double)f->m + 0.5);
        f->tw[k].re = (float)cos(ph);
        f->tw[k].im = (float)sin(ph);
    }
    *out = f;
    return FR_OK;
}

void fr__fft_free(fr__fft *f)
{
    if (!f) return;
    kiss_fft_free(f->fwd);
    kiss_fft_free(f->inv);
    free(f->tw);
    free(f);
}

int64_t fr__fft_len(const fr__fft *f)
{
    return f->n;
}
int64_t fr__fft_bins(const fr__fft *f)
{
    return f->m + 1;
}

void fr__fft_forward(const fr__fft *f, const float *x, fr__cpx *X, fr__cpx *S)
{
    int64_t m = f->m;
    /* Even/odd samples as one complex signal of length m; its transform is S[0..m-1]. */
    kiss_fft(f->fwd, (const kiss_fft_cpx *)x, (kiss_fft_cpx *)S);
    float dr = S[0].re, di = S[0].im;
    X[0].re = dr + di;
    X[0].im = 0;
    X[m].re = dr - di;
    X[m].im = 0;
    for (int64_t k = 1; k <= m / 2; k++) {
        fr__cpx a = S[k], b = S[m - k];
        float f1r = a.re + b.re, f1i = a.im - b.im;
        float f2r = a.re - b.re, f2i = a.im + b.im;
        fr__cpx t = f->tw[k - 1];
        float twr = f2r * t.re - f2i * t.im, twi = f2r * t.im + f2i * t.re;
        X[k].re = 0.5f * (f1r + twr);
        X[k].im = 0.5f * (f1i + twi);
        X[m - k].re = 0.5f * (f1r - twr);
        X[m - k].im = 0.5f * (twi - f1i);
    }
}

void fr__fft_inverse(const fr__fft *f, const fr__cpx *X, float *x, fr__cpx *S)
{
    int64_t m = f->m;
    float d0 = X[0].re, dm = X[m].re;
    S[0].re = d0 + dm;
    S[0].im = d0 - dm;
    for (int64_t k = 1; k <= m / 2; k++) {
        fr__cpx a = X[k], b = X[m - k];
        float ekr = a.re + b.re, eki = a.im - b.im; /* a + conj(b) */
        float tr = a.re - b.re, ti = a.im + b.im;   /* a - conj(b) */
        fr__cpx t = f->tw[k - 1];                   /* the inverse twiddle is its conjugate */
        float okr = tr * t.re + ti * t.im, oki = ti * t.re - tr * t.im;
        S[k].re = ekr + okr;
        S[k].im = eki + oki;
        S[m - k].re = ekr - okr;
        S[m - k].im = -(eki - oki);
    }
    kiss_fft(f->inv, (const kiss_fft_cpx *)S, (kiss_fft_cpx *)x);
}
