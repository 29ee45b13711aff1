/* plan.c - one problem's plan: which method runs, with which polynomial, and why.
 *
 * Everything that does not depend on the tensors' values (only on their shape and bounds) is
 * decided here once: the degree, the method (auto's choice through the cost model), and the
 * back end's own plan (monomials, spectra). A batch plan (core/batch.c) holds one of these per
 * distinct decision and shares it among the problems that agree. */
#include "fft.h"
#include "internal.h"
#include "monomial.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fr__subplan {
    fr_problem p;
    fr_plan_info info;
    fr__cert cert; /* the fast methods' row certificate (decide) */
    fr__polyfft *polyfft;
    fr__polyrope *polyrope;
    fr__small_exact *small; /* exact in double on few keys (core/exact_small.c) */
};

/* |S| without building the kernel tables (those can be large): the cost model needs it. */
static int64_t support_size(const fr_problem *p)
{
    int64_t r = p->rot.rotary_dim > 0 ? p->rot.rotary_dim : p->d;
    switch (p->rot.kind) {
    case FR_ROT_NONE: return p->d;
    case FR_ROT_ROPE:
    case FR_ROT_CLIP:
        /* Every offset sees the identity when n = 1 or clip = 0: no sines, only the diagonal. */
        if (p->n == 1 || (p->rot.kind == FR_ROT_CLIP && p->rot.clip == 0)) return p->d;
        return 2 * r + (p->d - r); /* a 2x2 block per pair, 1 per fixed coordinate */
    case FR_ROT_EXPLICIT: {
        if (!p->rot.w) return p->rot.support_hint;
        int64_t ns = 0;
        for (int64_t a = 0; a < p->d; a++)
            for (int64_t b = 0; b < p->d; b++)
                for (int64_t t = 0; t < 2 * p->n - 1; t++)
                    if (p->rot.w[(t * p->d + a) * p->d + b] != 0) {
                        ns++;
                        break;
                    }
        return ns;
    }
    }
    return p->d * p->d;
}

/* Terms of one score's FMA chain in the exact engine: the d coordinates of two rotated rows, or
 * for a general W the |S| products through its support (one more rounding each). */
static int64_t exact_chain(const fr_problem *p, int64_t support)
{
    if (p->rot.kind == FR_ROT_EXPLICIT && !fr__rope_family(p, NULL, 0)) return support + 1;
    return p->d;
}

/* Monomial and FFT counts of polyfft for p (ALGORITHM.md 5): (#u + #v)(dv + 1) + #c FFTs. */
static int count_terms_with(const fr_problem *p, const double *coef, fr_plan_info *info, int64_t dv,
                            char *err, size_t errlen)
{
    fr__support S;
    fr__monomials m;
    int st = fr__support_build(p, &S, err, errlen);
    if (st) return st;
    st = fr__monomials_build(&S, coef, info->degree, p->tau, &m, err, errlen);
    fr__support_free(&S);
    if (st) return st;
    info->alphas = m.nalpha;
    info->q_monomials = m.nu;
    info->k_monomials = m.nv;
    info->kernels = m.nc;
    info->ffts = (m.nu + m.nv) * (dv + 1) + m.nc;
    fr__monomials_free(&m);
    return FR_OK;
}

/* auto: the fastest method the cost model predicts among those that apply. */
static fr_method choose(const fr_plan_info *info, int rope_family, const char **reason)
{
    const double *t = info->predicted_s;
    fr_method best = FR_METHOD_EXACT;
    *reason = "the cost model predicts exact attention is fastest at this size";
    if (t[FR_METHOD_POLYFFT] >= 0 && t[FR_METHOD_POLYFFT] < t[best]) {
        best = FR_METHOD_POLYFFT;
        *reason = "the cost model predicts polyfft is fastest";
    }
    if (rope_family && t[FR_METHOD_POLYROPE] >= 0 && t[FR_METHOD_POLYROPE] < t[best]) {
        best = FR_METHOD_POLYROPE;
        *reason = "RoPE family: the cost model predicts the factorised path is fastest";
    }
    return best;
}

/* ---- the certificate of one method at one degree -------------------------------------------- */

/* The offsets [lo, hi] the mask keeps. */
static void mask_offsets(const fr_problem *p, int64_t *lo, int64_t *hi)
{
    *lo = -(p->n - 1);
    *hi = p->n - 1;
    if (p->window >= 0 && p->window < p->n - 1) *lo = -p->window, *hi = p->window;
    if (p->causal && *hi > 0) *hi = 0;
}

/* Kept keys of row i. */
static int64_t row_keys(const fr_problem *p, int64_t lo, int64_t hi, int64_t i)
{
    int64_t j0 = i + lo < 0 ? 0 : i + lo, j1 = i + hi > p->n - 1 ? p->n - 1 : i + hi;
    return j1 - j0 + 1;
}

/* The fewest and the most kept keys of any row: the ends of the sequence have the fewest, a
 * row far enough from both the most. */
static void key_range(const fr_problem *p, int64_t *kmin, int64_t *kmax)
{
    int64_t lo, hi, n = p->n;
    mask_offsets(p, &lo, &hi);
    *kmax = hi - lo + 1 < n ? hi - lo + 1 : n;
    int64_t first = hi + 1 < n ? hi + 1 : n, last = 1 - lo < n ? 1 - lo : n;
    *kmin = first < last ? first : last;
}

