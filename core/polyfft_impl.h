/* polyfft_impl.h - the polyfft plan's internals, shared by the forward (core/polyfft.c), its
 * backward (core/polyfft_grad.c), the Toeplitz pass both run (core/polyfft_pass.c) and the
 * kernel spectra (core/polyfft_kernels.c): the plan's monomials, spectra, FFT plan and its
 * precision, storage mode, budgets and exactly recomputed rows. Not for any other file.
 *
 * Precision: the spectra, the FFTs' time samples and the spectral sums are in the FFT back
 * end's precision (REAL: float or double, pl->dbl); everything else is double. The functions
 * that touch them exist twice, name_f and name_d (core/real_t.h); the budgets are in bytes, so
 * a double plan keeps half as many spectra in the same memory. */
#ifndef FR_POLYFFT_IMPL_H
#define FR_POLYFFT_IMPL_H

#include "fft.h"
#include "monomial.h"

#include <string.h>

/* Bytes of kernel spectra a plan keeps (a batch then pays their FFTs once); beyond, each pass
 * computes one degree's at a time into memory it reuses for every degree. Why small: memory a
 * process touches first costs ~2-5 ms per MB on this kind of machine (the kernel zeroes it),
 * as much as the transforms that fill it, and one degree's spectra are under half of all of
 * them (n = 64K, d = 4, degree 5: 28 MB instead of 63). */
#define PLAN_BUDGET ((int64_t)16 << 20)
#define EXEC_BUDGET ((int64_t)768 << 20) /* bytes of one pass's spectra of one degree */

/* Where the kernel spectra live: computed by the plan and kept (KERNELS), or computed by each
 * pass, degree by degree (STREAM: #c more FFTs per pass, for n too large to keep them). The
 * values match fr__polyfft_mode's. */
enum { MODE_KERNELS = 1, MODE_STREAM = 2 };

/* Parity of a kernel on the kept offsets, and so of its spectrum: NONE complex (nb complex
 * stored), EVEN real, ODD imaginary (nb floats stored: the part that is not zero). */
enum { FR_PAR_NONE, FR_PAR_EVEN, FR_PAR_ODD };

struct fr__polyfft {
    fr_problem p;
    int literal, degree, mode;
    fr__monomials m;
    fr__fft *fft;
    int dbl;       /* the back end's precision: double (1) or float (0) spectra */
    int64_t rs;    /* bytes of one REAL */
    int64_t N, nb; /* transform length, bins */
    int64_t nbs;   /* complex entries between spectra in one array (aligned, >= nb) */
    int64_t area_spec, area_scratch, area_bytes; /* a thread's FFT area (fr__polyfft_area) */
    int64_t lo, hi;                              /* offsets delta the mask keeps: [lo, hi] */
    unsigned char *kpar;                         /* per kernel monomial: FR_PAR_* */
    unsigned char *ppar; /* per (u, v) pair: its alphas' common kernel parity, or NONE */
    int64_t *koff;       /* KERNELS: kernel monomial c's spectrum is (REAL *)spec + koff[c] */
    void *spec;          /* KERNELS: the spectra (REAL), packed by parity, including the 1/N of
                          * the inverse transform */
    int64_t *fix;        /* rows recomputed exactly (too few keys for the float FFTs), ascending */
    int64_t nfix;
    int64_t exec_budget; /* bytes a pass may hold in spectra of one degree: sizes its blocks */
    double *coef;        /* P's monomial coefficients [0..degree] (the backward's dW needs P') */
};

static inline int64_t fr__align(int64_t bytes)
{
    return (bytes + FR__FFT_ALIGN - 1) / FR__FFT_ALIGN * FR__FFT_ALIGN;
}

/* A thread's FFT area, at the start of its buffer (pl->area_bytes): N time samples (REAL) at
 * 0, one spectrum (nb CPX) at area_spec, the back end's scratch at area_scratch, each aligned
 * for the transforms. Thread buffers (fr__thread_bufs) start aligned. */
static inline void fr__polyfft_area(const fr__polyfft *pl, void *buf, void **x, void **X,
                                    void **scratch)
{
    *x = buf;
    *X = (char *)buf + pl->area_spec;
    *scratch = (char *)buf + pl->area_scratch;
}

