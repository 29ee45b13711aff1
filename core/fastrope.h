/* fastrope.h - RoPE attention, exact and almost-linear (polynomial + FFT), as a C library.
 *
 * The mathematics is specified in ALGORITHM.md (shared with the project). In short:
 * T = softmax(tau * Q_i W_{j-i} K_j^T) V, row by row, with W_delta a rotation per offset.
 *
 * Usage, FFTW style (plan once, execute many times, free once); a batch of problems of one
 * shape is one problem with p.batch > 1, the way FFTW's howmany is:
 *
 *   fr_problem p = fr_problem_default(n, d, dv);      // standard RoPE, tau = 1/d, no mask
 *   p.causal = 1;
 *   p.batch = heads;                                   // q, out: heads problems back to back
 *   p.kv_batch = kv_heads;                             // k, v: grouped-query (0: as batch)
 *   fr_bounds *b = malloc(p.batch * sizeof *b);
 *   fr_bounds_compute(&p, q, k, v, b, err, sizeof err);  // entry and score bounds, per problem
 *   fr_options o = fr_options_default();               // method auto, eps 1e-3
 *   fr_plan *plan;
 *   fr_status st = fr_plan_create(&plan, &p, b, &o, err, sizeof err);  // a plan per distinct
 *                                                      // decision, shared by the problems
 *   st = fr_execute(plan, q, k, v, out, NULL, err, sizeof err);  // the whole batch
 *   fr_plan_info info; fr_plan_get_info(plan, &info);   // the worst problem's plan, for a report
 *   fr_plan_free(plan);
 *
 *   // the exact reference on any subset of rows of every problem (rows == NULL: all):
 *   fr_exact_rows(&p, q, k, v, rows, nrows, ref, err, sizeof err);  // ref: batch x nrows x dv
 *   // or, directly, how far out is from it on those rows:
 *   fr_diff all; fr_check_rows(&p, q, k, v, out, rows, nrows, NULL, &all, err, sizeof err);
 *
 * Matrices are row-major doubles: q is batch x n x d, k is kv_batch x n x d, v is
 * kv_batch x n x dv, out is batch x n x dv. Every function that can fail returns an fr_status
 * and writes one line into err (no I/O, no exit, no globals). The status values are the
 * command's exit codes.
 *
 * Reentrancy: a plan is only read by fr_execute and fr_execute_backward, so any number of
 * threads may execute one plan at once (each with its own outputs); nothing else is shared.
 *
 * What only the planner's tools need (streamed statistics, the polynomial, predictions) is in
 * fastrope_planner.h.
 */
#ifndef FASTROPE_H
#define FASTROPE_H

#include <stddef.h>
#include <stdint.h>

#define FR_VERSION "0.1.0"

typedef enum {
    FR_OK = 0,
    FR_ENOMEM = 1,    /* internal or resource failure */
    FR_EUSAGE = 2,    /* the request makes no sense (bad option combination) */
    FR_EINPUT = 3,    /* bad input: shapes, NaN/Inf, malformed W, scores that overflow */
    FR_EACCURACY = 4, /* the requested accuracy cannot be guaranteed */
    FR_ECANCELED = 5, /* the progress callback returned non-zero; everything was freed */
} fr_status;

/* ---- the rotation W_delta ---------------------------------------------------------------- */

typedef enum {
    FR_ROT_NONE,     /* W = identity: plain attention */
    FR_ROT_ROPE,     /* standard RoPE: W_delta = R_delta */
    FR_ROT_CLIP,     /* clipped RoPE: W_delta = R_clip(delta, -clip, clip) */
    FR_ROT_EXPLICIT, /* W given as [2n-1][d][d], W_delta at index delta + n - 1 */
} fr_rot_kind;

typedef enum { FR_PAIRS_INTERLEAVED, FR_PAIRS_HALF } fr_pairs;