/* The rows with fewer than `below` kept keys, and their keys in all (the exact path's work). */
static int64_t rows_below(const fr_problem *p, double below, double *pairs)
{
    int64_t lo, hi, rows = 0;
    mask_offsets(p, &lo, &hi);
    *pairs = 0;
    for (int64_t i = 0; i < p->n; i++) {
        int64_t k = row_keys(p, lo, hi, i);
        if ((double)k < below) rows++, *pairs += (double)k;
    }
    return rows;
}

/* The most alphas of degree g that share one Q-monomial: the depth of polyfft's frequency-domain
 * sums (certify.c). An alpha is a multi-index over S; those of one monomial u with exponents e
 * distribute e_a among the s_a support entries of row a: prod_a C(e_a + s_a - 1, s_a - 1) ways.
 * Maximised over |e| = g by a small dynamic program, with s_a <= s for every row. */
static double alphas_per_monomial(int64_t d, int64_t s, int g)
{
    if (s < 1) s = 1;
    double best[65], next[65];
    for (int k = 0; k <= g; k++)
        best[k] = k == 0 ? 1 : 0;
    for (int64_t a = 0; a < d; a++) {
        for (int k = 0; k <= g; k++) {
            next[k] = 0;
            for (int e = 0; e <= k; e++) {
                int64_t ways = fr__binom(e + s - 1, s - 1);
                next[k] = fmax(next[k], best[k - e] * (double)ways);
            }
        }
        memcpy(best, next, sizeof best);
    }
    return best[g];
}

/* Support entries in the busiest row of W (RoPE: 2, a 2x2 block per pair; general W: d). */
static int64_t support_per_row(const fr_problem *p)
{
    if (p->rot.kind == FR_ROT_NONE) return 1;
    if (p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP) return 2;
    return p->d;
}

/* What polyfft's transforms are on back end fft: their length and unit roundoff (single for
 * KissFFT and FFTW float, double for FFTW). */
static void polyfft_model(const fr_problem *p, fr_fft_backend fft, fr__round_model *rm)
{
    int64_t lo, hi;
    mask_offsets(p, &lo, &hi);
    rm->N = fr__fft_fast_size(fft, p->n + (hi > -lo ? hi : -lo));
    rm->u = fr__fft_unit_roundoff(fft);
    rm->L = (double)(hi - lo + 1);
}

typedef struct {
    double poly_bound, rounding_bound, keys_exact, full_row_bound;
    fr__cert cert;
} method_cert;

/* The certificate of method m with polynomial coef (degree g, certified eta) on these bounds:
 * the a-priori E and F, the fewest keys a row needs to be certified before the pass, and the
 * bound that then holds on every row. 1 when poly_bound + rounding_bound <= eps. */
static int certify(const fr_problem *p, const fr_bounds *b, fr_method m, fr_fft_backend fft,
                   int64_t support, const double *coef, int g, double eta, double eps,
                   method_cert *mc);

/* Terms the method's plan would hold at degree g (polyrope's features, polyfft's multi-indices),
 * and the most a plan can: beyond, the degree is out of the fast regime whatever its accuracy. */
static void plan_size(const fr_problem *p, fr_method m, int g, int64_t support, double *terms,
                      double *limit)
{
    if (m == FR_METHOD_POLYROPE) {
        int64_t r = fr__binom(g + p->d, p->d);
        *terms = (double)r;
        *limit = FR_POLYROPE_MAX_FEATURES;
    } else {
        int64_t alphas, nu, nc;
        fr__polyfft_counts(p, g, support, &alphas, &nu, &nc);
        *terms = (double)alphas;
        *limit = FR_MONOMIALS_MAX_ALPHAS;
    }
}

static int certify(const fr_problem *p, const fr_bounds *b, fr_method m, fr_fft_backend fft,
                   int64_t support, const double *coef, int g, double eta, double eps,
                   method_cert *mc)
{
    fr__round_model rm;
    memset(&rm, 0, sizeof rm);
    memset(mc, 0, sizeof *mc);
    rm.n = p->n;
    rm.d = p->d;
    rm.degree = g;
    double E, F, B_v = b->B_v;
    if (m == FR_METHOD_POLYROPE) {
        rm.features = fr__binom(g + p->d, p->d);
        fr__polyrope_round_prior(&rm, fr__abs_poly(coef, g, fmax(b->R_norm, b->R)), B_v, &E, &F);
    } else {
        polyfft_model(p, fft, &rm);
        rm.depth = alphas_per_monomial(p->d, support_per_row(p), g);
        int64_t alphas, nu, nc;
        fr__polyfft_counts(p, g, support, &alphas, &nu, &nc);
        rm.gather = (double)(m == FR_METHOD_POLYFFT_LITERAL ? alphas : nu);
        if (m == FR_METHOD_POLYFFT_LITERAL) rm.depth = 1;
        fr__polyfft_round_prior(&rm, fr__abs_poly(coef, g, fmax(b->R_abs, b->R)), B_v, &E, &F);
    }
    mc->poly_bound = fr_a_priori_bound(eta, B_v);
    /* The scores the method works with are off by at most es (certify.c): the polynomial then
     * weighs every key within eta_s of exp of the exact score, which costs `score` on every
     * row on top of poly_bound, and row sums are at least kappa (1 - eta_s) e^-R. */
    double es = m == FR_METHOD_POLYROPE ? fr__score_error(p, b, FR_U_DOUBLE, 1)
                                        : fr__score_error(p, b, 0, 0);
    double eta_s = fr__eta_scores(eta, es);
    double score = eta_s < 1 ? fr_a_priori_bound(eta_s, B_v) - mc->poly_bound : INFINITY;
    double room = eps - mc->poly_bound - score;
    double M = fr__keys_needed(E, F, B_v, b->R, eta_s, room);
    int64_t kmin, kmax;
    key_range(p, &kmin, &kmax);
    mc->full_row_bound = fr__row_bound_prior(E, F, B_v, (double)kmax, b->R, eta_s) + score;
    mc->keys_exact = M;
    /* Rows the exact path may take over keep its own rounding (score sums in double). */
    double exact = fr__exact_round(p, b, FR_U_DOUBLE, fr__exact_shifted(p, b, FR_U_DOUBLE),
                                   exact_chain(p, support));
    double rb = fr__row_bound_prior(E, F, B_v, fmax(M, (double)kmin), b->R, eta_s) + score;
    if (M > (double)kmin) rb = fmax(rb, exact);
    mc->rounding_bound = rb;
    mc->cert = (fr__cert){.E = E,
                          .F = F,
                          .B_v = B_v,
                          .target = rb,
                          .exact_bound = exact,
                          .poly_bound = mc->poly_bound,
                          .score = score};
    return room > 0 && M <= (double)kmax && mc->poly_bound + rb <= eps;
}

