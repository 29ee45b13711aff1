/* polyfft_grad.c - backward of the polyfft pipeline (ALGORITHM.md 7): the exact gradient of the
 * polynomial forward
 *
 *   T_i = num_i / D_i,  [num_i, D_i] = sum_j P(s_ij) [V_j, 1],
 *   P(s_ij) = sum_alpha coef_alpha u_alpha(i) c_alpha(j - i) v_alpha(j).
 *
 * With G = dL/dT, Delta_i = G_i . T_i and the per-row weights of the columns x of [V, 1]
 *   w_m(i) = G_im / D_i,  w_1(i) = -Delta_i / D_i       (so dL/dP_ij = sum_x w_x(i) x(j)),
 * every gradient is a contraction of one of two Toeplitz passes that have the forward's shape:
 *   forward pass     y_u[x](i) = sum_{alpha -> u} coef sum_j c(j - i) v(j) x(j)
 *                    dQ_ia = sum_u (du/dQ_a)(i) sum_x w_x(i) y_u[x](i)
 *   transposed pass  z_v[x](j) = sum_{alpha -> v} coef sum_i c(j - i) u(i) w_x(i)
 *                    dV_jm = sum_v v(j) z_v[w_m](j)
 *                    dK_jb = sum_v (dv/dK_b)(j) sum_x x(j) z_v[w_x](j)
 * The transposed pass is the forward one with Q and K swapped and every kernel reflected,
 * delta -> -delta, which for a real circulant is the complex conjugate of its spectrum: so the
 * plan's spectra (kept or streamed) serve both passes unchanged. Both passes are
 * core/polyfft_pass.c's, the forward's own engine.
 *
 * Passes: A (forward, values: T and D; keeps the y_u that fit in the plan's execution budget),
 * then dQ from the kept y_u (no FFT) and from a second forward pass B over the other Q-monomials
 * only, then the transposed pass. About two forward passes when all y_u fit, up to three when
 * none does (memory: the kept y_u add up to one execution budget to the forward's).
 *
 * Rows the forward recomputes exactly (too few keys for the float FFTs) have T_i from softmax,
 * not from P: their weights are zero in the passes, and their contributions to dQ, dK, dV are
 * those of exact attention restricted to them (computed here directly over their few keys).
 *
 * dW (any entry (a, b), in the support of W or not: P is a function of the score, so
 * perturbing a zero entry changes P(s) through s like any other) is
 *   dW_delta[a][b] = tau sum_{j - i = delta} P'(s_ij) Q_ia K_jb sum_x w_x(i) x(j),
 * with P' expanded over the support like P (a second monomial set, degree g - 1): per pair
 * (u, v) of that expansion and entry (a, b) one cross-correlation
 *   corr(delta) = sum_x sum_i (u Q_a w_x)(i) (v K_b x)(i + delta)
 * by FFT (the spectra summed over x before one inverse transform), times the pair's kernel
 * sum_{beta -> (u, v)} coef_beta c_beta(delta) in the time domain (the kernels differ per beta,
 * so they cannot be folded in before the inverse). #pairs(P') d^2 inverse FFTs. */
#include "polyfft_impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* g[a] += s * d(prod_b x_b^e_b)/dx_a for every a */
static inline void add_mono_grad(const unsigned char *e, const double *x, int d, double s,
                                 double *g)
{
    for (int a = 0; a < d; a++) {
        if (!e[a]) continue;
        double r = s * e[a];
        for (int b = 0; b < d; b++)
            for (int t = 0, p = e[b] - (b == a); t < p; t++)
                r *= x[b];
        g[a] += r;
    }
}

/* Per thread accumulators of dW over the kept offsets [lo, hi]: nw x d x d each. */
static void dw_reduce(const fr__polyfft *pl, const double *acc, int T, double *dw)
{
    int64_t n = pl->p.n, dd = pl->p.d * pl->p.d, nw = pl->hi - pl->lo + 1;
#pragma omp parallel for schedule(static)
    for (int64_t e = 0; e < nw * dd; e++) {
        double s = 0;
        for (int t = 0; t < T; t++)
            s += acc[t * nw * dd + e];
        dw[(pl->lo + n - 1) * dd + e] += s;
    }
}

#define FR_T_DOUBLE 0
#include "polyfft_grad_t.h"
#undef FR_T_DOUBLE
#define FR_T_DOUBLE 1
#include "polyfft_grad_t.h"