typedef struct {
    fr_rot_kind kind;
    double base;        /* theta_m = base^(-2m/r); 10000 */
    fr_pairs pairs;     /* (2m, 2m+1) or (m, m + r/2) */
    double pos_scale;   /* positions are divided by this; 1 */
    int64_t rotary_dim; /* r: only coordinates < r rotate; 0 means d */
    int64_t clip;       /* FR_ROT_CLIP only */
    /* FR_ROT_EXPLICIT only: w_count W's of (2n-1) * d * d doubles back to back, not owned (a
     * plan keeps pointing at them). w_count is 1 (one W for every problem of the batch; 0 means
     * 1) or batch (problem b uses the b-th). */
    const double *w;
    int64_t w_count;
    /* FR_ROT_EXPLICIT with w == NULL, for estimates without data (fr_plan_estimate): a general
     * W with this many non-zero entries per offset, |entries| <= 1, no two kernels alike. */
    int64_t support_hint;
    /* The library's own; leave it 0: whether an explicit W is a RoPE family (W_delta =
     * W_1^delta, O(n d^3) to find out), answered once per plan and kept in its copies. */
    int family;
} fr_rotation;

typedef struct {
    int64_t n, d, dv;
    double tau; /* score scale: 1/d (papers), 1/sqrt(d) (sdpa), or any positive value */
    fr_rotation rot;
    int causal;     /* keep keys j <= i */
    int64_t window; /* keep |j - i| <= window; negative: no window */
    /* Problems of this shape back to back (leading axes flattened); 0 means 1. */
    int64_t batch;
    /* Problems of k and v: batch, or batch / g for grouped-query attention, where problem b
     * reads k and v problem b / g (HF's repeat_kv: g consecutive query heads share one key/value
     * head); 0 means batch. */
    int64_t kv_batch;
} fr_problem;

/* Standard RoPE (base 10000, interleaved pairs), tau = 1/d, no mask, one problem. */
fr_problem fr_problem_default(int64_t n, int64_t d, int64_t dv);

/* Shapes, rotation parameters, mask and batch make sense (d even for RoPE, rotary_dim even and
 * <= d, tau finite and positive, kv_batch dividing batch, w_count 1 or batch, ...). */
fr_status fr_problem_check(const fr_problem *p, char *err, size_t errlen);

/* W_delta for one offset, as a d x d row-major matrix (any rotation kind; an explicit W: the
 * first one). */
void fr_rotation_matrix(const fr_problem *p, int64_t delta, double *w);

/* First index i in x[0..count) with x[i] NaN or infinite, or -1. */
int64_t fr_find_nonfinite(const double *x, int64_t count);

/* ---- bounds -------------------------------------------------------------------------------- */

typedef struct {
    double B_q, B_k, B_v;    /* max |entry| of each tensor (of one problem, or pooled) */
    double B;                /* max of the three */
    double B_over_sqrt_ln_n; /* B / sqrt(ln n): the papers' regime parameter (inf for n = 1) */
    double R;                /* score bound: |s_ij| <= R for every i, j (ALGORITHM.md 2) */
    const char *R_from;      /* which bound gave R: "rope-norm", "spectral", "support" */
    /* Sizes of the terms the arithmetic adds up, for the certified rounding bounds (>= R):
     * R_norm = tau max||Q_i|| max||K_j|| max||W_delta||_2 bounds tau |Q'_i|.|K'_j| of the rotated
     * rows (polyrope, exact); R_abs = tau sum_{(a,b) in S} max_delta |W_delta[a,b]| max|Q_a|
     * max|K_b| bounds the multinomial expansion taken in absolute value (polyfft). */
    double R_norm, R_abs;
} fr_bounds;

/* The bounds of every problem of the batch: out[b] for problem b (p->batch entries), from its
 * q, the k and v it reads (grouped-query: problem b / g's) and its W. Non-finite inputs, and
 * finite ones whose scores overflow, are FR_EINPUT. */
fr_status fr_bounds_compute(const fr_problem *p, const double *q, const double *k, const double *v,
                            fr_bounds *out, char *err, size_t errlen);
/* The same for single-precision tensors. */
fr_status fr_bounds_compute_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                                fr_bounds *out, char *err, size_t errlen);
/* One bound that holds for all of b[0..count): every field the largest (R_from: that of the
 * largest R). What one plan for the whole batch is made on (fr_options.pool_bounds). */
