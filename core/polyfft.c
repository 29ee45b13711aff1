/* polyfft.c - the papers' pipeline (ALGORITHM.md 4) with spectral accumulation (section 5).
 *
 *   num_i[x] = sum_alpha coef_alpha u_alpha(i) sum_j c_alpha(j - i) v_alpha(j) x_j,  x in [V, 1]
 *
 * Every Toeplitz product is a circular convolution of length N (the kernel embedded at
 * (-delta) mod N, see kernel_table), done in the frequency domain. Execution, per degree k
 * (terms of degree k only involve u, v of degree k, which bounds memory):
 *   1. Z_v = F(v * x) for every K-monomial v of degree k and column x   (#v (dv+1) FFTs)
 *   2. per Q-monomial u:  Y_u = sum_{pairs (u,v)} K_uv (.) Z_v           (pointwise, no FFT)
 *      y_u = F^-1(Y_u), num_i += u(i) y_u(i)                             (#u (dv+1) FFTs)
 * K_uv = sum_{alpha -> (u,v)} coef_alpha C_c(alpha) / N.
 *
 * Where the spectra live (a memory/time trade-off, chosen at plan time, PLAN_BUDGET):
 *   PAIRS   K_uv precombined at plan time for every (u,v) pair: #pairs spectra; execution does
 *           one complex multiply-add per pair and bin.
 *   KERNELS the #c kernel spectra C_c; execution forms K_uv per pair on the fly: one
 *           multiply-add per alpha and bin (once, shared by the columns of a block).
 *   STREAM  nothing stored: the kernel spectra of degree k are computed in execution, k by k
 *           (#c FFTs per execution instead of per plan); for large n (2^20: 8 MB per spectrum).
 * A spectrum is N/2+1 float complex = 4N bytes. Columns are processed in blocks sized so that
 * the Z_v of one degree fit in EXEC_BUDGET.
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
    fr__fft_forward(pl->fft, h, C);
}

void fr__polyfft_kernel_spectrum(const fr__polyfft *pl, int64_t c, double scale, float *h,
                                 fr__cpx *C)
{
    kernel_spectrum(pl, c, scale, h, C);
}

/* PAIRS: K_uv = sum_alpha coef_alpha C_c / N, kernels computed a chunk at a time so that the
 * scatter into the pairs needs no locks (each thread owns a range of pairs). */
static int precombine_pairs(fr__polyfft *pl)
{
    const fr__monomials *m = &pl->m;
    int64_t nb = pl->nb, N = pl->N;
    int64_t chunk = 4 * (int64_t)omp_get_max_threads();
    fr__cpx *C = malloc((size_t)(chunk * nb) * sizeof *C);
    float *hb = malloc((size_t)(omp_get_max_threads() * N) * sizeof *hb);
    if (!C || !hb) {
        free(C);
        free(hb);
        return 0;
    }
    memset(pl->spec, 0, (size_t)(m->npairs * nb) * sizeof *pl->spec);
    for (int64_t c0 = 0; c0 < m->nc; c0 += chunk) {
        int64_t c1 = c0 + chunk < m->nc ? c0 + chunk : m->nc;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t c = c0; c < c1; c++)
            kernel_spectrum(pl, c, 1.0 / (double)N, hb + omp_get_thread_num() * N,
                            C + (c - c0) * nb);
#pragma omp parallel for schedule(dynamic, 16)
        for (int64_t q = 0; q < m->npairs; q++) {
            fr__cpx *K = pl->spec + q * nb;
            for (int64_t t = m->p_first[q]; t < m->p_first[q + 1]; t++) {
                if (m->a_c[t] < c0 || m->a_c[t] >= c1) continue;
                const fr__cpx *Cc = C + (m->a_c[t] - c0) * nb;
                float s = (float)m->a_coef[t];
                for (int64_t b = 0; b < nb; b++) {
                    K[b].re += s * Cc[b].re;
                    K[b].im += s * Cc[b].im;
                }
            }
        }
    }
    free(C);
    free(hb);
    return 1;
}