/* out[c] = F(circulant column of kernel monomial c) / N, packed by its parity
 * (fr__polyfft_kernel_reals(pl, c) reals), for c in list[0..cnt); threads over transforms,
 * each on the FFT area of its buffer in tb (core/polyfft_kernels.c). An even and an odd kernel
 * share one transform: F(e + o) = E + O with E real and O imaginary, so its real part is E and
 * its imaginary part O / i (half the kernel FFTs under a symmetric mask). Returns 0 when out of
 * memory. */
int fr__polyfft_kernel_spectra_f(const fr__polyfft *pl, const int64_t *list, int64_t cnt,
                                 float *const *out, const fr__thread_bufs *tb);
int fr__polyfft_kernel_spectra_d(const fr__polyfft *pl, const int64_t *list, int64_t cnt,
                                 double *const *out, const fr__thread_bufs *tb);
int64_t fr__polyfft_kernel_reals(const fr__polyfft *pl, int64_t c);
/* C (nb complex) = F(circulant column of kernel monomial c * scale), on the FFT area at buf
 * (C may be the area's spectrum): the literal algorithm's one kernel per alpha. */
void fr__polyfft_kernel_spectrum_f(const fr__polyfft *pl, int64_t c, double scale, void *buf,
                                   fr__cpxf *C);
void fr__polyfft_kernel_spectrum_d(const fr__polyfft *pl, int64_t c, double scale, void *buf,
                                   fr__cpxd *C);
/* The parity of every kernel monomial and (u, v) pair (pl->kpar, pl->ppar); 0 when out of
 * memory. */
int fr__polyfft_parities(fr__polyfft *pl);

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

/* One Toeplitz pass (core/polyfft_pass.c): for every output monomial o and column x of ain,
 *   y_o[x](i) = sum_{alpha -> (o, in)} coef_alpha sum_j c_alpha(j - i) in(j) x(j)
 * with in on the K side and o on the Q side, or (transposed) the reverse with every kernel
 * reflected; then one of two consumers. Rows are n x d (xin, xout) and n x (dv + 1) (ain, bout),
 * row-major. */
typedef struct {
    int transposed;
    const double *xin, *xout; /* the rows the input and output monomials are evaluated on */
    const double *ain;        /* the input columns x */
    /* values (num not NULL, transposed = 0 only): num ((dv+1) x n) += o(i) y_o[x](i), and y_o
     * stored in ystore ((nu - ukeep) x (dv+1) x n floats) for o >= ukeep, if ystore is given */
    double *num;
    void *ystore;  /* REAL */
    int64_t ukeep; /* values: y_o kept from here on; gradients (forward): outputs below only */
    /* gradients (num NULL): grad (n x d) += sum_o (d o / d xout)(i) sum_x bout_x(i) y_o[x](i),
     * and with dvals (n x dv, transposed only) += o(i) y_o[x](i) for the columns of V */
    const double *bout;
    double *grad, *dvals;
    /* may be NULL: hears of the transforms done; once canceled, the pass stops early (its
     * outputs then hold nothing usable) */
    fr__prog *pg;
} fr__pass;

/* Returns 1 (also when ps->pg was canceled), or 0 when out of memory. */
int fr__polyfft_pass(const fr__polyfft *pl, const fr__pass *ps);

/* out[0..n) = the monomial with exponents e at every row of xt, the rows column-major (d x n,
 * fr__transpose); a chunk of rows at a time, vectorised over the rows. */
void fr__polyfft_mono(const fr__polyfft *pl, const unsigned char *e, const double *xt, double *out);

/* buf[0..N) = mono[j] col[j] for j < n, 0 beyond: an FFT input (core/polyfft_pass.c). */
void fr__polyfft_fill_f(const fr__polyfft *pl, const double *mono, const double *col, float *buf);
void fr__polyfft_fill_d(const fr__polyfft *pl, const double *mono, const double *col, double *buf);

/* acc[0..n) += mono[i] y[i]: an FFT output into its sum. */
void fr__polyfft_gather_f(int64_t n, const double *mono, const float *y, double *acc);
void fr__polyfft_gather_d(int64_t n, const double *mono, const double *y, double *acc);

/* A column-major copy of the rows x cols row-major a (malloc'd; NULL when out of memory). */
double *fr__transpose(const double *a, int64_t rows, int64_t cols);

/* Threads for one execution (forward or backward) of this plan: 1 for small problems. */
int fr__polyfft_threads(const fr__polyfft *pl);

#endif
