/* polyrope.c - the factorised path for the RoPE family (ALGORITHM.md 6).
 *
 * When W_delta = R_delta, rotating every row by its own position turns the score into a plain
 * dot product, s_ij = tau Q'_i . K'_j, and P(s) = sum_k c_k tau^k (Q'_i . K'_j)^k is a polynomial
 * kernel with an explicit feature map over the monomials of degree <= g:
 *
 *   phi_beta(q) = c_|beta| tau^|beta| multinomial(beta) q^beta,   psi_beta(k) = k^beta.
 *
 * All of the coefficient sits on the query side, so negative c_k need no square roots, and it
 * is applied to the small r x (dv+1) matrix M = Psi^T [V, 1] rather than to the features.
 * Then T = normalise(Phi M): O(n r (dv+1)) with r = C(g + d, d), no FFT.
 *
 * Costs are two dense products (Psi^T X and Phi M), each n r (dv+1) multiply-adds; both are
 * written as register-tiled kernels over GCC vector types so that the inner loop is a stream of
 * broadcast-FMAs, and the feature blocks they read are generated just before, small enough to
 * stay in L2 (Phi: r x 16 rows, Psi: 16 rows x r).
 *
 * Queries go in blocks against M summed over the keys the whole block keeps (core/
 * polyrope_sweep.c); under a mask the few keys near the interval ends are evaluated directly as
 * P(s), key by key. The direct part is the same polynomial, so the two parts add up to exactly
 * the polynomial attention. */
#include "polyrope_impl.h"

/* cos and sin of positions (i0 + i) step, i < cnt, for every pair, into t. */
static void angles(const fr__polyrope *pl, int64_t i0, int64_t step, int64_t cnt, double *t)
{
    for (int64_t i = 0; i < cnt; i++)
        for (int64_t m = 0; m < pl->np; m++) {
            double ang = (double)((i0 + i) * step) * pl->freq[m];
            t[(i * pl->np + m) * 2] = cos(ang);
            t[(i * pl->np + m) * 2 + 1] = sin(ang);
        }
}

/* Standard RoPE's pairs, frequencies and (up to 16 MB) every position's cos and sin: a batch
 * of small problems spent a tenth of its time on the same sin and cos for each problem. Past
 * that, two tables of about sqrt(n) positions each (rope_cs): the rows are rotated again every
 * time a sweep reads them, and with a sin and a cos per row and pair that took more time than
 * the products at low degree (60% of a forward at n = 2^20, d = 8, degree 2). */
static int rotation_table(fr__polyrope *pl)
{
    const fr_problem *p = &pl->p;
    int64_t d = p->d, n = p->n;
    pl->pa = malloc((size_t)d * sizeof *pl->pa);
    pl->pb = malloc((size_t)d * sizeof *pl->pb);
    pl->freq = malloc((size_t)d * sizeof *pl->freq);
    if (!pl->pa || !pl->pb || !pl->freq) return 0;
    pl->np = fr__rope_pairs(p, pl->pa, pl->pb, pl->freq);
    if (n * pl->np > ((int64_t)1 << 20)) return fr__polyrope_split_rotation(pl) == FR_OK;
    if (!(pl->rot = malloc((size_t)(n * pl->np * 2) * sizeof *pl->rot))) return 0;
    angles(pl, 0, 1, n, pl->rot);
    return 1;
}

int fr__polyrope_split_rotation(fr__polyrope *pl)
{
    if (pl->p.rot.kind != FR_ROT_ROPE) return FR_OK;
    int64_t n = pl->p.n;
    int tb = 0;
    while (((int64_t)1 << (2 * tb)) < n)
        tb++;
    int64_t lo = (int64_t)1 << tb, hi = (n + lo - 1) / lo;
    double *rlo = malloc((size_t)(lo * pl->np * 2) * sizeof *rlo);
    double *rhi = malloc((size_t)(hi * pl->np * 2) * sizeof *rhi);
    if (!rlo || !rhi) {
        free(rlo), free(rhi);
        return FR_ENOMEM;
    }
    angles(pl, 0, 1, lo, rlo);
    angles(pl, 0, lo, hi, rhi);
    free(pl->rot), free(pl->rlo), free(pl->rhi);
    pl->rot = NULL, pl->rlo = rlo, pl->rhi = rhi, pl->tb = tb;
    return FR_OK;
}