void fr_bounds_pool(const fr_bounds *b, int64_t count, fr_bounds *out);

/* ---- methods, options, plans ---------------------------------------------------------------- */

typedef enum {
    FR_METHOD_AUTO,
    FR_METHOD_EXACT,
    FR_METHOD_POLYFFT,
    FR_METHOD_POLYFFT_LITERAL,
    FR_METHOD_POLYROPE,
    FR_NMETHODS
} fr_method;

const char *fr_method_name(fr_method m); /* "auto", "exact", "polyfft", ... */
fr_status fr_method_parse(const char *s, fr_method *m);

/* The arithmetic of a plan's tensors: fr_execute (double) or fr_execute_f32 (float). */
typedef enum { FR_F64, FR_F32 } fr_precision;

/* The FFT back end of polyfft's transforms: KissFFT (single precision), FFTW in double or in
 * single precision. auto: the fastest that can deliver eps (see fr_plan_info.fft). */
typedef enum {
    FR_FFT_AUTO,
    FR_FFT_KISSFFT,
    FR_FFT_FFTW,
    FR_FFT_FFTW_FLOAT,
    FR_NFFTS
} fr_fft_backend;

/* A cost model read from a file (fastrope_planner.h); NULL: the built-in constants. */
typedef struct fr_cost_model fr_cost_model;

/* Progress of a long call: the phase ("plan", "forward pass", "backward pass", "exact rows")
 * and the fraction of it done, at the phase's start (0), a few times a second inside it (at most
 * five), and at its end (1). Called from the thread that made the call, never from another. A
 * non-zero return cancels: the call stops once the blocks of work in hand are done and returns
 * FR_ECANCELED, having freed everything (its outputs hold nothing usable). */
typedef int (*fr_progress_fn)(void *user, const char *phase, double fraction);

const char *fr_fft_name(fr_fft_backend b); /* "auto", "kissfft", "fftw", "fftw-float" */
fr_status fr_fft_parse(const char *s, fr_fft_backend *b);

/* FFTW's wisdom (the plans it measured on this machine) as text, so that a caller can keep it
 * between runs: importing it makes planning instant for the sizes it covers. Import returns
 * FR_EINPUT, changing nothing, when the text is not wisdom; export returns a malloc'd string
 * (free()) or NULL when out of memory. Thread-safe. */
fr_status fr_fft_wisdom_import(const char *wisdom);
char *fr_fft_wisdom_export(void);

typedef struct {
    fr_method method;          /* FR_METHOD_AUTO by default */
    double eps;                /* target for max |T_fast - T|; 1e-3 */
    int degree;                /* forced polynomial degree, or -1 to choose from eps */
    int max_degree;            /* refuse (or, for auto, fall back to exact) above this; 24 */
    fr_precision precision;    /* FR_F64 by default */
    fr_fft_backend fft;        /* polyfft's FFTs; FR_FFT_AUTO by default */
    int pool_bounds;           /* 0: each problem planned on its own bounds (equal plans shared);
                                * 1: one plan on the pooled bounds */
    const fr_cost_model *cost; /* NULL: the built-in constants */
    fr_progress_fn progress;   /* NULL: none */
    void *progress_user;
} fr_options;

fr_options fr_options_default(void);

