/* polyfft_impl.h - the polyfft plan's internals, shared by the forward (core/polyfft.c) and its
 * backward (core/polyfft_grad.c), which reuses the plan's monomials, spectra, FFT plan, storage
 * mode, budgets and list of exactly recomputed rows. Not for any other file. */
#ifndef FR_POLYFFT_IMPL_H
#define FR_POLYFFT_IMPL_H

#include "fft.h"
#include "monomial.h"

#define PLAN_BUDGET ((int64_t)768 << 20) /* bytes of stored spectra */
#define EXEC_BUDGET ((int64_t)768 << 20) /* bytes of Z_v (and streamed kernels) per degree */

enum { MODE_PAIRS, MODE_KERNELS, MODE_STREAM };

struct fr__polyfft {
    fr_problem p;
    int literal, degree, mode;
    fr__monomials m;
    fr__fft *fft;
    int64_t N, nb;
    int64_t lo, hi; /* offsets delta the mask keeps: [lo, hi] */
    int64_t cb;     /* columns per block */
    fr__cpx *spec;  /* PAIRS: npairs x nb; KERNELS: nc x nb; both include the 1/N */
    double time[3]; /* last execution, thread-seconds: forward FFTs, accumulation, inverse */
    int64_t *fix;   /* rows recomputed exactly (too few keys for the float FFTs), ascending */
    int64_t nfix;
    int64_t exec_budget; /* the budget cb was sized with (the backward sizes its blocks too) */
    double *coef;        /* P's monomial coefficients [0..degree] (the backward's dW needs P') */
};

/* C = F(scale * circulant column of kernel monomial c), h (N floats) as scratch. */
void fr__polyfft_kernel_spectrum(const fr__polyfft *pl, int64_t c, double scale, float *h,
                                 fr__cpx *C);

/* Threads for one execution (forward or backward) of this plan: 1 for small problems. */
int fr__polyfft_threads(const fr__polyfft *pl);

#endif
