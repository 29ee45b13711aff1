/* fft.h - the FFT back end behind the polyfft pipeline: real transforms of one length N,
 * planned once and executed many times from many threads at once.
 *
 * The pipeline never calls KissFFT itself, so that a double-precision back end can replace this
 * one without touching it. Precision: single (KissFFT float); the spectra are float complex. */
#ifndef FR_FFT_H
#define FR_FFT_H

#include <stddef.h>
#include <stdint.h>

/* Layout-compatible with kiss_fft_cpx (two floats). */
typedef struct {
    float re, im;
} fr__cpx;

typedef struct fr__fft fr__fft;

/* The smallest even length >= n_min whose half has only the factors 2, 3, 5 (fast for KissFFT). */
int64_t fr__fft_fast_size(int64_t n_min);

/* Plan real transforms of length fr__fft_fast_size(n_min). */
int fr__fft_create(fr__fft **f, int64_t n_min, char *err, size_t errlen);
void fr__fft_free(fr__fft *f);
int64_t fr__fft_len(const fr__fft *f);  /* N */
int64_t fr__fft_bins(const fr__fft *f); /* N/2 + 1 */

/* X[k] = sum_t x[t] e^{-2 pi i k t / N}, k = 0..N/2. x has N floats (read only). Thread-safe:
 * the plan is only read; any number of threads may use one plan with their own buffers.
 * scratch: N/2 complex of the caller's (one per thread, reused): KissFFT's recursive passes run
 * there, in cache, and only the final split step writes X. Why: straight into a cold X (a slot
 * of a large array), a length-32768 transform took 2.5x as long as into a buffer already in
 * cache (523 vs 213 us): its first pass touches every line of the output in a pattern the
 * prefetchers do not follow, so each miss pays the full memory latency. X may be x itself
 * (given N + 2 floats there): x is consumed before X is written. */
void fr__fft_forward(const fr__fft *f, const float *x, fr__cpx *X, fr__cpx *scratch);

/* x[t] = sum_k X[k] e^{+2 pi i k t / N} over the full Hermitian spectrum (unnormalised: the
 * round trip multiplies by N). X (N/2+1 bins) is read only; scratch as for the forward. */
void fr__fft_inverse(const fr__fft *f, const fr__cpx *X, float *x, fr__cpx *scratch);

#endif
