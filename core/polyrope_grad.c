/* polyrope_grad.c - backward of the factorised RoPE path (ALGORITHM.md 6, 7): the exact gradient
 * of polyrope's own forward
 *
 *   T_i = num_i / D_i,  [num_i, D_i] = sum_{j kept by i} (phi(q'_i) . psi(k'_j)) x_j,
 *   x_j = [v_j, 1],  q'_i = R_i q_i,  k'_j = R_j k_j.
 *
 * With G = dL/dT, Delta_i = G_i . T_i and the row weights w_i = [G_i / D_i, -Delta_i / D_i]
 * (so that dL/dP_ij = w_i . x_j for the kernel value P_ij = phi_i . psi_j):
 *
 *   dL/dphi_i = M_i w_i,       M_i = sum_{j kept by i} psi_j x_j^T   (the forward's r x nc sum)
 *   dL/dpsi_j = N_j x_j,       N_j = sum_{i keeping j} phi_i w_i^T   (the same sum, transposed)
 *   dV_j      = N_j^T psi_j    (its first dv entries)
 *   dq'_i = J_phi^T dL/dphi_i, dk'_j = J_psi^T dL/dpsi_j, then dq_i = R_i^T dq'_i, dk_j likewise.
 *
 * The Jacobian products are reverse-mode differentiation of the graded enumeration that builds
 * the features (o[dst + t] = x_a o[src + t], segment by segment): going through the segments
 * backwards, ob[src + t] += x_a ob[dst + t] and xbar_a += o[src + t] ob[dst + t]. Two operations
 * per feature, and no division by x_a (which may be 0).
 *
 * Two sweeps, each the forward's (same blocks, same sliding sums, same direct evaluation near the
 * mask's interval ends, now with P'(s) as well):
 *   query sweep: the forward itself (T, D), then in the same block and with the same M the row
 *                weights w_i and dq'_i (M w_i costs one more product the size of Phi M);
 *   key sweep:   the transposed mask (key j is kept by the queries in an interval too: suffix
 *                sums for causal), the sum N over queries with values w, then dV and dk'.
 * Six products of n r (dv + 1) multiply-adds against the forward's two: about 3x the forward.
 * Memory: w (n x (dv + 1): the query sweep's result, which the key sweep reads in any order)
 * plus the forward's per-thread blocks; q', k' and [V, 1] are made a tile at a time where a
 * sweep reads them, as in the forward. */
#include "polyrope_impl.h"

typedef struct {
    const fr__polyrope *pl;
    const double *q, *k, *v;
    double *wr; /* n x nc: the row weights w_i */
    const double *dout, *target;
    double *t;            /* T, or NULL */
    double *dq, *dk, *dv; /* dq', dk' until rotated back */
    double *lossb;        /* per query block: sum of |T_i - E_i|^2 */
    const double *dpcoef; /* g: coefficients of P' */
} ctx;

/* ---- the gradient tile ----------------------------------------------------------------------- */

/* ob[f][l] (+)= sum_c ms[f][c0 + c] wt[c0 + c][l] for the TW rows of a tile. */
static inline __attribute__((always_inline)) void m_w_tile(int cc, const double *ms, int64_t r,
                                                           int nc, int c0, const double *wt,
                                                           double *ob, int first)
{
    vd w0[CC_MAX], w1[CC_MAX];
#pragma GCC unroll 12
    for (int c = 0; c < cc; c++) {
        w0[c] = *(const vd *)(wt + (c0 + c) * TW);
        w1[c] = *(const vd *)(wt + (c0 + c) * TW + VL);
    }
    for (int64_t f = 0; f < r; f++) {
        vd a0 = {0}, a1 = {0};
        if (!first) a0 = *(vd *)(ob + f * TW), a1 = *(vd *)(ob + f * TW + VL);
        const double *m = ms + f * nc + c0;
#pragma GCC unroll 12
        for (int c = 0; c < cc; c++) {
            a0 += m[c] * w0[c];
            a1 += m[c] * w1[c];
        }
        *(vd *)(ob + f * TW) = a0;
        *(vd *)(ob + f * TW + VL) = a1;
    }
}

static void m_w(const double *ms, int64_t r, int nc, const double *wt, double *ob)
{
    int w = chunk_width(nc);
    for (int c0 = 0; c0 < nc; c0 += w) {
        int cc = nc - c0 < w ? nc - c0 : w;
        switch (cc) {
#define X3(N)                                                                                      \
    case N: m_w_tile(N <= CC_MAX ? N : 1, ms, r, nc, c0, wt, ob, c0 == 0); break;
            CASES(X3)
#undef X3
        }
    }
}

