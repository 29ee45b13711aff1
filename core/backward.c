/* backward.c - exact gradients of RoPE attention (ALGORITHM.md 7), FlashAttention-2 style.
 *
 * Never an n x n matrix: memory is O(n (d + dv)) plus per-thread blocks (plus dW and, when
 * threaded, one dW accumulator per extra thread).
 *   pass 1 (rows in parallel): online softmax with a running maximum, giving T and the row
 *          log-sum-exp lse_i, so that P_ij = exp(s_ij - lse_i) <= 1 later (no overflow for
 *          large entries); then G (dout, or T - E) and Delta_i = G_i . T_i;
 *   pass 2a (query blocks in parallel): recompute P, dS = P (G V^T - Delta), dQ = tau dS K;
 *   pass 2b (key blocks in parallel): recompute P, dV = P^T G, dK = tau dS^T Q, dW.
 * Splitting dQ from dK/dV costs one more score recomputation but needs no atomics and no
 * per-thread dQ copies.
 *
 * The RoPE family (fr_rotation_is_rope_family) rotates every row by its own position first, so a
 * score block is a plain product; dQ is then found for the rotated rows and rotated back with
 * the transpose of the same per-row map (the map is linear, so that is the chain rule). Any
 * other W (clipped RoPE that bites, general explicit W) goes through the support tables,
 * O(|S|) per score.
 *
 * Both passes run over index lists, so fr_exact_backward_rows reuses them for a sample of
 * query rows (pass 2a) and key rows (pass 2b) after a full pass 1. */
/* -std=c11 turns off the contraction of a * b + c into one fused multiply-add, and with it
 * half the machine's peak (see exact.c). */
#pragma GCC optimize("fp-contract=fast")

#include "internal.h"
#include "tiles.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define BR 32 /* query rows per block */
#define BC 64 /* key rows per block (multiple of VW) */
#define VW FR_VW
#define TR FR_TR

typedef fr__vd vd;

enum { MODE_DOT, MODE_SUPPORT };

typedef struct {
    int64_t n, d, dv, nd; /* nd = 2n - 1 offsets */
    int causal;
    int64_t window; /* < 0: none */
    int mode;
    double tau;
    const double *qs;          /* n x d: tau * (rotated or raw) queries */
    const double *ks;          /* n x d: rotated or raw keys */
    const double *v;           /* n x dv */
    const double *g;           /* n x dv: dL/dT (pass 2) */
    const double *lse, *dl;    /* n: row log-sum-exp, Delta (pass 2) */
    const double *qraw, *kraw; /* the caller's q, k (dW) */
    /* ks and v as transposed tiles per key block (d x BC, dv x BC, zero past n), made once so
     * that the passes over contiguous keys need not gather them again for every row block */
    const double *ktiles, *vtiles;
    const fr__support *sup;
} ctx;

typedef struct {
    int64_t ridx[BR], cidx[BC];
    int rok[BR], cok[BC];
    int single[BR]; /* the row keeps one key only (n = 1, window 0, causal row 0) */
    int64_t rmin, rmax, cmin, cmax;
    int allr, allc;
    double lse[BR], dl[BR], m[BR], l[BR];
    double *qb, *gb; /* BR x d, BR x dv */
    double *kt, *vt; /* d x BC, dv x BC (transposed key block): a tile, or kt_own/vt_own */
    double *kt_own, *vt_own;
    double *s, *dp;    /* BR x BC */
    double *acc;       /* BR x max(d, dv): T (pass 1) or dQ (pass 2a) */
    double *dkt, *dvt; /* d x BC, dv x BC */
    double *qw, *kw;   /* BR x d (tau q), BC x d (k): raw rows for dW */
    double *dw;        /* this thread's dW accumulator, or NULL */
    double *dq;        /* fused pass: this thread's dq' accumulator (n x d), or NULL */
    int ccontig;       /* the block's keys are cidx[0] + 0..BC-1, all valid */
    double wbuf[BC];
} scratch;

/* ---- loading blocks ---------------------------------------------------------------------- */

/* Rows t0..t0+BR-1 of the list (list == NULL: the identity on 0..total-1). Padded rows take the
 * first row's index (so table offsets stay in range) and are masked out entirely. */
