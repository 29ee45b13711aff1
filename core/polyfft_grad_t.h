/* polyfft_grad_t.h - the parts of the polyfft backward (core/polyfft_grad.c) that touch
 * spectra or time samples, in one precision (REAL, CPX: core/real_t.h): dQ from the kept y_u and
 * the dW pass. Instantiated twice by core/polyfft_grad.c, whose add_mono_grad and dw_reduce it
 * uses. No include guard: see core/real_t.h. */
#include "real_t.h"

/* Y += A (.) B, or conj(A) (.) B (the reflected kernel) */
static inline void T_(cmadd2)(CPX *restrict Y, const CPX *restrict A, const CPX *restrict B,
                              int conj, int64_t nb)
{
    if (conj)
        for (int64_t b = 0; b < nb; b++) {
            Y[b].re += A[b].re * B[b].re + A[b].im * B[b].im;
            Y[b].im += A[b].re * B[b].im - A[b].im * B[b].re;
        }
    else
        for (int64_t b = 0; b < nb; b++) {
            Y[b].re += A[b].re * B[b].re - A[b].im * B[b].im;
            Y[b].im += A[b].re * B[b].im + A[b].im * B[b].re;
        }
}

/* dQ from the y_u kept by pass A: no FFT, rows in parallel (no accumulator per thread). */
static void T_(dq_from_kept)(const fr__polyfft *pl, const REAL *ystore, int64_t ukeep,
                             const double *q, const double *w, double *dq)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, d = pl->p.d, cols = pl->p.dv + 1;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t r0 = 0; r0 < n; r0 += 512) {
        int64_t r1 = r0 + 512 < n ? r0 + 512 : n;
        for (int64_t u = ukeep; u < m->nu; u++) {
            const unsigned char *e = m->u_exp + u * d;
            const REAL *y = ystore + (u - ukeep) * cols * n;
            for (int64_t i = r0; i < r1; i++) {
                double s = 0;
                for (int64_t x = 0; x < cols; x++)
                    s += w[i * cols + x] * y[x * n + i];
                if (s != 0) add_mono_grad(e, q + i * d, (int)d, s, dq + i * d);
            }
        }
    }
}

/* dW through P' (see the top of the file): w (n x cols, zero on the exactly recomputed rows)
 * the column weights, xv = [V, 1]. Adds into dw. */