typedef struct {
    fr_method method;   /* the method that runs (auto resolved) */
    const char *reason; /* why auto chose it (static string), or "requested" */
    int degree;         /* -1 for exact */
    double eta;         /* certified relative error of the polynomial */
    /* The certificate (core/certify.c): |T_fast - T| <= a_priori_bound on every row, where
     * poly_bound = 2 eta/(1-eta) B_v is the polynomial's share and rounding_bound the
     * arithmetic's, derived from normwise floating-point error bounds before the data pass.
     * Rows with fewer than keys_exact kept keys may not be certifiable before the pass (their
     * softmax denominators may be small): each execution certifies every row again from its
     * computed denominator and recomputes exactly the rows that miss (at most rows_exact). */
    double poly_bound, rounding_bound, a_priori_bound;
    int64_t keys_exact, rows_exact;
    /* The degree eps needs for the polynomial alone (estimated from the Chebyshev tail when above
     * max_degree; max fit degree + 1 means "more than that"), for refusals. */
    int needed_degree;
    int64_t support; /* |S| */
    int64_t alphas;  /* multi-indices over S of degree <= g */
    int64_t q_monomials, k_monomials, kernels;
    int64_t ffts;       /* (#u + #v)(dv+1) + #c, ALGORITHM.md 5's count (polyfft); an even and an
                         * odd kernel share one transform, so under a symmetric mask fewer run */
    int64_t fft_size;   /* transform length N */
    fr_fft_backend fft; /* polyfft's FFT back end (auto resolved) */
    const char *fft_precision;       /* its arithmetic: "double" or "single" */
    int64_t features;                /* polyrope feature rank C(g + d, d) */
    double predicted_s[FR_NMETHODS]; /* cost model, seconds per batch entry; < 0: not applicable */
    /* The batch: which problem this is (fr_plan_get_info: the worst one), the bounds it was
     * planned on (its own; zero without bounds) and the R the polynomial was fitted on (the
     * largest of the problems sharing its plan), and how many distinct plans the batch has. */
    int64_t entry;
    fr_bounds bounds;
    double fit_R;
    fr_bounds fit; /* all the bounds its plan was made on (pooled over the problems sharing it):
                    * its certificate's too */
    int64_t plans;
} fr_plan_info;

typedef struct fr_plan fr_plan;

/* Everything that does not depend on the data: for each problem of the batch the degree and
 * method its bounds need, and one back-end plan (monomials, spectra, FFT plans) per distinct
 * decision, shared by the problems that agree. bounds: p->batch entries (fr_bounds_compute);
 * NULL only for FR_METHOD_EXACT. The plan keeps pointing at p->rot.w. */
fr_status fr_plan_create(fr_plan **plan, const fr_problem *p, const fr_bounds *bounds,
                         const fr_options *opt, char *err, size_t errlen);
/* The worst problem's plan (the highest degree, then the largest R; one that no degree can
 * serve counts as highest): info->entry says which, info->plans how many distinct plans run. */
void fr_plan_get_info(const fr_plan *plan, fr_plan_info *info);
/* Problem b's plan. FR_EUSAGE when b is out of range. */
fr_status fr_plan_entry_info(const fr_plan *plan, int64_t b, fr_plan_info *info);
void fr_plan_free(fr_plan *plan);

/* What one execution of a problem did (filled by the methods). */
typedef struct {
    int64_t rows_recomputed; /* rows computed exactly instead of by the fast method */
    double rounding_bound;   /* the arithmetic's share of the certified error bound */
    double a_priori_bound;   /* the whole certified bound on max |T_fast - T| */
} fr_exec_info;

/* Every problem of the batch: out is batch x n x dv; info (batch entries, may be NULL). Small
 * problems run side by side, one thread each; large ones one after another on all threads. */
fr_status fr_execute(const fr_plan *plan, const double *q, const double *k, const double *v,
                     double *out, fr_exec_info *info, char *err, size_t errlen);

/* Gradients of a loss L through the plan's methods, for the whole batch. Exactly one of dout
 * (G = dL/dT, batch x n x dv) and target (E: L = 1/2 ||T - E||_F^2, so G = T - E) is given.
 * t (batch x n x dv) receives T and may be NULL; dq (batch x n x d), dk (kv_batch x n x d) and
 * dv (kv_batch x n x dv) are required: dk and dv are summed over each group of grouped-query
 * attention. dw (w_count x (2n-1) x d x d, W explicit only; a shared W gets the sum over the
 * batch) may be NULL; *loss (the batch's sum) is set when target is given (loss may be NULL).
 * The fast methods return the exact gradient of their own (polynomial) forward. */
fr_status fr_execute_backward(const fr_plan *plan, const double *q, const double *k,
                              const double *v, const double *dout, const double *target, double *t,
                              double *dq, double *dk, double *dv, double *dw, double *loss,
                              fr_exec_info *info, char *err, size_t errlen);

