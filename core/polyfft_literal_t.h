/* polyfft_literal_t.h - the literal algorithm (core/polyfft.c's literal mode) in one precision
 * (REAL, CPX: core/real_t.h), instantiated twice by core/polyfft.c. No include guard: see
 * core/real_t.h. */
#include "real_t.h"

/* num += the literal algorithm's sums; xv = [V, 1] (n x cols). Per thread: the FFT area, the
 * alpha's kernel spectrum (nbs CPX), its sums ((dv+1) x n) and two monomial rows. */
static int T_(exec_literal)(const fr__polyfft *pl, const double *q, const double *k,
                            const double *xv, double *num)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, nb = pl->nb, cols = pl->p.dv + 1, d = pl->p.d;
    int64_t off_k = pl->area_bytes, off_acc = off_k + fr__align(pl->nbs * (int64_t)sizeof(CPX));
    int64_t off_mono = off_acc + cols * n * (int64_t)sizeof(double);
    fr__thread_bufs tb = {0};
    double *qt = fr__transpose(q, n, d), *kt = fr__transpose(k, n, d);
    double *xt = fr__transpose(xv, n, cols);
    int ok = qt && kt && xt &&
             fr__thread_bufs_alloc(&tb, (size_t)(off_mono + 2 * n * (int64_t)sizeof(double)));
    if (ok) {
#pragma omp parallel
        {
            char *b = tb.p[omp_get_thread_num()];
            void *x, *X, *S;
            fr__polyfft_area(pl, b, &x, &X, &S);
            REAL *buf = x;
            CPX *Z = X, *Kc = (CPX *)(b + off_k);
            double *a = (double *)(b + off_acc), *mu = (double *)(b + off_mono), *mv = mu + n;
#pragma omp for schedule(dynamic, 1)
            for (int64_t al = 0; al < m->nalpha; al++) {
                T_(fr__polyfft_kernel_spectrum)
                (pl, m->a_c[al], m->a_coef[al] / (double)pl->N, b, Kc);
                fr__polyfft_mono(pl, m->v_exp + m->a_v[al] * d, kt, mv);
                fr__polyfft_mono(pl, m->u_exp + m->a_u[al] * d, qt, mu);
                for (int64_t col = 0; col < cols; col++) {
                    T_(fr__polyfft_fill)(pl, mv, xt + col * n, buf);
                    FFT_FORWARD(pl->fft, buf, Z, S);
                    for (int64_t bin = 0; bin < nb; bin++) {
                        CPX z = Z[bin], c = Kc[bin];
                        Z[bin].re = z.re * c.re - z.im * c.im;
                        Z[bin].im = z.re * c.im + z.im * c.re;
                    }
                    FFT_INVERSE(pl->fft, Z, buf, S);
                    T_(fr__polyfft_gather)(n, mu, buf, a + col * n);
                }
            }
        }
        for (int t = 0; t < tb.n; t++) {
            const double *a = (const double *)((char *)tb.p[t] + off_acc);
            for (int64_t i = 0; i < cols * n; i++)
                num[i] += a[i];
        }
    }
    fr__thread_bufs_free(&tb);
    free(qt);
    free(kt);
    free(xt);
    return ok;
}
