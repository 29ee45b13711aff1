/* internal.h - what the core's files share with each other and not with users.
 * Names here start with fr__ (two underscores): not part of the public API. */
#ifndef FASTROPE_INTERNAL_H
#define FASTROPE_INTERNAL_H

#include "fastrope.h"
#include "fastrope_planner.h"

#include <stdarg.h>

/* Format one line into err (if not NULL) and return status: `return fr__err(...)`. */
int fr__err(char *err, size_t errlen, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- progress and cancellation (core/progress.c) ------------------------------------------ */

/* One call's progress: the caller's callback, the phase, the part [lo, lo + span] of the phase
 * that the work now running covers (nested work narrows it), and the cancel flag. Only one
 * thread reports (the calling thread, or thread 0 of a parallel region it opens: never threads
 * of a region nested in another's); any thread may poll the flag. NULL everywhere means none. */
typedef struct {
    fr_progress_fn fn;
    void *user;
    const char *phase;
    double lo, span;
    double last, next; /* the last clock read, the earliest time of the next report */
    int every, left;   /* steps between clock reads, steps left before the next */
    int cancel;        /* set (atomically) once the callback returned non-zero */
} fr__prog;
typedef struct {
    double lo, span;
} fr__prog_range;

/* Starts phase (reported at 0 at once); returns 1 when the callback asks to cancel. */
int fr__prog_start(fr__prog *pg, fr_progress_fn fn, void *user, const char *phase);
/* Fraction f of the current part done: reports it when a report is due (a few a second; the
 * clock is read every few milliseconds of steps). The reporting thread only. 1: canceled. */
int fr__prog_step(fr__prog *pg, double f);
/* The same, reporting now (ends of phases). */
int fr__prog_report(fr__prog *pg, double f);
/* Any thread: 1 once canceled. */
int fr__prog_canceled(const fr__prog *pg);
/* The part [a, b] of the current part becomes current; restore with what it returns. */
fr__prog_range fr__prog_narrow(fr__prog *pg, double a, double b);
void fr__prog_restore(fr__prog *pg, fr__prog_range r);
/* FR_ECANCELED, with "<phase> canceled" in err. */
int fr__prog_err(const fr__prog *pg, char *err, size_t errlen);

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

/* Exact attention in double for problems of fewer keys than the engine's key block, with a
 * per-position rotation (core/exact_small.c): one problem per thread, no tiles. Its plan holds
 * what every problem of the shape shares (the rotation's trigonometry). From one full block
 * on the engine is as fast or faster (n = 128: 32 vs 35 us at d = 4, 218 vs 329 us at
 * d = 64; below, at n = 64, 60 vs 8.5 us at d = 4 and 164 vs 85 us at d = 64). */
#define FR_SMALL_EXACT_MAX_N (FR_EXACT_BC - 1)
typedef struct fr__small_exact fr__small_exact;
/* 1 when p (one problem) fits: n <= FR_SMALL_EXACT_MAX_N and a RoPE-family rotation. */
int fr__small_exact_fits(const fr_problem *p);
int fr__small_exact_create(fr__small_exact **se, const fr_problem *p, char *err, size_t errlen);
/* All n rows of one problem into out (n x dv); lse (n, or NULL) as fr__exact_rows_lse's. */
int fr__small_exact_rows(const fr__small_exact *se, const double *q, const double *k,
                         const double *v, double *out, double *lse, char *err, size_t errlen);
void fr__small_exact_free(fr__small_exact *se);

/* fr_exact_rows on all rows, also giving each row's log-sum-exp lse_i = log sum_j exp(s_ij)
 * (n values): the backward's first pass. */
int fr__exact_rows_lse(const fr_problem *p, const double *q, const double *k, const double *v,
                       double *out, double *lse, fr__prog *pg, char *err, size_t errlen);

/* fr_exact_rows in single precision (core/exact_f32.c): float in, float out, float throughout
 * but for the O(n d) set-up; the batch layer's fr_execute_f32 dispatches here. */
int fr__exact_rows_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                       const int64_t *rows, int64_t nrows, float *out, fr__prog *pg, char *err,
                       size_t errlen);