/* Single precision (a plan made with opt.precision = FR_F32): the same, on floats. */
fr_status fr_execute_f32(const fr_plan *plan, const float *q, const float *k, const float *v,
                         float *out, fr_exec_info *info, char *err, size_t errlen);
fr_status fr_execute_backward_f32(const fr_plan *plan, const float *q, const float *k,
                                  const float *v, const float *dout, const float *target, float *t,
                                  float *dq, float *dk, float *dv, float *dw, float *loss,
                                  fr_exec_info *info, char *err, size_t errlen);

/* ---- the exact reference ------------------------------------------------------------------- */

/* T for the chosen rows of every problem (rows == NULL: rows 0..n-1, nrows must be n); out is
 * batch x nrows x dv. Online softmax over key blocks: O(n (d + dv)) memory per thread. */
fr_status fr_exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                        const int64_t *rows, int64_t nrows, double *out, char *err, size_t errlen);

/* Exact gradients (arguments as fr_execute_backward), O(n (d + dv)) memory plus dw: one pass for
 * the row statistics and T, one for the gradients (FlashAttention-2 style). */
fr_status fr_exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                            const double *dout, const double *target, double *t, double *dq,
                            double *dk, double *dv, double *dw, double *loss, char *err,
                            size_t errlen);

/* Exact gradient rows for checking a fast backward on large n: dq at query rows rows[] of every
 * problem (batch x nrows x d), dk and dv at key rows rows[] of every key/value problem
 * (kv_batch x nrows x d, kv_batch x nrows x dv, summed over each group). Costs one full
 * statistics pass (O(n^2 d) time, O(n) memory) plus O(nrows n d) per problem. */
fr_status fr_exact_backward_rows(const fr_problem *p, const double *q, const double *k,
                                 const double *v, const double *dout, const double *target,
                                 const int64_t *rows, int64_t nrows, double *dq, double *dk,
                                 double *dv, char *err, size_t errlen);

/* ---- comparing ------------------------------------------------------------------------------ */

/* An accumulating comparison of computed values with reference values; start from {0}. */
typedef struct {
    double max_abs; /* max |got - ref| (NaN if any difference is) */
    double max_rel; /* max_abs / ref_max: normwise (inf if ref is all zero and got is not) */
    double ref_max; /* max |ref| */
    int64_t count;  /* values compared */
} fr_diff;

/* Fold count more values into acc. */
void fr_diff_add(fr_diff *acc, const double *got, const double *ref, int64_t count);
/* Fold another comparison into acc: as if its values had been added. */
void fr_diff_merge(fr_diff *acc, const fr_diff *other);
/* The comparison of count values on their own. */
fr_diff fr_compare(const double *got, const double *ref, int64_t count);

/* out (batch x n x dv, from fr_execute) against exact attention on rows[] of every problem
 * (rows == NULL: all n): per[b] for problem b (p->batch entries, may be NULL) and all over the
 * batch (may be NULL). */
fr_status fr_check_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                        const double *out, const int64_t *rows, int64_t nrows, fr_diff *per,
                        fr_diff *all, char *err, size_t errlen);

/* The gradients fr_execute_backward returns, compared. */
typedef enum { FR_GRAD_DQ, FR_GRAD_DK, FR_GRAD_DV, FR_GRAD_DW, FR_NGRADS } fr_grad;

/* dq, dk, dv (and dw, when not NULL) against the exact gradients: dq at query rows rows[], dk
 * and dv at key rows rows[] (rows == NULL: all n); dw only when every row is checked (else
 * all[FR_GRAD_DW].count is 0). per (p->batch x FR_NGRADS, may be NULL): per[b * FR_NGRADS + g]
 * compares entry b of gradient g, for b below its count of entries (batch for dq, kv_batch for
 * dk and dv, w_count for dw; the rest stay zero); all (FR_NGRADS, may be NULL): over the batch. */
fr_status fr_check_backward_rows(const fr_problem *p, const double *q, const double *k,
                                 const double *v, const double *dout, const double *target,
                                 const double *dq, const double *dk, const double *dv,
                                 const double *dw, const int64_t *rows, int64_t nrows, fr_diff *per,
                                 fr_diff *all, char *err, size_t errlen);

#endif
