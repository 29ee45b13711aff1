/* certify.c - certified bounds on the arithmetic's share of a fast method's error.
 *
 * A fast method computes T~_i = N~_i / D~_i, where N_i = sum_j P(s_ij) V_j and D_i = sum_j
 * P(s_ij) are the polynomial attention's numerator and row sum (ALGORITHM.md 3). The polynomial
 * alone is within poly_bound = 2 eta/(1-eta) B_v of exact attention; this file bounds the rest,
 * what floating point adds on top. If |N~_i - N_i|_inf <= E_i and |D~_i - D_i| <= F_i, then
 *
 *   T~_i - T^P_i = (e - T^P_i f) / D~_i        (e = N~_i - N_i, f = D~_i - D_i; exact algebra)
 *   |T~_i - T^P_i|_inf <= (E_i + B_v F_i) / D~_i + u B_v     (the last term: the division)
 *
 * because T^P_i is a convex combination of rows of V (P > 0 on [-R, R] when eta < 1). D~_i is
 * known once the pass has run, so this costs O(1) per row once E_i and F_i are known: that is
 * the a posteriori certificate. Before the pass only a lower bound on D_i is known,
 * D_i >= kappa_i (1 - eta) e^-R with kappa_i the row's kept keys, so D~_i >= that - F: the a
 * priori certificate, which decides whether a plan can promise eps at all and which rows (those
 * with too few keys) it may have to compute exactly.
 *
 * E and F come from standard normwise error bounds, never from fitted constants:
 *  - gamma_m = m u / (1 - m u) bounds the relative error of m chained roundings (Higham,
 *    "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 3.1); a sum or dot
 *    product of m terms in any order is within gamma_m of the sum of the terms' absolute values.
 *  - A length-N FFT: ||fl(F x) - F x||_2 <= gamma_F ||F x||_2 with gamma_F = t eta / (1 - t eta),
 *    t stages, eta = mu + gamma_4 (sqrt 2 + mu), mu the twiddles' error (Higham Theorem 24.2, for
 *    radix 2). With mu = u that is eta ~ 6.7u; we take eta = 10u and count ceil(log2 p) stages
 *    per prime factor p of N, plus two for the real-to-complex wrapper, to cover mixed-radix
 *    butterflies (a direct radix-5 or radix-7 stage has a relative error of at most ~16u and
 *    ~24u, below 3 x 10u) and twiddles within a few ulps.
 * What each method feeds into them is derived where it is used (ALGORITHM.md 3.1 has the
 * whole derivation). */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double fr__gamma(double m, double u)
{
    double mu = m * u;
    return mu < 1 ? mu / (1 - mu) : INFINITY;
}

double fr__fft_stages(int64_t N)
{
    double t = 2; /* the real-to-complex wrapper's split step and its twiddles */
    int64_t r = N;
    for (int64_t p = 2; r > 1;) {
        if (r % p == 0) {
            t += ceil(log2((double)p));
            r /= p;
        } else {
            p++;
        }
    }
    return t;
}

double fr__fft_gamma(int64_t N, double u)
{
    return fr__gamma(fr__fft_stages(N) * FR_FFT_STAGE_ETA, u);
}

double fr__row_bound(double E, double F, double B_v, double D)
{
    if (!(D > 0)) return INFINITY;
    return (E + B_v * F) / D + FR_U_DOUBLE * B_v;
}

double fr__row_bound_prior(double E, double F, double B_v, double kappa, double R, double eta)
{
    double D = kappa * (1 - eta) * exp(-R) - F;
    return fr__row_bound(E, F, B_v, D);
}

double fr__keys_needed(double E, double F, double B_v, double R, double eta, double target)
{
    double room = target - FR_U_DOUBLE * B_v;
    if (!(room > 0) || !(eta < 1) || !isfinite(E) || !isfinite(F)) return INFINITY;
    /* (E + B_v F) / (kappa (1 - eta) e^-R - F) <= room, solved for kappa. */
    double kappa = ((E + B_v * F) / room + F) * exp(R) / (1 - eta);
    return kappa < 1 ? 1 : ceil(kappa * (1 + 1e-12));
}