static void load_rows(const ctx *x, scratch *w, const int64_t *list, int64_t t0, int64_t total,
                      int want_dw)
{
    int64_t d = x->d, dv = x->dv;
    w->allr = 1;
    for (int r = 0; r < BR; r++) {
        int64_t t = t0 + r;
        int ok = t < total;
        int64_t i = ok ? (list ? list[t] : t) : w->ridx[0];
        w->ridx[r] = i;
        w->rok[r] = ok;
        if (!ok) w->allr = 0;
        if (ok) {
            memcpy(w->qb + r * d, x->qs + i * d, (size_t)d * sizeof(double));
            if (x->g) memcpy(w->gb + r * dv, x->g + i * dv, (size_t)dv * sizeof(double));
            if (want_dw)
                for (int64_t a = 0; a < d; a++)
                    w->qw[r * d + a] = x->tau * x->qraw[i * d + a];
        } else {
            memset(w->qb + r * d, 0, (size_t)d * sizeof(double));
            memset(w->gb + r * dv, 0, (size_t)dv * sizeof(double));
            if (want_dw) memset(w->qw + r * d, 0, (size_t)d * sizeof(double));
        }
        int64_t lo = x->window >= 0 && x->window < i ? i - x->window : 0, hi = i;
        if (!x->causal) hi = x->window >= 0 && x->window < x->n - 1 - i ? i + x->window : x->n - 1;
        w->single[r] = ok && lo == hi;
        w->lse[r] = ok && x->lse ? x->lse[i] : 0;
        w->dl[r] = ok && x->dl ? x->dl[i] : 0;
        if (r == 0 || (ok && i < w->rmin)) w->rmin = i;
        if (r == 0 || (ok && i > w->rmax)) w->rmax = i;
    }
}

static void load_cols(const ctx *x, scratch *w, const int64_t *list, int64_t t0, int64_t total,
                      int want_dw)
{
    int64_t d = x->d, dv = x->dv;
    int tiled = !list && x->ktiles;
    w->allc = 1;
    w->ccontig = !list && t0 + BC <= total;
    if (tiled) {
        w->kt = (double *)x->ktiles + (t0 / BC) * d * BC;
        w->vt = (double *)x->vtiles + (t0 / BC) * dv * BC;
    } else {
        w->kt = w->kt_own;
        w->vt = w->vt_own;
    }
    for (int c = 0; c < BC; c++) {
        int64_t t = t0 + c;
        int ok = t < total;
        int64_t j = ok ? (list ? list[t] : t) : w->cidx[0];
        w->cidx[c] = j;
        w->cok[c] = ok;
        if (!ok) w->allc = 0;
        if (c == 0 || (ok && j < w->cmin)) w->cmin = j;
        if (c == 0 || (ok && j > w->cmax)) w->cmax = j;
        if (want_dw)
            for (int64_t a = 0; a < d; a++)
                w->kw[c * d + a] = ok ? x->kraw[j * d + a] : 0;
        if (tiled) continue;
        for (int64_t a = 0; a < d; a++)
            w->kt[a * BC + c] = ok ? x->ks[j * d + a] : 0;
        for (int64_t o = 0; o < dv; o++)
            w->vt[o * BC + c] = ok ? x->v[j * dv + o] : 0;
    }
}

/* The mask removes every pair of the block. */
static int block_empty(const ctx *x, const scratch *w)
{
    if (x->causal && w->cmin > w->rmax) return 1;
    if (x->window >= 0 && (w->cmin > w->rmax + x->window || w->cmax < w->rmin - x->window))
        return 1;
    return 0;
}

static int block_needs_mask(const ctx *x, const scratch *w)
{
    if (!w->allr || !w->allc) return 1;
    if (x->causal && w->cmax > w->rmin) return 1;
    if (x->window >= 0 && (w->cmin < w->rmax - x->window || w->cmax > w->rmin + x->window))
        return 1;
    return 0;
}

static void apply_mask(const ctx *x, scratch *w)
{
    for (int r = 0; r < BR; r++) {
        int64_t i = w->ridx[r];
        double *sr = w->s + r * BC;
        for (int c = 0; c < BC; c++) {
            int64_t j = w->cidx[c];
            if (!w->rok[r] || !w->cok[c] || (x->causal && j > i) ||
                (x->window >= 0 && (j - i > x->window || i - j > x->window)))
                sr[c] = -INFINITY;
        }
    }
}

/* ---- block products (all vectorised along the BC keys) -------------------------------------- */

/* out[BR][BC] = a[BR][K] bt[K][BC], in TR x VW register tiles (the hottest product: scores
 * and G V^T, each recomputed in every pass). */
static void mm_rows_by_tiles(const double *restrict a, const double *restrict bt, int64_t K,
                             double *restrict out)
{
    fr__mm_tiles(a, bt, K, BR, BC, out);
}