/* The rows the forward recomputes with exact softmax: their T is exact attention's, so their
 * gradient is exact attention's restricted to them (query row i and its few keys), added to
 * dq, dk, dv (and dw if not NULL). O(keys |S|) per row through the support tables (O(keys d^2)
 * with dw). */
static int fixed_rows_grad(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                           const double *tt, const double *g, double *dq, double *dk, double *dv,
                           double *dw, char *err, size_t errlen)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, d = p->d, dvd = p->dv, L = 2 * n - 1;
    double tau = p->tau;
    fr__support S;
    int st = fr__support_build(p, &S, err, errlen);
    if (st) return st;
    /* Keys any fixed row sees: [jlo, jhi]; per-thread sums over that range only. */
    int64_t jlo = pl->fix[0] + pl->lo, jhi = pl->fix[pl->nfix - 1] + pl->hi;
    jlo = jlo < 0 ? 0 : jlo;
    jhi = jhi > n - 1 ? n - 1 : jhi;
    int64_t nj = jhi - jlo + 1, T = omp_get_max_threads(), width = d + dvd;
    int64_t maxkeys = pl->hi - pl->lo + 1 < n ? pl->hi - pl->lo + 1 : n;
    int64_t dd = d * d, nw = pl->hi - pl->lo + 1;
    double *acc = calloc((size_t)(T * nj * width), sizeof *acc);
    double *pbuf = malloc((size_t)(T * maxkeys) * sizeof *pbuf);
    double *wacc = dw ? calloc((size_t)(T * nw * dd), sizeof *wacc) : NULL;
    if (!acc || !pbuf || (dw && !wacc)) {
        free(acc);
        free(pbuf);
        free(wacc);
        fr__support_free(&S);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft backward, exact rows)");
    }
#pragma omp parallel
    {
        int t = omp_get_thread_num();
        double *a = acc + t * nj * width, *pr = pbuf + t * maxkeys;
        double *wa = wacc ? wacc + t * nw * dd : NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t r = 0; r < pl->nfix; r++) {
            int64_t i = pl->fix[r];
            int64_t j0 = i + pl->lo < 0 ? 0 : i + pl->lo,
                    j1 = i + pl->hi > n - 1 ? n - 1 : i + pl->hi;
            const double *qi = q + i * d, *gi = g + i * dvd;
            double mx = -INFINITY, l = 0, delta = 0;
            for (int64_t j = j0; j <= j1; j++) {
                double s = 0;
                for (int64_t e = 0; e < S.ns; e++)
                    s += qi[S.a[e]] * S.w[e * L + j - i + n - 1] * k[j * d + S.b[e]];
                pr[j - j0] = tau * s;
                mx = pr[j - j0] > mx ? pr[j - j0] : mx;
            }
            for (int64_t j = j0; j <= j1; j++)
                l += (pr[j - j0] = exp(pr[j - j0] - mx));
            for (int64_t o = 0; o < dvd; o++)
                delta += gi[o] * tt[i * dvd + o];
            for (int64_t j = j0; j <= j1; j++) {
                double pij = pr[j - j0] / l, gv = 0;
                for (int64_t o = 0; o < dvd; o++)
                    gv += gi[o] * v[j * dvd + o];
                double ds = tau * pij * (gv - delta);
                double *aj = a + (j - jlo) * width;
                for (int64_t e = 0; e < S.ns; e++) {
                    double we = ds * S.w[e * L + j - i + n - 1];
                    dq[i * d + S.a[e]] += we * k[j * d + S.b[e]];
                    aj[S.b[e]] += we * qi[S.a[e]];
                }
                for (int64_t o = 0; o < dvd; o++)
                    aj[d + o] += pij * gi[o];
                if (wa) {
                    double *wd = wa + (j - i - pl->lo) * dd;
                    for (int64_t x = 0; x < d; x++)
                        for (int64_t y = 0; y < d; y++)
                            wd[x * d + y] += ds * qi[x] * k[j * d + y];
                }
            }
        }
    }
    for (int64_t j = 0; j < nj; j++)
        for (int64_t t = 0; t < T; t++) {
            const double *aj = acc + (t * nj + j) * width;
            for (int64_t a = 0; a < d; a++)
                dk[(jlo + j) * d + a] += aj[a];
            for (int64_t o = 0; o < dvd; o++)
                dv[(jlo + j) * dvd + o] += aj[d + o];
        }
    if (dw) dw_reduce(pl, wacc, (int)T, dw);
    free(acc);
    free(pbuf);
    free(wacc);
    fr__support_free(&S);
    return FR_OK;
}