/* xbar[a][l] = sum_f ob[f][l] d(feature_f)/dx_a at the tile's rows, given the monomials phit
 * and the rows xt (both from phi_tile): reverse mode through the segments. ob is consumed. */
static void reverse_tile(const fr__polyrope *pl, const double *phit, const double *xt, double *ob,
                         double *xbar)
{
    memset(xbar, 0, (size_t)pl->d * TW * sizeof(double));
    for (int s = pl->nsegs - 1; s >= 0; s--) {
        const seg sg = pl->segs[s];
        const vd xa0 = *(const vd *)(xt + sg.a * TW), xa1 = *(const vd *)(xt + sg.a * TW + VL);
        vd *dst = (vd *)(ob + sg.dst * TW), *src = (vd *)(ob + sg.src * TW);
        const vd *val = (const vd *)(phit + sg.src * TW);
        vd s0 = {0}, s1 = {0};
        for (int64_t t = 0; t < sg.len; t++) {
            s0 += dst[2 * t] * val[2 * t];
            s1 += dst[2 * t + 1] * val[2 * t + 1];
            src[2 * t] += dst[2 * t] * xa0;
            src[2 * t + 1] += dst[2 * t + 1] * xa1;
        }
        *(vd *)(xbar + sg.a * TW) += s0;
        *(vd *)(xbar + sg.a * TW + VL) += s1;
    }
}

/* grad[i] = J(rows[i])^T (ms vals[i]) for the rows [i0, i1) (rows and vals: the block's, from
 * its first row; grad: n x d, overwritten). With yout (n x (nc - 1)), also yout[i] = the first
 * nc - 1 entries of ms^T feature(rows[i]) (dV on the key side). ms = NULL: no full part, zeros. */
static void grad_rows(const fr__polyrope *pl, work *g, const double *ms, const double *rows,
                      const double *vals, int64_t i0, int64_t i1, double *grad, double *yout)
{
    int d = pl->d, nc = pl->nc;
    if (!ms) {
        memset(grad + i0 * d, 0, (size_t)((i1 - i0) * d) * sizeof(double));
        if (yout) memset(yout + i0 * (nc - 1), 0, (size_t)((i1 - i0) * (nc - 1)) * sizeof(double));
        return;
    }
    for (int64_t i = i0; i < i1; i += TW) {
        int cnt = (int)(i1 - i < TW ? i1 - i : TW);
        phi_tile(pl, rows + (i - i0) * d, cnt, g->xt, g->phit);
        if (yout) {
            phi_m(g->phit, pl->r, ms, nc, g->yt);
            for (int l = 0; l < cnt; l++)
                for (int c = 0; c < nc - 1; c++)
                    yout[(i + l) * (nc - 1) + c] = g->yt[c * TW + l];
        }
        for (int c = 0; c < nc; c++)
            for (int l = 0; l < TW; l++)
                g->wt[c * TW + l] = l < cnt ? vals[(i - i0 + l) * nc + c] : 0;
        m_w(ms, pl->r, nc, g->wt, g->ob);
        reverse_tile(pl, g->phit, g->xt, g->ob, g->xbar);
        for (int l = 0; l < cnt; l++)
            for (int a = 0; a < d; a++)
                grad[(i + l) * d + a] = g->xbar[a * TW + l];
    }
}

/* ---- direct evaluation near the interval ends ---------------------------------------------- */

/* The pairs the sliding sum leaves out, for rows [i0, i1) against the columns of the forward's
 * two ranges: with rv the rows' values and cv the columns', dL/dP = rv_i . cv_j and
 *   grad_i += dL/dP P'(s) cols_j,   yout_i += P(s) cv_j[0..nc-2] (if yout).
 * On the query side rows = q', cols = k', rv = w, cv = [V, 1]; on the key side the reverse.
 * rows and rv are the block's (from its first row); cols and cv come a tile at a time. */
typedef struct {
    const ctx *c;
    const mask *m;
    const double *rows, *rv;
    int64_t i0, i1;
    double *grad, *yout;
} direct;