static double hsum(vd x)
{
    double s = 0;
    for (int e = 0; e < VW; e++)
        s += x[e];
    return s;
}

/* out[BR][K] (row stride ldo) += m[BR][BC] bt[K][BC]^T: TR rows at a time share the loads of
 * bt, one horizontal sum per output. */
static void mm_block_by_tiles_t(const double *restrict m, const double *restrict bt, int64_t K,
                                int64_t ldo, double *restrict out)
{
    for (int r = 0; r < BR; r += TR) {
        const double *m0 = m + r * BC;
        for (int64_t t = 0; t < K; t++) {
            const double *b = bt + t * BC;
            vd x0 = {0}, x1 = {0}, x2 = {0}, x3 = {0};
            for (int c = 0; c < BC; c += VW) {
                vd bb = *(const vd *)(b + c);
                x0 += *(const vd *)(m0 + c) * bb;
                x1 += *(const vd *)(m0 + BC + c) * bb;
                x2 += *(const vd *)(m0 + 2 * BC + c) * bb;
                x3 += *(const vd *)(m0 + 3 * BC + c) * bb;
            }
            out[(r + 0) * ldo + t] += hsum(x0);
            out[(r + 1) * ldo + t] += hsum(x1);
            out[(r + 2) * ldo + t] += hsum(x2);
            out[(r + 3) * ldo + t] += hsum(x3);
        }
    }
}

/* Unaligned: rows of d doubles start anywhere when d is not a multiple of VW. */
typedef double vdu __attribute__((vector_size(VW * sizeof(double)), aligned(sizeof(double))));

/* out[BR][K] += m[BR][BC] b[BC][K], b the block's BC consecutive rows (row-major, as the keys
 * are stored): 4 rows x 4 vectors of output in registers over the block, each key's row loaded
 * once per 4 rows, no horizontal sums. */
static void mm_block_by_rows(const double *restrict m, const double *restrict b, int64_t K,
                             double *restrict out)
{
    for (int r = 0; r < BR; r += 4) {
        int64_t o = 0;
        for (; o + 4 * VW <= K; o += 4 * VW) {
            vd x[4][4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    x[i][u] = *(const vdu *)(out + (r + i) * K + o + u * VW);
            for (int c = 0; c < BC; c++) {
                vd bb[4];
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    bb[u] = *(const vdu *)(b + c * K + o + u * VW);
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    double mi = m[(r + i) * BC + c];
#pragma GCC unroll 4
                    for (int u = 0; u < 4; u++)
                        x[i][u] += mi * bb[u];
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    *(vdu *)(out + (r + i) * K + o + u * VW) = x[i][u];
        }
        for (; o + VW <= K; o += VW) {
            vd x[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                x[i] = *(const vdu *)(out + (r + i) * K + o);
            for (int c = 0; c < BC; c++) {
                vd bb = *(const vdu *)(b + c * K + o);
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++)
                    x[i] += m[(r + i) * BC + c] * bb;
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                *(vdu *)(out + (r + i) * K + o) = x[i];
        }
        for (; o < K; o++)
            for (int i = 0; i < 4; i++) {
                double sum = 0;
                for (int c = 0; c < BC; c++)
                    sum += m[(r + i) * BC + c] * b[c * K + o];
                out[(r + i) * K + o] += sum;
            }
    }
}

/* outt[K][BC] += a[BR][K]^T m[BR][BC]: per 2 VW keys, four output rows stay in registers over
 * the whole block (eight accumulators, enough independent FMA chains for both ports). */
static void mm_rows_t_by_block(const double *restrict a, const double *restrict m, int64_t K,
                               double *restrict outt)
{
    int64_t t = 0;
    for (; t + 4 <= K; t += 4)
        for (int c = 0; c < BC; c += 2 * VW) {
            double *o = outt + t * BC + c;
            vd x[4][2];
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                x[u][0] = *(vd *)(o + u * BC);
                x[u][1] = *(vd *)(o + u * BC + VW);
            }
            for (int r = 0; r < BR; r++) {
                vd m0 = *(const vd *)(m + r * BC + c), m1 = *(const vd *)(m + r * BC + c + VW);
                const double *ar = a + r * K + t;
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++) {
                    x[u][0] += ar[u] * m0;
                    x[u][1] += ar[u] * m1;
                }
            }
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                *(vd *)(o + u * BC) = x[u][0];
                *(vd *)(o + u * BC + VW) = x[u][1];
            }
        }
    for (; t < K; t++)
        for (int c = 0; c < BC; c += VW) {
            double *o = outt + t * BC + c;
            vd x0 = *(vd *)o;
            for (int r = 0; r < BR; r++)
                x0 += a[r * K + t] * *(const vd *)(m + r * BC + c);
            *(vd *)o = x0;
        }
}

