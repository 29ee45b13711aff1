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

/* out[0..len) = scale * c(delta) for delta = d0 .. d0 + len - 1 (kernel monomial c), a factor
 * at a time over contiguous offsets: vectorised, unlike a product per offset. */
static void kernel_values(const fr__polyfft *pl, int64_t c, double scale, int64_t d0, int64_t len,
                          double *out)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, L = 2 * n - 1;
    const unsigned char *e = m->c_exp + c * m->nk;
    for (int64_t i = 0; i < len; i++)
        out[i] = scale;
    for (int k = 0; k < m->nk; k++) {
        const double *f = m->ftab + k * L + d0 + n - 1;
        for (int t = 0; t < e[k]; t++)
            for (int64_t i = 0; i < len; i++)
                out[i] *= f[i];
    }
}

/* h += the circulant column of kernel monomial c times scale (see kernel_table). */
static void kernel_table_add(const fr__polyfft *pl, int64_t c, double scale, float *h)
{
    enum { CH = 512 };
    double v[CH];
    int64_t N = pl->N;
    for (int64_t d0 = pl->lo; d0 <= pl->hi; d0 += CH) {
        int64_t len = pl->hi - d0 + 1 < CH ? pl->hi - d0 + 1 : CH;
        kernel_values(pl, c, scale, d0, len, v);
        int64_t i = 0;
        for (; i < len && d0 + i <= 0; i++)
            h[-(d0 + i)] += (float)v[i];
        for (; i < len; i++)
            h[N - (d0 + i)] += (float)v[i];
    }
}

/* The circulant column of kernel monomial c, times scale: h[(-delta) mod N] = c(delta) for
 * delta in [lo, hi], 0 elsewhere. Then (h * x)_i = sum_j c(j - i) x_j for i < n: the
 * correlation the scores need. No wrap-around because N >= n + max(hi, -lo). The mask is this
 * range: it multiplies every kernel, the degree-0 (all-ones) one included. */
static void kernel_table(const fr__polyfft *pl, int64_t c, double scale, float *h)
{
    memset(h, 0, (size_t)pl->N * sizeof *h);
    kernel_table_add(pl, c, scale, h);
}

/* C (nb complex) = F(circulant column of c * scale); h: N + 2 + N floats of scratch. */
static void kernel_spectrum(const fr__polyfft *pl, int64_t c, double scale, float *h, fr__cpx *C)
{
    kernel_table(pl, c, scale, h);
    fr__fft_forward(pl->fft, h, C, (fr__cpx *)(h + pl->N + 2));
}

int64_t fr__polyfft_kernel_floats(const fr__polyfft *pl, int64_t c)
{
    return pl->kpar[c] == FR_PAR_NONE ? 2 * pl->nb : pl->nb;
}

/* One transform: kernel a's spectrum, or with b >= 0 an even and an odd kernel's at once. */
static void kernel_job(const fr__polyfft *pl, int64_t a, int64_t b, float *h, float *const *out)
{
    int64_t nb = pl->nb;
    double scale = 1.0 / (double)pl->N; /* the inverse transform's */
    fr__cpx *C = (fr__cpx *)h;          /* the spectrum over the table, which the FFT consumed */
    kernel_table(pl, a, scale, h);
    if (b >= 0) kernel_table_add(pl, b, scale, h);
    fr__fft_forward(pl->fft, h, C, (fr__cpx *)(h + pl->N + 2));
    for (int k = 0; k < 2; k++) {
        int64_t c = k ? b : a;
        if (c < 0) break;
        float *o = out[c];
        /* An even kernel's spectrum is real, an odd one's imaginary: alone, the other part is
         * rounding; paired, it is the other kernel's. */
        if (pl->kpar[c] == FR_PAR_EVEN)
            for (int64_t i = 0; i < nb; i++)
                o[i] = C[i].re;
        else if (pl->kpar[c] == FR_PAR_ODD)
            for (int64_t i = 0; i < nb; i++)
                o[i] = C[i].im;
        else
            memcpy(o, C, (size_t)nb * sizeof *C);
    }
}

int fr__polyfft_kernel_spectra(const fr__polyfft *pl, const int64_t *list, int64_t cnt,
                               float *const *out, const fr__thread_bufs *tb)
{
    int64_t *job = malloc((size_t)(2 * cnt + 2) * sizeof *job), nj = 0, ne = 0, no = 0;
    if (!job) return 0;
    /* Even kernels fill the first slots of the jobs, odd ones join them, the rest alone. */
    for (int64_t i = 0; i < cnt; i++)
        if (pl->kpar[list[i]] == FR_PAR_EVEN) {
            job[2 * nj] = list[i];
            job[2 * nj++ + 1] = -1;
            ne++;
        }
    for (int64_t i = 0; i < cnt; i++) {
        int64_t c = list[i];
        if (pl->kpar[c] == FR_PAR_ODD && no < ne) {
            job[2 * no++ + 1] = c;
        } else if (pl->kpar[c] != FR_PAR_EVEN) {
            job[2 * nj] = c;
            job[2 * nj++ + 1] = -1;
        }
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j = 0; j < nj; j++)
        kernel_job(pl, job[2 * j], job[2 * j + 1], tb->p[omp_get_thread_num()], out);
    free(job);
    return 1;
}

