/* exact.c - the exact reference: online softmax over key blocks (ALGORITHM.md 8).
 *
 * Every fast path is judged against this and its speed compared with it, so it is written to be
 * both exact (double precision throughout) and fast:
 *   - the RoPE family is rotated once per row (O(n d)), after which a score block is a plain
 *     small matrix product; clipped RoPE is three such products (inside the clip, and beyond it
 *     on either side where W is the constant R_{+-C}); any other explicit W goes through its
 *     support S, O(|S|) per score;
 *   - keys are processed in blocks of BC with a running maximum per row (no overflow whatever
 *     the scores), so memory is O(n (d + dv)) plus per-thread blocks, never n x n;
 *   - blocks that a mask removes entirely are skipped, and only blocks crossing a mask boundary
 *     pay for the per-entry mask;
 *   - exp is evaluated by glibc's vector exp (libmvec) through an OpenMP SIMD declaration. */
#include "internal.h"
#include "tiles.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define BR 32  /* rows per block (multiple of TR) */
#define BC 128 /* keys per block (multiple of VW) */
#define VW FR_VW
#define TR FR_TR
/* O(n d) preparation below this many entries runs on one thread: a team's barrier costs more
 * than the work, especially when the cores are shared. */
#define PAR_MIN (1 << 16)
/* The score loop goes parallel from FR_EXACT_PAR_MIN_SCORES (internal.h). */
#define PAR_MIN_SCORES FR_EXACT_PAR_MIN_SCORES

typedef fr__vd vd;

/* How a score block is formed. */
enum { MODE_DOT, MODE_CLIP, MODE_SUPPORT };

typedef struct {
    int64_t n, d, dv, dvp; /* dvp: dv rounded up to VW */
    int64_t nb;            /* key blocks */
    int causal;
    int64_t window, clip;
    int mode;
    /* Query side, nrows padded to a multiple of BR, d doubles per row, tau folded in.
     * DOT: q[0] = rotated. CLIP: q[0] rotated, q[1] = Q R_C, q[2] = Q R_{-C}. SUPPORT: q[0] raw. */
    double *q[3];
    /* Key side, per block a d x BC transposed tile (zero-padded past n). kt[0] is rotated
     * (DOT, CLIP) or raw (SUPPORT); kt[1] raw (CLIP). */
    double *kt[2];
    double *v; /* nb * BC rows of dvp doubles, zero-padded */
    const fr__support *sup;
} ctx;

typedef struct {
    double *s[3]; /* BR x BC score blocks (3 for the clip selection) */
    double *acc;  /* BR x dvp */
    double m[BR], l[BR];
} scratch;

/* s[BR][BC] = q[BR][d] kt[d][BC] in TR x VW register tiles. */
static void scores_dot(const double *restrict q, const double *restrict kt, int64_t d,
                       double *restrict s)
{
    fr__mm_tiles(q, kt, d, BR, BC, s);
}

/* Explicit W through its support: s_ij = sum_s q_{i,a_s} w_s(j - i) k_{j,b_s}; the kernel
 * table is contiguous in j, so the inner loop vectorises. Columns past n stay 0 (masked later). */
static void scores_support(const ctx *x, const double *q, const double *kt, const int64_t *ridx,
                           int64_t j0, int64_t cnt, double *s)
{
    const fr__support *sp = x->sup;
    int64_t n = x->n, d = x->d, nd = 2 * n - 1;
    for (int r = 0; r < BR; r++) {
        double *sr = s + r * BC;
        memset(sr, 0, BC * sizeof *sr);
        const double *qr = q + r * d;
        const int64_t off = j0 - ridx[r] + n - 1; /* table index of column 0 */
        for (int64_t e = 0; e < sp->ns; e++) {
            double coef = qr[sp->a[e]];
            if (coef == 0) continue;
            const double *w = sp->w + e * nd + off;
            const double *k = kt + sp->b[e] * BC;
#pragma omp simd
            for (int64_t c = 0; c < cnt; c++)
                sr[c] += coef * w[c] * k[c];
        }
    }
}

static int block_needs_mask(const ctx *x, int64_t imin, int64_t imax, int64_t j0)
{
    int64_t j1 = j0 + BC - 1;
    if (j1 >= x->n) return 1;
    if (x->causal && j1 > imin) return 1;
    if (x->window >= 0 && (j0 < imax - x->window || j1 > imin + x->window)) return 1;
    return 0;
}

static void apply_mask(const ctx *x, const int64_t *ridx, int64_t j0, double *s)
{
    for (int r = 0; r < BR; r++) {
        int64_t i = ridx[r];
        double *sr = s + r * BC;
        for (int c = 0; c < BC; c++) {
            int64_t j = j0 + c;
            if (j >= x->n || (x->causal && j > i) ||
                (x->window >= 0 && (j - i > x->window || i - j > x->window)))
                sr[c] = -INFINITY;
        }
    }
}

