/* polyfft.c - the papers' pipeline (ALGORITHM.md 4) with spectral accumulation (section 5):
 * the plan and the forward.
 *
 *   num_i[x] = sum_alpha coef_alpha u_alpha(i) sum_j c_alpha(j - i) v_alpha(j) x_j,  x in [V, 1]
 *
 * Every Toeplitz product is a circular convolution of length N (the kernel embedded at
 * (-delta) mod N, see kernel_table), done in the frequency domain: one forward FFT per
 * K-monomial and column, one per kernel monomial, one inverse per Q-monomial and column, and
 * the terms summed between them, spectrum by spectrum (core/polyfft_pass.c, which the backward
 * runs too). The plan keeps the kernel spectra when they fit PLAN_BUDGET (a batch then pays
 * their FFTs once); beyond, each execution computes them degree by degree.
 *
 * literal mode: the paper's algorithm as written, every alpha separately: one kernel FFT and
 * per column one forward and one inverse FFT, (2(dv+1)+1) #alpha FFTs. Exists so the benchmark
 * can show what the accumulation buys. */
#include "polyfft_impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Rows with fewer unmasked keys than this are recomputed exactly. Why: the float FFT's
 * rounding is an absolute error spread evenly over the rows (~ 2^-24 sqrt(N) times the size of
 * the vectors), while D_i is ~ the number of keys of row i. A causal row 0 has one key: at
 * n = 65536 its error was 1.8e-3 (eps 1e-3 missed), row 127's 9e-7, row 1023's 6e-8. Exact rows
 * cost FIX_KEYS * d each, so ~FIX_KEYS^2 d for a causal mask: negligible next to the FFTs. The
 * threshold grows with n because the absolute error does (n/16, capped at 4096). */
static int64_t fix_keys(int64_t n)
{
    int64_t m = n / 16;
    return m < 16 ? 16 : m > 4096 ? 4096 : m;
}

/* ---- kernels ------------------------------------------------------------------------------ */

/* The circulant column of kernel monomial c, times scale: h[(-delta) mod N] = c(delta) for
 * delta in [lo, hi], 0 elsewhere. Then (h * x)_i = sum_j c(j - i) x_j for i < n: the
 * correlation the scores need. No wrap-around because N >= n + max(hi, -lo). The mask is this
 * range: it multiplies every kernel, the degree-0 (all-ones) one included. */
static void kernel_table(const fr__polyfft *pl, int64_t c, double scale, float *h)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, L = 2 * n - 1, N = pl->N;
    const unsigned char *e = m->c_exp + c * m->nk;
    memset(h, 0, (size_t)N * sizeof *h);
    for (int64_t delta = pl->lo; delta <= pl->hi; delta++) {
        double val = scale;
        for (int k = 0; k < m->nk; k++) {
            double f = m->ftab[k * L + delta + n - 1];
            for (int t = 0; t < e[k]; t++)
                val *= f;
        }
        h[delta <= 0 ? -delta : N - delta] = (float)val;
    }
}

static void kernel_spectrum(const fr__polyfft *pl, int64_t c, double scale, float *h, fr__cpx *C)
{
    kernel_table(pl, c, scale, h);
    fr__fft_forward(pl->fft, h, C, (fr__cpx *)(h + pl->N));
}

void fr__polyfft_kernel_spectrum(const fr__polyfft *pl, int64_t c, double scale, float *h,
                                 fr__cpx *C)
{
    kernel_spectrum(pl, c, scale, h, C);
}

static int compute_kernels(fr__polyfft *pl)
{
    int64_t N = pl->N;
    fr__thread_bufs hb;
    if (!fr__thread_bufs_alloc(&hb, (size_t)(2 * N) * sizeof(float))) return 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < pl->m.nc; c++)
        kernel_spectrum(pl, c, 1.0 / (double)N, hb.p[omp_get_thread_num()], pl->spec + c * pl->nb);
    fr__thread_bufs_free(&hb);
    return 1;
}

/* ---- plan ------------------------------------------------------------------------------------ */

int fr__polyfft_create(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                       int literal, char *err, size_t errlen)
{
    return fr__polyfft_create_budget(pl, p, coef, degree, literal, PLAN_BUDGET, EXEC_BUDGET, err,
                                     errlen);
}