int fr__polyrope_create(fr__polyrope **out, const fr_problem *p, const double *coef, int degree,
                        char *err, size_t errlen)
{
    *out = NULL;
    if (degree < 0) return fr__err(err, errlen, FR_EUSAGE, "polyrope: negative degree");
    if (p->rot.kind == FR_ROT_CLIP) /* the plan checks the family; this catches direct calls */
        return fr__err(err, errlen, FR_EUSAGE,
                       "polyrope: clipped RoPE is not a per-position "
                       "rotation; use polyfft");
    int d = (int)p->d;
    int64_t r = fr__binom(degree + p->d, p->d);
    if (r > FR_POLYROPE_MAX_FEATURES) /* the plan never asks (plan.c); direct calls may */
        return fr__err(err, errlen, FR_EACCURACY,
                       "polyrope: %lld features (C(%d + %d, %d)) are more than a plan can hold",
                       (long long)r, degree, d, d);
    fr__polyrope *pl = calloc(1, sizeof *pl);
    if (!pl) return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    pl->p = *p;
    pl->par_units = FR_POLYROPE_PAR_UNITS;
    pl->g = degree;
    pl->d = d;
    pl->nc = (int)p->dv + 1;
    pl->r = r;
    pl->rp = (r + TW - 1) / TW * TW;
    pl->coef_q = malloc((size_t)r * sizeof(double));
    pl->pcoef = malloc((size_t)(degree + 1) * sizeof(double));
    pl->segs = malloc((size_t)(degree * d + 1) * sizeof(seg));
    int *first = malloc((size_t)r * sizeof(int)); /* smallest coordinate of each monomial */
    int *fexp = malloc((size_t)r * sizeof(int));  /* its exponent */
    int64_t *start = malloc((size_t)(degree + 2) * sizeof(int64_t));
    if (!pl->coef_q || !pl->pcoef || !pl->segs || !first || !fexp || !start) {
        free(first), free(fexp), free(start);
        fr__polyrope_free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    }
    double tk = 1;
    for (int k = 0; k <= degree; k++, tk *= p->tau)
        pl->pcoef[k] = coef[k] * tk;

    /* Enumerate once, recording for each monomial its multinomial coefficient through
     * multinomial(x_a * m) = multinomial(m) * k / (exponent of a in x_a * m). */
    pl->coef_q[0] = pl->pcoef[0];
    double *mult = malloc((size_t)r * sizeof(double));
    if (!mult) {
        free(first), free(fexp), free(start);
        fr__polyrope_free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    }
    mult[0] = 1;
    first[0] = d; /* the constant: "first coordinate" past every a, so every x_a extends it */
    fexp[0] = 0;
    start[0] = 0;
    start[1] = 1;
    int64_t f = 1;
    for (int k = 1; k <= degree; k++) {
        for (int a = 0; a < d; a++) {
            /* the suffix of degree k-1 with first coordinate >= a */
            int64_t s = start[k - 1];
            while (s < start[k] && first[s] < a)
                s++;
            seg sg = {f, s, start[k] - s, a};
            for (int64_t t = 0; t < sg.len; t++, f++) {
                int64_t par = s + t;
                first[f] = a;
                fexp[f] = first[par] == a ? fexp[par] + 1 : 1;
                mult[f] = mult[par] * k / fexp[f];
                pl->coef_q[f] = pl->pcoef[k] * mult[f];
            }
            if (sg.len) pl->segs[pl->nsegs++] = sg;
        }
        start[k + 1] = f;
    }
    free(mult), free(first), free(fexp), free(start);
    if (f != r) {
        fr__polyrope_free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "polyrope: enumerated %lld monomials, expected %lld",
                       (long long)f, (long long)r);
    }
    /* Direct evaluation near the mask edges costs ~ bn^2 (d + g + 2 nc) per block, the feature
     * products ~ bn r nc: a block a few times smaller than their ratio keeps the direct part a
     * small fraction. */
    int64_t bn = r * pl->nc / (4 * (d + degree + 2 * pl->nc));
    bn = (bn + TW - 1) / TW * TW;
    if (bn < 32) bn = 32;
    if (bn > 512) bn = 512;
    pl->bn = bn;
    if (p->rot.kind == FR_ROT_ROPE && !rotation_table(pl)) {
        fr__polyrope_free(pl);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory");
    }
    *out = pl;
    return FR_OK;
}

void fr__polyrope_info(const fr__polyrope *pl, fr_plan_info *info)
{
    info->features = pl->r;
    info->alphas = pl->r;
    info->q_monomials = pl->r;
    info->k_monomials = pl->r;
    info->kernels = 0;
    info->ffts = 0;
    info->fft_size = 0;
}

