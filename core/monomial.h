/* monomial.h - the terms of the multinomial expansion of P(s_ij) over the support S
 * (ALGORITHM.md 4-5): multi-indices alpha, and the distinct Q-monomials u, K-monomials v and
 * kernel monomials c they map to.
 *
 *   P(s_ij) = sum_alpha coef_alpha * u_alpha(i) * c_alpha(j - i) * v_alpha(j)
 *
 * Kernel functions w_s equal up to a constant factor are merged into one function f_k (the
 * factor goes into coef), and functions that are constant drop out of c altogether, so c is a
 * monomial in the distinct non-constant kernel functions only. */
#ifndef FR_MONOMIAL_H
#define FR_MONOMIAL_H

#include "internal.h"

typedef struct {
    int d;        /* exponent vectors of u and v have d entries (columns of Q, K) */
    int nk;       /* distinct non-constant kernel functions; exponent vectors of c have nk */
    int degree;   /* g */
    int64_t n;    /* the functions are tabulated on offsets -(n-1)..n-1 */
    double *ftab; /* nk x (2n-1): f_k(delta) at delta + n - 1 (normalised: max |f_k| = 1) */

    int64_t nalpha, nu, nv, nc, npairs;
    unsigned char *u_exp, *v_exp, *c_exp; /* nu x d, nv x d, nc x nk */
    /* u and v are numbered by degree: those of degree k are [u_first[k], u_first[k+1]). */
    int64_t *u_first, *v_first; /* g + 2 entries */
    int *c_deg;                 /* degree of each c */

    /* alphas, sorted by (degree, u, v, c) */
    int32_t *a_u, *a_v, *a_c;
    double *a_coef;
    int64_t *a_first; /* alphas of degree k: [a_first[k], a_first[k+1]); g + 2 entries */
    /* (u, v) pairs in the same order; the alphas of pair q are [p_first[q], p_first[q+1]), and
     * the pairs of Q-monomial u are [u_pair[u], u_pair[u+1]). */
    int32_t *p_u, *p_v;
    int64_t *p_first; /* npairs + 1 */
    int64_t *u_pair;  /* nu + 1 */
} fr__monomials;

/* Largest number of alphas fr__monomials_build accepts (memory and time beyond are hopeless). */
#define FR_MONOMIALS_MAX_ALPHAS 20000000

/* coef[0..degree]: monomial coefficients of P; tau: the score scale. */
int fr__monomials_build(const fr__support *S, const double *coef, int degree, double tau,
                        fr__monomials *m, char *err, size_t errlen);
/* The same with exponent vectors of at least dim entries (dim = d of the problem, so that they
 * line up with rows of Q and K of stride d even when the support leaves the last columns out;
 * fr__monomials_build sizes them to the columns the support uses). */
int fr__monomials_build_dim(const fr__support *S, int dim, const double *coef, int degree,
                            double tau, fr__monomials *m, char *err, size_t errlen);
void fr__monomials_free(fr__monomials *m);

/* #alpha, #u (= #v) and #c of polyfft at degree g in closed form, without enumerating (ALGORITHM.md
 * 4-5): Q- and K-monomials range over the d columns, kernel monomials over the distinct
 * non-constant kernel functions: cos and sin of each rotated pair for RoPE and clipped RoPE (none
 * when every offset sees the same matrix: n = 1, clip 0, or plain attention), and one per support
 * entry for a general W, an upper bound (fr__monomials_build may merge some). On the RoPE kinds
 * the enumeration agrees (core/plan_test.c checks it). */
void fr__polyfft_counts(const fr_problem *p, int g, int64_t support, int64_t *alphas, int64_t *u,
                        int64_t *c);

/* value of the monomial with exponents e[0..d) at row x[0..d): prod x[a]^e[a] */
static inline double fr__monomial_eval(const unsigned char *e, const double *x, int d)
{
    double r = 1;
    for (int a = 0; a < d; a++)
        for (int t = 0; t < e[a]; t++)
            r *= x[a];
    return r;
}

#endif
