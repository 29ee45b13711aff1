/* polyfft.c - the papers' pipeline (ALGORITHM.md 4) with spectral accumulation (section 5):
 * the plan and the forward.
 *
 *   num_i[x] = sum_alpha coef_alpha u_alpha(i) sum_j c_alpha(j - i) v_alpha(j) x_j,  x in [V, 1]
 *
 * Every Toeplitz product is a circular convolution of length N (the kernel embedded at
 * (-delta) mod N, core/polyfft_kernels.c), done in the frequency domain: one forward FFT per
 * K-monomial and column, one per kernel monomial, one inverse per Q-monomial and column, and
 * the terms summed between them, spectrum by spectrum (core/polyfft_pass.c, which the backward
 * runs too). The plan keeps the kernel spectra when they fit PLAN_BUDGET (a batch then pays
 * their FFTs once); beyond, each execution computes them degree by degree.
 *
 * literal mode: the paper's algorithm as written, every alpha separately: one kernel FFT and
 * per column one forward and one inverse FFT, (2(dv+1)+1) #alpha FFTs. Exists so the benchmark
 * can show what the accumulation buys.
 *
 * The FFTs, spectra and spectral sums run in the FFT back end's precision (fr_options.fft): the
 * plan records it, and the literal mode exists for both (core/polyfft_literal_t.h). */
#include "polyfft_impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The plan's kernel spectra, all of them (MODE_KERNELS). */
static int compute_kernels(fr__polyfft *pl)
{
    int64_t nc = pl->m.nc, *list = malloc((size_t)(nc + 1) * sizeof *list);
    void **out = malloc((size_t)(nc + 1) * sizeof *out);
    fr__thread_bufs hb = {0};
    int ok = list && out && fr__thread_bufs_alloc(&hb, (size_t)pl->area_bytes);
    if (ok) {
        for (int64_t c = 0; c < nc; c++) {
            list[c] = c;
            out[c] = (char *)pl->spec + pl->koff[c] * pl->rs;
        }
        ok = pl->dbl ? fr__polyfft_kernel_spectra_d(pl, list, nc, (double *const *)out, &hb)
                     : fr__polyfft_kernel_spectra_f(pl, list, nc, (float *const *)out, &hb);
    }
    fr__thread_bufs_free(&hb);
    free(list);
    free(out);
    return ok;
}

/* ---- plan ------------------------------------------------------------------------------------ */

int fr__polyfft_create(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                       int literal, fr_fft_backend fft, int64_t exact_keys, char *err,
                       size_t errlen)
{
    return fr__polyfft_create_budget(pl, p, coef, degree, literal, fft, exact_keys, PLAN_BUDGET,
                                     EXEC_BUDGET, err, errlen);
}

