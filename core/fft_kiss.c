/* fft_kiss.c - real FFTs over KissFFT's complex transform (single precision), safe to share
 * across threads.
 *
 * Why not kiss_fftr/kiss_fftri directly: they run the half-length complex FFT into the cfg's own
 * tmpbuf (st->tmpbuf in kiss_fftr.c), so one cfg cannot be shared by threads, and a cfg per
 * thread costs ~20 MB at N = 2^21. kiss_fft() with distinct input and output only reads its
 * cfg (twiddles, factors), so we run it ourselves, into the caller's scratch buffer instead
 * of a shared one, and do kiss_fftr's split/merge step (the "super twiddles") between that
 * buffer and the caller's spectrum. The arithmetic is the same as kiss_fftr's, twiddles
 * computed in double.
 *
 * Why the scratch buffer rather than the output: straight into a cold X (a slot of a large
 * array), a length-32768 transform took 2.5x as long as into a buffer already in cache (523 vs
 * 213 us): its first pass touches every line of the output in a pattern the prefetchers do not
 * follow, so each miss pays the full memory latency. */
#include "fft_impl.h"

#include <kiss_fft.h>
#include <math.h>
#include <stdlib.h>

struct fr__kiss {
    int64_t m;             /* complex length N/2 */
    kiss_fft_cfg fwd, inv; /* complex transforms of length m */
    fr__cpxf *tw;          /* super twiddles e^{-i pi ((k+1)/m + 1/2)}, k = 0..m/2-1 (forward) */
};

int fr__kiss_create(fr__kiss **out, int64_t n)
{
    fr__kiss *k = calloc(1, sizeof *k);
    *out = NULL;
    if (!k) return 0;
    k->m = n / 2;
    k->fwd = kiss_fft_alloc((int)k->m, 0, NULL, NULL);
    k->inv = kiss_fft_alloc((int)k->m, 1, NULL, NULL);
    k->tw = malloc((size_t)(k->m / 2 + 1) * sizeof *k->tw);
    if (!k->fwd || !k->inv || !k->tw) {
        fr__kiss_free(k);
        return 0;
    }
    for (int64_t i = 0; i < k->m / 2 + 1; i++) {
        double ph = -M_PI * ((double)(i + 1) / (double)k->m + 0.5);
        k->tw[i].re = (float)cos(ph);
        k->tw[i].im = (float)sin(ph);
    }
    *out = k;
    return 1;
}

void fr__kiss_free(fr__kiss *k)
{
    if (!k) return;
    kiss_fft_free(k->fwd);
    kiss_fft_free(k->inv);
    free(k->tw);
    free(k);
}

void fr__kiss_forward(const fr__kiss *K, const float *x, fr__cpxf *X, fr__cpxf *S)
{
    int64_t m = K->m;
    /* Even/odd samples as one complex signal of length m; its transform is S[0..m-1]. */
    kiss_fft(K->fwd, (const kiss_fft_cpx *)x, (kiss_fft_cpx *)S);
    float dr = S[0].re, di = S[0].im;
    X[0].re = dr + di;
    X[0].im = 0;
    X[m].re = dr - di;
    X[m].im = 0;
    for (int64_t k = 1; k <= m / 2; k++) {
        fr__cpxf a = S[k], b = S[m - k];
        float f1r = a.re + b.re, f1i = a.im - b.im;
        float f2r = a.re - b.re, f2i = a.im + b.im;
        fr__cpxf t = K->tw[k - 1];
        float twr = f2r * t.re - f2i * t.im, twi = f2r * t.im + f2i * t.re;
        X[k].re = 0.5f * (f1r + twr);
        X[k].im = 0.5f * (f1i + twi);
        X[m - k].re = 0.5f * (f1r - twr);
        X[m - k].im = 0.5f * (twi - f1i);
    }
}

void fr__kiss_inverse(const fr__kiss *K, const fr__cpxf *X, float *x, fr__cpxf *S)
{
    int64_t m = K->m;
    float d0 = X[0].re, dm = X[m].re;
    S[0].re = d0 + dm;
    S[0].im = d0 - dm;
    for (int64_t k = 1; k <= m / 2; k++) {
        fr__cpxf a = X[k], b = X[m - k];
        float ekr = a.re + b.re, eki = a.im - b.im; /* a + conj(b) */
        float tr = a.re - b.re, ti = a.im + b.im;   /* a - conj(b) */
        fr__cpxf t = K->tw[k - 1];                  /* the inverse twiddle is its conjugate */
        float okr = tr * t.re + ti * t.im, oki = ti * t.re - tr * t.im;
        S[k].re = ekr + okr;
        S[k].im = eki + oki;
        S[m - k].re = ekr - okr;
        S[m - k].im = -(eki - oki);
    }
    kiss_fft(K->inv, (const kiss_fft_cpx *)S, (kiss_fft_cpx *)x);
}