static int compute_kernels(fr__polyfft *pl)
{
    int64_t N = pl->N;
    float *hb = malloc((size_t)(omp_get_max_threads() * N) * sizeof *hb);
    if (!hb) return 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < pl->m.nc; c++)
        kernel_spectrum(pl, c, 1.0 / (double)N, hb + omp_get_thread_num() * N,
                        pl->spec + c * pl->nb);
    free(hb);
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
    int64_t cols = p->dv + 1;
    if (!literal) {
        const fr__monomials *m = &pl->m;
        int64_t nv_max = 1;
        for (int k = 0; k <= degree; k++) {
            int64_t c = m->v_first[k + 1] - m->v_first[k];
            nv_max = c > nv_max ? c : nv_max;
        }
        pl->cb = exec_budget / (nv_max * spec_bytes);
        pl->cb = pl->cb < 1 ? 1 : pl->cb > cols ? cols : pl->cb;

        int64_t stored;
        if (m->npairs * spec_bytes <= plan_budget) {
            pl->mode = MODE_PAIRS;
            stored = m->npairs;
        } else if (m->nc * spec_bytes <= plan_budget) {
            pl->mode = MODE_KERNELS;
            stored = m->nc;
        } else {
            pl->mode = MODE_STREAM;
            stored = 0;
        }
        if (stored) {
            pl->spec = malloc((size_t)(stored * spec_bytes));
            int ok =
                pl->spec && (pl->mode == MODE_PAIRS ? precombine_pairs(pl) : compute_kernels(pl));
            if (!ok) {
                fr__polyfft_free(pl);
                return fr__err(err, errlen, FR_ENOMEM, "out of memory for %lld kernel spectra",
                               (long long)stored);
            }
        }
    }
    *out = pl;
    return FR_OK;
}