/* The clip selection for a block that straddles |delta| = C. */
static void clip_select(const ctx *x, const int64_t *ridx, int64_t j0, double *s,
                        const double *splus, const double *sminus)
{
    int64_t cl = x->clip;
    for (int r = 0; r < BR; r++)
        for (int c = 0; c < BC; c++) {
            int64_t delta = j0 + c - ridx[r];
            if (delta > cl)
                s[r * BC + c] = splus[r * BC + c];
            else if (delta < -cl)
                s[r * BC + c] = sminus[r * BC + c];
        }
}

/* Scores of row block qoff (rows ridx[0..BR)) against key block kb into w->s[0]. */
static void block_scores(const ctx *x, int64_t qoff, const int64_t *ridx, int64_t imin,
                         int64_t imax, int64_t kb, scratch *w)
{
    int64_t d = x->d, j0 = kb * BC;
    const double *kt0 = x->kt[0] + kb * d * BC;
    if (x->mode == MODE_DOT) {
        scores_dot(x->q[0] + qoff * d, kt0, d, w->s[0]);
    } else if (x->mode == MODE_SUPPORT) {
        int64_t cnt = x->n - j0 < BC ? x->n - j0 : BC;
        scores_support(x, x->q[0] + qoff * d, kt0, ridx, j0, cnt, w->s[0]);
    } else {
        const double *kt1 = x->kt[1] + kb * d * BC;
        int64_t dmin = j0 - imax, dmax = j0 + BC - 1 - imin, cl = x->clip;
        if (dmin > cl) {
            scores_dot(x->q[1] + qoff * d, kt1, d, w->s[0]);
        } else if (dmax < -cl) {
            scores_dot(x->q[2] + qoff * d, kt1, d, w->s[0]);
        } else {
            scores_dot(x->q[0] + qoff * d, kt0, d, w->s[0]);
            if (dmax > cl) scores_dot(x->q[1] + qoff * d, kt1, d, w->s[1]);
            if (dmin < -cl) scores_dot(x->q[2] + qoff * d, kt1, d, w->s[2]);
            clip_select(x, ridx, j0, w->s[0], w->s[1], w->s[2]);
        }
    }
}

/* One online-softmax step: fold the score block s (turned into weights in place) into the
 * running maximum m, denominator l and accumulator acc. */
static void softmax_step(const ctx *x, scratch *w, const double *vblk)
{
    int64_t dvp = x->dvp;
    double *s = w->s[0];
    for (int r = 0; r < BR; r++) {
        double alpha = fr__softmax_block(s + r * BC, BC, &w->m[r], &w->l[r]);
        if (alpha != 1) {
            double *ar = w->acc + r * dvp;
            for (int64_t o = 0; o < dvp; o++)
                ar[o] *= alpha;
        }
    }
    /* acc[BR][dvp] += P[BR][BC] V[BC][dvp] in TR x VW tiles. */
    for (int r = 0; r < BR; r += TR) {
        const double *p0 = s + r * BC;
        for (int64_t o = 0; o < dvp; o += VW) {
            double *ar = w->acc + r * dvp + o;
            vd a0 = *(vd *)ar, a1 = *(vd *)(ar + dvp), a2 = *(vd *)(ar + 2 * dvp),
               a3 = *(vd *)(ar + 3 * dvp);
            for (int c = 0; c < BC; c++) {
                vd vv = *(const vd *)(vblk + c * dvp + o);
                a0 += p0[c] * vv;
                a1 += p0[BC + c] * vv;
                a2 += p0[2 * BC + c] * vv;
                a3 += p0[3 * BC + c] * vv;
            }
            *(vd *)ar = a0;
            *(vd *)(ar + dvp) = a1;
            *(vd *)(ar + 2 * dvp) = a2;
            *(vd *)(ar + 3 * dvp) = a3;
        }
    }
}

