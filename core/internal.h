/* internal.h - what the core's files share with each other and not with users.
 * Names here start with fr__ (two underscores): not part of the public API. */
#ifndef FASTROPE_INTERNAL_H
#define FASTROPE_INTERNAL_H

#include "fastrope.h"

#include <stdarg.h>

/* Format one line into err (if not NULL) and return status: `return fr__err(...)`. */
int fr__err(char *err, size_t errlen, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Overflow-checked size arithmetic: 0 on overflow (or a negative operand), 1 otherwise. */
int fr__mul_ok(int64_t a, int64_t b, int64_t *out);

/* A buffer of bytes for large arrays touched once or a few times (free with free()). Why: in
 * this project's VM a first-touch 4 KB page fault costs about 1 us (512 MB: 1.34 s to touch,
 * 16 ms the second time), as much as the arithmetic on the buffers of polyrope at low degree
 * or of a polyfft pass; from 4 MB on, the buffer is 2 MB aligned and asks for transparent huge
 * pages (transparent_hugepage = madvise), 512 times fewer faults. */
void *fr__alloc_big(size_t bytes);

/* Per-thread work buffers for the OpenMP threads of the next parallel region: one of bytes per
 * thread (64-byte aligned), each allocated and zeroed by the thread that will use it. Why:
 * with one allocation shared out by the calling thread, the second thread's inverse FFTs in a
 * polyfft pass ran 2.9x slower (560 vs 195 us at N = 32768, n = 16384) than out of buffers it
 * had allocated and first touched itself; page faults and alignment were ruled out, the cause
 * was not pinned down (this VM's placement of memory by the vCPU that first touches it is the
 * likely one). */
typedef struct {
    int n;    /* threads */
    void **p; /* p[t]: thread t's buffer */
} fr__thread_bufs;
int fr__thread_bufs_alloc(fr__thread_bufs *b, size_t bytes); /* 1, or 0 when out of memory */
void fr__thread_bufs_free(fr__thread_bufs *b);

/* The exact forward's score loop goes parallel from this many scores (rows x keys): a fresh
 * process's first team costs 5-7 ms to start in this project's VM plus ~10 ms of first-touch
 * faults, which a single thread at ~1.5 ns per score wins back only past ~16M scores (n ~ 4096
 * unmasked; `fastrope run --method exact` at n = 1024, d = 4 took 13 ms on two threads). The
 * cost model follows the same rule. */
#define FR_EXACT_PAR_MIN_SCORES ((double)(1 << 24))

/* The exact forward's blocks (core/exact_impl.h), in both precisions: BR query rows meet BC
 * keys at a time; row i's sums run over ascending key blocks of FR_EXACT_BC keys, each block's
 * part summed in vector lanes first (the summation structure exact_impl.h describes, for a
 * rounding bound of the exact path). */
#define FR_EXACT_BR 32
#define FR_EXACT_BC 128

/* fr_exact_rows in single precision (core/exact_f32.c): float in, float out, float throughout
 * but for the O(n d) set-up; the batch layer's fr_execute_f32 dispatches here. */
int fr__exact_rows_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                       const int64_t *rows, int64_t nrows, float *out, char *err, size_t errlen);

/* ---- rotation (core/rotation.c) ------------------------------------------------------------ */

/* The support S of W and its kernel functions w_s(delta) = W_delta[a_s][b_s]. */
typedef struct {
    int64_t n;  /* offsets -(n-1)..n-1, stored at delta + n - 1 */
    int64_t ns; /* |S| */
    int *a, *b; /* S = {(a[s], b[s])} */
    double *w;  /* ns x (2n-1): w[s * (2n-1) + delta + n - 1] */
} fr__support;

int fr__support_build(const fr_problem *p, fr__support *s, char *err, size_t errlen);
void fr__support_free(fr__support *s);

/* Rows i0..i0+cnt-1 of x (n x d, row stride d) each rotated by its own position
 * (R_i x_i, ALGORITHM.md 1) into out (cnt x d). Only for the RoPE family. */
void fr__rotate_rows(const fr_problem *p, const double *x, int64_t i0, int64_t cnt, double *out);

/* RoPE/clipped RoPE only: the r/2 pairs (a[m], b[m]) and their angular frequencies
 * freq[m] = theta_m / pos_scale, so that R_p rotates pair m by p * freq[m]. Returns r/2. */