/* Its fr__exact_rows_lse (lse in float). */
int fr__exact_rows_lse_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                           float *out, float *lse, fr__prog *pg, char *err, size_t errlen);
/* fr__rotate_rows for float rows: each row goes through double and is rounded once. */
void fr__rotate_rows_f32(const fr_problem *p, const float *x, int64_t i0, int64_t cnt, float *out);
/* fr__exact_backward in single precision (core/backward_f32.c); the loss is summed in double. */
int fr__exact_backward_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                           const float *dout, const float *target, float *t, float *dq, float *dk,
                           float *dv, float *dw, double *loss, fr__prog *pg, char *err,
                           size_t errlen);

/* ---- the batch (core/batch.c, core/verify.c) ------------------------------------------------ */

/* The counts of a batch problem, with their 0-means defaults resolved. */
static inline int64_t fr__batch(const fr_problem *p)
{
    return p->batch > 0 ? p->batch : 1;
}
static inline int64_t fr__kv_batch(const fr_problem *p)
{
    return p->kv_batch > 0 ? p->kv_batch : fr__batch(p);
}
/* Query problems per key/value problem (grouped-query attention). */
static inline int64_t fr__group(const fr_problem *p)
{
    return fr__batch(p) / fr__kv_batch(p);
}
static inline int64_t fr__w_count(const fr_problem *p)
{
    return p->rot.kind == FR_ROT_EXPLICIT && p->rot.w && p->rot.w_count > 1 ? p->rot.w_count : 1;
}
/* Problem b of the batch on its own: batch 1, its W. */
fr_problem fr__entry_problem(const fr_problem *p, int64_t b);

/* Runs fn(ctx, b, thread, pg, ...) for every b < count: the b with small[b] set (small == NULL:
 * all) side by side, one thread each (thread: 0 .. omp_get_max_threads() - 1, each fn call
 * seeing one thread, and pg NULL: it may not report), then the others one after another on all
 * threads (thread 0, pg narrowed to the problem's share of the phase). static_order: the
 * side-by-side ones go to the threads in contiguous runs, so that per-thread sums are
 * deterministic. The first failing b's status and message are returned; pg (may be NULL)
 * hears of every finished problem, and its cancellation stops the run with FR_ECANCELED. */
typedef int (*fr__entry_fn)(void *ctx, int64_t b, int thread, fr__prog *pg, char *err,
                            size_t errlen);
int fr__for_entries(int64_t count, const unsigned char *small, int static_order, fr__entry_fn fn,
                    void *ctx, fr__prog *pg, char *err, size_t errlen);

/* st, with "problem b: " put before the message in err when p has more than one problem. */
int fr__entry_err(const fr_problem *p, int64_t b, int st, char *err, size_t errlen);

/* One problem's plan (core/plan.c): a method, its polynomial, its back end. The batch plan holds
 * one per distinct decision and shares it among the problems that agree. p->batch is 1. */
typedef struct fr__subplan fr__subplan;
/* The polynomial fits of one planning, kept across its decisions: a batch's grouping decides
 * many times over few distinct R, and a fit certifies ~1000 points. NULL: none kept. */
typedef struct fr__fits fr__fits;
fr__fits *fr__fits_new(void);
void fr__fits_free(fr__fits *f);
int fr__subplan_create(fr__subplan **sp, const fr_problem *p, const fr_bounds *bounds,
                       const fr_options *opt, fr__fits *fits, char *err, size_t errlen);
/* What fr__subplan_create would decide (method, degree), without building. */
int fr__subplan_decide(const fr_problem *p, const fr_bounds *bounds, const fr_options *opt,
                       fr__fits *fits, fr_plan_info *info, char *err, size_t errlen);
const fr_plan_info *fr__subplan_info(const fr__subplan *sp);
/* 1 when an execution uses one thread (so problems of it may run side by side). */
int fr__subplan_small(const fr__subplan *sp);
int fr__subplan_execute(const fr__subplan *sp, const double *q, const double *k, const double *v,
                        double *out, fr_exec_info *info, fr__prog *pg, char *err, size_t errlen);