static void row_block(const ctx *x, int64_t rb, const int64_t *rows, int64_t nrows, double *out,
                      scratch *w)
{
    int64_t ridx[BR], r0 = rb * BR, nr = nrows - r0 < BR ? nrows - r0 : BR;
    for (int r = 0; r < BR; r++) {
        /* padded rows repeat the last real row: their masks stay sane, their output is dropped */
        int64_t t = r0 + (r < nr ? r : nr - 1);
        ridx[r] = rows ? rows[t] : t;
    }
    int64_t imin = ridx[0], imax = ridx[0];
    for (int r = 1; r < BR; r++) {
        if (ridx[r] < imin) imin = ridx[r];
        if (ridx[r] > imax) imax = ridx[r];
    }
    int64_t jlo = 0, jhi = x->n - 1;
    if (x->causal && imax < jhi) jhi = imax;
    if (x->window >= 0) {
        if (imin - x->window > jlo) jlo = imin - x->window;
        if (imax + x->window < jhi) jhi = imax + x->window;
    }
    for (int r = 0; r < BR; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0;
    }
    memset(w->acc, 0, (size_t)(BR * x->dvp) * sizeof *w->acc);
    for (int64_t kb = jlo / BC; kb <= jhi / BC; kb++) {
        block_scores(x, r0, ridx, imin, imax, kb, w);
        if (block_needs_mask(x, imin, imax, kb * BC)) apply_mask(x, ridx, kb * BC, w->s[0]);
        softmax_step(x, w, x->v + kb * BC * x->dvp);
    }
    for (int64_t r = 0; r < nr; r++) {
        /* l >= exp(0) = 1: the diagonal j = i is never masked and holds the row's maximum or
         * less, and the maximum itself contributes exp(0). */
        double inv = 1 / w->l[r];
        for (int64_t o = 0; o < x->dv; o++)
            out[(r0 + r) * x->dv + o] = w->acc[r * x->dvp + o] * inv;
    }
}

/* Rotate (or copy) rows of x into dst, scaled by tau: the rows listed (or all when rows is
 * NULL), row t of dst holding rows[t]. rotate: 0 copy, 1 per-position rotation, 2 times the
 * constant matrix wc (row vector times matrix). */
static void prep_queries(const fr_problem *p, const double *x, const int64_t *rows, int64_t nrows,
                         int rotate, const double *wc, double *dst)
{
    int64_t d = p->d;
#pragma omp parallel for schedule(static) if (nrows * d >= PAR_MIN)
    for (int64_t t = 0; t < nrows; t++) {
        int64_t i = rows ? rows[t] : t;
        double *o = dst + t * d;
        if (rotate == 1) {
            fr__rotate_rows(p, x, i, 1, o);
        } else if (rotate == 2) {
            for (int64_t b = 0; b < d; b++)
                o[b] = 0;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++)
                    o[b] += x[i * d + a] * wc[a * d + b];
        } else {
            memcpy(o, x + i * d, (size_t)d * sizeof *o);
        }
        for (int64_t b = 0; b < d; b++)
            o[b] *= p->tau;
    }
}

/* Keys (n x d) into transposed d x BC tiles, zero past n. */
static void tile_keys(const double *k, int64_t n, int64_t d, int64_t nb, double *kt)
{
#pragma omp parallel for schedule(static) if (n * d >= PAR_MIN)
    for (int64_t kb = 0; kb < nb; kb++) {
        int64_t j0 = kb * BC, cnt = n - j0 < BC ? n - j0 : BC;
        double *tile = kt + kb * d * BC;
        for (int64_t t = 0; t < d; t++)
            for (int64_t c = 0; c < BC; c++)
                tile[t * BC + c] = c < cnt ? k[(j0 + c) * d + t] : 0;
    }
}

/* All n rows rotated by their positions, in parallel chunks. */
static void rotate_all(const fr_problem *p, const double *x, double *dst)
{
    int64_t n = p->n, chunk = 256;
#pragma omp parallel for schedule(static) if (n * p->d >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += chunk)
        fr__rotate_rows(p, x, i0, n - i0 < chunk ? n - i0 : chunk, dst + i0 * p->d);
}

