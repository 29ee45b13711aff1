/* fft.h - the FFT back ends behind the polyfft pipeline: real transforms of one length N,
 * planned once and executed many times from many threads at once.
 *
 * Three back ends (fr_fft_backend): KissFFT in single precision (core/fft_kiss.c), FFTW in
 * double and in single precision (core/fft_fftw.c). A plan has one precision; the pipeline is
 * written once for a real type and instantiated for both (core/real_t.h), and calls the _f or
 * the _d transforms accordingly. The pipeline never calls a library itself. */
#ifndef FR_FFT_H
#define FR_FFT_H

#include "fastrope.h"

#include <stddef.h>
#include <stdint.h>

/* Layout-compatible with kiss_fft_cpx and fftwf_complex (two floats), and with fftw_complex. */
typedef struct {
    float re, im;
} fr__cpxf;
typedef struct {
    double re, im;
} fr__cpxd;

/* ---- the back ends' arithmetic: what a rounding bound needs ------------------------------- */

/* FR_FFT_AUTO as a back end that exists: FFTW in double. (auto's choice proper, which can
 * prefer a single-precision back end when its rounding does not bind, is fr__fft_choose.) */
fr_fft_backend fr__fft_resolve(fr_fft_backend b);
/* 1 when the back end's transforms, spectra and spectral sums are double, 0 for single. */
int fr__fft_is_double(fr_fft_backend b);
const char *fr__fft_precision(fr_fft_backend b); /* "double" or "single" */

/* The unit roundoff of everything the pass does in the back end's precision: the transforms
 * (twiddles included: computed in double, rounded once), the time samples they read (each
 * rounded once from double), the kernel spectra and the spectral sums. 2^-24 or 2^-53. What
 * follows the inverse transform (products with the monomials, the sums over monomials and
 * degrees, the division by D) is in double whatever the back end. */
double fr__fft_unit_roundoff(fr_fft_backend b);

/* Butterfly stages of one length-N real transform (forward or inverse), counted as the depth
 * of a radix-2 transform would be: log2 N for N a power of two. Mixed radix: a radix-p stage
 * counts ceil(log2 p) (3 -> 2, 5 -> 3, 7 -> 3), as deep as the radix-2 levels it stands for, so
 * the count is the sum of ceil(log2 p) over N's prime factors. KissFFT: a half-length complex
 * transform (radix-4 stages, each two levels, then 2, 3, 5) plus the real split step, which is
 * the level of N's factor 2 over N/2. FFTW chooses its algorithm per size when planning
 * (Cooley-Tukey steps between straight-line codelets up to radix 64, each itself a
 * generated FFT of that depth, for the 7-smooth N this layer asks of it): the same count is
 * the model for it, not a theorem. core/fft_test.c checks that a normwise relative error of
 * u * stages holds, with room, on random data at every back end and a range of N. */
int fr__fft_stage_count(fr_fft_backend b, int64_t N);

/* The smallest transform length >= n_min that the back end does fast: even with a half of only
 * the factors 2, 3, 5 for KissFFT (its radices), even with only the factors 2, 3, 5, 7 for
 * FFTW (its fast codelets). */
int64_t fr__fft_fast_size(fr_fft_backend b, int64_t n_min);

/* auto's choice for polyfft (for the plan's degree decision to call): the fastest back end by
 * the cost model (fr_predict_times_cost) among those whose precision lets some degree certify
 * eps. g_single, g_double: the smallest degree that does in single and in double precision
 * (-1: none). Single precision wins only where its rounding does not bind (g_single ==
 * g_double: the same polynomial, faster transforms); otherwise double FFTW. *degree receives
 * the chosen back end's degree; FR_FFT_AUTO when neither precision can. */
fr_fft_backend fr__fft_choose(const fr_problem *p, int64_t support, int g_single, int g_double,
                              int *degree);

/* ---- memory --------------------------------------------------------------------------------- */

/* Every array a transform reads or writes starts on this boundary: FFTW executes a plan on new
 * arrays only with the alignment the plan was made with, and its SIMD codelets need it. */
#define FR__FFT_ALIGN 64

/* bytes (any size), FR__FFT_ALIGN-aligned (2 MB and huge pages from 4 MB, fr__alloc_big);
 * free with free(). NULL when out of memory. */
void *fr__fft_alloc(size_t bytes);
/* Complex entries between consecutive spectra of `bins` bins in one array, so that each starts
 * aligned: bins rounded up to 8 (64 bytes of float complex, 128 of double). */
static inline int64_t fr__fft_stride(int64_t bins)
{
    return (bins + 7) / 8 * 8;
}

/* ---- plans ---------------------------------------------------------------------------------- */

typedef struct fr__fft fr__fft;

/* Plan real transforms of length fr__fft_fast_size(b, n_min) (b not AUTO). FFTW plans are
 * measured (FFTW_MEASURE: instant for the sizes its wisdom already holds), under a lock: FFTW's
 * planner is not thread-safe. */
int fr__fft_create(fr__fft **f, fr_fft_backend b, int64_t n_min, char *err, size_t errlen);
void fr__fft_free(fr__fft *f);
int64_t fr__fft_len(const fr__fft *f);  /* N */
int64_t fr__fft_bins(const fr__fft *f); /* N/2 + 1 */
fr_fft_backend fr__fft_backend(const fr__fft *f);
/* Bytes of scratch a transform needs from its caller (one per thread, reused; 0 for FFTW). */
size_t fr__fft_scratch_bytes(const fr__fft *f);

/* X[k] = sum_t x[t] e^{-2 pi i k t / N}, k = 0..N/2; x has N reals, read only, X is another
 * array. Thread-safe: the plan is only read; any number of threads may use one plan with their
 * own arrays. Every array FR__FFT_ALIGN-aligned. scratch: fr__fft_scratch_bytes of the
 * caller's. The _f functions are for single-precision plans, the _d ones for double. */
void fr__fft_forward_f(const fr__fft *f, const float *x, fr__cpxf *X, void *scratch);
void fr__fft_forward_d(const fr__fft *f, const double *x, fr__cpxd *X, void *scratch);

/* x[t] = sum_k X[k] e^{+2 pi i k t / N} over the full Hermitian spectrum (unnormalised: the
 * round trip multiplies by N). X (N/2+1 bins) is consumed: FFTW's complex-to-real transforms
 * overwrite their input (keeping it costs time), so the caller may not read it afterwards. */
void fr__fft_inverse_f(const fr__fft *f, fr__cpxf *X, float *x, void *scratch);
void fr__fft_inverse_d(const fr__fft *f, fr__cpxd *X, double *x, void *scratch);

#endif