/* ---- the decision ---------------------------------------------------------------------- */
/* Exact attention in double is the reference itself; in single precision its own rounding is
 * certified like a fast method's (certify.c) and must meet eps. */
static int exact_certificate(const fr_problem *p, const fr_bounds *b, const fr_options *opt,
                             fr_plan_info *info, char *err, size_t errlen)
{
    if (opt->precision != FR_F32) return FR_OK;
    if (!b)
        return fr__err(err, errlen, FR_EUSAGE,
                       "single-precision exact attention needs the data's bounds for its "
                       "certificate");
    double rb = fr__exact_round(p, b, FR_U_FLOAT, fr__exact_shifted(p, b, FR_U_FLOAT),
                                exact_chain(p, info->support));
    info->rounding_bound = info->a_priori_bound = rb;
    if (rb <= opt->eps) return FR_OK;
    return fr__err(err, errlen, FR_EACCURACY,
                   "eps = %.3g is below what single-precision exact attention can certify "
                   "here (its rounding bound is %.3g at n = %lld, score bound R = %.3g); use "
                   "double precision",
                   opt->eps, rb, (long long)p->n, b->R);
}

typedef struct {
    int ok, degree, poly_limited, size_limited;
    fr_fft_backend fft; /* polyfft's back end */
    double eta, *coef;
    method_cert mc;
    char why[320];
} method_choice;

/* The fits of one R, degree by degree, shared by the methods a decision weighs (a fit costs a
 * certification grid of ~1000 points: `check` decides for every head of a dump). */
typedef struct {
    double R;
    double coef[65][65], eta[65];
    int have[65];
} fit_cache;

/* At most this many R's fits are kept per planning (35 KB each); beyond, a decision fits on its
 * own as before. */
#define FITS_KEPT 64

struct fr__fits {
    fit_cache *c[FITS_KEPT];
    int n;
};

fr__fits *fr__fits_new(void)
{
    return calloc(1, sizeof(fr__fits));
}

void fr__fits_free(fr__fits *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++)
        free(f->c[i]);
    free(f);
}

/* The fits of R: kept ones, or new (kept in f when there is room; *owned when not). */
static fit_cache *fits_of(fr__fits *f, double R, int *owned)
{
    *owned = 0;
    for (int i = 0; f && i < f->n; i++)
        if (f->c[i]->R == R) return f->c[i];
    fit_cache *fc = calloc(1, sizeof *fc);
    if (!fc) return NULL;
    fc->R = R;
    if (f && f->n < FITS_KEPT)
        f->c[f->n++] = fc;
    else
        *owned = 1;
    return fc;
}

static int fit_at(fit_cache *fc, int g, const double **coef, double *eta, char *err, size_t errlen)
{
    if (g < 0 || g > 64) return fr__err(err, errlen, FR_EUSAGE, "degree %d outside 0..64", g);
    if (!fc->have[g]) {
        int st = fr_poly_fit(fc->R, g, fc->coef[g], &fc->eta[g], err, errlen);
        if (st) return st;
        fc->have[g] = 1;
    }
    *coef = fc->coef[g];
    *eta = fc->eta[g];
    return FR_OK;
}

/* support: |S| (support_size), counted once per decision: for an explicit W it is a pass over
 * all of W. */
