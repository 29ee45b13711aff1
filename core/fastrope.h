/* fastrope.h - RoPE attention, exact and almost-linear (polynomial + FFT), as a C library.
 *
 * The mathematics is specified in ALGORITHM.md (shared with the project). In short:
 * T = softmax(tau * Q_i W_{j-i} K_j^T) V, row by row, with W_delta a rotation per offset.
 *
 * Usage, FFTW style (plan once, execute many times, free once):
 *
 *   fr_problem p = fr_problem_default(n, d, dv);      // standard RoPE, tau = 1/d, no mask
 *   p.causal = 1;
 *   fr_bounds b;
 *   fr_bounds_compute(&p, q, k, v, batch, &b, err, sizeof err);  // entry and score bounds
 *   fr_options o = fr_options_default();               // method auto, eps 1e-3
 *   fr_plan *plan;
 *   int st = fr_plan_create(&plan, &p, &b, &o, err, sizeof err);  // degree, monomials, spectra
 *   for (i = 0; i < batch; i++)
 *       st = fr_execute(plan, q + i*n*d, k + i*n*d, v + i*n*dv, out + i*n*dv, err, sizeof err);
 *   fr_plan_info info; fr_plan_get_info(plan, &info);   // what ran and why, for the report
 *   fr_plan_free(plan);
 *
 *   // the exact reference on any subset of rows (rows == NULL: all), O(n (d + dv)) memory:
 *   fr_exact_rows(&p, q, k, v, rows, nrows, out_rows, err, sizeof err);
 *
 * Matrices are row-major doubles: q, k are n x d, v is n x dv, out is n x dv.
 * Every function that can fail returns an fr_status and writes one line into err (no I/O, no
 * exit, no globals). The status values are the command's exit codes.
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
    FR_EINPUT = 3,    /* bad input: shapes, NaN/Inf, malformed W */
    FR_EACCURACY = 4, /* the requested accuracy cannot be guaranteed */
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
    const double *w;    /* FR_ROT_EXPLICIT only: (2n-1) * d * d doubles, not owned */
    /* FR_ROT_EXPLICIT with w == NULL, for estimates without data (fr_plan_estimate): a general
     * W with this many non-zero entries per offset, |entries| <= 1, no two kernels alike. */
    int64_t support_hint;
} fr_rotation;

typedef struct {
    int64_t n, d, dv;
    double tau; /* score scale: 1/d (papers), 1/sqrt(d) (sdpa), or any positive value */
    fr_rotation rot;
    int causal;     /* keep keys j <= i */
    int64_t window; /* keep |j - i| <= window; negative: no window */
} fr_problem;

/* Standard RoPE (base 10000, interleaved pairs), tau = 1/d, no mask. */
fr_problem fr_problem_default(int64_t n, int64_t d, int64_t dv);

/* Shapes, rotation parameters and mask make sense (d even for RoPE, rotary_dim even and <= d,
 * tau finite and positive, ...). */
int fr_problem_check(const fr_problem *p, char *err, size_t errlen);

/* W_delta for one offset, as a d x d row-major matrix (any rotation kind). */
void fr_rotation_matrix(const fr_problem *p, int64_t delta, double *w);

/* 1 when W_delta = R^delta for a per-position orthogonal R (standard RoPE and its variants,
 * no rotation, or an explicit W recognised as such a family to within tol); then the
 * factorised path applies. Otherwise why (if not NULL) receives the reason, one line. */
int fr_rotation_is_rope_family(const fr_problem *p, double tol, char *why, size_t whylen);

/* First index i in x[0..count) with x[i] NaN or infinite, or -1. */
int64_t fr_find_nonfinite(const double *x, int64_t count);

/* ---- bounds -------------------------------------------------------------------------------- */

typedef struct {
    double B_q, B_k, B_v;    /* max |entry| of each tensor (over the whole batch) */
    double B;                /* max of the three */
    double B_over_sqrt_ln_n; /* B / sqrt(ln n): the papers' regime parameter (inf for n = 1) */
    double R;                /* score bound: |s_ij| <= R for every i, j (ALGORITHM.md 2) */
    const char *R_from;      /* which bound gave R: "rope-norm", "spectral", "support" */
} fr_bounds;

/* q, k, v hold `batch` problems back to back. */
int fr_bounds_compute(const fr_problem *p, const double *q, const double *k, const double *v,
                      int64_t batch, fr_bounds *out, char *err, size_t errlen);

/* Streaming reductions (fastrope check reads one tensor at a time): fold rows x cols of x into
 * col_max[a] (max |x_ia|, initialise to 0) and *max_row_sq (max_i sum_a x_ia^2, initialise to 0),
 * with the same rounding as fr_bounds_compute. */
void fr_stats_rows(const double *x, int64_t rows, int64_t cols, double *col_max,
                   double *max_row_sq);
/* The bounds fr_bounds_compute would give, from those reductions of Q and K (d columns each)
 * and max |entry| of V: the same R to the bit. Rotations by parameters only (not explicit W). */
int fr_bounds_from_stats(const fr_problem *p, double q_row_sq, double k_row_sq,
                         const double *q_col_max, const double *k_col_max, double B_v,
                         fr_bounds *out, char *err, size_t errlen);

/* ---- the polynomial ------------------------------------------------------------------------ */

/* Chebyshev interpolant of exp on [-R, R] of degree g, converted to monomial coefficients
 * coef[0..g]; *eta receives its relative error max |P(x) - e^x| / e^x certified on a fine grid
 * (an upper bound, with a safety factor). */
int fr_poly_fit(double R, int degree, double *coef, double *eta, char *err, size_t errlen);

