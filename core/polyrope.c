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
 * Masks (causal, window) keep, for query i, the keys in an interval [lo(i), hi(i)] whose ends
 * never decrease with i. Queries go in blocks of bn rows; the key blocks that every query of a
 * block keeps are summed in M (a sliding sum: key blocks enter at the top, leave at the bottom),
 * the few keys near the interval ends (at most ~2 blocks each side) are evaluated directly as
 * P(s) with the mask applied key by key. The direct part is the same polynomial, so the two
 * parts add up to exactly the polynomial attention. Threads take contiguous chunks of query
 * blocks; each chunk starts its sliding sum from scratch, and the chunk boundaries are chosen so
 * that this start-up cost is balanced across threads. */
#include "polyrope_impl.h"

/* Past this the per-thread feature blocks would not fit anywhere useful; the cost model never
 * picks such a size, and a forced request gets an error instead of swapping. */
#define MAX_FEATURES 4000000

/* Standard RoPE's pairs, frequencies and (up to 16 MB) every position's cos and sin: a batch
 * of small problems spent a tenth of its time on the same sin and cos for each problem. */
static int rotation_table(fr__polyrope *pl)
{
    const fr_problem *p = &pl->p;
    int64_t d = p->d, n = p->n;
    pl->pa = malloc((size_t)d * sizeof *pl->pa);
    pl->pb = malloc((size_t)d * sizeof *pl->pb);
    pl->freq = malloc((size_t)d * sizeof *pl->freq);
    if (!pl->pa || !pl->pb || !pl->freq) return 0;
    pl->np = fr__rope_pairs(p, pl->pa, pl->pb, pl->freq);
    if (n * pl->np > ((int64_t)1 << 20)) return 1;
    if (!(pl->rot = malloc((size_t)(n * pl->np * 2) * sizeof *pl->rot))) return 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t m = 0; m < pl->np; m++) {
            double ang = (double)i * pl->freq[m];
            pl->rot[(i * pl->np + m) * 2] = cos(ang);
            pl->rot[(i * pl->np + m) * 2 + 1] = sin(ang);
        }
    return 1;
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
    if (r > MAX_FEATURES)
        return fr__err(err, errlen, FR_EUSAGE,
                       "polyrope: %lld features (C(%d + %d, %d)) is too many; lower the degree "
                       "or use polyfft",
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
    free(pl->pa), free(pl->pb), free(pl->freq), free(pl->rot);
    free(pl);
}

static int64_t masked(const fr__polyrope *pl, const mask *m, const double *qr, const double *kr,
                      const double *x, double *out, int *oom)
{
    int64_t nqb = (m->n + m->bn - 1) / m->bn;
    int T = threads_for(pl, m->n);
    if (T > nqb) T = (int)nqb;
    int64_t *starts = malloc((size_t)(T + 1) * sizeof *starts);
    if (!starts) {
        *oom = 1;
        return -1;
    }
    int64_t nch = balanced_chunks(m, nqb, T, starts);
    int64_t bad = -1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(T)
    for (int64_t ch = 0; ch < nch; ch++) {
        work w;
        if (!work_alloc(pl, &w)) {
#pragma omp atomic write
            *oom = 1;
            continue;
        }
        int64_t cl = 0, chh = 0; /* key blocks [cl, chh) summed in w.mt */
        for (int64_t qb = starts[ch]; qb < starts[ch + 1]; qb++) {
            int64_t kl, kh;
            full_range(m, qb, &kl, &kh);
            if (qb == starts[ch] || kl >= chh) {
                memset(w.mt, 0, (size_t)pl->nc * pl->rp * sizeof(double));
                cl = chh = kl;
            }
            add_keys(pl, &w, kr, x, chh * m->bn, kh * m->bn < m->n ? kh * m->bn : m->n, 1);
            add_keys(pl, &w, kr, x, cl * m->bn, kl * m->bn < m->n ? kl * m->bn : m->n, -1);
            cl = kl, chh = kh;
            int64_t i0 = qb * m->bn, i1 = i0 + m->bn < m->n ? i0 + m->bn : m->n;
            if (kh > kl) {
                scale_m(pl, &w);
                phi_rows(pl, &w, qr, i0, i1);
            } else {
                memset(w.acc, 0, (size_t)(i1 - i0) * pl->nc * sizeof(double));
            }
            direct_part(pl, m, qr, kr, x, i0, i1, kl, kh, w.acc);
            int64_t b = finish_rows(pl, w.acc, i0, i1, out);
            if (b >= 0) {
#pragma omp critical(polyrope_bad)
                if (bad < 0 || b < bad) bad = b;
            }
        }
        work_free(&w);
    }
    free(starts);
    return bad;
}