static int choose_degree(const fr_problem *p, const fr_bounds *b, const fr_options *opt,
                         fr_method m, fr_fft_backend fft, int64_t support, fit_cache *fc,
                         method_choice *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->fft = fft;
    c->degree = -1;
    c->poly_limited = 1;
    int g0 = opt->degree >= 0 ? opt->degree : 0,
        g1 = opt->degree >= 0 ? opt->degree : opt->max_degree;
    if (opt->degree < 0) {
        /* The Chebyshev tail says within a degree or so where the polynomial starts to meet
         * eps (core/poly_test.c checks it against the certified search): no fit below that, and
         * none at all when even max_degree is too low. */
        int est = fr__poly_needed_degree(b->R, b->B_v, opt->eps, g1 + 2);
        if (est > g1 + 1) return FR_OK;
        if (est - 2 > g0) g0 = est - 2;
    }
    /* The certificate assumes no underflow or overflow (FR_FLOAT_FFT_MIN). */
    if (m != FR_METHOD_POLYROPE && !fr__fft_is_double(fft) && b->B_v > 0 &&
        !(b->B_v >= FR_FLOAT_FFT_MIN && b->B_v <= FR_FLOAT_FFT_MAX)) {
        c->poly_limited = 0;
        snprintf(c->why, sizeof c->why,
                 "V's entries (B_v = %.3g) are outside the range a single-precision FFT holds "
                 "without underflow or overflow",
                 b->B_v);
        return FR_OK;
    }
    double best_full = INFINITY, best_poly = INFINITY;
    int best_g = -1, first_ok = -1;
    if (!(c->coef = malloc((size_t)(g1 + 1) * sizeof *c->coef)))
        return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    for (int g = g0; g <= g1; g++) {
        const double *coef = NULL;
        double eta = INFINITY;
        int st = fit_at(fc, g, &coef, &eta, err, errlen);
        if (st) return st;
        method_cert mc;
        double terms, limit;
        plan_size(p, m, g, support, &terms, &limit);
        if (terms > limit) { /* this degree and every higher one: too large a plan */
            /* If lower degrees met eps but not their rounding, the arithmetic is the reason. */
            if (first_ok >= 0) break;
            c->poly_limited = 0;
            c->size_limited = 1;
            snprintf(c->why, sizeof c->why,
                     "%s at degree %d needs %.3g terms, more than the %.3g a plan can hold: "
                     "these inputs are outside its fast regime",
                     fr_method_name(m), g, terms, limit);
            return FR_OK;
        }
        if (certify(p, b, m, fft, support, coef, g, eta, opt->eps, &mc)) {
            memcpy(c->coef, coef, (size_t)(g + 1) * sizeof *coef);
            c->ok = 1, c->degree = g, c->eta = eta, c->mc = mc;
            return FR_OK;
        }
        if (mc.poly_bound < opt->eps) {
            c->poly_limited = 0; /* the polynomial is good enough; the arithmetic is not */
            if (first_ok < 0) first_ok = g, best_poly = mc.poly_bound;
            if (mc.full_row_bound < best_full)
                best_full = mc.full_row_bound, best_g = g, best_poly = mc.poly_bound;
        }
    }
    const char *name = fr_method_name(m);
    if (c->poly_limited) {
        if (opt->degree >= 0)
            snprintf(c->why, sizeof c->why,
                     "%s: degree %d gives a polynomial bound above eps = %.3g at score bound "
                     "R = %.3g",
                     name, opt->degree, opt->eps, b->R);
        return FR_OK; /* the common reason is phrased by the caller */
    }
    int64_t kmin, kmax;
    key_range(p, &kmin, &kmax);
    const char *arith = m == FR_METHOD_POLYROPE  ? "double-precision"
                        : fr__fft_is_double(fft) ? "double-precision FFT (FFTW)"
                        : fft == FR_FFT_KISSFFT  ? "single-precision FFT (KissFFT)"
                                                 : "single-precision FFT (FFTW float)";
    if (best_g < 0) /* not one degree with a finite bound: the error can exceed any row sum */
        snprintf(c->why, sizeof c->why,
                 "eps = %.3g is beyond what %s's %s arithmetic can certify here: from degree %d "
                 "(polynomial bound %.3g) its error bound exceeds the smallest row sum a row of "
                 "%lld keys can have at score bound R = %.3g (n = %lld)",
                 opt->eps, name, arith, first_ok, best_poly, (long long)kmax, b->R,
                 (long long)p->n);
    else
        snprintf(c->why, sizeof c->why,
                 "eps = %.3g is below what %s's %s arithmetic can certify here: at degree %d "
                 "(polynomial bound %.3g) the certified rounding bound of a row with all %lld "
                 "keys is %.3g (n = %lld, score bound R = %.3g)",
                 opt->eps, name, arith, best_g, best_poly, (long long)kmax, best_full,
                 (long long)p->n, b->R);
    return FR_OK;
}

/* The FFT back ends auto chooses among, in the order ties go. */
static const fr_fft_backend backends[] = {FR_FFT_FFTW, FR_FFT_FFTW_FLOAT, FR_FFT_KISSFFT};
#define NBACKENDS (sizeof backends / sizeof *backends)

/* polyfft on its FFT back end: the one asked for, or for auto the fastest (by the cost model,
 * the rows it may hand to the exact path included) among those whose arithmetic certifies eps.
 * Single precision wins only where its rounding does not bind. When none does, the reason is
 * the double back end's, the most capable. */
static int choose_fft(const fr_problem *p, const fr_bounds *b, const fr_options *opt, fr_method m,
                      int64_t support, fit_cache *fc, method_choice *c, char *err, size_t errlen)
{
    if (opt->fft != FR_FFT_AUTO)
        return choose_degree(p, b, opt, m, fr__fft_resolve(opt->fft), support, fc, c, err, errlen);
    double tbest = INFINITY, kept;
    rows_below(p, INFINITY, &kept);
    int found = 0;
    for (size_t i = 0; i < NBACKENDS; i++) {
        method_choice x;
        int st = choose_degree(p, b, opt, m, backends[i], support, fc, &x, err, errlen);
        if (st) {
            free(x.coef);
            if (found) free(c->coef);
            return st;
        }
        double t[FR_NMETHODS], pairs = 0, te[FR_NMETHODS];
        if (x.ok) {
            rows_below(p, x.mc.keys_exact, &pairs);
            fr_predict_times_cost(opt->cost, p, x.degree, support, backends[i], t);
            fr_predict_times_cost(opt->cost, p, -1, support, FR_FFT_AUTO, te);
            t[m] += kept > 0 ? pairs * te[FR_METHOD_EXACT] / kept : 0;
        }
        if (!found || (x.ok && (!c->ok || t[m] < tbest))) {
            if (found) free(c->coef);
            *c = x;
            tbest = x.ok ? t[m] : INFINITY;
            found = 1;
        } else {
            free(x.coef);
        }
    }
    return FR_OK;
}