/* The a-priori bound on ||T_fast - T||_inf: 2 eta / (1 - eta) * B_v (inf when eta >= 1). */
double fr_a_priori_bound(double eta, double B_v);

/* Smallest degree <= max_degree whose certified eta meets eps through the a-priori bound, with
 * the rounding floor of the arithmetic accounted for: float_fft = 1 for polyfft (KissFFT works
 * in single precision: a floor ~5e-7 at R = 1, measured), 0 for a method in double (polyrope).
 * FR_EACCURACY, saying which limit bit, when no degree does. */
int fr_poly_choose_degree(double R, double B_v, double eps, int max_degree, int float_fft,
                          int *degree, double *eta, char *err, size_t errlen);

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
int fr_method_parse(const char *s, fr_method *m);

typedef struct {
    fr_method method; /* FR_METHOD_AUTO by default */
    double eps;       /* target for max |T_fast - T|; 1e-3 */
    int degree;       /* forced polynomial degree, or -1 to choose from eps */
    int max_degree;   /* refuse (or, for auto, fall back to exact) above this; 24 */
} fr_options;

fr_options fr_options_default(void);

typedef struct {
    fr_method method;      /* the method that runs (auto resolved) */
    const char *reason;    /* why auto chose it (static string), or "requested" */
    int degree;            /* -1 for exact */
    double eta;            /* certified relative error of the polynomial */
    double a_priori_bound; /* 2 eta/(1-eta) B_v */
    int64_t support;       /* |S| */
    int64_t alphas;        /* multi-indices over S of degree <= g */
    int64_t q_monomials, k_monomials, kernels;
    int64_t ffts;     /* (#u + #v)(dv+1) + #c, ALGORITHM.md 5's count (polyfft); an even and an
                       * odd kernel share one transform, so under a symmetric mask fewer run */
    int64_t fft_size; /* transform length N */
    int64_t features; /* polyrope feature rank C(g + d, d) */
    double predicted_s[FR_NMETHODS]; /* cost model, seconds per batch entry; < 0: not applicable */
} fr_plan_info;

typedef struct fr_plan fr_plan;

/* Everything that does not depend on the data: degree, monomials, kernel spectra, FFT plans.
 * bounds may be NULL only for FR_METHOD_EXACT. */
int fr_plan_create(fr_plan **plan, const fr_problem *p, const fr_bounds *bounds,
                   const fr_options *opt, char *err, size_t errlen);
/* What fr_plan_create would decide (degree, eta, method, counts, predicted times) without
 * building anything that grows with n: for `fastrope bound` and `fastrope check`. A degree above
 * max_degree is not an error here: info->degree is -1 and info->reason says why. The counts
 * are those of polyfft whatever the method (features: polyrope's rank, RoPE family only). */
int fr_plan_estimate(const fr_problem *p, const fr_bounds *bounds, const fr_options *opt,
                     fr_plan_info *info, char *err, size_t errlen);
int fr_execute(fr_plan *plan, const double *q, const double *k, const double *v, double *out,
               char *err, size_t errlen);
void fr_plan_get_info(const fr_plan *plan, fr_plan_info *info);
void fr_plan_free(fr_plan *plan);

/* Cost model (calibrated by the benchmark, constants in core/cost.c): predicted seconds of each
 * method for one problem of this shape; t[m] < 0 where method m does not apply. */
void fr_predict_times(const fr_problem *p, int degree, int64_t support, double *t);

/* ---- gradients (ALGORITHM.md 7) -------------------------------------------------------------- */

/* Gradients of a loss L through the plan's method. Exactly one of dout (G = dL/dT, n x dv) and
 * target (E: L = 1/2 ||T - E||_F^2, so G = T - E) is given. t (n x dv) receives T and may be
 * NULL; dq, dk (n x d) and dv (n x dv) are required; dw ((2n-1) x d x d, W explicit only) may
 * be NULL; *loss is set when target is given (loss may be NULL). The fast methods return the
 * exact gradient of their own (polynomial) forward. */
int fr_execute_backward(fr_plan *plan, const double *q, const double *k, const double *v,
                        const double *dout, const double *target, double *t, double *dq, double *dk,
                        double *dv, double *dw, double *loss, char *err, size_t errlen);

/* Exact gradients (same arguments), O(n (d + dv)) memory plus dw: one pass for the row
 * statistics and T, one for the gradients (FlashAttention-2 style), OpenMP. */
int fr_exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                      const double *dout, const double *target, double *t, double *dq, double *dk,
                      double *dv, double *dw, double *loss, char *err, size_t errlen);

/* Exact gradient rows for checking a fast backward on large n: dq at query rows rows[], dk and
 * dv at key rows rows[] (each nrows x d / nrows x dv). Costs one full statistics pass
 * (O(n^2 d) time, O(n) memory) plus O(nrows n d). */
int fr_exact_backward_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                           const double *dout, const double *target, const int64_t *rows,
                           int64_t nrows, double *dq, double *dk, double *dv, char *err,
                           size_t errlen);

/* ---- the exact reference ------------------------------------------------------------------- */

/* T for the chosen rows (rows == NULL: rows 0..n-1, nrows must be n); out is nrows x dv.
 * Online softmax over key blocks: O(n (d + dv)) memory, OpenMP over row blocks. */
int fr_exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                  const int64_t *rows, int64_t nrows, double *out, char *err, size_t errlen);

/* ---- comparing --------------------------------------------------------------------------------
 */

typedef struct {
    double max_abs; /* max |a - b| */
    double max_rel; /* max |a - b| / max |b| (normwise; inf if b is all zero and a is not) */
} fr_diff;

fr_diff fr_compare(const double *a, const double *b, int64_t count);

#endif
