/* fastrope_planner.h - what the planner's tools need beyond the user API (fastrope.h): the
 * streamed statistics `fastrope check` bounds a dump with, the polynomial and its error bound,
 * the decisions a plan would make without building it, and the cost model's predictions.
 *
 *   // bounds of data read one tensor at a time, equal to fr_bounds_compute's to the bit:
 *   fr_stats_rows(q_chunk, rows, d, q_col_max, &q_row_sq);   // ... for every chunk of q, k, v
 *   fr_bounds_from_stats(&p, q_row_sq, k_row_sq, q_col_max, k_col_max, B_v, &b, err, len);
 *   fr_plan_estimate(&p, &b, &opt, &info, err, len);         // degree, method, counts, times
 *
 * Every function here is as stable as fastrope.h's, but of use only to tools that plan. */
#ifndef FASTROPE_PLANNER_H
#define FASTROPE_PLANNER_H

#include "fastrope.h"

/* 1 when W_delta = R^delta for a per-position orthogonal R (standard RoPE and its variants,
 * no rotation, or an explicit W recognised as such a family to within tol); then the
 * factorised path applies. Otherwise why (if not NULL) receives the reason, one line. */
int fr_rotation_is_rope_family(const fr_problem *p, double tol, char *why, size_t whylen);

/* Streaming reductions (fastrope check reads one tensor at a time): fold rows x cols of x into
 * col_max[a] (max |x_ia|, initialise to 0) and *max_row_sq (max_i sum_a x_ia^2, initialise to 0),
 * with the same rounding as fr_bounds_compute. */
void fr_stats_rows(const double *x, int64_t rows, int64_t cols, double *col_max,
                   double *max_row_sq);
/* The bounds fr_bounds_compute would give for one problem, from those reductions of Q and K
 * (d columns each) and max |entry| of V: the same R to the bit. Rotations by parameters only
 * (not explicit W). */
fr_status fr_bounds_from_stats(const fr_problem *p, double q_row_sq, double k_row_sq,
                               const double *q_col_max, const double *k_col_max, double B_v,
                               fr_bounds *out, char *err, size_t errlen);
/* The same for every problem of a batch at once (p->batch query problems, p->kv_batch key and
 * value problems; problem b reads key/value problem b / g as in fr_bounds_compute): q_row_sq and
 * q_col_max (batch x d) per query problem, k_row_sq, k_col_max (kv_batch x d) and B_v per key
 * and value problem, out batch entries, each equal to fr_bounds_from_stats's. Cheaper than a
 * call per problem: the rotation's share of the work is done once. */
fr_status fr_bounds_from_stats_batch(const fr_problem *p, const double *q_row_sq,
                                     const double *k_row_sq, const double *q_col_max,
                                     const double *k_col_max, const double *B_v, fr_bounds *out,
                                     char *err, size_t errlen);

/* The bounds of data whose every entry is at most B in absolute value (fastrope bound):
 * B_q = B_k = B_v = B, R from row norms B sqrt(d). An explicit W without data stands for
 * rot.support_hint entries of size <= 1 per offset. */
fr_status fr_bounds_uniform(const fr_problem *p, double B, fr_bounds *out, char *err,
                            size_t errlen);

/* Chebyshev interpolant of exp on [-R, R] of degree g, converted to monomial coefficients
 * coef[0..g]; *eta receives its relative error max |P(x) - e^x| / e^x certified on a fine grid
 * (an upper bound, with a safety factor). */
int fr_poly_fit(double R, int degree, double *coef, double *eta, char *err, size_t errlen);

/* The a-priori bound on ||T_fast - T||_inf: 2 eta / (1 - eta) * B_v (inf when eta >= 1). */
double fr_a_priori_bound(double eta, double B_v);

/* Smallest degree <= max_degree whose certified eta meets eps through the a-priori bound alone
 * (the polynomial's share of the error; the methods add their arithmetic's, which the plan
 * certifies, core/certify.c). FR_EACCURACY when no degree does. */
int fr_poly_choose_degree(double R, double B_v, double eps, int max_degree, int *degree,
                          double *eta, char *err, size_t errlen);