int fr__subplan_backward(const fr__subplan *sp, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, fr_exec_info *info,
                         fr__prog *pg, char *err, size_t errlen);
/* The same in single precision (exact plans only). */
int fr__subplan_execute_f32(const fr__subplan *sp, const float *q, const float *k, const float *v,
                            float *out, fr_exec_info *info, fr__prog *pg, char *err, size_t errlen);
int fr__subplan_backward_f32(const fr__subplan *sp, const float *q, const float *k, const float *v,
                             const float *dout, const float *target, float *t, float *dq, float *dk,
                             float *dv, float *dw, double *loss, fr_exec_info *info, fr__prog *pg,
                             char *err, size_t errlen);
void fr__subplan_free(fr__subplan *sp);

/* The exact reference and gradients of one problem (core/exact.c, core/backward.c; p->batch is
 * ignored): the kernels fr_exact_rows, fr_exact_backward and fr_exact_backward_rows run per
 * problem. */
int fr__exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                   const int64_t *rows, int64_t nrows, double *out, fr__prog *pg, char *err,
                   size_t errlen);
int fr__exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                       const double *dout, const double *target, double *t, double *dq, double *dk,
                       double *dv, double *dw, double *loss, fr__prog *pg, char *err,
                       size_t errlen);
int fr__exact_backward_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                            const double *dout, const double *target, const int64_t *rows,
                            int64_t nrows, double *dq, double *dk, double *dv, fr__prog *pg,
                            char *err, size_t errlen);
/* For tests: the exact backward of one problem from dout (rows == NULL: every row, dw allowed;
 * else as fr__exact_backward_rows) with every thread from par_min scores, so that small
 * problems can take the threaded path. */
int fr__exact_backward_par(const fr_problem *p, const double *q, const double *k, const double *v,
                           const double *dout, const int64_t *rows, int64_t nrows, double *dq,
                           double *dk, double *dv, double *dw, double par_min, char *err,
                           size_t errlen);
/* 1 when exact attention on nrows rows of p runs on one thread. */
int fr__exact_small(const fr_problem *p, int64_t nrows);

/* ---- rotation (core/rotation.c) ------------------------------------------------------------ */

/* An explicit W is taken for a RoPE family when every W_delta is within FR_FAMILY_ULPS roundings
 * of a d-term product per factor of W_1^delta: FR_FAMILY_ULPS d (|delta| + 1) DBL_EPSILON, what
 * forming the power costs in double. A W computed from angles passes, and one that the family's
 * arithmetic (rotating rows by position) would get wrong by more than its own rounding does not.
 * The one tolerance for every method: exact, polyrope, the cost model. */
#define FR_FAMILY_ULPS 16

/* Whether p's rotation is a RoPE family (FR_FAMILY_ULPS): O(1) but for an explicit W, O(n d^3)
 * then unless p->rot.family holds the answer already. why as fr_rotation_is_rope_family's. */
int fr__rope_family(const fr_problem *p, char *why, size_t whylen);
/* p->rot.family set to the answer, so that the methods given p never ask again. */
void fr__settle_family(fr_problem *p);

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

/* A RoPE kind's cos and sin at every position 0..n-1 of every pair, for rotating many problems
 * of one shape without a sincos per position each time: cs[(i np + m) 2 + {0, 1}]. */
typedef struct {
    int64_t n, np;    /* positions, pairs */
    int64_t *pa, *pb; /* the pairs' coordinates */
    double *cs;
} fr__rope_table;
/* 1 when built: a RoPE kind that is a per-position rotation (clip >= n - 1), with the memory;
 * else 0 and t is empty. */
int fr__rope_table_build(const fr_problem *p, fr__rope_table *t);
void fr__rope_table_free(fr__rope_table *t);
/* fr__rotate_rows from the table (d: the row length), the same to the bit. */
void fr__rope_table_rotate(const fr__rope_table *t, const double *x, int64_t d, int64_t i0,
                           int64_t cnt, double *out);