int fr__polyfft_create_budget(fr__polyfft **out, const fr_problem *p, const double *coef,
                              int degree, int literal, int64_t plan_budget, int64_t exec_budget,
                              char *err, size_t errlen)
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
    st = fr__fft_create(&pl->fft, n + (pl->hi > -pl->lo ? pl->hi : -pl->lo), err, errlen);
    if (st) {
        fr__polyfft_free(pl);
        return st;
    }
    pl->N = fr__fft_len(pl->fft);
    pl->nb = fr__fft_bins(pl->fft);

    /* Keys of row i: j in [0, n) with j - i in [lo, hi]. */
    int64_t M0 = fix_keys(n);
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

    int64_t spec_bytes = pl->nb * (int64_t)sizeof(fr__cpx);
    if (!literal) {
        int64_t nc = pl->m.nc;
        if (nc * spec_bytes <= plan_budget) {
            pl->mode = MODE_KERNELS;
            pl->spec = fr__alloc_big((size_t)(nc * spec_bytes));
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
    info->ffts = pl->literal ? (2 * cols + 1) * m->nalpha : (m->nu + m->nv) * cols + m->nc;
}

void fr__polyfft_free(fr__polyfft *pl)
{
    if (!pl) return;
    fr__monomials_free(&pl->m);
    fr__fft_free(pl->fft);
    free(pl->spec);
    free(pl->fix);
    free(pl->coef);
    free(pl);
}

/* ---- execution ------------------------------------------------------------------------------- */

/* num += the literal algorithm's sums; xv = [V, 1] (n x cols). */
static int exec_literal(const fr__polyfft *pl, const double *q, const double *k, const double *xv,
                        double *num)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, N = pl->N, nb = pl->nb, cols = pl->p.dv + 1, d = pl->p.d;
    int T = omp_get_max_threads();
    double *acc = calloc((size_t)(T * cols * n), sizeof *acc);
    double *monos = malloc((size_t)(T * 2 * n) * sizeof *monos);
    float *bufs = malloc((size_t)(T * 2 * N) * sizeof *bufs);
    fr__cpx *specs = malloc((size_t)(2 * T * nb) * sizeof *specs);
    double *qt = fr__transpose(q, n, d), *kt = fr__transpose(k, n, d);
    double *xt = fr__transpose(xv, n, cols);
    int ok = acc && monos && bufs && specs && qt && kt && xt;
    if (ok) {
#pragma omp parallel
        {
            int t = omp_get_thread_num();
            float *buf = bufs + t * 2 * N;
            fr__cpx *S = (fr__cpx *)(buf + N), *Kc = specs + 2 * t * nb, *Z = Kc + nb;
            double *a = acc + t * cols * n, *mu = monos + t * 2 * n, *mv = mu + n;
#pragma omp for schedule(dynamic, 1)
            for (int64_t al = 0; al < m->nalpha; al++) {
                kernel_spectrum(pl, m->a_c[al], m->a_coef[al] / (double)N, buf, Kc);
                fr__polyfft_mono(pl, m->v_exp + m->a_v[al] * d, kt, mv);
                fr__polyfft_mono(pl, m->u_exp + m->a_u[al] * d, qt, mu);
                for (int64_t col = 0; col < cols; col++) {
                    fr__polyfft_fill(pl, mv, xt + col * n, buf);
                    fr__fft_forward(pl->fft, buf, Z, S);
                    for (int64_t b = 0; b < nb; b++) {
                        fr__cpx z = Z[b], c = Kc[b];
                        Z[b].re = z.re * c.re - z.im * c.im;
                        Z[b].im = z.re * c.im + z.im * c.re;
                    }
                    fr__fft_inverse(pl->fft, Z, buf, S);
                    fr__polyfft_gather(n, mu, buf, a + col * n);
                }
            }
        }
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < cols * n; i++)
                num[i] += acc[t * cols * n + i];
    }
    free(acc);
    free(monos);
    free(bufs);
    free(specs);
    free(qt);
    free(kt);
    free(xt);
    return ok;
}

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

static int execute(fr__polyfft *pl, const double *q, const double *k, const double *v, double *out,
                   char *err, size_t errlen);

int fr__polyfft_execute(fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *out, char *err, size_t errlen)
{
    /* nthreads-var is the calling thread's own: setting it here touches no other caller. */
    int saved = omp_get_max_threads();
    omp_set_num_threads(fr__polyfft_threads(pl));
    int st = execute(pl, q, k, v, out, err, errlen);
    omp_set_num_threads(saved);
    return st;
}

static int execute(fr__polyfft *pl, const double *q, const double *k, const double *v, double *out,
                   char *err, size_t errlen)
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
        fr__pass ps = {.transposed = 0, .xin = k, .xout = q, .ain = xv, .num = num};
        ok = pl->literal ? exec_literal(pl, q, k, xv, num) : fr__polyfft_pass(pl, &ps);
    }
    free(xv);
    if (!ok) {
        free(num);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft, n = %lld)", (long long)n);
    }
    const double *D = num + dv * n;
    int64_t f = 0;
    for (int64_t i = 0; i < n; i++) {
        if (f < pl->nfix && pl->fix[f] == i) {
            f++;
            continue;
        }
        if (!(D[i] > 0) || !isfinite(D[i])) {
            double Di = D[i];
            free(num);
            return fr__err(err, errlen, FR_EACCURACY,
                           "polyfft: normaliser D_%lld = %.3g is not positive: the polynomial "
                           "(degree %d) is too poor for these scores; raise the degree or use "
                           "--method exact",
                           (long long)i, Di, pl->degree);
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t col = 0; col < dv; col++)
            out[i * dv + col] = num[col * n + i] / D[i];
    free(num);
    if (!pl->nfix) return FR_OK;
    double *ex = malloc((size_t)(pl->nfix * (dv ? dv : 1)) * sizeof *ex);
    if (!ex) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    /* D_i of these rows may be anything; they are replaced. */
    int st = fr_exact_rows(&pl->p, q, k, v, pl->fix, pl->nfix, ex, err, errlen);
    if (!st)
        for (int64_t r = 0; r < pl->nfix; r++)
            for (int64_t col = 0; col < dv; col++)
                out[pl->fix[r] * dv + col] = ex[r * dv + col];
    free(ex);
    return st;
}