double fr__abs_poly(const double *coef, int degree, double x)
{
    double s = 0, xk = 1;
    for (int k = 0; k <= degree; k++, xk *= x)
        s += fabs(coef[k]) * xk;
    return s;
}

/* polyfft, ALGORITHM.md 3.1. Per Q-monomial u and column x (a column of V, or the ones of D):
 *
 *   ||y~_u[x] - y_u[x]||_2 <= sum_{alpha -> u} |coef_alpha| (a1 ||b||_1 + a2 ||b||_2),
 *   b = v_alpha * x (all n keys),
 *   a1 = (2 gamma_F + u) sqrt(L) + gamma_{nu+1}(double)
 *   a2 = (2 gamma_F + u + gamma_{g+2}(double) + gamma_{A+4}) L
 *
 * with L the kept offsets (the kernel tables have |entries| <= 1, so ||h||_1 <= L and
 * ||h||_2 <= sqrt L; an even and an odd kernel share a transform, hence 2 gamma_F sqrt L for a
 * kernel spectrum's error), u the unit roundoff of the transforms and of the frequency-domain
 * sums, A the most terms summed into one bin (the accumulation's gamma_{A+4}: complex
 * multiply-adds), and gamma_{nu+1}(double) the gather of the Q-monomials in double. Terms:
 * ||dC||_2 ||Z||_inf (a kernel spectrum's error, ||Z||_inf <= ||b||_1, through the 1/N of the
 * inverse) and ||C||_inf ||dZ||_2 + the accumulation + the inverse transform (||C||_inf <=
 * ||h||_1 <= L). Then |N~_i - N_i| <= sum_u |u(i)| ||...||_2 (an entry is at most the 2-norm).
 * A priori, sum_alpha |coef_alpha| max|u_alpha| max|v_alpha| <= sum_k |c_k| R_abs^k (the
 * multinomial expansion with every product in absolute value), ||b||_1 <= n max|v| B_x and
 * ||b||_2 <= sqrt(n) max|v| B_x. Second-order terms (error times error) are covered by the
 * factor (1 + 4 (gamma_F + u)). */
void fr__polyfft_round_consts(const fr__round_model *rm, double *a1, double *a2)
{
    double gF = fr__fft_gamma(rm->N, rm->u), ud = FR_U_DOUBLE;
    double safety = 1 + 4 * (gF + rm->u);
    *a1 = ((2 * gF + rm->u) * sqrt(rm->L) + fr__gamma(rm->gather + 1, ud)) * safety;
    *a2 = (2 * gF + rm->u + fr__gamma(rm->degree + 2, ud) + fr__gamma(rm->depth + 4, rm->u)) *
          rm->L * safety;
}

void fr__polyfft_round_prior(const fr__round_model *rm, double S_abs, double B_v, double *E,
                             double *F)
{
    double a1, a2, n = (double)rm->n;
    fr__polyfft_round_consts(rm, &a1, &a2);
    double w = S_abs * (a1 * n + a2 * sqrt(n)) * (1 + fr__gamma(rm->degree + 1, FR_U_DOUBLE));
    *F = w;
    *E = w * B_v;
}

/* polyrope and the direct parts of its masks (ALGORITHM.md 3.1): every term of row i is
 * |phi_f(i) psi_f(j) x_j| with sum_f |phi_f(i)| |psi_f(j)| = sum_k |c_k| tau^k (|q'_i|.|k'_j|)^k
 * <= sum_k |c_k| R_norm^k (Cauchy-Schwarz; rotations keep norms), or a P(s) evaluated directly
 * (Horner, and the dot product under it: within gamma_{(g+1)(d+2)} of the same sum). The sums
 * run over at most n keys (a sliding sum adds and subtracts each key block once: 2n
 * roundings), then over r features: |N~_i - N_i| <= gamma_m S n B_x, m = 2n + r + (g+1)(d+2)
 * + 16, for x in V (B_v) and in the ones (1). */
