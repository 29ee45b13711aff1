/* fft_impl.h - the FFT layer's plan, shared by its dispatcher (core/fft.c) and its back ends
 * (core/fft_kiss.c, core/fft_fftw.c). Not for any other file. */
#ifndef FR_FFT_IMPL_H
#define FR_FFT_IMPL_H

#include "fft.h"

typedef struct fr__kiss fr__kiss;

struct fr__fft {
    fr_fft_backend b; /* KISSFFT, FFTW or FFTW_FLOAT */
    int64_t n;        /* real length N (even) */
    fr__kiss *kiss;   /* KISSFFT */
    void *fwd, *inv;  /* FFTW: fftw_plan or fftwf_plan (r2c and c2r, out of place) */
};

/* KissFFT (core/fft_kiss.c): real transforms of even length n, single precision; scratch n/2
 * complex. */
int fr__kiss_create(fr__kiss **k, int64_t n);
void fr__kiss_free(fr__kiss *k);
void fr__kiss_forward(const fr__kiss *k, const float *x, fr__cpxf *X, fr__cpxf *scratch);
void fr__kiss_inverse(const fr__kiss *k, const fr__cpxf *X, float *x, fr__cpxf *scratch);

/* FFTW (core/fft_fftw.c): f->fwd and f->inv for f->b and f->n. */
int fr__fftw_plan(fr__fft *f, char *err, size_t errlen);
void fr__fftw_destroy(fr__fft *f);
void fr__fftw_forward_f(const fr__fft *f, const float *x, fr__cpxf *X);
void fr__fftw_forward_d(const fr__fft *f, const double *x, fr__cpxd *X);
void fr__fftw_inverse_f(const fr__fft *f, fr__cpxf *X, float *x);
void fr__fftw_inverse_d(const fr__fft *f, fr__cpxd *X, double *x);

#endif