/* RoPE/clipped RoPE only: the r/2 pairs (a[m], b[m]) and their angular frequencies
 * freq[m] = theta_m / pos_scale, so that R_p rotates pair m by p * freq[m]. Returns r/2. */
int64_t fr__rope_pairs(const fr_problem *p, int64_t *a, int64_t *b, double *freq);

/* ---- polynomial (core/poly.c) ---------------------------------------------------------------- */

/* The smallest degree whose Chebyshev interpolant of exp on [-R, R] meets eps through the
 * a-priori bound 2 eta/(1-eta) B_v, estimated from the Chebyshev coefficients' tail
 * (2 I_j(R), modified Bessel) without fitting: for saying what an unreachable eps would need.
 * Returns a degree <= cap, or cap + 1 when even cap is not enough. */
int fr__poly_needed_degree(double R, double B_v, double eps, int cap);

/* ---- certified rounding bounds (core/certify.c) ------------------------------------------- */

#define FR_U_DOUBLE 0x1p-53 /* unit roundoff of double */
#define FR_U_FLOAT 0x1p-24  /* of float */
/* The per-stage error constant of a length-N FFT, in units of u: Higham's
 * eta = mu + gamma_4 (sqrt 2 + mu) is ~6.7 for mu = u; 10 covers mixed-radix butterflies. */
#define FR_FFT_STAGE_ETA 10.0
/* The magnitudes (of V, and of the upstream gradient G) that a single-precision FFT pass holds
 * without underflow or overflow, with room for row sums up to n e^R and the transforms' growth:
 * the certificate assumes neither happens, so outside it only a double back end is offered. */
#define FR_FLOAT_FFT_MIN 0x1p-100
#define FR_FLOAT_FFT_MAX 0x1p40

/* m u / (1 - m u): the relative error of m chained roundings; inf when m u >= 1. */
double fr__gamma(double m, double u);
/* Butterfly stages of a real FFT of length N: ceil(log2 p) per prime factor p, plus 2. */
double fr__fft_stages(int64_t N);
/* Normwise relative error of one length-N transform in unit roundoff u. */
double fr__fft_gamma(int64_t N, double u);
/* sum_k |c_k| x^k */
double fr__abs_poly(const double *coef, int degree, double x);

/* What a method's arithmetic is, for its a-priori error bounds. */
typedef struct {
    int64_t n;        /* keys (= rows) */
    double L;         /* offsets the mask keeps (polyfft's kernel support) */
    int64_t N;        /* transform length (polyfft) */
    double u;         /* unit roundoff of the transforms and frequency-domain sums (polyfft) */
    int degree;       /* g */
    double depth;     /* most terms summed into one frequency bin (polyfft) */
    double gather;    /* Q-monomials summed per row, in double (polyfft) */
    int64_t features; /* C(g + d, d) (polyrope) */
    int64_t d;
} fr__round_model;

/* A-priori bounds E (numerator entries) and F (row sums) of the arithmetic's absolute error,
 * valid on every row: polyfft from S_abs = sum |c_k| R_abs^k, polyrope from
 * S_norm = sum |c_k| R_norm^k (see certify.c for the derivation). */
void fr__polyfft_round_prior(const fr__round_model *rm, double S_abs, double B_v, double *E,
                             double *F);
void fr__polyfft_round_consts(const fr__round_model *rm, double *a1, double *a2);
void fr__polyrope_round_prior(const fr__round_model *rm, double S_norm, double B_v, double *E,
                              double *F);
/* The arithmetic's part of |T~_i - T^P_i|_inf given the computed row sum D (inf if D <= 0). */
double fr__row_bound(double E, double F, double B_v, double D);
/* The same before the pass, for a row with kappa kept keys: D >= kappa (1 - eta) e^-R - F. */
double fr__row_bound_prior(double E, double F, double B_v, double kappa, double R, double eta);
/* The fewest kept keys kappa whose a-priori row bound is <= target (inf if none). */
double fr__keys_needed(double E, double F, double B_v, double R, double eta, double target);
/* One execution's certificate parameters (from the plan and the problem's bounds). */
typedef struct {
    double E, F; /* a-priori bounds on the numerator entries' and row sums' errors */
    double B_v;
    double target;      /* a row whose certificate exceeds this is recomputed exactly */
    double exact_bound; /* the exact path's own bound, for those rows */
    double poly_bound;  /* 2 eta/(1-eta) B_v */
    double score;       /* what the scores' own error adds (fr__score_error), on every row */
} fr__cert;