/* The kernel values w_e(j - i) of row r against the block's keys: a slice of the table when the
 * keys are consecutive (no gather), else gathered into buf. */
static const double *kernel_row(const ctx *x, const scratch *w, int r, int64_t e, double *buf)
{
    const double *wt = x->sup->w + e * x->nd;
    if (w->ccontig) return wt + (w->cidx[0] - w->ridx[r] + x->n - 1);
    for (int c = 0; c < BC; c++)
        buf[c] = wt[w->cidx[c] - w->ridx[r] + x->n - 1];
    return buf;
}

/* ---- scores and their gradients ---------------------------------------------------------- */

static void block_scores(const ctx *x, scratch *w)
{
    if (x->mode == MODE_DOT) {
        mm_rows_by_tiles(w->qb, w->kt, x->d, w->s);
    } else {
        const fr__support *sp = x->sup;
        for (int r = 0; r < BR; r++) {
            double *sr = w->s + r * BC;
            memset(sr, 0, BC * sizeof *sr);
            for (int64_t e = 0; e < sp->ns; e++) {
                double qa = w->qb[r * x->d + sp->a[e]];
                if (qa == 0) continue;
                const double *wt = kernel_row(x, w, r, e, w->wbuf), *kr = w->kt + sp->b[e] * BC;
#pragma omp simd
                for (int c = 0; c < BC; c++)
                    sr[c] += qa * wt[c] * kr[c];
            }
        }
    }
    if (block_needs_mask(x, w)) apply_mask(x, w);
}

/* P = exp(s - lse) in place in w->s, then dS = P (G V^T - Delta) into w->dp. */
static void block_probs_and_ds(const ctx *x, scratch *w)
{
    for (int r = 0; r < BR; r++) {
        double *sr = w->s + r * BC, ls = w->lse[r];
#pragma omp simd
        for (int c = 0; c < BC; c++)
            sr[c] = exp(sr[c] - ls);
    }
    mm_rows_by_tiles(w->gb, w->vt, x->dv, w->dp);
    for (int r = 0; r < BR; r++) {
        double *pr = w->s + r * BC, *dr = w->dp + r * BC, de = w->dl[r];
#pragma omp simd
        for (int c = 0; c < BC; c++)
            dr[c] = pr[c] * (dr[c] - de);
        /* A row with one key has T_i = V_j whatever its score: dS is 0 exactly, which the
         * rounding of P = exp(s - lse) (a hair off 1: lse comes from the forward's kernel)
         * would otherwise blur. */
        if (w->single[r]) memset(dr, 0, BC * sizeof *dr);
    }
}

/* acc[BR][d] += dS K~ (without tau), where K~_j = W_{j-i} K_j^T's transpose. */
static void block_dq(const ctx *x, scratch *w)
{
    int64_t d = x->d;
    if (x->mode == MODE_DOT && w->ccontig) {
        mm_block_by_rows(w->dp, x->ks + w->cidx[0] * d, d, w->acc);
        return;
    }
    if (x->mode == MODE_DOT) {
        mm_block_by_tiles_t(w->dp, w->kt, d, d, w->acc);
        return;
    }
    const fr__support *sp = x->sup;
    for (int r = 0; r < BR; r++) {
        const double *dr = w->dp + r * BC;
        for (int64_t e = 0; e < sp->ns; e++) {
            const double *wt = kernel_row(x, w, r, e, w->wbuf), *kr = w->kt + sp->b[e] * BC;
            double sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int c = 0; c < BC; c++)
                sum += dr[c] * wt[c] * kr[c];
            w->acc[r * d + sp->a[e]] += sum;
        }
    }
}

/* dkt[d][BC] += (tau Q~)^T dS */
static void block_dk(const ctx *x, scratch *w)
{
    if (x->mode == MODE_DOT) {
        mm_rows_t_by_block(w->qb, w->dp, x->d, w->dkt);
        return;
    }
    const fr__support *sp = x->sup;
    for (int r = 0; r < BR; r++) {
        const double *dr = w->dp + r * BC;
        for (int64_t e = 0; e < sp->ns; e++) {
            double qa = w->qb[r * x->d + sp->a[e]];
            if (qa == 0) continue;
            const double *wt = kernel_row(x, w, r, e, w->wbuf);
            double *o = w->dkt + sp->b[e] * BC;
#pragma omp simd
            for (int c = 0; c < BC; c++)
                o[c] += qa * wt[c] * dr[c];
        }
    }
}