static int T_(dw_pass)(const fr__polyfft *pl, const double *q, const double *k, const double *xv,
                       const double *w, double *dw, char *err, size_t errlen)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, d = p->d, cols = p->dv + 1, N = pl->N, nb = pl->nb, dd = d * d;
    int64_t L = 2 * n - 1, lo = pl->lo, hi = pl->hi, nw = hi - lo + 1;
    int g = pl->degree, T = omp_get_max_threads();
    if (g < 1) return FR_OK; /* P constant: the scores do not matter */
    double *cp = malloc((size_t)g * sizeof *cp);
    if (!cp) return fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft dW)");
    for (int e = 0; e < g; e++)
        cp[e] = (e + 1) * pl->coef[e + 1];
    fr__support S;
    fr__monomials m;
    int st = fr__support_build(p, &S, err, errlen);
    if (!st) {
        st = fr__monomials_build_dim(&S, (int)d, cp, g - 1, p->tau, &m, err, errlen);
        fr__support_free(&S);
    }
    free(cp);
    if (st) return st;
    int md = m.d; /* = d */

    int64_t side_max = 1;
    for (int e = 0; e < g; e++) {
        int64_t c = (m.u_first[e + 1] - m.u_first[e]) + (m.v_first[e + 1] - m.v_first[e]);
        side_max = c > side_max ? c : side_max;
    }
    int64_t nbs = pl->nbs, cb = pl->exec_budget / (side_max * d * nbs * (int64_t)sizeof(CPX));
    cb = cb < 1 ? 1 : cb > cols ? cols : cb;
    CPX *Z = fr__fft_alloc((size_t)(side_max * d * cb * nbs) * sizeof *Z);
    fr__thread_bufs tb = {0}; /* per thread: the FFT area, then Y (nbs CPX) */
    double *kcs = malloc((size_t)(T * nw) * sizeof *kcs);
    double *acc = calloc((size_t)(T * nw * dd), sizeof *acc);
    int ok = Z && kcs && acc &&
             fr__thread_bufs_alloc(&tb, (size_t)(pl->area_bytes + nbs * (int64_t)sizeof(CPX)));
    const double scale = p->tau / (double)N; /* the inverse FFT is unnormalised */

    for (int64_t c0 = 0; ok && c0 < cols; c0 += cb) {
        int64_t ncb = c0 + cb <= cols ? cb : cols - c0;
        for (int e = 0; e < g; e++) {
            int64_t u0 = m.u_first[e], u1 = m.u_first[e + 1];
            int64_t v0 = m.v_first[e], v1 = m.v_first[e + 1];
            if (u1 == u0) continue;
            int64_t q0 = m.u_pair[u0], q1 = m.u_pair[u1];
            /* A[u][a][col] = F(u Q_a w_x), then B[v][b][col] = F(v K_b x) */
            CPX *A = Z, *B = Z + (u1 - u0) * d * ncb * nbs;
            int64_t na = (u1 - u0) * d * ncb, nbv = (v1 - v0) * d * ncb;
#pragma omp parallel
            {
                int t = omp_get_thread_num();
                void *tx, *tX, *Sc;
                fr__polyfft_area(pl, tb.p[t], &tx, &tX, &Sc);
                REAL *buf = tx;
                CPX *Y = (CPX *)((char *)tb.p[t] + pl->area_bytes);
                double *kc = kcs + t * nw, *a_t = acc + t * nw * dd;
#pragma omp for schedule(dynamic, 1)
                for (int64_t iv = 0; iv < na + nbv; iv++) {
                    int side = iv >= na;
                    int64_t r = side ? iv - na : iv;
                    int64_t mi = r / (d * ncb), a = r / ncb % d, x = c0 + r % ncb;
                    const unsigned char *ex =
                        side ? m.v_exp + (v0 + mi) * md : m.u_exp + (u0 + mi) * md;
                    const double *rows = side ? k : q, *wt = side ? xv : w;
                    for (int64_t i = 0; i < n; i++)
                        buf[i] = (REAL)(fr__monomial_eval(ex, rows + i * d, md) * rows[i * d + a] *
                                        wt[i * cols + x]);
                    memset(buf + n, 0, (size_t)(N - n) * sizeof *buf);
                    FFT_FORWARD(pl->fft, buf, (side ? B : A) + r * nbs, Sc);
                }
#pragma omp for schedule(dynamic, 1)
                for (int64_t pq = q0; pq < q1; pq++) {
                    /* the pair's kernel on the kept offsets, in double */
                    memset(kc, 0, (size_t)nw * sizeof *kc);
                    for (int64_t al = m.p_first[pq]; al < m.p_first[pq + 1]; al++) {
                        const unsigned char *ce = m.c_exp + (int64_t)m.a_c[al] * m.nk;
                        for (int64_t dl = lo; dl <= hi; dl++) {
                            double val = m.a_coef[al] * scale;
                            for (int f = 0; f < m.nk; f++)
                                for (int t2 = 0; t2 < ce[f]; t2++)
                                    val *= m.ftab[f * L + dl + n - 1];
                            kc[dl - lo] += val;
                        }
                    }
                    const CPX *Au = A + (m.p_u[pq] - u0) * d * ncb * nbs,
                              *Bv = B + (m.p_v[pq] - v0) * d * ncb * nbs;
                    for (int64_t a = 0; a < d; a++)
                        for (int64_t b = 0; b < d; b++) {
                            memset(Y, 0, (size_t)nb * sizeof *Y);
                            for (int64_t col = 0; col < ncb; col++)
                                T_(cmadd2)
                            (Y, Au + (a * ncb + col) * nbs, Bv + (b * ncb + col) * nbs, 1, nb);
                            FFT_INVERSE(pl->fft, Y, buf, Sc);
                            double *o = a_t + a * d + b;
                            for (int64_t dl = lo; dl <= hi; dl++)
                                o[(dl - lo) * dd] += kc[dl - lo] * buf[dl >= 0 ? dl : N + dl];
                        }
                }
            }
        }
    }
    if (ok) dw_reduce(pl, acc, T, dw);
    fr__monomials_free(&m);
    free(Z);
    fr__thread_bufs_free(&tb);
    free(kcs);
    free(acc);
    return ok ? FR_OK
              : fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft dW, n = %lld)",
                        (long long)n);
}