int fr__polyfft_create_budget(fr__polyfft **out, const fr_problem *p, const double *coef,
                              int degree, int literal, fr_fft_backend fft, int64_t exact_keys,
                              int64_t plan_budget, int64_t exec_budget, char *err, size_t errlen)
{
    *out = NULL;
    fr__polyfft *pl = calloc(1, sizeof *pl);
    if (!pl) return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the polyfft plan");
    pl->p = *p;
    pl->literal = literal;
    pl->degree = degree;
    pl->exec_budget = exec_budget;
    int64_t n = p->n;
    if (!(pl->coef = malloc((size_t)(degree + 1) * sizeof *pl->coef))) {
        free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the polyfft plan");
    }
    memcpy(pl->coef, coef, (size_t)(degree + 1) * sizeof *coef);

    fr__support S;
    int st = fr__support_build(p, &S, err, errlen);
    if (st) {
        fr__polyfft_free(pl);
        return st;
    }
    st = fr__monomials_build_dim(&S, (int)p->d, coef, degree, p->tau, &pl->m, err, errlen);
    fr__support_free(&S);
    if (st) {
        fr__polyfft_free(pl);
        return st;
    }

    pl->lo = -(n - 1);
    pl->hi = n - 1;
    if (p->window >= 0 && p->window < n - 1) {
        pl->lo = -p->window;
        pl->hi = p->window;
    }
    if (p->causal && pl->hi > 0) pl->hi = 0;
    st = fr__fft_create(&pl->fft, fft, n + (pl->hi > -pl->lo ? pl->hi : -pl->lo), err, errlen);
    if (st) {
        fr__polyfft_free(pl);
        return st;
    }
    pl->dbl = fr__fft_is_double(fr__fft_backend(pl->fft));
    pl->rs = pl->dbl ? sizeof(double) : sizeof(float);
    pl->N = fr__fft_len(pl->fft);
    pl->nb = fr__fft_bins(pl->fft);
    pl->nbs = fr__fft_stride(pl->nb);
    pl->area_spec = fr__align(pl->N * pl->rs);
    pl->area_scratch = pl->area_spec + fr__align(pl->nb * 2 * pl->rs);
    pl->area_bytes = pl->area_scratch + fr__align((int64_t)fr__fft_scratch_bytes(pl->fft));

    /* Keys of row i: j in [0, n) with j - i in [lo, hi]. The rows with fewer than exact_keys
     * cannot be certified before the pass (core/certify.c): the backward computes them exactly
     * (the forward certifies every row after its pass instead, when asked for row sums). */
    int64_t M0 = exact_keys;
    for (int pass = 0; pass < 2; pass++) {
        pl->nfix = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t j0 = i + pl->lo < 0 ? 0 : i + pl->lo,
                    j1 = i + pl->hi > n - 1 ? n - 1 : i + pl->hi;
            if (j1 - j0 + 1 < M0) {
                if (pass) pl->fix[pl->nfix] = i;
                pl->nfix++;
            }
        }
        if (!pass && pl->nfix && !(pl->fix = malloc((size_t)pl->nfix * sizeof *pl->fix))) {
            fr__polyfft_free(pl);
            return fr__err(err, errlen, FR_ENOMEM, "out of memory");
        }
    }

    if (!fr__polyfft_parities(pl)) {
        fr__polyfft_free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the polyfft plan");
    }
    if (!literal) {
        int64_t nc = pl->m.nc, reals = 0;
        if (!(pl->koff = malloc((size_t)(nc + 1) * sizeof *pl->koff))) {
            fr__polyfft_free(pl);
            return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the polyfft plan");
        }
        for (int64_t c = 0; c < nc; c++) {
            pl->koff[c] = reals;
            reals += fr__polyfft_kernel_reals(pl, c);
        }
        if (reals * pl->rs <= plan_budget) {
            pl->mode = MODE_KERNELS;
            pl->spec = fr__fft_alloc((size_t)(reals * pl->rs));
            if (!pl->spec || !compute_kernels(pl)) {
                fr__polyfft_free(pl);
                return fr__err(err, errlen, FR_ENOMEM, "out of memory for %lld kernel spectra",
                               (long long)nc);
            }
        } else {
            pl->mode = MODE_STREAM;
        }
    }
    *out = pl;
    return FR_OK;
}

int64_t fr__polyfft_rows_recomputed(const fr__polyfft *pl)
{
    return pl->nfix;
}

int fr__polyfft_mode(const fr__polyfft *pl)
{
    return pl->literal ? -1 : pl->mode;
}

void fr__polyfft_info(const fr__polyfft *pl, fr_plan_info *info)
{
    const fr__monomials *m = &pl->m;
    int64_t cols = pl->p.dv + 1;
    info->alphas = m->nalpha;
    info->q_monomials = m->nu;
    info->k_monomials = m->nv;
    info->kernels = m->nc;
    info->fft_size = pl->N;
    info->fft = fr__fft_backend(pl->fft);
    info->fft_precision = fr__fft_precision(info->fft);
    info->ffts = pl->literal ? (2 * cols + 1) * m->nalpha : (m->nu + m->nv) * cols + m->nc;
}

void fr__polyfft_free(fr__polyfft *pl)
{
    if (!pl) return;
    fr__monomials_free(&pl->m);
    fr__fft_free(pl->fft);
    free(pl->spec);
    free(pl->koff);
    free(pl->kpar);
    free(pl->ppar);
    free(pl->fix);
    free(pl->coef);
    free(pl);
}

/* ---- execution ------------------------------------------------------------------------------- */

#define FR_T_DOUBLE 0
#include "polyfft_literal_t.h"
#undef FR_T_DOUBLE
#define FR_T_DOUBLE 1
#include "polyfft_literal_t.h"