static int backward(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                    const double *dout, const double *target, double *t, double *dq, double *dk,
                    double *dv, double *dw, double *loss, fr__prog *pg, char *err, size_t errlen);

int fr__polyfft_backward(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, fr__prog *pg, char *err,
                         size_t errlen)
{
    int saved = omp_get_max_threads(); /* as the forward: small problems on one thread */
    omp_set_num_threads(fr__polyfft_threads(pl));
    int st = backward(pl, q, k, v, dout, target, t, dq, dk, dv, dw, loss, pg, err, errlen);
    omp_set_num_threads(saved);
    return st;
}

static int backward(const fr__polyfft *pl, const double *q, const double *k, const double *v,
                    const double *dout, const double *target, double *t, double *dq, double *dk,
                    double *dv, double *dw, double *loss, fr__prog *pg, char *err, size_t errlen)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, d = p->d, dvd = p->dv, cols = dvd + 1;
    int st0 =
        fr__backward_check(p, "polyfft backward", q, k, v, dout, target, dq, dk, dv, err, errlen);
    if (st0) return st0;

    /* Keep the y_u of as many Q-monomials as the execution budget holds, the last ones (the
     * highest degrees, the most numerous): pass B then recomputes only the others, and skips
     * the degrees it needs nothing of altogether, their forward FFTs included. */
    int64_t per_u = cols * n * pl->rs;
    int64_t nkeep = pl->exec_budget / per_u;
    nkeep = nkeep > pl->m.nu ? pl->m.nu : nkeep;
    int64_t ukeep = pl->m.nu - nkeep;
    double *xv = malloc((size_t)(n * cols) * sizeof *xv);
    double *w = calloc((size_t)(n * cols), sizeof *w);
    double *num = calloc((size_t)(n * cols), sizeof *num);
    double *tt = t ? t : malloc((size_t)(n * dvd + 1) * sizeof *tt);
    double *g = target ? malloc((size_t)(n * dvd + 1) * sizeof *g) : NULL;
    double *ex = pl->nfix ? malloc((size_t)(pl->nfix * dvd + 1) * sizeof *ex) : NULL;
    void *ystore = nkeep ? fr__alloc_big((size_t)(nkeep * per_u)) : NULL;
    if (!ystore) { /* then pass B recomputes them all */
        nkeep = 0;
        ukeep = pl->m.nu;
    }
    int st = FR_OK;
    if (!xv || !w || !num || !tt || (target && !g) || (pl->nfix && !ex)) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft backward, n = %lld)",
                     (long long)n);
        goto done;
    }
    for (int64_t j = 0; j < n; j++) {
        for (int64_t o = 0; o < dvd; o++)
            xv[j * cols + o] = v[j * dvd + o];
        xv[j * cols + dvd] = 1;
    }

    /* Pass A: num and D (and the y_u, if they fit). */
    fr__pass a = {.transposed = 0,
                  .xin = k,
                  .xout = q,
                  .ain = xv,
                  .num = num,
                  .ystore = ystore,
                  .ukeep = ukeep,
                  .pg = pg};
    /* Progress: the three passes alike (pass B only over the y_u not kept). */
    fr__prog_range rg = fr__prog_narrow(pg, 0, 1.0 / 3);
    int ok = fr__polyfft_pass(pl, &a);
    fr__prog_restore(pg, rg);
    if (fr__prog_canceled(pg)) {
        st = fr__prog_err(pg, err, errlen);
        goto done;
    }
    if (!ok) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft backward, n = %lld)",
                     (long long)n);
        goto done;
    }
    const double *D = num + dvd * n;
    for (int64_t i = 0, f = 0; i < n; i++) {
        if (f < pl->nfix && pl->fix[f] == i) {
            f++;
            continue;
        }
        if (!(D[i] > 0) || !isfinite(D[i])) {
            st = fr__err(err, errlen, FR_EACCURACY,
                         "polyfft: normaliser D_%lld = %.3g is not positive: the polynomial "
                         "(degree %d) is too poor for these scores; a higher degree or exact "
                         "attention computes them",
                         (long long)i, D[i], pl->degree);
            goto done;
        }
        for (int64_t o = 0; o < dvd; o++)
            tt[i * dvd + o] = num[o * n + i] / D[i];
    }
    if (pl->nfix) {
        if ((st = fr__exact_rows(p, q, k, v, pl->fix, pl->nfix, ex, NULL, err, errlen))) goto done;
        for (int64_t r = 0; r < pl->nfix; r++)
            for (int64_t o = 0; o < dvd; o++)
                tt[pl->fix[r] * dvd + o] = ex[r * dvd + o];
    }

    /* G, Delta and the column weights w (zero on the exactly recomputed rows). */
    const double *gg = dout;
    if (target) {
        double lsum = 0;
        for (int64_t e = 0; e < n * dvd; e++) {
            g[e] = tt[e] - target[e];
            lsum += g[e] * g[e];
        }
        if (loss) *loss = 0.5 * lsum;
        gg = g;
    }
    /* G / D goes through the single-precision transforms as V does in the forward, where the
     * plan offers float only for V within [FR_FLOAT_FFT_MIN, FR_FLOAT_FFT_MAX]: G is known only
     * now, and outside that range it would underflow or overflow without a trace. */
    if (!pl->dbl) {
        double gmax = 0;
        for (int64_t e = 0; e < n * dvd; e++)
            gmax = fmax(gmax, fabs(gg[e]));
        if (gmax > 0 && !(gmax >= FR_FLOAT_FFT_MIN && gmax <= FR_FLOAT_FFT_MAX)) {
            st = fr__err(err, errlen, FR_EACCURACY,
                         "polyfft backward: the upstream gradient's entries (largest %.3g) are "
                         "outside the range a single-precision FFT holds without underflow or "
                         "overflow; a double-precision FFT back end computes them",
                         gmax);
            goto done;
        }
    }
    for (int64_t i = 0, f = 0; i < n; i++) {
        if (f < pl->nfix && pl->fix[f] == i) {
            f++;
            continue;
        }
        double delta = 0;
        for (int64_t o = 0; o < dvd; o++) {
            delta += gg[i * dvd + o] * tt[i * dvd + o];
            w[i * cols + o] = gg[i * dvd + o] / D[i];
        }
        w[i * cols + dvd] = -delta / D[i];
    }

    memset(dq, 0, (size_t)(n * d) * sizeof *dq);
    memset(dk, 0, (size_t)(n * d) * sizeof *dk);
    memset(dv, 0, (size_t)(n * dvd) * sizeof *dv);
    if (dw) {
        memset(dw, 0, (size_t)((2 * n - 1) * d * d) * sizeof *dw);
        st = pl->dbl ? dw_pass_d(pl, q, k, xv, w, dw, err, errlen)
                     : dw_pass_f(pl, q, k, xv, w, dw, err, errlen);
        if (st) goto done;
    }
    if (nkeep && pl->dbl) dq_from_kept_d(pl, ystore, ukeep, q, w, dq);
    if (nkeep && !pl->dbl) dq_from_kept_f(pl, ystore, ukeep, q, w, dq);
    if (ukeep) {
        fr__pass b = {
            .transposed = 0, .xin = k, .xout = q, .ain = xv, .bout = w, .grad = dq, .ukeep = ukeep};
        b.pg = pg;
        rg = fr__prog_narrow(pg, 1.0 / 3, 2.0 / 3);
        if (!fr__polyfft_pass(pl, &b)) st = FR_ENOMEM;
        fr__prog_restore(pg, rg);
    }
    fr__pass c = {
        .transposed = 1, .xin = q, .xout = k, .ain = w, .bout = xv, .grad = dk, .dvals = dv};
    c.pg = pg;
    rg = fr__prog_narrow(pg, 2.0 / 3, 1);
    if (!st && !fr__prog_canceled(pg) && !fr__polyfft_pass(pl, &c)) st = FR_ENOMEM;
    fr__prog_restore(pg, rg);
    if (!st && fr__prog_canceled(pg)) {
        st = fr__prog_err(pg, err, errlen);
        goto done;
    }
    if (st) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory (polyfft backward, n = %lld)",
                     (long long)n);
        goto done;
    }
    if (pl->nfix) st = fixed_rows_grad(pl, q, k, v, tt, gg, dq, dk, dv, dw, err, errlen);

done:
    free(xv);
    free(w);
    free(num);
    if (tt != t) free(tt);
    free(g);
    free(ex);
    free(ystore);
    return st;
}