/* dW_{j-i} += dS_ij (tau Q_i)^T K_j for the block's pairs (raw, unrotated rows). */
static void block_dw(const ctx *x, scratch *w)
{
    int64_t d = x->d, dd = d * d;
    for (int r = 0; r < BR; r++)
        for (int c = 0; c < BC; c++) {
            double g = w->dp[r * BC + c];
            if (g == 0) continue;
            double *dst = w->dw + (w->cidx[c] - w->ridx[r] + x->n - 1) * dd;
            const double *qa = w->qw + r * d, *kb = w->kw + c * d;
            for (int64_t a = 0; a < d; a++) {
                double ga = g * qa[a];
#pragma omp simd
                for (int64_t b = 0; b < d; b++)
                    dst[a * d + b] += ga * kb[b];
            }
        }
}

/* ---- the passes -------------------------------------------------------------------------- */

/* Pass 2a for query rows t0.. of the list: dq'_t (before rotating back), tau included. */
static void pass2a_block(const ctx *x, scratch *w, const int64_t *list, int64_t t0, int64_t total,
                         double *dq)
{
    int64_t n = x->n, d = x->d;
    load_rows(x, w, list, t0, total, 0);
    memset(w->acc, 0, (size_t)(BR * d) * sizeof(double));
    for (int64_t j0 = 0; j0 < n; j0 += BC) {
        load_cols(x, w, NULL, j0, n, 0);
        if (block_empty(x, w)) continue;
        block_scores(x, w);
        block_probs_and_ds(x, w);
        block_dq(x, w);
    }
    for (int r = 0; r < BR; r++)
        if (w->rok[r])
            for (int64_t a = 0; a < d; a++)
                dq[(t0 + r) * d + a] = x->tau * w->acc[r * d + a];
}

/* Pass 2b for key rows t0.. of the list: dk'_t (before rotating back), dv_t, and dW. */
static void pass2b_block(const ctx *x, scratch *w, const int64_t *list, int64_t t0, int64_t total,
                         double *dk, double *dvo)
{
    int64_t n = x->n, d = x->d, dv = x->dv;
    int want_dw = w->dw != NULL;
    load_cols(x, w, list, t0, total, want_dw);
    memset(w->dkt, 0, (size_t)(d * BC) * sizeof(double));
    memset(w->dvt, 0, (size_t)(dv * BC) * sizeof(double));
    for (int64_t i0 = 0; i0 < n; i0 += BR) {
        load_rows(x, w, NULL, i0, n, want_dw);
        if (block_empty(x, w)) continue;
        block_scores(x, w);
        block_probs_and_ds(x, w);
        mm_rows_t_by_block(w->gb, w->s, dv, w->dvt); /* dV += P^T G */
        block_dk(x, w);
        if (want_dw) block_dw(x, w);
        if (w->dq) {
            memset(w->acc, 0, (size_t)(BR * d) * sizeof(double));
            block_dq(x, w);
            for (int r = 0; r < BR; r++)
                if (w->rok[r])
                    for (int64_t a = 0; a < d; a++)
                        w->dq[w->ridx[r] * d + a] += x->tau * w->acc[r * d + a];
        }
    }
    for (int c = 0; c < BC; c++) {
        if (!w->cok[c]) continue;
        for (int64_t a = 0; a < d; a++)
            dk[(t0 + c) * d + a] = w->dkt[a * BC + c];
        for (int64_t o = 0; o < dv; o++)
            dvo[(t0 + c) * dv + o] = w->dvt[o * BC + c];
    }
}

/* ---- rotating gradients back ------------------------------------------------------------- */

/* g (row of position pos) <- the gradient with respect to the unrotated row, given g with
 * respect to the rotated one: the transpose of fr__rotate_rows' linear map. */
static void rotate_back(const fr_problem *p, int64_t npairs, const int64_t *pa, const int64_t *pb,
                        const double *freq, int64_t pos, double *g, double *tmp)
{
    int64_t d = p->d;
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        /* forward: x W_{-pos}; back: g W_{-pos}^T */
        const double *wm = p->rot.w + (-pos + p->n - 1) * d * d;
        for (int64_t a = 0; a < d; a++) {
            double sum = 0;
            for (int64_t b = 0; b < d; b++)
                sum += g[b] * wm[a * d + b];
            tmp[a] = sum;
        }
        memcpy(g, tmp, (size_t)d * sizeof *g);
        return;
    }
    for (int64_t m = 0; m < npairs; m++) {
        double ang = (double)pos * freq[m], c = cos(ang), s = sin(ang);
        double ga = g[pa[m]], gb = g[pb[m]];
        g[pa[m]] = ga * c + gb * s;
        g[pb[m]] = -ga * s + gb * c;
    }
}