static void direct_tile(void *dctx, work *w, int64_t j0, int64_t j1)
{
    const direct *dc = dctx;
    const fr__polyrope *pl = dc->c->pl;
    int d = pl->d, nc = pl->nc, g = pl->g;
    for (int64_t i = dc->i0; i < dc->i1; i++) {
        const double *ri = dc->rows + (i - dc->i0) * d, *rvi = dc->rv + (i - dc->i0) * nc;
        double *gi = dc->grad + i * d, *yi = dc->yout ? dc->yout + i * (nc - 1) : NULL;
        int64_t lo = lo_of(dc->m, i), hi = hi_of(dc->m, i);
        int64_t ja = j0 > lo ? j0 : lo, jb = j1 < hi + 1 ? j1 : hi + 1;
        for (int64_t j = ja; j < jb; j++) {
            const double *cj = w->ct + (j - j0) * d, *cvj = w->cv + (j - j0) * nc;
            double s = 0, dp = 0;
            for (int a = 0; a < d; a++)
                s += ri[a] * cj[a];
            for (int t = g - 1; t >= 0; t--)
                dp = dp * s + dc->c->dpcoef[t];
            double dl = 0;
            for (int e = 0; e < nc; e++)
                dl += rvi[e] * cvj[e];
            dl *= dp;
            for (int a = 0; a < d; a++)
                gi[a] += dl * cj[a];
            if (yi) {
                double pv = pl->pcoef[g];
                for (int t = g - 1; t >= 0; t--)
                    pv = pv * s + pl->pcoef[t];
                for (int e = 0; e < nc - 1; e++)
                    yi[e] += pv * cvj[e];
            }
        }
    }
}

static void direct_grad(const ctx *c, const mask *m, work *w, fr__rope_fill fill,
                        const double *rows, const double *rv, int64_t i0, int64_t i1, int64_t kl,
                        int64_t kh, double *grad, double *yout)
{
    direct dc = {c, m, rows, rv, i0, i1, grad, yout};
    fr__polyrope_edge_tiles(m, w, fill, c, i0, i1, kl, kh, direct_tile, &dc);
}

/* The query sweep's columns: keys rotated, values [V, 1]. */
static void key_cols(const void *cv, int64_t j0, int64_t cnt, double *cols, double *vals)
{
    const ctx *c = cv;
    fr__polyrope_rotate(c->pl, c->k, j0, cnt, cols);
    fr__polyrope_ones(c->pl, c->v, j0, cnt, vals);
}

/* The key sweep's columns: queries rotated, values their weights w. */
static void query_cols(const void *cv, int64_t i0, int64_t cnt, double *cols, double *vals)
{
    const ctx *c = cv;
    fr__polyrope_rotate(c->pl, c->q, i0, cnt, cols);
    memcpy(vals, c->wr + i0 * c->pl->nc, (size_t)(cnt * c->pl->nc) * sizeof(double));
}

/* ---- one block of each sweep ------------------------------------------------------------------
 */

/* Query rows [i0, i1): T and D (forward), w_i, the loss, dq'. ms = the scaled M of the keys the
 * whole block keeps (NULL: none), m = the mask (NULL: none, ms holds every key). Returns the
 * first row with a non-positive denominator, or -1. */
static int64_t query_block(const ctx *c, work *g, const double *ms, const mask *m, int64_t i0,
                           int64_t i1, int64_t kl, int64_t kh)
{
    const fr__polyrope *pl = c->pl;
    int nc = pl->nc, dv = nc - 1;
    double *acc = g->acc;
    fr__polyrope_rotate(pl, c->q, i0, i1 - i0, g->rt);
    memset(acc, 0, (size_t)((i1 - i0) * nc) * sizeof(double));
    for (int64_t i = i0; ms && i < i1; i += TW) {
        int cnt = (int)(i1 - i < TW ? i1 - i : TW);
        phi_tile(pl, g->rt + (i - i0) * pl->d, cnt, g->xt, g->phit);
        phi_m(g->phit, pl->r, ms, nc, g->yt);
        for (int l = 0; l < cnt; l++)
            for (int e = 0; e < nc; e++)
                acc[(i - i0 + l) * nc + e] = g->yt[e * TW + l];
    }
    if (m) fr__polyrope_direct(pl, m, g, key_cols, c, g->rt, i0, i1, kl, kh, acc);
    int64_t bad = -1;
    double lsum = 0;
    for (int64_t i = i0; i < i1; i++) {
        const double *a = acc + (i - i0) * nc;
        double *wi = c->wr + i * nc, den = a[dv];
        if (!(den > 0)) {
            if (bad < 0) bad = i;
            memset(wi, 0, (size_t)nc * sizeof(double));
            continue;
        }
        double inv = 1 / den, delta = 0;
        for (int e = 0; e < dv; e++) {
            double ti = a[e] * inv, gi;
            if (c->t) c->t[i * dv + e] = ti;
            if (c->target) {
                gi = ti - c->target[i * dv + e];
                lsum += gi * gi;
            } else {
                gi = c->dout[i * dv + e];
            }
            delta += gi * ti;
            wi[e] = gi * inv;
        }
        wi[dv] = -delta * inv;
        if (m ? lo_of(m, i) == hi_of(m, i) : pl->p.n == 1)
            memset(wi, 0, (size_t)nc * sizeof(double)); /* see single_key_rows */
    }
    c->lossb[i0 / pl->bn] = lsum;
    grad_rows(pl, g, ms, g->rt, c->wr + i0 * nc, i0, i1, c->dq, NULL);
    if (m) direct_grad(c, m, g, key_cols, g->rt, c->wr + i0 * nc, i0, i1, kl, kh, c->dq, NULL);
    return bad;
}