void fr__polyrope_round_prior(const fr__round_model *rm, double S_norm, double B_v, double *E,
                              double *F)
{
    double m = 2.0 * (double)rm->n + (double)rm->features + (rm->degree + 1.0) * (rm->d + 2.0) + 16;
    double w = fr__gamma(m, FR_U_DOUBLE) * S_norm * (double)rm->n;
    *F = w;
    *E = w * B_v;
}

/* How far the scores a method works with can lie from the exact scores of the problem
 * (ALGORITHM.md 3.1), before the method's own sums. Three sources, in score units:
 *  - the angles: i theta_m / pos_scale is formed in double, theta_m = base^(-2m/r) by pow; its
 *    error is at most 4 u (n - 1) / pos_scale (theta_m (3 + (2m/r) ln base) <= 3, the maximum
 *    at m = 0 where theta_0 = 1 exactly). Rotating a pair by an angle off by dphi moves it by
 *    at most |dphi| its norm, and a score sees two rotations: 2 dphi R_norm (Cauchy-Schwarz
 *    over the pairs). Methods that read W_delta from tables (polyfft) see one angle, delta
 *    theta_m, with the same bound.
 *  - an explicit W taken for a RoPE family (fr__rope_family): the methods that rotate rows by
 *    position use W_{-i} W_{-j}^T for W_{j-i}; each factor is within FR_FAMILY_ULPS d (n)
 *    DBL_EPSILON of W_1^delta entrywise, so the product is within 3 FR_FAMILY_ULPS d^2 n
 *    DBL_EPSILON in 2-norm.
 *  - the rotation's arithmetic, in unit roundoff u, for the methods that rotate rows: a pair
 *    (x_a c - x_b s, x_a s + x_b c) with c and s within 8u of the cosine and sine of the
 *    computed angle is off by at most rho ||x_pair||, rho = 2 (gamma_2 + 8u). 8u covers libm's
 *    cos and sin (1 ulp) and polyrope's two-table angle sums past 2^20 entries
 *    (c = c_a c_b - s_a s_b from four 1-ulp values: within 4 sqrt(2) u + gamma_2), whose
 *    angles a + b carry the same 2u (i / pos_scale) as i freq does. A row x W_{-i} is off by
 *    gamma_d sqrt(d) ||x|| ||W||_2. Two rotated rows then move a score by
 *    (2 rho + rho^2) R_norm. */
static double rotation_rho(const fr_problem *p, double u)
{
    if (!(u > 0)) return 0;
    if (p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP)
        return 2 * (fr__gamma(2, u) + 8 * u);
    if (p->rot.kind == FR_ROT_EXPLICIT) return fr__gamma((double)p->d, u) * sqrt((double)p->d);
    return 0;
}

double fr__score_error(const fr_problem *p, const fr_bounds *b, double u_rot, int by_position)
{
    double Rn = fmax(b->R_norm, b->R), n = (double)p->n, d = (double)p->d, e = 0;
    int rope = p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP;
    int family = p->rot.kind == FR_ROT_EXPLICIT && by_position;
    if (rope && n > 1) e += 2 * (4 * FR_U_DOUBLE * (n - 1) / p->rot.pos_scale) * Rn;
    if (family) e += 3.0 * FR_FAMILY_ULPS * d * d * n * DBL_EPSILON * Rn;
    double rho = by_position ? rotation_rho(p, u_rot) : 0;
    return e + (2 * rho + rho * rho) * Rn;
}

double fr__eta_scores(double eta, double score_error)
{
    return exp(score_error) * (1 + eta) - 1;
}