/* ---- driver ------------------------------------------------------------------------------ */

static void scratch_free(scratch *w)
{
    free(w->qb);
    free(w->gb);
    free(w->kt_own);
    free(w->vt_own);
    free(w->s);
    free(w->dp);
    free(w->acc);
    free(w->dkt);
    free(w->dvt);
    free(w->qw);
    free(w->kw);
}

static int scratch_alloc(scratch *w, int64_t d, int64_t dv)
{
    int64_t dm = d > dv ? d : dv;
    memset(w, 0, sizeof *w);
    w->qb = fr__alloc_doubles(BR * d);
    w->gb = fr__alloc_doubles(BR * dv);
    w->kt = w->kt_own = fr__alloc_doubles(d * BC);
    w->vt = w->vt_own = fr__alloc_doubles(dv * BC);
    w->s = fr__alloc_doubles(BR * BC);
    w->dp = fr__alloc_doubles(BR * BC);
    w->acc = fr__alloc_doubles(BR * dm);
    w->dkt = fr__alloc_doubles(d * BC);
    w->dvt = fr__alloc_doubles(dv * BC);
    w->qw = fr__alloc_doubles(BR * d);
    w->kw = fr__alloc_doubles(BC * d);
    return w->qb && w->gb && w->kt && w->vt && w->s && w->dp && w->acc && w->dkt && w->dvt &&
           w->qw && w->kw;
}

static int check_rows(const int64_t *rows, int64_t nrows, int64_t n, char *err, size_t errlen)
{
    if (nrows < 0)
        return fr__err(err, errlen, FR_EUSAGE, "exact backward: nrows = %lld < 0",
                       (long long)nrows);
    if (!rows && nrows != n)
        return fr__err(err, errlen, FR_EUSAGE,
                       "exact backward: all rows asked (rows = NULL) but nrows = %lld != n = %lld",
                       (long long)nrows, (long long)n);
    for (int64_t t = 0; rows && t < nrows; t++)
        if (rows[t] < 0 || rows[t] >= n)
            return fr__err(err, errlen, FR_EUSAGE, "exact backward: row %lld is outside 0..%lld",
                           (long long)rows[t], (long long)(n - 1));
    return FR_OK;
}

int fr__backward_check(const fr_problem *p, const char *who, const double *q, const double *k,
                       const double *v, const double *dout, const double *target, const double *dq,
                       const double *dk, const double *dv, char *err, size_t errlen)
{
    if ((dout == NULL) == (target == NULL))
        return fr__err(err, errlen, FR_EUSAGE, "%s: give exactly one of dout (dL/dT) and target",
                       who);
    if (!q || !k || !v || !dq || !dk || !dv)
        return fr__err(err, errlen, FR_EUSAGE, "%s: q, k, v, dq, dk and dv are required", who);
    int64_t n = p->n, d = p->d, dvv = p->dv, at;
    const char *bad = NULL;
    if ((at = fr_find_nonfinite(q, n * d)) >= 0)
        bad = "q";
    else if ((at = fr_find_nonfinite(k, n * d)) >= 0)
        bad = "k";
    else if ((at = fr_find_nonfinite(v, n * dvv)) >= 0)
        bad = "v";
    else if ((at = fr_find_nonfinite(dout ? dout : target, n * dvv)) >= 0)
        bad = dout ? "dout" : "target";
    if (bad)
        return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value at flat index %lld", bad,
                       (long long)at);
    return FR_OK;
}

/* rows == NULL: every row (full gradients, dw allowed); else dq at query rows rows[] and dk, dv
 * at key rows rows[]. */