/* The refusal when no degree's polynomial meets eps: what eps would need and what it would
 * cost, in API terms (cmd/ phrases the flags). */
static void poly_reason(const fr_problem *p, const fr_bounds *b, const fr_options *opt, int need,
                        char *why, size_t len)
{
    enum { CAP = 1000 };
    int64_t alphas, nu, nc;
    if (need > CAP) {
        snprintf(why, len,
                 "no polynomial degree <= max_degree (%d) meets eps = %.3g at score bound "
                 "R = %.3g (B_v = %.3g), nor would any degree up to %d: these entries are far "
                 "outside the fast regime; exact attention is the method for them",
                 opt->max_degree, opt->eps, b->R, b->B_v, CAP);
        return;
    }
    fr__polyfft_counts(p, need, support_size(p), &alphas, &nu, &nc);
    int64_t nfeat = fr__binom(need + p->d, p->d);
    double features = (double)nfeat;
    double ffts = 2.0 * (double)nu * (double)(p->dv + 1) + (double)nc;
    int reachable = need <= 64 && features < 4e6;
    snprintf(why, len,
             "no polynomial degree <= max_degree (%d) meets eps = %.3g at score bound R = %.3g "
             "(B_v = %.3g): it needs degree %d (polyrope: %.3g features, polyfft: %.3g FFTs "
             "per problem)%s",
             opt->max_degree, opt->eps, b->R, b->B_v, need, features, ffts,
             reachable ? ""
                       : ", beyond the fast methods' reach: exact attention is the method "
                         "for these inputs");
}

/* Everything fr_plan_create decides before building: the degree (and the coefficients, in
 * *coef, malloc'd), the method, its certificate, the predicted times. FR_EACCURACY when a fast
 * method was forced and cannot certify eps; auto then falls back to exact. */
/* auto, before any fit: when exact attention is predicted faster than either fast method at
 * the lowest degree the Chebyshev tail allows (their costs only grow with the degree, and the
 * rows they may hand to exact only add to them), the fits and certificates cannot change the
 * choice. A small problem then plans in microseconds instead of milliseconds. */
static int exact_is_cheaper(const fr_problem *p, const fr_bounds *b, const fr_options *opt,
                            int rope_family, const fr_plan_info *info)
{
    if (opt->method != FR_METHOD_AUTO || opt->degree >= 0) return 0;
    int est = fr__poly_needed_degree(b->R, b->B_v, opt->eps, opt->max_degree + 2);
    if (est > opt->max_degree + 1) return 0; /* the refusal path says what eps would need */
    int g = est - 2 > 0 ? est - 2 : 0;
    double fast = INFINITY, t[FR_NMETHODS];
    for (size_t i = 0; i < NBACKENDS; i++) {
        fr_predict_times_cost(opt->cost, p, g, info->support, backends[i], t);
        if (t[FR_METHOD_POLYFFT] >= 0) fast = fmin(fast, t[FR_METHOD_POLYFFT]);
        if (rope_family && t[FR_METHOD_POLYROPE] >= 0) fast = fmin(fast, t[FR_METHOD_POLYROPE]);
    }
    double te = info->predicted_s[FR_METHOD_EXACT];
    return te >= 0 && te < fast;
}