/* The exact engine in working precision u (core/exact_impl.h, and core/exact_small.c for small
 * problems), for the rows a fast method hands to it and for single-precision exact. A score is
 * one FMA chain over `chain` terms (the d coordinates of two rotated rows with tau folded into
 * the query, or for a general W the |S| products Q_a W_ab K_b, one more rounding each) that
 * starts from the shift M_i, or is followed by the subtraction of the row's maximum; every
 * partial sum is within M_i + sum |terms| <= 2 R' (1 + rho)^2 (1 + 1e-6) of zero, so the
 * chain is within 2 gamma_{chain + 2} of that, to which fr__score_error adds the angles and the
 * rotation. Each weight is one exp within 4 ulps, rescaled at most once per key block when the
 * running maximum is used (not when `shifted`: every row's weights are exp(s - M_i) with an
 * a-priori M_i), so it is off by a factor within 1 +- eps_w,
 * eps_w = exp(e_s + gamma_{4 + 6 blocks}) - 1; perturbing every weight so moves T by at most
 * 2 eps_w / (1 - eps_w) B_v (ALGORITHM.md 3).
 * The sums run in key blocks of FR_EXACT_BC: an FMA chain over a block's keys (vector lanes of
 * fewer), then one addition per block to the row's total, so they are within gamma_depth of
 * their terms' absolute sum, depth = FR_EXACT_BC + blocks + 4: relative to D for the row sum,
 * and to D B_v for the weighted values. */
double fr__exact_round(const fr_problem *p, const fr_bounds *b, double u, int shifted,
                       int64_t chain)
{
    double blocks = ceil((double)p->n / FR_EXACT_BC);
    double depth = FR_EXACT_BC + blocks + 4;
    double Rp = fmax(b->R, fmax(b->R_norm, b->R_abs)), rho = rotation_rho(p, u);
    double es = 2 * fr__gamma((double)chain + 2, u) * Rp * (1 + rho) * (1 + rho) * (1 + 1e-6) +
                fr__score_error(p, b, u, 1);
    double ew = expm1(es + fr__gamma(4.0 + (shifted ? 0 : 6.0 * blocks), u));
    double gs = fr__gamma(depth, u);
    if (!(ew < 1) || !(gs < 0.5)) return INFINITY;
    return (2 * ew / (1 - ew) + 2 * gs / (1 - gs) + u) * b->B_v;
}

int fr__exact_shifted(const fr_problem *p, const fr_bounds *b, double u)
{
    double shift_max = u > FR_U_DOUBLE ? 80 : 600;
    return p->rot.kind != FR_ROT_EXPLICIT && 2 * fmax(b->R_norm, b->R) <= shift_max;
}

int fr__certify_rows(const fr_problem *p, const fr__cert *c, const double *q, const double *k,
                     const double *v, double *out, const double *rowsum, int64_t *recomputed,
                     double *rounding, char *err, size_t errlen)
{
    int64_t n = p->n, dv = p->dv, bad = 0;
    double worst = 0;
    int64_t *rows = malloc((size_t)(n + 1) * sizeof *rows);
    if (!rows) return fr__err(err, errlen, FR_ENOMEM, "out of memory certifying the rows");
    for (int64_t i = 0; i < n; i++) {
        double rb = fr__row_bound(c->E, c->F, c->B_v, rowsum[i]) + c->score;
        if (rb <= c->target)
            worst = fmax(worst, rb);
        else
            rows[bad++] = i;
    }
    int st = FR_OK;
    if (bad) {
        double *ex = malloc((size_t)(bad * (dv ? dv : 1)) * sizeof *ex);
        if (!ex) {
            free(rows);
            return fr__err(err, errlen, FR_ENOMEM, "out of memory recomputing %lld rows",
                           (long long)bad);
        }
        st = fr__exact_rows(p, q, k, v, rows, bad, ex, NULL, err, errlen);
        if (!st)
            for (int64_t r = 0; r < bad; r++)
                memcpy(out + rows[r] * dv, ex + r * dv, (size_t)dv * sizeof *ex);
        free(ex);
        worst = fmax(worst, c->exact_bound);
    }
    free(rows);
    *recomputed = bad;
    *rounding = worst;
    return st;
}