/* After a fast forward of one problem: every row's certificate from its computed row sum
 * rowsum[i]; the rows that miss c->target (or whose row sum is not positive) are recomputed
 * exactly into out. *recomputed and *rounding (the largest certified rounding bound over all
 * rows) are set. rows: scratch of n int64_t's or NULL. */
int fr__certify_rows(const fr_problem *p, const fr__cert *c, const double *q, const double *k,
                     const double *v, double *out, const double *rowsum, int64_t *recomputed,
                     double *rounding, char *err, size_t errlen);
/* How far the scores a method works with can be from the problem's exact scores: the angles'
 * rounding, an explicit RoPE family's W_{-i} W_{-j}^T against W_{j-i} (by_position: the
 * method rotates rows by their positions), and that rotation's arithmetic in unit roundoff
 * u_rot (0: the method rotates no rows). certify.c derives it. */
double fr__score_error(const fr_problem *p, const fr_bounds *b, double u_rot, int by_position);
/* The polynomial's relative error against exp of the exact scores when it is evaluated at
 * scores off by at most score_error: exp(score_error) (1 + eta) - 1. */
double fr__eta_scores(double eta, double score_error);
/* The exact engine's own bound on |T~_i - T_i|_inf in unit roundoff u, shifted when every row
 * takes the a-priori shift rather than the running maximum (fr__exact_shifted), with scores
 * formed as FMA chains of `chain` terms (d, or |S| + 1 for a general W); certify.c derives
 * it. */
double fr__exact_round(const fr_problem *p, const fr_bounds *b, double u, int shifted,
                       int64_t chain);
/* 1 when the exact engine in unit roundoff u shifts every row a priori for these bounds: the
 * scores have a per-row bound (a rotation, clipped or not) and 2 R_norm is within the shift's
 * range (core/exact_impl.h's SHIFT_MAX: 80 in single precision, 600 in double). */
int fr__exact_shifted(const fr_problem *p, const fr_bounds *b, double u);

/* |cos| and |sin| of every rotated pair at every offset the support bound visits (RoPE kinds):
 * the same for every problem of a batch, so computed once. cs: (2 lim + 1) x np x 2. */
typedef struct {
    int64_t lim, np;
    int64_t *pa, *pb; /* the pairs */
    double *cs;
} fr__rope_abs;
/* 1 when built (RoPE kinds, and at most 32 MB), else 0 and t is empty. */
int fr__rope_abs_build(const fr_problem *p, fr__rope_abs *t);
void fr__rope_abs_free(fr__rope_abs *t);

/* The support bound's sum (ALGORITHM.md 2, before tau): max over the offsets of
 * sum_{(a,b) in S} |W_delta[a,b]| mq[a] mk[b], with mq, mk the per-column max |entries| of Q and
 * K; O(d) per distinct offset for the RoPE kinds (core/bounds.c, shared by core/stats.c). tab
 * (may be NULL) holds the RoPE kinds' trigonometry; the sum is the same to the bit without. */
double fr__support_sum(const fr_problem *p, const double *mq, const double *mk,
                       const fr__rope_abs *tab);
/* B, B / sqrt(ln n) and R (the smallest bound that applies, with a rounding slack) from the
 * reductions: max row norms qn, kn, the spectral norm bound wnorm of W, per-column max |Q|, |K|
 * (out->B_q, B_k, B_v already set); tab as for fr__support_sum. One function, so that `check`
 * gets `run`'s R to the bit. */