/* Key rows [j0, j1): dV and dk', with ms the scaled N of the queries keeping the whole block. */
static void key_block(const ctx *c, work *g, const double *ms, const mask *m, int64_t j0,
                      int64_t j1, int64_t kl, int64_t kh)
{
    fr__polyrope_rotate(c->pl, c->k, j0, j1 - j0, g->rt);
    fr__polyrope_ones(c->pl, c->v, j0, j1 - j0, g->rv);
    grad_rows(c->pl, g, ms, g->rt, g->rv, j0, j1, c->dk, c->dv);
    if (m) direct_grad(c, m, g, query_cols, g->rt, g->rv, j0, j1, kl, kh, c->dk, c->dv);
}

/* ---- the sweeps ------------------------------------------------------------------------------ */

static int64_t query_sweep_block(void *c, work *w, const double *ms, const mask *m, int64_t i0,
                                 int64_t i1, int64_t kl, int64_t kh)
{
    return query_block(c, w, ms, m, i0, i1, kl, kh);
}

static int64_t key_sweep_block(void *c, work *w, const double *ms, const mask *m, int64_t i0,
                               int64_t i1, int64_t kl, int64_t kh)
{
    key_block(c, w, ms, m, i0, i1, kl, kh);
    return -1;
}

/* ---- rotating back --------------------------------------------------------------------------- */

/* g <- the gradient with respect to the caller's rows, given the one with respect to the rotated
 * rows: the transpose of fr__polyrope_rotate's linear map, applied to dq and dk together. */
static void rotate_back_row(const fr__polyrope *pl, double *dq, double *dk, int64_t i)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, d = p->d, np = p->rot.kind == FR_ROT_ROPE ? pl->np : 0;
    const int64_t *pa = pl->pa, *pb = pl->pb;
    double *gq = dq + i * d, *gk = dk + i * d;
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        /* forward: x W_{-i} (row times matrix); back: g W_{-i}^T */
        const double *w = p->rot.w + (-i + n - 1) * d * d;
        double tq[d], tk[d];
        for (int64_t a = 0; a < d; a++) {
            double sq = 0, sk = 0;
            for (int64_t b = 0; b < d; b++)
                sq += gq[b] * w[a * d + b], sk += gk[b] * w[a * d + b];
            tq[a] = sq, tk[a] = sk;
        }
        memcpy(gq, tq, (size_t)d * sizeof(double));
        memcpy(gk, tk, (size_t)d * sizeof(double));
        return;
    }
    for (int64_t m = 0; m < np; m++) {
        double cs, sn;
        rope_cs(pl, i, m, &cs, &sn);
        double xa = gq[pa[m]], xb = gq[pb[m]];
        gq[pa[m]] = xa * cs + xb * sn, gq[pb[m]] = -xa * sn + xb * cs;
        xa = gk[pa[m]], xb = gk[pb[m]];
        gk[pa[m]] = xa * cs + xb * sn, gk[pb[m]] = -xa * sn + xb * cs;
    }
}

