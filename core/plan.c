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
#include <stdlib.h>
#include <string.h>

struct fr__subplan {
    fr_problem p;
    fr_plan_info info;
    fr__polyfft *polyfft;
    fr__polyrope *polyrope;
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

/* Everything fr_plan_create decides before building: the degree (and the coefficients, in
 * *coef, malloc'd), the method, the predicted times. FR_EACCURACY only when a fast method was
 * forced and no degree meets eps; auto then falls back to exact. */
static int decide(const fr_problem *p, const fr_bounds *bounds, const fr_options *opt,
                  fr_plan_info *info, double **coef, char *err, size_t errlen)
{
    *coef = NULL;
    memset(info, 0, sizeof *info);
    info->method = opt->method;
    info->reason = "requested";
    info->degree = -1;
    info->support = support_size(p);
    for (int m = 0; m < FR_NMETHODS; m++)
        info->predicted_s[m] = -1;
    fr_predict_times(p, -1, info->support, info->predicted_s);
    if (opt->method == FR_METHOD_EXACT) return FR_OK;
    if (!bounds) return fr__err(err, errlen, FR_EUSAGE, "the fast methods need the data's bounds");

    int rope_family = fr__rope_family(p, NULL, 0);
    if (opt->method == FR_METHOD_POLYROPE && !rope_family) {
        char why[192];
        fr__rope_family(p, why, sizeof why);
        return fr__err(err, errlen, FR_EUSAGE,
                       "--method polyrope needs a rotation of the RoPE family (W_delta = "
                       "W_1^delta)%s%s; --method polyfft handles any W",
                       *why ? ": " : "", why);
    }

    /* The degree of each fast method: forced, or the smallest that meets eps through the
     * a-priori bound with that method's rounding floor (polyfft's FFTs work in float, polyrope
     * in double, so polyrope reaches smaller eps and larger entries). */
    int fft_wanted = opt->method != FR_METHOD_POLYROPE;
    int rope_wanted =
        rope_family && (opt->method == FR_METHOD_POLYROPE || opt->method == FR_METHOD_AUTO);
    int g_fft = -1, g_rope = -1, st = FR_OK, g;
    double eta_fft = INFINITY, eta_rope = INFINITY, eta = INFINITY;
    char fft_err[256] = "";
    if (opt->degree > opt->max_degree)
        return fr__err(err, errlen, FR_EUSAGE, "--degree %d is above --max-degree %d", opt->degree,
                       opt->max_degree);
    if (opt->degree >= 0) {
        g_fft = fft_wanted ? opt->degree : -1;
        g_rope = rope_wanted ? opt->degree : -1;
    } else {
        if (fft_wanted) {
            st = fr_poly_choose_degree(bounds->R, bounds->B_v, opt->eps, opt->max_degree, 1, &g_fft,
                                       &eta_fft, fft_err, sizeof fft_err);
            if (st && st != FR_EACCURACY) return fr__err(err, errlen, st, "%s", fft_err);
            if (st) g_fft = -1;
        }
        if (rope_wanted) {
            st = fr_poly_choose_degree(bounds->R, bounds->B_v, opt->eps, opt->max_degree, 0,
                                       &g_rope, &eta_rope, err, errlen);
            if (st && st != FR_EACCURACY) return st;
            if (st) g_rope = -1;
        }
    }
    if (opt->method == FR_METHOD_POLYROPE && g_rope < 0)
        return FR_EACCURACY; /* err holds poly's reason */
    if ((opt->method == FR_METHOD_POLYFFT || opt->method == FR_METHOD_POLYFFT_LITERAL) && g_fft < 0)
        return fr__err(err, errlen, FR_EACCURACY, "%s", fft_err);
    if (g_fft < 0 && g_rope < 0) { /* auto, and no fast method can meet eps */
        info->method = FR_METHOD_EXACT;
        info->reason = "entries too large for the fast regime: no polynomial degree within "
                       "--max-degree meets eps";
        return FR_OK;
    }

    double t[FR_NMETHODS];
    if (g_fft >= 0) {
        fr_predict_times(p, g_fft, info->support, t);
        info->predicted_s[FR_METHOD_POLYFFT] = t[FR_METHOD_POLYFFT];
        info->predicted_s[FR_METHOD_POLYFFT_LITERAL] = t[FR_METHOD_POLYFFT_LITERAL];
    }
    if (g_rope >= 0) {
        fr_predict_times(p, g_rope, info->support, t);
        info->predicted_s[FR_METHOD_POLYROPE] = t[FR_METHOD_POLYROPE];
    }
    if (opt->method == FR_METHOD_AUTO) info->method = choose(info, rope_family, &info->reason);
    /* The degree reported with exact (auto at small n) is the cheapest fast method's. */
    fr_method m = info->method;
    if (m == FR_METHOD_EXACT)
        m = g_rope >= 0 && (g_fft < 0 || info->predicted_s[FR_METHOD_POLYROPE] <=
                                             info->predicted_s[FR_METHOD_POLYFFT])
                ? FR_METHOD_POLYROPE
                : FR_METHOD_POLYFFT;
    g = m == FR_METHOD_POLYROPE ? g_rope : g_fft;
    *coef = malloc((size_t)(g + 1) * sizeof **coef);
    if (!*coef) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    if ((st = fr_poly_fit(bounds->R, g, *coef, &eta, err, errlen))) {
        free(*coef);
        *coef = NULL;
        return st;
    }
    info->degree = g;
    info->eta = eta;
    info->a_priori_bound = fr_a_priori_bound(eta, bounds->B_v);
    return FR_OK;
}

int fr__subplan_create(fr__subplan **out, const fr_problem *p, const fr_bounds *bounds,
                       const fr_options *opt, char *err, size_t errlen)
{
    *out = NULL;
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    fr__subplan *pl = calloc(1, sizeof *pl);
    if (!pl) return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the plan");
    pl->p = *p;
    double *coef = NULL;
    st = decide(p, bounds, opt, &pl->info, &coef, err, errlen);
    fr_plan_info *info = &pl->info;
    info->fft = fr__fft_resolve(opt->fft);
    info->fft_precision = fr__fft_precision(info->fft);
    if (!st && (info->method == FR_METHOD_POLYFFT || info->method == FR_METHOD_POLYFFT_LITERAL)) {
        st = fr__polyfft_create(&pl->polyfft, p, coef, info->degree,
                                info->method == FR_METHOD_POLYFFT_LITERAL, opt->fft, err, errlen);
        if (!st) fr__polyfft_info(pl->polyfft, info);
    } else if (!st && info->method == FR_METHOD_POLYROPE) {
        st = fr__polyrope_create(&pl->polyrope, p, coef, info->degree, err, errlen);
        if (!st) fr__polyrope_info(pl->polyrope, info);
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
                       fr_plan_info *info, char *err, size_t errlen)
{
    double *coef = NULL;
    int st = decide(p, bounds, opt, info, &coef, err, errlen);
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
    st = decide(p, bounds, opt, info, &coef, err, errlen);
    if (st == FR_EACCURACY) { /* a forced method that cannot meet eps: a row, not an error */
        info->degree = -1;
        info->reason = "no polynomial degree within max_degree meets eps for this method";
        return FR_OK;
    }
    if (st || info->degree < 0) return st;
    int64_t d = p->d;
    if (fr__rope_family(p, NULL, 0)) info->features = fr__binom(info->degree + d, d);
    info->fft_size = fr__fft_fast_size(opt->fft, 2 * p->n - 1);
    info->fft = fr__fft_resolve(opt->fft);
    info->fft_precision = fr__fft_precision(info->fft);
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

int fr__subplan_execute(const fr__subplan *pl, const double *q, const double *k, const double *v,
                        double *out, fr_exec_info *ex, char *err, size_t errlen)
{
    /* The certificate is the lead's (issue 14): until the methods fill it, the plan's own. */
    ex->rows_recomputed = 0;
    ex->rounding_bound = 0;
    ex->a_priori_bound = pl->info.method == FR_METHOD_EXACT ? 0 : pl->info.a_priori_bound;
    switch (pl->info.method) {
    case FR_METHOD_POLYFFT:
    case FR_METHOD_POLYFFT_LITERAL:
        ex->rows_recomputed = fr__polyfft_rows_recomputed(pl->polyfft);
        return fr__polyfft_execute(pl->polyfft, q, k, v, out, err, errlen);
    case FR_METHOD_POLYROPE: return fr__polyrope_execute(pl->polyrope, q, k, v, out, err, errlen);
    default: return fr__exact_rows(&pl->p, q, k, v, NULL, pl->p.n, out, err, errlen);
    }
}

int fr__subplan_backward(const fr__subplan *pl, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, fr_exec_info *ex,
                         char *err, size_t errlen)
{
    ex->rows_recomputed = 0;
    ex->rounding_bound = 0;
    ex->a_priori_bound = pl->info.method == FR_METHOD_EXACT ? 0 : pl->info.a_priori_bound;
    if ((dout == NULL) == (target == NULL))
        return fr__err(err, errlen, FR_EUSAGE, "give exactly one of dout and target");
    switch (pl->info.method) {
    case FR_METHOD_POLYFFT:
    case FR_METHOD_POLYFFT_LITERAL:
        ex->rows_recomputed = fr__polyfft_rows_recomputed(pl->polyfft);
        return fr__polyfft_backward(pl->polyfft, q, k, v, dout, target, t, dq, dk, dv, dw, loss,
                                    err, errlen);
    case FR_METHOD_POLYROPE:
        if (dw)
            return fr__err(err, errlen, FR_EUSAGE,
                           "polyrope has no dW: W is not a free parameter on the factorised path");
        return fr__polyrope_backward(pl->polyrope, q, k, v, dout, target, t, dq, dk, dv, loss, err,
                                     errlen);
    default:
        return fr__exact_backward(&pl->p, q, k, v, dout, target, t, dq, dk, dv, dw, loss, err,
                                  errlen);
    }
}

/* Single precision is exact attention only (fr_plan_create refuses the rest); its certificate
 * is the plan's, made on the bounds before the pass. */
int fr__subplan_execute_f32(const fr__subplan *pl, const float *q, const float *k, const float *v,
                            float *out, fr_exec_info *ex, char *err, size_t errlen)
{
    ex->rows_recomputed = 0;
    ex->rounding_bound = pl->info.a_priori_bound;
    ex->a_priori_bound = pl->info.a_priori_bound;
    if (pl->info.method != FR_METHOD_EXACT)
        return fr__err(err, errlen, FR_EUSAGE, "%s has no single-precision path",
                       fr_method_name(pl->info.method));
    return fr__exact_rows_f32(&pl->p, q, k, v, NULL, pl->p.n, out, err, errlen);
}

int fr__subplan_backward_f32(const fr__subplan *pl, const float *q, const float *k, const float *v,
                             const float *dout, const float *target, float *t, float *dq, float *dk,
                             float *dv, float *dw, double *loss, fr_exec_info *ex, char *err,
                             size_t errlen)
{
    ex->rows_recomputed = 0;
    ex->rounding_bound = pl->info.a_priori_bound;
    ex->a_priori_bound = pl->info.a_priori_bound;
    if (pl->info.method != FR_METHOD_EXACT)
        return fr__err(err, errlen, FR_EUSAGE, "%s has no single-precision path",
                       fr_method_name(pl->info.method));
    return fr__exact_backward_f32(&pl->p, q, k, v, dout, target, t, dq, dk, dv, dw, loss, err,
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
    free(pl);
}

fr__polyrope *fr__subplan_polyrope(fr__subplan *pl)
{
    return pl->polyrope;
}