static int decide(const fr_problem *p, const fr_bounds *bounds, const fr_options *opt,
                  fr__fits *fits, fr_plan_info *info, double **coef, fr__cert *cert, int lazy,
                  char *err, size_t errlen)
{
    *coef = NULL;
    memset(info, 0, sizeof *info);
    memset(cert, 0, sizeof *cert);
    info->method = opt->method;
    info->reason = "requested";
    info->degree = -1;
    info->needed_degree = -1;
    info->support = support_size(p);
    info->fft = fr__fft_resolve(opt->fft); /* polyfft's choice below, if polyfft can run */
    info->fft_precision = fr__fft_precision(info->fft);
    for (int m = 0; m < FR_NMETHODS; m++)
        info->predicted_s[m] = -1;
    fr_predict_times_cost(opt->cost, p, -1, info->support, FR_FFT_AUTO, info->predicted_s);
    if (opt->method == FR_METHOD_EXACT) return exact_certificate(p, bounds, opt, info, err, errlen);
    if (!bounds) return fr__err(err, errlen, FR_EUSAGE, "the fast methods need the data's bounds");
    if (!(opt->eps > 0))
        return fr__err(err, errlen, FR_EUSAGE, "eps = %g must be positive", opt->eps);
    if (opt->degree > opt->max_degree)
        return fr__err(err, errlen, FR_EUSAGE, "degree %d is above max_degree %d", opt->degree,
                       opt->max_degree);
    if (!isfinite(bounds->R) || !isfinite(bounds->R_abs) || !isfinite(bounds->R_norm))
        return fr__err(err, errlen, FR_EINPUT,
                       "the scores overflow: their bound R is not finite for these entries and "
                       "scale");

    int rope_family = fr__rope_family(p, NULL, 0);
    if (opt->method == FR_METHOD_POLYROPE && !rope_family) {
        char why[192];
        fr__rope_family(p, why, sizeof why);
        return fr__err(err, errlen, FR_EUSAGE,
                       "polyrope needs a rotation of the RoPE family (W_delta = "
                       "W_1^delta)%s%s; polyfft handles any W",
                       *why ? ": " : "", why);
    }

    if (lazy && exact_is_cheaper(p, bounds, opt, rope_family, info)) {
        info->method = FR_METHOD_EXACT;
        info->reason = "the cost model predicts exact attention is fastest (the fast methods "
                       "are slower even at their lowest possible degree)";
        return FR_OK;
    }

    /* Each fast method that applies: its smallest degree whose certificate meets eps. */
    fr_method fft_m =
        opt->method == FR_METHOD_POLYFFT_LITERAL ? FR_METHOD_POLYFFT_LITERAL : FR_METHOD_POLYFFT;
    int fft_wanted = opt->method != FR_METHOD_POLYROPE;
    int rope_wanted =
        rope_family && (opt->method == FR_METHOD_POLYROPE || opt->method == FR_METHOD_AUTO);
    method_choice cf, cr;
    memset(&cf, 0, sizeof cf), memset(&cr, 0, sizeof cr);
    int st = FR_OK;
    /* The polynomial is evaluated at the scores the methods form, off by at most the score
     * error (certify.c): it is fitted, and certified, on the range that covers them. */
    int owned;
    fit_cache *fc = fits_of(fits,
                            bounds->R + fmax(fr__score_error(p, bounds, FR_U_DOUBLE, 1),
                                             fr__score_error(p, bounds, 0, 0)),
                            &owned);
    if (!fc) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    if (fft_wanted) st = choose_fft(p, bounds, opt, fft_m, info->support, fc, &cf, err, errlen);
    if (!st && rope_wanted)
        st = choose_degree(p, bounds, opt, FR_METHOD_POLYROPE, FR_FFT_AUTO, info->support, fc, &cr,
                           err, errlen);
    if (owned) free(fc);
    if (st) goto done;

    if (!(cf.ok || cr.ok)) {
        /* The polynomial itself is the obstacle when no method's is good enough. */
        int poly_limited = (!fft_wanted || cf.poly_limited) && (!rope_wanted || cr.poly_limited);
        info->needed_degree = fr__poly_needed_degree(bounds->R, bounds->B_v, opt->eps, 1000);
        char why[512];
        if (poly_limited && opt->degree < 0)
            poly_reason(p, bounds, opt, info->needed_degree, why, sizeof why);
        else /* the reason of the method asked for; for auto, of one the arithmetic stopped */
            snprintf(why, sizeof why, "%s",
                     opt->method == FR_METHOD_POLYROPE                  ? cr.why
                     : opt->method != FR_METHOD_AUTO                    ? cf.why
                     : rope_wanted && (!cr.poly_limited || !fft_wanted) ? cr.why
                                                                        : cf.why);
        if (opt->method != FR_METHOD_AUTO) {
            st = fr__err(err, errlen, FR_EACCURACY, "%s", why);
            goto done;
        }
        /* What stopped each method weighed: its plan's size, or its arithmetic. */
        int any_size = (fft_wanted && cf.size_limited) || (rope_wanted && cr.size_limited);
        int all_size = (!fft_wanted || cf.size_limited || cf.poly_limited) &&
                       (!rope_wanted || cr.size_limited || cr.poly_limited);
        info->method = FR_METHOD_EXACT;
        info->reason = poly_limited ? "entries too large for the fast regime: no polynomial "
                                      "degree within max_degree meets eps"
                       : all_size   ? "entries too large for the fast regime: at the degree eps "
                                      "needs, the fast methods' plans exceed what a plan can hold"
                       : any_size   ? "beyond the fast methods here: at the degree eps needs, "
                                      "one's plan is too large and the other's arithmetic cannot "
                                      "certify eps"
                                    : "eps is below what the fast methods' arithmetic can "
                                      "certify at this size";
        goto done;
    }

    /* Predicted times, with the rows each method may hand to the exact path. */
    double t[FR_NMETHODS], kept;
    rows_below(p, INFINITY, &kept);
    double per_pair = kept > 0 ? info->predicted_s[FR_METHOD_EXACT] / kept : 0;
    method_choice *cs[2] = {&cf, &cr};
    for (int w = 0; w < 2; w++) {
        method_choice *c = cs[w];
        if (!c->ok) continue;
        double pairs;
        rows_below(p, c->mc.keys_exact, &pairs);
        fr_predict_times_cost(opt->cost, p, c->degree, info->support, c->fft, t);
        if (w == 0) {
            info->predicted_s[FR_METHOD_POLYFFT] = t[FR_METHOD_POLYFFT] + pairs * per_pair;
            info->predicted_s[FR_METHOD_POLYFFT_LITERAL] =
                t[FR_METHOD_POLYFFT_LITERAL] + pairs * per_pair;
        } else {
            info->predicted_s[FR_METHOD_POLYROPE] = t[FR_METHOD_POLYROPE] + pairs * per_pair;
        }
    }
    if (opt->method == FR_METHOD_AUTO) info->method = choose(info, rope_family, &info->reason);
    /* The degree reported with exact (auto at small n) is the cheapest fast method's. */
    fr_method m = info->method;
    if (m == FR_METHOD_EXACT)
        m = cr.ok && (!cf.ok ||
                      info->predicted_s[FR_METHOD_POLYROPE] <= info->predicted_s[FR_METHOD_POLYFFT])
                ? FR_METHOD_POLYROPE
                : fft_m;
    method_choice *c = m == FR_METHOD_POLYROPE ? &cr : &cf;
    if (cf.ok) info->fft = cf.fft;
    info->fft_precision = fr__fft_precision(info->fft);
    *coef = c->coef;
    c->coef = NULL;
    info->degree = c->degree;
    info->needed_degree = c->degree;
    info->eta = c->eta;
    info->poly_bound = c->mc.poly_bound;
    info->rounding_bound = c->mc.rounding_bound;
    info->a_priori_bound = info->poly_bound + info->rounding_bound;
    int64_t kmin, kmax;
    key_range(p, &kmin, &kmax);
    info->keys_exact = c->mc.keys_exact > (double)kmin ? (int64_t)c->mc.keys_exact : 0;
    info->rows_exact = rows_below(p, c->mc.keys_exact, &kept);
    *cert = c->mc.cert;
done:
    free(cf.coef);
    free(cr.coef);
    return st;
}