static int backward(const fr_problem *p, const double *q, const double *k, const double *v,
                    const double *dout, const double *target, const int64_t *rows, int64_t nrows,
                    double *t, double *dq, double *dk, double *dv, double *dw, double *loss,
                    char *err, size_t errlen)
{
    int64_t n = p->n, d = p->d, dvd = p->dv;
    ctx x;
    memset(&x, 0, sizeof x);
    x.n = n;
    x.d = d;
    x.dv = dvd;
    x.nd = 2 * n - 1;
    x.causal = p->causal;
    x.window = p->window < 0 ? -1 : p->window;
    x.tau = p->tau;
    x.qraw = q;
    x.kraw = k;
    x.v = v;
    /* Same test as the forward: W_delta = W_1^delta to rounding, not to a user tolerance. */
    x.mode = fr_rotation_is_rope_family(p, 1e-13, NULL, 0) ? MODE_DOT : MODE_SUPPORT;

    int nthreads = omp_get_max_threads();
    fr__support sup;
    memset(&sup, 0, sizeof sup);
    double *qs = fr__alloc_doubles(n * d), *ks = fr__alloc_doubles(n * d);
    double *tt = t ? t : fr__alloc_doubles(n * dvd), *g = NULL;
    double *lse = fr__alloc_doubles(n), *dl = fr__alloc_doubles(n);
    int64_t nkt = (n + BC - 1) / BC;
    double *ktiles = fr__alloc_doubles(nkt * d * BC), *vtiles = fr__alloc_doubles(nkt * dvd * BC);
    double *pairs_f = malloc((size_t)(d / 2 + 1) * sizeof(double));
    int64_t *pairs_a = malloc((size_t)(d / 2 + 1) * sizeof(int64_t));
    int64_t *pairs_b = malloc((size_t)(d / 2 + 1) * sizeof(int64_t));
    scratch *ws = calloc((size_t)nthreads, sizeof *ws);
    double **dwt = calloc((size_t)nthreads, sizeof *dwt);
    double **dqt = calloc((size_t)nthreads, sizeof *dqt);
    int st = qs && ks && tt && lse && dl && ktiles && vtiles && ws && dwt && dqt && pairs_f &&
                     pairs_a && pairs_b
                 ? FR_OK
                 : FR_ENOMEM;
    if (!st && target && !(g = fr__alloc_doubles(n * dvd))) st = FR_ENOMEM;
    for (int i = 0; !st && i < nthreads; i++)
        if (!scratch_alloc(&ws[i], d, dvd)) st = FR_ENOMEM;
    int64_t dwsize = x.nd * d * d;
    if (!st && dw) {
        memset(dw, 0, (size_t)dwsize * sizeof *dw);
        dwt[0] = dw;
        for (int i = 1; !st && i < nthreads; i++)
            if (!(dwt[i] = calloc((size_t)dwsize, sizeof(double)))) st = FR_ENOMEM;
    }
    if (st) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory for the exact backward (n = %lld)",
                     (long long)n);
        goto done;
    }
    if (x.mode == MODE_SUPPORT) {
        if ((st = fr__support_build(p, &sup, err, errlen))) goto done;
        x.sup = &sup;
    }

    /* Rows scaled by tau (queries) and rotated by their positions on the RoPE family. */
#pragma omp parallel for schedule(static)
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t cnt = n - i0 < 256 ? n - i0 : 256;
        if (x.mode == MODE_DOT) {
            fr__rotate_rows(p, q, i0, cnt, qs + i0 * d);
            fr__rotate_rows(p, k, i0, cnt, ks + i0 * d);
        } else {
            memcpy(qs + i0 * d, q + i0 * d, (size_t)(cnt * d) * sizeof(double));
            memcpy(ks + i0 * d, k + i0 * d, (size_t)(cnt * d) * sizeof(double));
        }
        for (int64_t e = i0 * d; e < (i0 + cnt) * d; e++)
            qs[e] *= p->tau;
    }
    x.qs = qs;
    x.ks = ks;