/* No mask: one key sum for everyone, built from per-thread partial sums. */
static int64_t unmasked(const fr__polyrope *pl, const double *qr, const double *kr, const double *x,
                        int64_t n, double *out, int *oom)
{
    int T = threads_for(pl, n);
    size_t msz = (size_t)pl->nc * pl->rp;
    double *mt = calloc(msz, sizeof(double));
    double *ms = malloc((size_t)pl->rp * pl->nc * sizeof(double));
    if (!mt || !ms) {
        free(mt), free(ms);
        *oom = 1;
        return -1;
    }
    int64_t nkb = (n + JB * 8 - 1) / (JB * 8);
    int64_t bad = -1;
#pragma omp parallel num_threads(T)
    {
        work w;
        int ok = work_alloc(pl, &w);
        if (!ok) {
#pragma omp atomic write
            *oom = 1;
        }
#pragma omp for schedule(static)
        for (int64_t kb = 0; kb < nkb; kb++)
            if (ok) {
                int64_t j0 = kb * JB * 8, j1 = j0 + JB * 8 < n ? j0 + JB * 8 : n;
                add_keys(pl, &w, kr, x, j0, j1, 1);
            }
#pragma omp critical(polyrope_reduce)
        if (ok)
            for (size_t t = 0; t < msz; t++)
                mt[t] += w.mt[t];
#pragma omp barrier
#pragma omp single
        {
            for (int64_t f = 0; f < pl->r; f++)
                for (int c = 0; c < pl->nc; c++)
                    ms[f * pl->nc + c] = pl->coef_q[f] * mt[c * pl->rp + f];
        }
        int64_t nqt = (n + TW - 1) / TW;
#pragma omp for schedule(static)
        for (int64_t qt = 0; qt < nqt; qt++)
            if (ok) {
                int64_t i0 = qt * TW, i1 = i0 + TW < n ? i0 + TW : n;
                int cnt = (int)(i1 - i0);
                phi_tile(pl, qr + i0 * pl->d, cnt, w.xt, w.phit);
                phi_m(w.phit, pl->r, ms, pl->nc, w.yt);
                for (int l = 0; l < cnt; l++)
                    for (int c = 0; c < pl->nc; c++)
                        w.acc[l * pl->nc + c] = w.yt[c * TW + l];
                int64_t b = finish_rows(pl, w.acc, i0, i1, out);
                if (b >= 0) {
#pragma omp critical(polyrope_bad)
                    if (bad < 0 || b < bad) bad = b;
                }
            }
        if (ok) work_free(&w);
    }
    free(mt), free(ms);
    return bad;
}

int fr__polyrope_execute(const fr__polyrope *pl, const double *q, const double *k, const double *v,
                         double *out, char *err, size_t errlen)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, d = p->d, nc = pl->nc, nd, nx;
    if (!fr__mul_ok(n, d, &nd) || !fr__mul_ok(n, nc, &nx))
        return fr__err(err, errlen, FR_ENOMEM, "polyrope: size overflow");
    double *qr = fr__alloc_big((size_t)nd * sizeof(double));
    double *kr = fr__alloc_big((size_t)nd * sizeof(double));
    double *x = fr__alloc_big((size_t)nx * sizeof(double));
    if (!qr || !kr || !x) {
        free(qr), free(kr), free(x);
        return fr__err(err, errlen, FR_ENOMEM, "polyrope: out of memory (n = %lld)", (long long)n);
    }
    if (!prepare_rows(pl, q, k, v, qr, kr, x)) {
        free(qr), free(kr), free(x);
        return fr__err(err, errlen, FR_ENOMEM, "polyrope: out of memory");
    }
    int oom = 0;
    int64_t w = p->window;
    if (w >= n - 1) w = -1; /* a window as wide as the sequence masks nothing */
    int64_t bad;
    if (!p->causal && w < 0) {
        bad = unmasked(pl, qr, kr, x, n, out, &oom);
    } else {
        mask m = {n, pl->bn, (n + pl->bn - 1) / pl->bn, w, p->causal, 0};
        bad = masked(pl, &m, qr, kr, x, out, &oom);
    }
    free(qr), free(kr), free(x);
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

int fr__polyrope_threads(const fr__polyrope *pl)
{
    return threads_for(pl, pl->p.n);
}