int fr__subplan_create(fr__subplan **out, const fr_problem *p, const fr_bounds *bounds,
                       const fr_options *opt, fr__fits *fits, char *err, size_t errlen)
{
    *out = NULL;
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    fr__subplan *pl = calloc(1, sizeof *pl);
    if (!pl) return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the plan");
    pl->p = *p;
    double *coef = NULL;
    st = decide(p, bounds, opt, fits, &pl->info, &coef, &pl->cert, 1, err, errlen);
    fr_plan_info *info = &pl->info;
    if (!st && (info->method == FR_METHOD_POLYFFT || info->method == FR_METHOD_POLYFFT_LITERAL)) {
        st = fr__polyfft_create(&pl->polyfft, p, coef, info->degree,
                                info->method == FR_METHOD_POLYFFT_LITERAL, info->fft,
                                info->keys_exact, err, errlen);
        if (!st) fr__polyfft_info(pl->polyfft, info);
    } else if (!st && info->method == FR_METHOD_POLYROPE) {
        st = fr__polyrope_create(&pl->polyrope, p, coef, info->degree, err, errlen);
        if (!st) fr__polyrope_info(pl->polyrope, info);
    } else if (!st && info->method == FR_METHOD_EXACT && opt->precision != FR_F32 &&
               fr__small_exact_fits(p)) {
        st = fr__small_exact_create(&pl->small, p, err, errlen);
    }
    free(coef);
    if (st) {
        fr__subplan_free(pl);
        return st;
    }
    *out = pl;
    return FR_OK;
}

int fr__subplan_decide(const fr_problem *p, const fr_bounds *bounds, const fr_options *opt,
                       fr__fits *fits, fr_plan_info *info, char *err, size_t errlen)
{
    double *coef = NULL;
    fr__cert cert;
    int st = decide(p, bounds, opt, fits, info, &coef, &cert, 1, err, errlen);
    free(coef);
    return st;
}

fr_status fr_plan_estimate(const fr_problem *p0, const fr_bounds *bounds, const fr_options *opt,
                           fr_plan_info *info, char *err, size_t errlen)
{
    int st = fr_problem_check(p0, err, errlen);
    double *coef = NULL;
    if (st) return st;
    fr_problem pp = fr__entry_problem(p0, 0), *p = &pp; /* one problem: the first W */
    fr__settle_family(p);
    fr__cert cert; /* an estimate reports the fast path's degree even where exact is chosen */
    st = decide(p, bounds, opt, NULL, info, &coef, &cert, 0, err, errlen);
    if (st == FR_EACCURACY) { /* a forced method that cannot meet eps: a row, not an error */
        info->degree = -1;
        info->reason = "the method cannot certify eps here (no polynomial degree within "
                       "max_degree, or eps below its arithmetic's certified rounding)";
        return FR_OK;
    }
    if (st || info->degree < 0) return st;
    int64_t d = p->d;
    if (fr__rope_family(p, NULL, 0)) info->features = fr__binom(info->degree + d, d);
    info->fft_size = fr__fft_fast_size(info->fft, 2 * p->n - 1);
    if (p->rot.kind != FR_ROT_EXPLICIT || !p->rot.w) {
        /* Closed forms: enumerating the terms (what the plan does) costs seconds at larger
         * degrees, and `check` estimates every set of a dump. */
        fr__polyfft_counts(p, info->degree, info->support, &info->alphas, &info->q_monomials,
                           &info->kernels);
        info->k_monomials = info->q_monomials;
        info->ffts = 2 * info->q_monomials * (p->dv + 1) + info->kernels;
        free(coef);
        return FR_OK;
    }
    /* An explicit W is counted on its own tables, which are in memory already. */
    char cerr[256];
    if (count_terms_with(p, coef, info, p->dv, cerr, sizeof cerr)) {
        /* Too many terms to enumerate (the polyfft plan would refuse them too): the counts
         * are unknown, and polyfft is out of the question. */
        info->alphas = info->q_monomials = info->k_monomials = info->kernels = info->ffts = 0;
        info->predicted_s[FR_METHOD_POLYFFT] = info->predicted_s[FR_METHOD_POLYFFT_LITERAL] = -1;
    }
    free(coef);
    return FR_OK;
}

int fr__subplan_small(const fr__subplan *pl)
{
    if (pl->polyfft) return fr__polyfft_threads(pl->polyfft) == 1;
    if (pl->polyrope) return fr__polyrope_threads(pl->polyrope) == 1;
    return fr__exact_small(&pl->p, pl->p.n);
}

