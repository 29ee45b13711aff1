/* poly.c - the polynomial P ~ exp on [-R, R] (ALGORITHM.md 3): Chebyshev interpolant, its
 * monomial coefficients, a certified relative error eta, and the degree choice.
 *
 * Conditioning. The pipeline uses the monomial form P(x) = sum c_k x^k, because the multinomial
 * expansion needs it. Two losses come with it:
 *  - the Chebyshev -> monomial conversion: b_k = sum_j a_j [t^k] T_j(t) on t = x/R in [-1, 1].
 *    The coefficients of T_j grow like (1 + sqrt 2)^j, but the a_j of exp decay like
 *    (R/2)^j / j!, so the products stay below ~ (1.21 R)^j / j!: harmless for R <~ 10 and any
 *    g <= 24. We do it in long double anyway (cheap), then scale c_k = b_k / R^k, which is exact
 *    up to one rounding per coefficient (no cancellation).
 *  - evaluating the monomial form: sum_k |c_k| |x|^k ~ e^R while e^x can be e^-R, so the
 *    evaluation's relative rounding is amplified by kappa(R) = e^R * sum_k |c_k| R^k ~ e^{2R}.
 *    In double this is fine until e^{2R} 2^-53 ~ eta (R ~ 12 for eta = 1e-5). The pipelines'
 *    own arithmetic is bounded separately and rigorously (core/certify.c).
 */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* Degree cap for the fit itself: far above anything the pipeline can afford. */
#define POLY_MAX_FIT_DEGREE 64

/* sum_k |c_k| R^k: the size of the terms the pipeline adds up, relative to P's scale. */
static double abs_sum(const double *c, int g, double R)
{
    return fr__abs_poly(c, g, R);
}

/* Chebyshev coefficients a_0..a_g of exp(R t) on t in [-1, 1], interpolating at the g+1
 * Chebyshev points (first kind), in long double. */
static void cheb_coeffs(double R, int g, long double *a)
{
    int m = g + 1;
    long double pi = 3.141592653589793238462643383279502884L;
    for (int j = 0; j <= g; j++) {
        long double s = 0;
        for (int k = 0; k < m; k++) {
            long double th = pi * (k + 0.5L) / m;
            s += expl((long double)R * cosl(th)) * cosl(j * th);
        }
        a[j] = 2 * s / m;
    }
    a[0] /= 2;
}

/* Monomial coefficients in t of sum_j a_j T_j(t), by the three-term recurrence on coefficient
 * vectors T_{j+1} = 2 t T_j - T_{j-1}. */
static void cheb_to_monomial(const long double *a, int g, long double *b)
{
    long double tp[POLY_MAX_FIT_DEGREE + 1] = {0}, tc[POLY_MAX_FIT_DEGREE + 1] = {0},
                                         tn[POLY_MAX_FIT_DEGREE + 1];
    for (int k = 0; k <= g; k++)
        b[k] = 0;
    tp[0] = 1; /* T_0 */
    b[0] += a[0];
    if (g == 0) return;
    tc[1] = 1; /* T_1 */
    b[1] += a[1];
    for (int j = 1; j < g; j++) {
        for (int k = 0; k <= g; k++)
            tn[k] = (k ? 2 * tc[k - 1] : 0) - tp[k];
        for (int k = 0; k <= g; k++) {
            tp[k] = tc[k];
            tc[k] = tn[k];
            b[k] += a[j + 1] * tc[k];
        }
    }
}

/* max over x of |P(x) - e^x| / e^x with P evaluated in double by Horner, as the code uses it. */
static double rel_err_at(const double *c, int g, double x)
{
    double p = c[g];
    for (int k = g - 1; k >= 0; k--)
        p = p * x + c[k];
    long double ex = expl((long double)x);
    return (double)(fabsl((long double)p - ex) / ex);
}

int fr_poly_fit(double R, int degree, double *coef, double *eta, char *err, size_t errlen)
{
    if (isinf(R) && R > 0)
        return fr__err(err, errlen, FR_EINPUT,
                       "the score bound R overflows a double: entries this large make scores "
                       "no floating-point attention can hold");
    if (!(R >= 0))
        return fr__err(err, errlen, FR_EINPUT,
                       "score bound R = %g: not a valid bound (it must be >= 0)", R);
    if (degree < 0 || degree > POLY_MAX_FIT_DEGREE)
        return fr__err(err, errlen, FR_EUSAGE, "polynomial degree %d outside 0..%d", degree,
                       POLY_MAX_FIT_DEGREE);
    int g = degree;
    /* Every score is 0 (n = 1 with zero inputs, or all-zero Q or K): P = 1 is exact. */
    if (R == 0) {
        coef[0] = 1;
        for (int k = 1; k <= g; k++)
            coef[k] = 0;
        *eta = 0;
        return FR_OK;
    }
    long double a[POLY_MAX_FIT_DEGREE + 1], b[POLY_MAX_FIT_DEGREE + 1];
    cheb_coeffs(R, g, a);
    cheb_to_monomial(a, g, b);
    for (int k = 0; k <= g; k++)
        coef[k] = (double)(b[k] / powl((long double)R, k));

    /* Certification. The error of a Chebyshev interpolant oscillates like T_{g+1}(x/R), i.e.
     * uniformly in theta = acos(x/R), so the grid is uniform in theta (endpoints included) plus
     * uniform in x. With M >= 20 (g+1) theta-samples a peak of cos((g+1) theta) lies within
     * (g+1) pi / (2M) <= pi/40 of a sample, where cos >= 0.9969; the factor 1.1 covers that and
     * the deviation of the error curve from a pure cosine. */
    int M = 20 * (g + 1) + 1000;
    double emax = 0;
    for (int i = 0; i <= M; i++) {
        double x1 = R * cos(M_PI * i / M);
        double x2 = -R + 2 * R * i / M;
        emax = fmax(emax, fmax(rel_err_at(coef, g, x1), rel_err_at(coef, g, x2)));
    }
    /* Rounding of the double evaluation (Horner, 2g flops), amplified by kappa(R). */
    double round = 2.0 * (g + 1) * DBL_EPSILON * exp(R) * abs_sum(coef, g, R);
    *eta = 1.1 * emax + round;
    return FR_OK;
}