void fr__bounds_finish(const fr_problem *p, double qn, double kn, double wnorm, const double *mq,
                       const double *mk, const fr__rope_abs *tab, fr_bounds *out);

/* ---- method back ends ------------------------------------------------------------------------ */

/* polyfft (core/polyfft.c): coef[0..degree] are the monomial coefficients of P; fft the FFT
 * back end (FR_FFT_AUTO: fr__fft_resolve's), whose precision the spectra and their sums take. */
typedef struct fr__polyfft fr__polyfft;
/* exact_keys: rows with fewer kept keys are computed exactly by the backward (the plan's
 * certificate, fr_plan_info.keys_exact). */
int fr__polyfft_create(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                       int literal, fr_fft_backend fft, int64_t exact_keys, char *err,
                       size_t errlen);
/* rowsum (n, may be NULL): receives the computed row sums D_i for the certificate; then rows
 * whose D_i is not positive are left 0 instead of failing. */
int fr__polyfft_execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *out, double *rowsum, fr__prog *pg, char *err, size_t errlen);
void fr__polyfft_info(const fr__polyfft *pl, fr_plan_info *info); /* fills the count fields */
void fr__polyfft_free(fr__polyfft *pl);
/* fr__polyfft_create with explicit memory budgets (bytes of stored kernel spectra; bytes of a
 * pass's spectra of one degree), so tests can force each storage mode and column blocking. */
int fr__polyfft_create_budget(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                              int literal, fr_fft_backend fft, int64_t exact_keys,
                              int64_t plan_budget, int64_t exec_budget, char *err, size_t errlen);
/* Where the kernel spectra live: 1 kept by the plan, 2 computed by each pass, -1 literal. */
int fr__polyfft_mode(const fr__polyfft *pl);
/* Threads of one execution (1 for small problems), and the rows each execution computes
 * exactly (too few keys for the float FFTs). */
int fr__polyfft_threads(const fr__polyfft *pl);
int64_t fr__polyfft_rows_recomputed(const fr__polyfft *pl);

/* polyrope (core/polyrope.c): the factorised path, RoPE family only. */
typedef struct fr__polyrope fr__polyrope;
int fr__polyrope_create(fr__polyrope **pl, const fr_problem *p, const double *coef, int degree,
                        char *err, size_t errlen);
/* Past this many features the per-thread feature blocks fit nowhere useful: the plan treats a
 * degree that needs more as out of the fast regime (exit 4), not as a usage error. */
#define FR_POLYROPE_MAX_FEATURES 4000000
/* rowsum (n, may be NULL) as fr__polyfft_execute's. */
int fr__polyrope_execute(const fr__polyrope *pl, const double *q, const double *k, const double *v,
                         double *out, double *rowsum, fr__prog *pg, char *err, size_t errlen);
void fr__polyrope_info(const fr__polyrope *pl, fr_plan_info *info);
void fr__polyrope_free(fr__polyrope *pl);
/* For tests: the plan's polyrope back end (NULL for another method), and the work from which it
 * uses every thread (tests lower it to exercise the threaded sweeps on small n). */
fr__polyrope *fr__plan_polyrope(fr_plan *pl);
typedef struct fr__subplan fr__subplan;
fr__polyrope *fr__subplan_polyrope(fr__subplan *sp);
void fr__polyrope_set_par_units(fr__polyrope *pl, double units);
/* For tests: the two-level rotation tables a large problem uses (core/polyrope.c), at any n. */
int fr__polyrope_split_rotation(fr__polyrope *pl);
/* Threads of one execution (1 for small problems). */
int fr__polyrope_threads(const fr__polyrope *pl);

/* Backward of the fast methods (core/polyfft_grad.c, core/polyrope_grad.c): arguments as
 * fr_execute_backward. */
int fr__polyfft_backward(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, fr__prog *pg, char *err,
                         size_t errlen);
int fr__polyrope_backward(const fr__polyrope *pl, const double *q, const double *k, const double *v,
                          const double *dout, const double *target, double *t, double *dq,
                          double *dk, double *dv, double *loss, fr__prog *pg, char *err,
                          size_t errlen);

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