/* A fast forward is certified row by row (core/certify.c): the back end leaves its row sums,
 * and the rows whose certificate misses the plan's are recomputed exactly. */
int fr__subplan_execute(const fr__subplan *pl, const double *q, const double *k, const double *v,
                        double *out, fr_exec_info *ex, fr__prog *pg, char *err, size_t errlen)
{
    ex->rows_recomputed = 0;
    ex->rounding_bound = 0;
    ex->a_priori_bound = 0;
    fr_method m = pl->info.method;
    if (pl->small) return fr__small_exact_rows(pl->small, q, k, v, out, NULL, err, errlen);
    if (m != FR_METHOD_POLYFFT && m != FR_METHOD_POLYFFT_LITERAL && m != FR_METHOD_POLYROPE)
        return fr__exact_rows(&pl->p, q, k, v, NULL, pl->p.n, out, pg, err, errlen);
    double *rowsum = malloc((size_t)pl->p.n * sizeof *rowsum);
    if (!rowsum) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    int st = m == FR_METHOD_POLYROPE
                 ? fr__polyrope_execute(pl->polyrope, q, k, v, out, rowsum, pg, err, errlen)
                 : fr__polyfft_execute(pl->polyfft, q, k, v, out, rowsum, pg, err, errlen);
    if (!st)
        st = fr__certify_rows(&pl->p, &pl->cert, q, k, v, out, rowsum, &ex->rows_recomputed,
                              &ex->rounding_bound, err, errlen);
    ex->a_priori_bound = pl->cert.poly_bound + ex->rounding_bound;
    free(rowsum);
    return st;
}

int fr__subplan_backward(const fr__subplan *pl, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, fr_exec_info *ex,
                         fr__prog *pg, char *err, size_t errlen)
{
    /* The backward computes exactly the rows the plan cannot certify before the pass: the T it
     * returns holds the plan's a-priori certificate. */
    ex->rows_recomputed = 0;
    ex->rounding_bound = pl->info.method == FR_METHOD_EXACT ? 0 : pl->info.rounding_bound;
    ex->a_priori_bound = pl->info.method == FR_METHOD_EXACT ? 0 : pl->info.a_priori_bound;
    if ((dout == NULL) == (target == NULL))
        return fr__err(err, errlen, FR_EUSAGE, "give exactly one of dout and target");
    switch (pl->info.method) {
    case FR_METHOD_POLYFFT:
    case FR_METHOD_POLYFFT_LITERAL:
        ex->rows_recomputed = fr__polyfft_rows_recomputed(pl->polyfft);
        return fr__polyfft_backward(pl->polyfft, q, k, v, dout, target, t, dq, dk, dv, dw, loss, pg,
                                    err, errlen);
    case FR_METHOD_POLYROPE:
        if (dw)
            return fr__err(err, errlen, FR_EUSAGE,
                           "polyrope has no dW: W is not a free parameter on the factorised path");
        return fr__polyrope_backward(pl->polyrope, q, k, v, dout, target, t, dq, dk, dv, loss, pg,
                                     err, errlen);
    default:
        return fr__exact_backward(&pl->p, q, k, v, dout, target, t, dq, dk, dv, dw, loss, pg, err,
                                  errlen);
    }
}

/* Single precision is exact attention only (fr_plan_create refuses the rest); its certificate
 * is the plan's, made on the bounds before the pass. */
int fr__subplan_execute_f32(const fr__subplan *pl, const float *q, const float *k, const float *v,
                            float *out, fr_exec_info *ex, fr__prog *pg, char *err, size_t errlen)
{
    ex->rows_recomputed = 0;
    ex->rounding_bound = pl->info.a_priori_bound;
    ex->a_priori_bound = pl->info.a_priori_bound;
    if (pl->info.method != FR_METHOD_EXACT)
        return fr__err(err, errlen, FR_EUSAGE, "%s has no single-precision path",
                       fr_method_name(pl->info.method));
    return fr__exact_rows_f32(&pl->p, q, k, v, NULL, pl->p.n, out, pg, err, errlen);
}

int fr__subplan_backward_f32(const fr__subplan *pl, const float *q, const float *k, const float *v,
                             const float *dout, const float *target, float *t, float *dq, float *dk,
                             float *dv, float *dw, double *loss, fr_exec_info *ex, fr__prog *pg,
                             char *err, size_t errlen)
{
    ex->rows_recomputed = 0;
    ex->rounding_bound = pl->info.a_priori_bound;
    ex->a_priori_bound = pl->info.a_priori_bound;
    if (pl->info.method != FR_METHOD_EXACT)
        return fr__err(err, errlen, FR_EUSAGE, "%s has no single-precision path",
                       fr_method_name(pl->info.method));
    return fr__exact_backward_f32(&pl->p, q, k, v, dout, target, t, dq, dk, dv, dw, loss, pg, err,
                                  errlen);
}

const fr_plan_info *fr__subplan_info(const fr__subplan *pl)
{
    return &pl->info;
}

void fr__subplan_free(fr__subplan *pl)
{
    if (!pl) return;
    fr__polyfft_free(pl->polyfft);
    fr__polyrope_free(pl->polyrope);
    fr__small_exact_free(pl->small);
    free(pl);
}

fr__polyrope *fr__subplan_polyrope(fr__subplan *pl)
{
    return pl->polyrope;
}