static int compute_kernels(fr__polyfft *pl)
{
    int64_t nc = pl->m.nc, *list = malloc((size_t)(nc + 1) * sizeof *list);
    float **out = malloc((size_t)(nc + 1) * sizeof *out);
    fr__thread_bufs hb = {0};
    int ok = list && out && fr__thread_bufs_alloc(&hb, (size_t)(2 * pl->N + 2) * sizeof(float));
    if (ok) {
        for (int64_t c = 0; c < nc; c++) {
            list[c] = c;
            out[c] = pl->spec + pl->koff[c];
        }
        ok = fr__polyfft_kernel_spectra(pl, list, nc, out, &hb);
    }
    fr__thread_bufs_free(&hb);
    free(list);
    free(out);
    return ok;
}

/* Parity of every kernel monomial on the kept offsets [lo, hi], from its factors': even when
 * c(-delta) = c(delta), odd when c(-delta) = -c(delta), both exactly (RoPE's cos and sin of a
 * position that is odd in delta, clipped or not, under no mask or a window), else none (a
 * causal mask, a W without the symmetry). Then the parity of every (u, v) pair: its alphas'
 * common parity, or none. */
static int kernel_parities(fr__polyfft *pl)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, L = 2 * n - 1;
    unsigned char *fpar = malloc((size_t)m->nk + 1);
    pl->kpar = malloc((size_t)m->nc + 1);
    pl->ppar = malloc((size_t)m->npairs + 1);
    if (!fpar || !pl->kpar || !pl->ppar) {
        free(fpar);
        return 0;
    }
    for (int k = 0; k < m->nk; k++) {
        const double *f = m->ftab + k * L + n - 1; /* f[delta] */
        int even = pl->lo == -pl->hi, odd = even && f[0] == 0;
        for (int64_t dl = 1; dl <= pl->hi && (even || odd); dl++) {
            even = even && f[dl] == f[-dl];
            odd = odd && f[dl] == -f[-dl];
        }
        fpar[k] = even ? FR_PAR_EVEN : odd ? FR_PAR_ODD : FR_PAR_NONE;
    }
    for (int64_t c = 0; c < m->nc; c++) {
        const unsigned char *e = m->c_exp + c * m->nk;
        int none = pl->lo != -pl->hi, odd = 0;
        for (int k = 0; k < m->nk; k++)
            if (e[k]) {
                none = none || fpar[k] == FR_PAR_NONE;
                odd ^= fpar[k] == FR_PAR_ODD && (e[k] & 1);
            }
        pl->kpar[c] = none ? FR_PAR_NONE : odd ? FR_PAR_ODD : FR_PAR_EVEN;
    }
    for (int64_t q = 0; q < m->npairs; q++) {
        unsigned char par = pl->kpar[m->a_c[m->p_first[q]]];
        for (int64_t al = m->p_first[q]; al < m->p_first[q + 1]; al++)
            if (pl->kpar[m->a_c[al]] != par) par = FR_PAR_NONE;
        pl->ppar[q] = par;
    }
    free(fpar);
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

    if (!kernel_parities(pl)) {
        fr__polyfft_free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the polyfft plan");
    }
    if (!literal) {
        int64_t nc = pl->m.nc, floats = 0;
        if (!(pl->koff = malloc((size_t)(nc + 1) * sizeof *pl->koff))) {
            fr__polyfft_free(pl);
            return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the polyfft plan");
        }
        for (int64_t c = 0; c < nc; c++) {
            pl->koff[c] = floats;
            floats += fr__polyfft_kernel_floats(pl, c);
        }
        if (floats * (int64_t)sizeof(float) <= plan_budget) {
            pl->mode = MODE_KERNELS;
            pl->spec = fr__alloc_big((size_t)floats * sizeof(float));
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

/* num += the literal algorithm's sums; xv = [V, 1] (n x cols). */
static int exec_literal(const fr__polyfft *pl, const double *q, const double *k, const double *xv,
                        double *num)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, N = pl->N, nb = pl->nb, cols = pl->p.dv + 1, d = pl->p.d;
    int T = omp_get_max_threads();
    double *acc = calloc((size_t)(T * cols * n), sizeof *acc);
    double *monos = malloc((size_t)(T * 2 * n) * sizeof *monos);
    float *bufs = malloc((size_t)(T * (2 * N + 2)) * sizeof *bufs);
    fr__cpx *specs = malloc((size_t)(2 * T * nb) * sizeof *specs);
    double *qt = fr__transpose(q, n, d), *kt = fr__transpose(k, n, d);
    double *xt = fr__transpose(xv, n, cols);
    int ok = acc && monos && bufs && specs && qt && kt && xt;
    if (ok) {
#pragma omp parallel
        {
            int t = omp_get_thread_num();
            float *buf = bufs + t * (2 * N + 2);
            fr__cpx *S = (fr__cpx *)(buf + N + 2), *Kc = specs + 2 * t * nb, *Z = Kc + nb;
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

static int execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                   double *out, char *err, size_t errlen);

int fr__polyfft_execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *out, char *err, size_t errlen)
{
    /* nthreads-var is the calling thread's own: setting it here touches no other caller. */
    int saved = omp_get_max_threads();
    omp_set_num_threads(fr__polyfft_threads(pl));
    int st = execute(pl, q, k, v, out, err, errlen);
    omp_set_num_threads(saved);
    return st;
}

static int execute(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                   double *out, char *err, size_t errlen)
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
