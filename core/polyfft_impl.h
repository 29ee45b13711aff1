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

/* The kernel monomials that the alphas of degree g use, each once, for the streamed mode: their
 * list clist[0..count) and cslot[c] = c's place in it (-1 when unused). Returns the count. */
static inline int64_t fr__polyfft_degree_kernels(const fr__monomials *m, int g, int64_t *cslot,
                                                 int64_t *clist)
{
    int64_t ncl = 0;
    for (int64_t c = 0; c < m->nc; c++)
        cslot[c] = -1;
    for (int64_t t = m->a_first[g]; t < m->a_first[g + 1]; t++)
        if (cslot[m->a_c[t]] < 0) {
            cslot[m->a_c[t]] = ncl;
            clist[ncl++] = m->a_c[t];
        }
    return ncl;
}

/* Threads for one execution (forward or backward) of this plan: 1 for small problems. */
int fr__polyfft_threads(const fr__polyfft *pl);

#endif