/* What fr_plan_create would decide for one problem (degree, eta, method, counts, predicted
 * times) without building anything that grows with n: for `fastrope bound` and `fastrope check`.
 * A degree above max_degree is not an error here: info->degree is -1 and info->reason says why.
 * The counts are those of polyfft whatever the method (features: polyrope's rank, RoPE family
 * only). */
fr_status fr_plan_estimate(const fr_problem *p, const fr_bounds *bounds, const fr_options *opt,
                           fr_plan_info *info, char *err, size_t errlen);

/* Cost model (core/cost.c): predicted seconds of each method for one problem of this shape;
 * t[m] < 0 where method m does not apply. Each time is a few operation counts times constants
 * measured on a machine: the built-in ones (measured on the project's machine), or this
 * machine's from `fastrope calibrate`, handed over in fr_options.cost. The core reads no file:
 * the command keeps the constants in its cache directory. All are seconds, with OpenMP on every
 * core (exact below FR's one-thread threshold is charged at one thread's rate). */
struct fr_cost_model {
    double exact_0;                  /* s per call */
    double exact_flop;               /* s per multiply-add per kept (i, j) pair */
    double exact_exp;                /* s per kept pair: exp and bookkeeping */
    double rope_0;                   /* s per call */
    double rope_row;                 /* s per row: rotation, copies, first touch */
    double rope;                     /* s per feature x column x row (unmasked) */
    double rope_causal, rope_window; /* factors on rope under a causal mask, a window */
    double fft_0;                    /* s per call of polyfft */
    double fft[FR_NFFTS];            /* s per N log2 N of one transform, per back end */
    double acc[FR_NFFTS];            /* s per complex multiply-add of the accumulation */
};

/* The built-in constants. */
void fr_cost_model_builtin(fr_cost_model *c);

/* The predicted times under the built-in constants (polyfft on FR_FFT_AUTO's back end). */
void fr_predict_times(const fr_problem *p, int degree, int64_t support, double *t);
/* Under cost (NULL: the built-in constants), polyfft's on back end fft. The times are linear in
 * the constants: a model with one constant 1 and the others 0 gives the count it multiplies,
 * which is how `fastrope calibrate` fits them. */
void fr_predict_times_cost(const fr_cost_model *cost, const fr_problem *p, int degree,
                           int64_t support, fr_fft_backend fft, double *t);

/* fr_exact_rows, fr_exact_backward_rows, fr_check_rows and fr_check_backward_rows with a
 * progress callback (phase "exact rows"), for checking tools whose exact reference is the long
 * part: as fr_options.progress, called from the calling thread a few times a second; a non-zero
 * return stops the call with FR_ECANCELED, everything freed (the outputs then hold nothing
 * usable). */
fr_status fr_exact_rows_progress(const fr_problem *p, const double *q, const double *k,
                                 const double *v, const int64_t *rows, int64_t nrows, double *out,
                                 fr_progress_fn progress, void *progress_user, char *err,
                                 size_t errlen);
fr_status fr_exact_backward_rows_progress(const fr_problem *p, const double *q, const double *k,
                                          const double *v, const double *dout, const double *target,
                                          const int64_t *rows, int64_t nrows, double *dq,
                                          double *dk, double *dv, fr_progress_fn progress,
                                          void *progress_user, char *err, size_t errlen);
fr_status fr_check_rows_progress(const fr_problem *p, const double *q, const double *k,
                                 const double *v, const double *out, const int64_t *rows,
                                 int64_t nrows, fr_diff *per, fr_diff *all, fr_progress_fn progress,
                                 void *progress_user, char *err, size_t errlen);
fr_status fr_check_backward_rows_progress(const fr_problem *p, const double *q, const double *k,
                                          const double *v, const double *dout, const double *target,
                                          const double *dq, const double *dk, const double *dv,
                                          const double *dw, const int64_t *rows, int64_t nrows,
                                          fr_diff *per, fr_diff *all, fr_progress_fn progress,
                                          void *progress_user, char *err, size_t errlen);

#endif