void fr__polyrope_free(fr__polyrope *pl)
{
    if (!pl) return;
    free(pl->coef_q);
    free(pl->pcoef);
    free(pl->segs);
    free(pl->pa), free(pl->pb), free(pl->freq), free(pl->rot), free(pl->rhi), free(pl->rlo);
    free(pl);
}

/* Normalise rows [i0, i1) of acc into out, their denominators into rowsum (when not NULL: the
 * forward's certificate needs them, core/certify.c). A non-positive denominator (the polynomial
 * went negative on these scores, or rounding) is not divided by: without rowsum it is reported
 * (the first bad row is returned, else -1); with rowsum the row is left 0 for the certificate
 * to recompute. */
static int64_t finish_rows(const fr__polyrope *pl, const double *acc, int64_t i0, int64_t i1,
                           double *out, double *rowsum)
{
    int dv = pl->nc - 1;
    for (int64_t i = i0; i < i1; i++) {
        const double *a = acc + (i - i0) * pl->nc;
        double den = a[dv];
        if (rowsum) rowsum[i] = den;
        if (!(den > 0)) {
            if (!rowsum) return i;
            for (int c = 0; c < dv; c++)
                out[i * dv + c] = 0;
            continue;
        }
        double inv = 1 / den;
        for (int c = 0; c < dv; c++)
            out[i * dv + c] = a[c] * inv;
    }
    return -1;
}

typedef struct {
    const fr__polyrope *pl;
    const double *q, *k, *v;
    double *out, *rowsum;
} fwd;

/* The forward's columns: keys rotated, values [V, 1]. */
static void fwd_fill(const void *ctx, int64_t j0, int64_t cnt, double *cols, double *vals)
{
    const fwd *c = ctx;
    fr__polyrope_rotate(c->pl, c->k, j0, cnt, cols);
    fr__polyrope_ones(c->pl, c->v, j0, cnt, vals);
}

/* One block of queries: Phi M for the keys the whole block keeps, the rest directly. */
static int64_t fwd_block(void *ctx, work *w, const double *ms, const mask *m, int64_t i0,
                         int64_t i1, int64_t kl, int64_t kh)
{
    const fwd *c = ctx;
    const fr__polyrope *pl = c->pl;
    int nc = pl->nc;
    fr__polyrope_rotate(pl, c->q, i0, i1 - i0, w->rt);
    memset(w->acc, 0, (size_t)((i1 - i0) * nc) * sizeof(double));
    for (int64_t i = i0; ms && i < i1; i += TW) {
        int cnt = (int)(i1 - i < TW ? i1 - i : TW);
        phi_tile(pl, w->rt + (i - i0) * pl->d, cnt, w->xt, w->phit);
        phi_m(w->phit, pl->r, ms, nc, w->yt);
        for (int l = 0; l < cnt; l++)
            for (int e = 0; e < nc; e++)
                w->acc[(i - i0 + l) * nc + e] = w->yt[e * TW + l];
    }
    if (m) fr__polyrope_direct(pl, m, w, fwd_fill, c, w->rt, i0, i1, kl, kh, w->acc);
    return finish_rows(pl, w->acc, i0, i1, c->out, c->rowsum);
}

/* Nothing of size n beyond the caller's arrays: the rows are rotated a tile at a time where the
 * sweep reads them, and the per-thread blocks are O(features x (dv + 1)). */
int fr__polyrope_execute(const fr__polyrope *pl, const double *q, const double *k, const double *v,
                         double *out, double *rowsum, fr__prog *pg, char *err, size_t errlen)
{
    int oom = 0;
    mask m;
    fwd c = {pl, q, k, v, out, rowsum};
    int masked = fr__polyrope_mask(pl, &m);
    int64_t bad =
        fr__polyrope_sweep(pl, masked ? &m : NULL, fwd_fill, &c, 0, fwd_block, &c, pg, &oom);
    if (fr__prog_canceled(pg)) return fr__prog_err(pg, err, errlen);
    if (oom) return fr__err(err, errlen, FR_ENOMEM, "polyrope: out of memory for the workspace");
    if (bad >= 0)
        return fr__err(err, errlen, FR_EACCURACY,
                       "polyrope: the degree-%d polynomial gives a non-positive softmax "
                       "denominator at row %lld (scores beyond the fitted range?); raise the "
                       "degree or use the exact method",
                       pl->g, (long long)bad);
    return FR_OK;
}

void fr__polyrope_set_par_units(fr__polyrope *pl, double units)
{
    pl->par_units = units;
}