int fr_exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                  const int64_t *rows, int64_t nrows, double *out, char *err, size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (st) return st;
    int64_t n = p->n, d = p->d, dv = p->dv;
    if (!rows && nrows != n)
        return fr__err(err, errlen, FR_EUSAGE,
                       "exact: all rows asked (rows = NULL) but nrows = %lld != n = %lld",
                       (long long)nrows, (long long)n);
    if (nrows < 0)
        return fr__err(err, errlen, FR_EUSAGE, "exact: nrows = %lld < 0", (long long)nrows);
    if (nrows == 0) return FR_OK;
    for (int64_t t = 0; rows && t < nrows; t++)
        if (rows[t] < 0 || rows[t] >= n)
            return fr__err(err, errlen, FR_EUSAGE, "exact: row %lld is outside 0..%lld",
                           (long long)rows[t], (long long)(n - 1));
    const char *bad = NULL;
    int64_t at = -1;
    if ((at = fr_find_nonfinite(q, n * d)) >= 0)
        bad = "q";
    else if ((at = fr_find_nonfinite(k, n * d)) >= 0)
        bad = "k";
    else if ((at = fr_find_nonfinite(v, n * dv)) >= 0)
        bad = "v";
    if (bad)
        return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value at flat index %lld", bad,
                       (long long)at);

    ctx x;
    memset(&x, 0, sizeof x);
    x.n = n;
    x.d = d;
    x.dv = dv;
    x.dvp = (dv + VW - 1) / VW * VW;
    x.nb = (n + BC - 1) / BC;
    x.causal = p->causal;
    x.window = p->window < 0 ? -1 : p->window;
    /* The exact path wants W_delta = W_1^delta to rounding, not to a user tolerance. */
    int family = fr_rotation_is_rope_family(p, 1e-13, NULL, 0);
    x.mode = family ? MODE_DOT : p->rot.kind == FR_ROT_CLIP ? MODE_CLIP : MODE_SUPPORT;
    x.clip = p->rot.clip;

    int64_t nrp = (nrows + BR - 1) / BR * BR, nq = x.mode == MODE_CLIP ? 3 : 1;
    int64_t nkt = x.mode == MODE_CLIP ? 2 : 1;
    int nthreads = omp_get_max_threads();
    fr__support sup;
    memset(&sup, 0, sizeof sup);
    double *krot = NULL, *wc = NULL;
    scratch *ws = calloc((size_t)nthreads, sizeof *ws);
    st = ws ? FR_OK : FR_ENOMEM;
    for (int64_t t = 0; !st && t < nq; t++)
        if (!(x.q[t] = fr__alloc_doubles(nrp * d))) st = FR_ENOMEM;
    for (int64_t t = 0; !st && t < nkt; t++)
        if (!(x.kt[t] = fr__alloc_doubles(x.nb * BC * d))) st = FR_ENOMEM;
    if (!st && !(x.v = fr__alloc_doubles(x.nb * BC * x.dvp))) st = FR_ENOMEM;
    if (!st && x.mode != MODE_SUPPORT && !(krot = fr__alloc_doubles(n * d))) st = FR_ENOMEM;
    if (!st && x.mode == MODE_CLIP && !(wc = fr__alloc_doubles(d * d))) st = FR_ENOMEM;
    for (int t = 0; !st && t < nthreads; t++) {
        for (int e = 0; e < (x.mode == MODE_CLIP ? 3 : 1) && !st; e++)
            if (!(ws[t].s[e] = fr__alloc_doubles(BR * BC))) st = FR_ENOMEM;
        if (!st && !(ws[t].acc = fr__alloc_doubles(BR * x.dvp))) st = FR_ENOMEM;
    }
    if (st) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory for the exact attention (n = %lld)",
                     (long long)n);
        goto done;
    }
    if (x.mode == MODE_SUPPORT) {
        if ((st = fr__support_build(p, &sup, err, errlen))) goto done;
        x.sup = &sup;
    }

    /* Query side: pad rows repeat the last query (their results are dropped). */
    if (x.mode == MODE_SUPPORT) {
        prep_queries(p, q, rows, nrows, 0, NULL, x.q[0]);
    } else {
        prep_queries(p, q, rows, nrows, 1, NULL, x.q[0]);
        if (x.mode == MODE_CLIP) {
            fr_rotation_matrix(p, x.clip, wc);
            prep_queries(p, q, rows, nrows, 2, wc, x.q[1]);
            fr_rotation_matrix(p, -x.clip, wc);
            prep_queries(p, q, rows, nrows, 2, wc, x.q[2]);
        }
    }
    for (int64_t t = 0; t < nq; t++)
        for (int64_t r = nrows; r < nrp; r++)
            memcpy(x.q[t] + r * d, x.q[t] + (nrows - 1) * d, (size_t)d * sizeof(double));

    /* Key side. */
    if (x.mode == MODE_SUPPORT) {
        tile_keys(k, n, d, x.nb, x.kt[0]);
    } else {
        rotate_all(p, k, krot);
        tile_keys(krot, n, d, x.nb, x.kt[0]);
        if (x.mode == MODE_CLIP) tile_keys(k, n, d, x.nb, x.kt[1]);
    }
    free(krot);
    krot = NULL;
    for (int64_t j = 0; j < x.nb * BC; j++)
        for (int64_t o = 0; o < x.dvp; o++)
            x.v[j * x.dvp + o] = j < n && o < dv ? v[j * dv + o] : 0;

    int64_t nrb = nrp / BR;
#pragma omp parallel if (nrb > 1 && (double)nrows * (double)n >= PAR_MIN_SCORES)
    {
        scratch *w = &ws[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
        for (int64_t rb = 0; rb < nrb; rb++)
            row_block(&x, rb, rows, nrows, out, w);
    }

done:
    for (int t = 0; ws && t < nthreads; t++) {
        for (int e = 0; e < 3; e++)
            free(ws[t].s[e]);
        free(ws[t].acc);
    }
    free(ws);
    for (int t = 0; t < 3; t++)
        free(x.q[t]);
    for (int t = 0; t < 2; t++)
        free(x.kt[t]);
    free(x.v);
    free(krot);
    free(wc);
    fr__support_free(&sup);
    return st;
}