double fr_a_priori_bound(double eta, double B_v)
{
    if (B_v == 0) return 0;
    return eta >= 1 ? INFINITY : 2 * eta / (1 - eta) * B_v;
}

/* Scaled modified Bessel functions I_j(R) e^-R, j = 0..J, by Miller's backward recurrence
 * I_{j-1} = I_{j+1} + (2j / R) I_j from a start far above J, normalised by
 * I_0 + 2 sum_{j>=1} I_j = e^R. Stable for I (the recurrence's dominant solution downwards). */
static int bessel_scaled(double R, int J, double *out)
{
    int top = J + 40 + (int)(2 * R);
    double *t = malloc((size_t)(top + 2) * sizeof *t);
    if (!t) return 0;
    t[top + 1] = 0;
    t[top] = 1e-300;
    for (int j = top; j >= 1; j--) {
        t[j - 1] = t[j + 1] + (2.0 * j / R) * t[j];
        if (t[j - 1] > 1e250) /* rescale the tail computed so far; only ratios matter */
            for (int i = j - 1; i <= top; i++)
                t[i] *= 1e-250;
    }
    double norm = t[0];
    for (int j = 1; j <= top; j++)
        norm += 2 * t[j];
    for (int j = 0; j <= J; j++)
        out[j] = t[j] / norm;
    free(t);
    return 1;
}

int fr__poly_needed_degree(double R, double B_v, double eps, int cap)
{
    if (!(B_v > 0) || !(R > 0)) return 0;
    if (!(eps > 0) || !isfinite(R) || R > cap) return cap + 1;
    /* The degree-g interpolant of e^{Rt} is within 2 sum_{j>g} |a_j| of it, a_j = 2 I_j(R)
     * (Trefethen, Approximation Theory and Approximation Practice, Thm 4.2), so its relative
     * error on [-R, R] is at most eta_g = 4 e^R sum_{j>g} I_j(R) = 4 e^{2R} sum_{j>g} I_j e^-R;
     * 2 eta/(1-eta) B_v <= eps needs eta <= eps / (2 B_v + eps). */
    double *I = malloc((size_t)(cap + 2) * sizeof *I);
    if (!I || !bessel_scaled(R, cap + 1, I)) {
        free(I);
        return cap + 1;
    }
    double log_target = log(eps / (2 * B_v + eps)) - log(4.0) - 2 * R, tail = 0;
    int need = cap + 1;
    /* tail(g) = sum_{j>g}: accumulate from the top, remember the smallest g that passes. */
    double *tails = malloc((size_t)(cap + 2) * sizeof *tails);
    if (tails) {
        for (int g = cap; g >= 0; g--) {
            tail += I[g + 1];
            tails[g] = tail;
        }
        for (int g = 0; g <= cap; g++)
            if (tails[g] <= 0 || log(tails[g]) <= log_target) {
                need = g;
                break;
            }
    }
    free(tails);
    free(I);
    return need;
}

int fr_poly_choose_degree(double R, double B_v, double eps, int max_degree, int *degree,
                          double *eta, char *err, size_t errlen)
{
    if (!(eps > 0)) return fr__err(err, errlen, FR_EUSAGE, "eps = %g must be positive", eps);
    if (!(B_v >= 0) || !isfinite(B_v))
        return fr__err(err, errlen, FR_EINPUT, "B_v = %g is not finite and >= 0", B_v);
    if (max_degree > POLY_MAX_FIT_DEGREE) max_degree = POLY_MAX_FIT_DEGREE;
    double coef[POLY_MAX_FIT_DEGREE + 1];
    /* V = 0: the output is 0 whatever P is; the cheapest polynomial will do. */
    if (B_v == 0) {
        *degree = 0;
        return fr_poly_fit(R, 0, coef, eta, err, errlen);
    }
    for (int g = 0; g <= max_degree; g++) {
        double e;
        int st = fr_poly_fit(R, g, coef, &e, err, errlen);
        if (st) return st;
        if (fr_a_priori_bound(e, B_v) < eps) {
            *degree = g;
            *eta = e;
            return FR_OK;
        }
    }
    return fr__err(err, errlen, FR_EACCURACY,
                   "no polynomial degree <= max_degree (%d) meets eps = %.3g for score bound "
                   "R = %.3g (B_v = %.3g)",
                   max_degree, eps, R, B_v);
}