int64_t fr__rope_pairs(const fr_problem *p, int64_t *a, int64_t *b, double *freq);

/* ---- polynomial (core/poly.c) ---------------------------------------------------------------- */

/* The rounding floor of the float FFTs in polyfft on ||T_fast - T||_inf, for P = coef on
 * [-R, R] and transforms of length 2^log2n: c * 2^-24 * log2n * kappa(R) * B_v with
 * kappa(R) = e^R sum_k |c_k| R^k (c measured, see poly.c). */
double fr__poly_fft_floor(double R, const double *coef, int degree, double B_v, double log2n);

/* The support bound's sum (ALGORITHM.md 2, before tau): max over the offsets of
 * sum_{(a,b) in S} |W_delta[a,b]| mq[a] mk[b], with mq, mk the per-column max |entries| of Q and
 * K; O(d) per distinct offset for the RoPE kinds (core/bounds.c, shared by core/stats.c). */
double fr__support_sum(const fr_problem *p, const double *mq, const double *mk);
/* B, B / sqrt(ln n) and R (the smallest bound that applies, with a rounding slack) from the
 * reductions: max row norms qn, kn, the spectral norm bound wnorm of W, per-column max |Q|, |K|
 * (out->B_q, B_k, B_v already set). One function, so that `check` gets `run`'s R to the bit. */
void fr__bounds_finish(const fr_problem *p, double qn, double kn, double wnorm, const double *mq,
                       const double *mk, fr_bounds *out);

/* ---- method back ends ------------------------------------------------------------------------ */

/* polyfft (core/polyfft.c): coef[0..degree] are the monomial coefficients of P. */
typedef struct fr__polyfft fr__polyfft;
int fr__polyfft_create(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                       int literal, char *err, size_t errlen);
int fr__polyfft_execute(fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *out, char *err, size_t errlen);
void fr__polyfft_info(const fr__polyfft *pl, fr_plan_info *info); /* fills the count fields */
void fr__polyfft_free(fr__polyfft *pl);
/* fr__polyfft_create with explicit memory budgets (bytes of stored kernel spectra; bytes of a
 * pass's spectra of one degree), so tests can force each storage mode and column blocking. */
int fr__polyfft_create_budget(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                              int literal, int64_t plan_budget, int64_t exec_budget, char *err,
                              size_t errlen);
/* Where the kernel spectra live: 1 kept by the plan, 2 computed by each pass, -1 literal. */
int fr__polyfft_mode(const fr__polyfft *pl);

/* polyrope (core/polyrope.c): the factorised path, RoPE family only. */
typedef struct fr__polyrope fr__polyrope;
int fr__polyrope_create(fr__polyrope **pl, const fr_problem *p, const double *coef, int degree,
                        char *err, size_t errlen);
int fr__polyrope_execute(fr__polyrope *pl, const double *q, const double *k, const double *v,
                         double *out, char *err, size_t errlen);
void fr__polyrope_info(const fr__polyrope *pl, fr_plan_info *info);
void fr__polyrope_free(fr__polyrope *pl);
/* For tests: the plan's polyrope back end (NULL for another method), and the work from which it
 * uses every thread (tests lower it to exercise the threaded sweeps on small n). */
fr__polyrope *fr__plan_polyrope(fr_plan *pl);
void fr__polyrope_set_par_units(fr__polyrope *pl, double units);

/* Backward of the fast methods (core/polyfft_grad.c, core/polyrope_grad.c): arguments as
 * fr_execute_backward. */
int fr__polyfft_backward(fr__polyfft *pl, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, char *err,
                         size_t errlen);
int fr__polyrope_backward(fr__polyrope *pl, const double *q, const double *k, const double *v,
                          const double *dout, const double *target, double *t, double *dq,
                          double *dk, double *dv, double *loss, char *err, size_t errlen);

/* The argument checks every backward makes (core/backward.c): exactly one of dout and target,
 * the required tensors present, no NaN/Inf in the inputs (naming the tensor). who prefixes the
 * usage messages. */
int fr__backward_check(const fr_problem *p, const char *who, const double *q, const double *k,
                       const double *v, const double *dout, const double *target, const double *dq,
                       const double *dk, const double *dv, char *err, size_t errlen);

/* Counting helper shared by the monomial code and the cost model: C(n, k), saturating at
 * INT64_MAX. */
int64_t fr__binom(int64_t n, int64_t k);

#endif