/* Below this many transform points per execution (FFTs x N) a problem runs on one thread: its
 * parallel regions cost more than they share, and far more when the cores are busy (a batch
 * of 3000 problems with n = 16 took over a minute with two busy-waiting threads). */
#define PAR_MIN_POINTS ((int64_t)1 << 20)

int fr__polyfft_threads(const fr__polyfft *pl)
{
    const fr__monomials *m = &pl->m;
    int64_t cols = pl->p.dv + 1;
    int64_t ffts = pl->literal ? (2 * cols + 1) * m->nalpha : (m->nu + m->nv) * cols + m->nc;
    return (double)ffts * (double)pl->N < (double)PAR_MIN_POINTS ? 1 : omp_get_max_threads();
}

static int execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                   double *out, double *rowsum, fr__prog *pg, char *err, size_t errlen);

int fr__polyfft_execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *out, double *rowsum, fr__prog *pg, char *err, size_t errlen)
{
    /* nthreads-var is the calling thread's own: setting it here touches no other caller. */
    int saved = omp_get_max_threads();
    omp_set_num_threads(fr__polyfft_threads(pl));
    int st = execute(pl, q, k, v, out, rowsum, pg, err, errlen);
    omp_set_num_threads(saved);
    return st;
}

static int execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                   double *out, double *rowsum, fr__prog *pg, char *err, size_t errlen)
{
    int64_t n = pl->p.n, dv = pl->p.dv, cols = dv + 1;
    double *num = calloc((size_t)(cols * n), sizeof *num);
    double *xv = malloc((size_t)(cols * n) * sizeof *xv);
    int ok = num && xv;
    if (ok) {
        for (int64_t j = 0; j < n; j++) {
            for (int64_t col = 0; col < dv; col++)
                xv[j * cols + col] = v[j * dv + col];
            xv[j * cols + dv] = 1;
        }
        fr__pass ps = {.transposed = 0, .xin = k, .xout = q, .ain = xv, .num = num, .pg = pg};
        if (pl->literal)
            ok = pl->dbl ? exec_literal_d(pl, q, k, xv, num) : exec_literal_f(pl, q, k, xv, num);
        else
            ok = fr__polyfft_pass(pl, &ps);
    }
    free(xv);
    if (ok && fr__prog_canceled(pg)) {
        free(num);
        return fr__prog_err(pg, err, errlen);
    }
    if (!ok) {
        free(num);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft, n = %lld)", (long long)n);
    }
    /* A row sum that is not positive is left to the caller's certificate (rowsum given: the row
     * is recomputed exactly) or reported. Without rowsum (direct calls) the rows the plan could
     * not certify before the pass are recomputed here, as the backward does. */
    const double *D = num + dv * n;
    for (int64_t i = 0, f = 0; i < n; i++) {
        double Di = D[i];
        if (!rowsum && f < pl->nfix && pl->fix[f] == i) {
            f++;
            continue;
        }
        if (rowsum) rowsum[i] = Di;
        if (!(Di > 0) || !isfinite(Di)) {
            if (!rowsum) {
                free(num);
                return fr__err(err, errlen, FR_EACCURACY,
                               "polyfft: row sum D_%lld = %.3g is not positive: the polynomial "
                               "(degree %d) or the arithmetic is too poor for these scores",
                               (long long)i, Di, pl->degree);
            }
            for (int64_t col = 0; col < dv; col++)
                out[i * dv + col] = 0;
            continue;
        }
        for (int64_t col = 0; col < dv; col++)
            out[i * dv + col] = num[col * n + i] / Di;
    }
    free(num);
    if (rowsum || !pl->nfix) return FR_OK;
    double *ex = malloc((size_t)(pl->nfix * (dv ? dv : 1)) * sizeof *ex);
    if (!ex) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    int st = fr__exact_rows(&pl->p, q, k, v, pl->fix, pl->nfix, ex, NULL, err, errlen);
    if (!st)
        for (int64_t r = 0; r < pl->nfix; r++)
            memcpy(out + pl->fix[r] * dv, ex + r * dv, (size_t)dv * sizeof *ex);
    free(ex);
    return st;
}