static void rotate_back(const fr__polyrope *pl, double *dq, double *dk)
{
    int64_t n = pl->p.n;
    if (pl->p.rot.kind == FR_ROT_NONE) return;
    if (n <= 8192) { /* no OpenMP region for small problems (see polyrope_sweep.c) */
        for (int64_t i = 0; i < n; i++)
            rotate_back_row(pl, dq, dk, i);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        rotate_back_row(pl, dq, dk, i);
}

/* A query that keeps one key only (n = 1, window 0, causal row 0) has T_i = v_i whatever the
 * scores: its exact gradient is zero for q and k, and G_i for v_i. Rounding would make the
 * former ~1e-16 instead of 0 (w_i . x_i = G_i . (v_i - T_i) / D_i), so those rows are given
 * w_i = 0 in the sweeps and their dV is added here. */
static void single_key_rows(const fr_problem *p, const mask *m, const double *v, const double *dout,
                            const double *target, double *dv)
{
    int64_t dvd = p->dv;
    for (int64_t i = 0; i < p->n; i++)
        if (m ? lo_of(m, i) == hi_of(m, i) : p->n == 1)
            for (int64_t e = 0; e < dvd; e++)
                dv[i * dvd + e] += dout ? dout[i * dvd + e] : v[i * dvd + e] - target[i * dvd + e];
}

/* ---- driver ---------------------------------------------------------------------------------- */

int fr__polyrope_backward(const fr__polyrope *pl, const double *q, const double *k, const double *v,
                          const double *dout, const double *target, double *t, double *dq,
                          double *dk, double *dv, double *loss, fr__prog *pg, char *err,
                          size_t errlen)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, nc = pl->nc, nx;
    int st0 =
        fr__backward_check(p, "polyrope backward", q, k, v, dout, target, dq, dk, dv, err, errlen);
    if (st0) return st0;
    if (!fr__mul_ok(n, nc, &nx)) return fr__err(err, errlen, FR_ENOMEM, "polyrope: size overflow");

    int64_t nqb = (n + pl->bn - 1) / pl->bn;
    double *wr = fr__alloc_big((size_t)nx * sizeof(double));
    double *lossb = calloc((size_t)nqb, sizeof(double));
    double *dpcoef = malloc((size_t)(pl->g + 1) * sizeof(double));
    int st = FR_OK;
    if (!wr || !lossb || !dpcoef) {
        st = fr__err(err, errlen, FR_ENOMEM, "polyrope backward: out of memory (n = %lld)",
                     (long long)n);
        goto done;
    }
    for (int e = 0; e < pl->g; e++)
        dpcoef[e] = (e + 1) * pl->pcoef[e + 1];
    ctx c = {pl, q, k, v, wr, dout, target, t, dq, dk, dv, lossb, dpcoef};

    int oom = 0;
    mask mq, mk;
    int masked = fr__polyrope_mask(pl, &mq);
    mk = mq;
    mk.anti = 1;
    /* Progress: the query sweep, then the key sweep, alike. */
    fr__prog_range rg = fr__prog_narrow(pg, 0, 0.5);
    int64_t badrow = fr__polyrope_sweep(pl, masked ? &mq : NULL, key_cols, &c, 1, query_sweep_block,
                                        &c, pg, &oom);
    fr__prog_restore(pg, rg);
    rg = fr__prog_narrow(pg, 0.5, 1);
    if (!oom && badrow < 0 && !fr__prog_canceled(pg))
        fr__polyrope_sweep(pl, masked ? &mk : NULL, query_cols, &c, 1, key_sweep_block, &c, pg,
                           &oom);
    fr__prog_restore(pg, rg);
    if (fr__prog_canceled(pg)) {
        st = fr__prog_err(pg, err, errlen);
        goto done;
    }
    if (oom) {
        st = fr__err(err, errlen, FR_ENOMEM, "polyrope backward: out of memory for the workspace");
        goto done;
    }
    if (badrow >= 0) {
        st = fr__err(err, errlen, FR_EACCURACY,
                     "polyrope: the degree-%d polynomial gives a non-positive softmax "
                     "denominator at row %lld (scores beyond the fitted range?); raise the "
                     "degree or use the exact method",
                     pl->g, (long long)badrow);
        goto done;
    }
    single_key_rows(p, masked ? &mq : NULL, v, dout, target, dv);
    rotate_back(pl, dq, dk);
    if (target && loss) {
        double lsum = 0;
        for (int64_t b = 0; b < nqb; b++)
            lsum += lossb[b];
        *loss = 0.5 * lsum;
    }
done:
    free(wr), free(lossb), free(dpcoef);
    return st;
}