#pragma omp parallel for schedule(static)
    for (int64_t kb = 0; kb < nkt; kb++)
        for (int c = 0; c < BC; c++) {
            int64_t j = kb * BC + c;
            for (int64_t a = 0; a < d; a++)
                ktiles[(kb * d + a) * BC + c] = j < n ? ks[j * d + a] : 0;
            for (int64_t o = 0; o < dvd; o++)
                vtiles[(kb * dvd + o) * BC + c] = j < n ? v[j * dvd + o] : 0;
        }
    x.ktiles = ktiles;
    x.vtiles = vtiles;

    /* Pass 1: T and lse for every row (dK and dV need all of them, even for sampled rows), by
     * the forward engine. */
    if ((st = fr__exact_rows_lse(p, q, k, v, tt, lse, err, errlen))) goto done;

    /* G and Delta. */
    double lsum = 0;
    const double *gg = dout;
    if (target) {
        for (int64_t e = 0; e < n * dvd; e++) {
            g[e] = tt[e] - target[e];
            lsum += g[e] * g[e];
        }
        gg = g;
        if (loss) *loss = 0.5 * lsum;
    }
    for (int64_t i = 0; i < n; i++) {
        double sum = 0;
        for (int64_t o = 0; o < dvd; o++)
            sum += gg[i * dvd + o] * tt[i * dvd + o];
        dl[i] = sum;
    }
    x.g = gg;
    x.lse = lse;
    x.dl = dl;

    /* Pass 2, over the asked rows. Full gradients: one fused pass over key blocks, dq summed
     * from per-thread copies (P and dS are then formed once, not twice: exp is the largest cost).
     * Sampled rows: dq by query blocks (2a), dk, dv by key blocks (2b). */
    int64_t nq = rows ? nrows : n;
    int64_t nqb = (nq + BR - 1) / BR, nkb = (nq + BC - 1) / BC;
    int fused = rows == NULL;
    if (fused) {
        memset(dq, 0, (size_t)(n * d) * sizeof *dq);
        dqt[0] = dq;
        for (int i = 1; i < nthreads; i++) {
            if (!(dqt[i] = calloc((size_t)(n * d), sizeof(double)))) {
                st = fr__err(err, errlen, FR_ENOMEM, "out of memory for the exact backward");
                goto done;
            }
        }
    }
#pragma omp parallel
    {
        scratch *w = &ws[omp_get_thread_num()];
        w->dw = NULL;
        w->dq = NULL;
        if (!fused) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < nqb; b++)
                pass2a_block(&x, w, rows, b * BR, nq, dq);
        }
        w->dw = dw ? dwt[omp_get_thread_num()] : NULL;
        w->dq = fused ? dqt[omp_get_thread_num()] : NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nkb; b++)
            pass2b_block(&x, w, rows, b * BC, nq, dk, dv);
    }
    if (dw && nthreads > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t e = 0; e < dwsize; e++)
            for (int i = 1; i < nthreads; i++)
                dw[e] += dwt[i][e];
    }
    if (fused && nthreads > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t e = 0; e < n * d; e++)
            for (int i = 1; i < nthreads; i++)
                dq[e] += dqt[i][e];
    }

    /* Gradients of the rotated rows back to the caller's rows. */
    if (x.mode == MODE_DOT && p->rot.kind != FR_ROT_NONE) {
        int64_t np =
            p->rot.kind == FR_ROT_EXPLICIT ? 0 : fr__rope_pairs(p, pairs_a, pairs_b, pairs_f);
#pragma omp parallel
        {
            double tmp[d];
#pragma omp for schedule(static)
            for (int64_t tq = 0; tq < nq; tq++) {
                int64_t pos = rows ? rows[tq] : tq;
                rotate_back(p, np, pairs_a, pairs_b, pairs_f, pos, dq + tq * d, tmp);
                rotate_back(p, np, pairs_a, pairs_b, pairs_f, pos, dk + tq * d, tmp);
            }
        }
    }

done:
    for (int i = 0; ws && i < nthreads; i++)
        scratch_free(&ws[i]);
    for (int i = 1; dwt && i < nthreads; i++)
        free(dwt[i]);
    free(ws);
    free(dwt);
    for (int i = 1; dqt && i < nthreads; i++)
        free(dqt[i]);
    free(dqt);
    free(qs);
    free(ks);
    if (tt != t) free(tt);
    free(g);
    free(lse);
    free(dl);
    free(ktiles);
    free(vtiles);
    free(pairs_f);
    free(pairs_a);
    free(pairs_b);
    fr__support_free(&sup);
    return st;
}

int fr__exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                       const double *dout, const double *target, double *t, double *dq, double *dk,
                       double *dv, double *dw, double *loss, char *err, size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (!st)
        st =
            fr__backward_check(p, "exact backward", q, k, v, dout, target, dq, dk, dv, err, errlen);
    if (st) return st;
    return backward(p, q, k, v, dout, target, NULL, p->n, t, dq, dk, dv, dw, loss, err, errlen);
}

int fr__exact_backward_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                            const double *dout, const double *target, const int64_t *rows,
                            int64_t nrows, double *dq, double *dk, double *dv, char *err,
                            size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (st || (st = check_rows(rows, nrows, p->n, err, errlen))) return st;
    if (nrows == 0) return FR_OK; /* nothing asked: the outputs may be NULL */
    if ((st = fr__backward_check(p, "exact backward", q, k, v, dout, target, dq, dk, dv, err,
                                 errlen)))
        return st;
    return backward(p, q, k, v, dout, target, rows, nrows, NULL, dq, dk, dv, NULL, NULL, err,
                    errlen);
}