int fr__polyfft_mode(const fr__polyfft *pl, int64_t *col_block)
{
    if (col_block) *col_block = pl->cb;
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

/* Thread-seconds of the last execution: [0] forward FFTs (including their inputs), [1] the
 * frequency-domain accumulation, [2] inverse FFTs and the sum over u. */
void fr__polyfft_timing(const fr__polyfft *pl, double t[3])
{
    for (int i = 0; i < 3; i++)
        t[i] = pl->time[i];
}

/* ---- execution ---------------------------------------------------------------------------------
 */

/* Column col of [V, 1] at row j. */
static inline double column(const double *v, int64_t dv, int64_t j, int64_t col)
{
    return col < dv ? v[j * dv + col] : 1.0;
}

/* buf[j] = mono(k_j) * x_j, zero padded to N. */
static void fill_input(const fr__polyfft *pl, const unsigned char *e, const double *k,
                       const double *v, int64_t col, float *buf)
{
    int64_t n = pl->p.n, d = pl->p.d, dv = pl->p.dv;
    for (int64_t j = 0; j < n; j++)
        buf[j] = (float)(fr__monomial_eval(e, k + j * d, (int)d) * column(v, dv, j, col));
    memset(buf + n, 0, (size_t)(pl->N - n) * sizeof *buf);
}

/* acc[i] += mono(q_i) * y[i] */
static void add_output(const fr__polyfft *pl, const unsigned char *e, const double *q,
                       const float *y, double *acc)
{
    int64_t n = pl->p.n, d = pl->p.d;
    for (int64_t i = 0; i < n; i++)
        acc[i] += fr__monomial_eval(e, q + i * d, (int)d) * y[i];
}

/* Y += s * A (.) B over nb bins */
static inline void cmadd(fr__cpx *restrict Y, const fr__cpx *restrict A, const fr__cpx *restrict B,
                         float s, int64_t nb)
{
    for (int64_t b = 0; b < nb; b++) {
        float ar = s * A[b].re, ai = s * A[b].im;
        Y[b].re += ar * B[b].re - ai * B[b].im;
        Y[b].im += ar * B[b].im + ai * B[b].re;
    }
}

static int exec_literal(fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *num)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, N = pl->N, nb = pl->nb, cols = pl->p.dv + 1, d = pl->p.d;
    int T = omp_get_max_threads();
    double *acc = calloc((size_t)(T * cols * n), sizeof *acc);
    float *bufs = malloc((size_t)(T * N) * sizeof *bufs);
    fr__cpx *specs = malloc((size_t)(2 * T * nb) * sizeof *specs);
    if (!acc || !bufs || !specs) {
        free(acc);
        free(bufs);
        free(specs);
        return 0;
    }
    double tf = 0, ta = 0, ti = 0;
#pragma omp parallel reduction(+ : tf, ta, ti)
    {
        int t = omp_get_thread_num();
        float *buf = bufs + t * N;
        fr__cpx *Kc = specs + 2 * t * nb, *Z = Kc + nb;
        double *a = acc + t * cols * n;
#pragma omp for schedule(dynamic, 1)
        for (int64_t al = 0; al < m->nalpha; al++) {
            double t0 = omp_get_wtime();
            kernel_spectrum(pl, m->a_c[al], m->a_coef[al] / (double)N, buf, Kc);
            tf += omp_get_wtime() - t0;
            for (int64_t col = 0; col < cols; col++) {
                t0 = omp_get_wtime();
                fill_input(pl, m->v_exp + m->a_v[al] * d, k, v, col, buf);
                fr__fft_forward(pl->fft, buf, Z);
                double t1 = omp_get_wtime();
                for (int64_t b = 0; b < nb; b++) {
                    fr__cpx z = Z[b], c = Kc[b];
                    Z[b].re = z.re * c.re - z.im * c.im;
                    Z[b].im = z.re * c.im + z.im * c.re;
                }
                double t2 = omp_get_wtime();
                fr__fft_inverse(pl->fft, Z, buf);
                add_output(pl, m->u_exp + m->a_u[al] * d, q, buf, a + col * n);
                tf += t1 - t0;
                ta += t2 - t1;
                ti += omp_get_wtime() - t2;
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int64_t i = 0; i < cols * n; i++)
            num[i] += acc[t * cols * n + i];
    pl->time[0] = tf;
    pl->time[1] = ta;
    pl->time[2] = ti;
    free(acc);
    free(bufs);
    free(specs);
    return 1;
}

/* One block of columns [c0, c0 + ncb), all degrees. num is cols x n (column-major). */
static int exec_block(fr__polyfft *pl, const double *q, const double *k, const double *v,
                      int64_t c0, int64_t ncb, double *num)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, N = pl->N, nb = pl->nb, d = pl->p.d;
    int T = omp_get_max_threads();
    int64_t nv_max = 0;
    for (int g = 0; g <= pl->degree; g++) {
        int64_t c = m->v_first[g + 1] - m->v_first[g];
        nv_max = c > nv_max ? c : nv_max;
    }
    int64_t *cslot = malloc((size_t)(m->nc + 1) * sizeof *cslot);
    int64_t *clist = malloc((size_t)(m->nc + 1) * sizeof *clist);
    /* Per thread: one float time buffer, ncb accumulated spectra, one K_uv, ncb x n outputs. */
    float *bufs = malloc((size_t)(T * N) * sizeof *bufs);
    fr__cpx *Ys = malloc((size_t)(T * (ncb + 1) * nb) * sizeof *Ys);
    double *acc = calloc((size_t)(T * ncb * n), sizeof *acc);
    fr__cpx *Z = malloc((size_t)(nv_max * ncb * nb) * sizeof *Z);
    fr__cpx *Cs = NULL;
    int ok = cslot && clist && bufs && Ys && acc && Z;
    double tf = 0, ta = 0, ti = 0;
    for (int g = 0; ok && g <= pl->degree; g++) {
        int64_t v0 = m->v_first[g], v1 = m->v_first[g + 1];
        int64_t u0 = m->u_first[g], u1 = m->u_first[g + 1];
        if (v1 == v0) continue;
        const fr__cpx *Cbase = pl->spec;
        if (pl->mode == MODE_STREAM) {
            /* The kernels this degree uses, computed now (each once per block). */
            int64_t ncl = fr__polyfft_degree_kernels(m, g, cslot, clist);
            free(Cs);
            Cs = malloc((size_t)(ncl * nb) * sizeof *Cs);
            if (!Cs) {
                ok = 0;
                break;
            }
            double t0 = omp_get_wtime();
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t i = 0; i < ncl; i++)
                kernel_spectrum(pl, clist[i], 1.0 / (double)N, bufs + omp_get_thread_num() * N,
                                Cs + i * nb);
            tf += (omp_get_wtime() - t0) * T;
            Cbase = Cs;
        } else {
            for (int64_t c = 0; c < m->nc; c++)
                cslot[c] = c;
        }

#pragma omp parallel reduction(+ : tf, ta, ti)
        {
            int t = omp_get_thread_num();
            float *buf = bufs + t * N;
            fr__cpx *Y = Ys + t * (ncb + 1) * nb, *Kuv = Y + ncb * nb;
            double *a = acc + t * ncb * n;
#pragma omp for schedule(dynamic, 1)
            for (int64_t iv = 0; iv < (v1 - v0) * ncb; iv++) {
                double t0 = omp_get_wtime();
                int64_t vi = v0 + iv / ncb, col = c0 + iv % ncb;
                fill_input(pl, m->v_exp + vi * d, k, v, col, buf);
                fr__fft_forward(pl->fft, buf, Z + iv * nb);
                tf += omp_get_wtime() - t0;
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t u = u0; u < u1; u++) {
                double t0 = omp_get_wtime();
                memset(Y, 0, (size_t)(ncb * nb) * sizeof *Y);
                for (int64_t pq = m->u_pair[u]; pq < m->u_pair[u + 1]; pq++) {
                    const fr__cpx *K;
                    if (pl->mode == MODE_PAIRS) {
                        K = pl->spec + pq * nb;
                    } else {
                        /* K_uv from the kernel spectra, once for all columns of the block. */
                        memset(Kuv, 0, (size_t)nb * sizeof *Kuv);
                        for (int64_t al = m->p_first[pq]; al < m->p_first[pq + 1]; al++) {
                            const fr__cpx *C = Cbase + cslot[m->a_c[al]] * nb;
                            float s = (float)m->a_coef[al];
                            for (int64_t b = 0; b < nb; b++) {
                                Kuv[b].re += s * C[b].re;
                                Kuv[b].im += s * C[b].im;
                            }
                        }
                        K = Kuv;
                    }
                    const fr__cpx *Zv = Z + (m->p_v[pq] - v0) * ncb * nb;
                    for (int64_t col = 0; col < ncb; col++)
                        cmadd(Y + col * nb, K, Zv + col * nb, 1.0f, nb);
                }
                double t1 = omp_get_wtime();
                for (int64_t col = 0; col < ncb; col++) {
                    fr__fft_inverse(pl->fft, Y + col * nb, buf);
                    add_output(pl, m->u_exp + u * d, q, buf, a + col * n);
                }
                ta += t1 - t0;
                ti += omp_get_wtime() - t1;
            }
        }
    }
    if (ok)
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < ncb * n; i++)
                num[c0 * n + i] += acc[t * ncb * n + i];
    pl->time[0] += tf;
    pl->time[1] += ta;
    pl->time[2] += ti;
    free(cslot);
    free(clist);
    free(bufs);
    free(Ys);
    free(acc);
    free(Z);
    free(Cs);
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
    if (!num)
        return fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft, n = %lld)", (long long)n);
    int ok = 1;
    pl->time[0] = pl->time[1] = pl->time[2] = 0;
    if (pl->literal)
        ok = exec_literal(pl, q, k, v, num);
    else
        for (int64_t c0 = 0; ok && c0 < cols; c0 += pl->cb)
            ok = exec_block(pl, q, k, v, c0, c0 + pl->cb <= cols ? pl->cb : cols - c0, num);
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
