/* backward_impl.h - exact gradients of RoPE attention (ALGORITHM.md 7), FlashAttention-2 style,
 * written once for both precisions: backward.c includes it for double, backward_f32.c for float.
 * The includer defines, as for exact_impl.h,
 *   REAL, RV, NV, EXPR, X(name)        the type, its 64-byte vector and lanes, its exp, naming
 *   ROTATE_CHUNK(p, x, i0, cnt, out)   rows i0.. of x rotated by their positions (RoPE family)
 *   FORWARD_LSE(p, q, k, v, out, lse, pg, err, errlen)
 *                                      the forward engine on every row, with each row's
 *                                      log-sum-exp (REAL, n values)
 *
 * Never an n x n matrix: memory is O(n (d + dv)) plus per-thread blocks (plus dW and, when
 * threaded, one dQ and one dW accumulator per extra thread).
 *   pass 1: the forward engine, giving T and the row log-sum-exp lse_i, so that later
 *           P_ij = exp(s_ij - lse_i) <= 1 (no overflow for large entries); then G (dout, or
 *           T - E) and Delta_i = G_i . T_i;
 *   pass 2 (key blocks in parallel): per block of BR queries and BC keys, in L1:
 *           S - lse = (tau Q~) K~^T - lse      (the shift is the tile's initial value)
 *           dP - Delta = G V^T - Delta          (likewise)
 *           P = exp(S - lse), dS = P (dP - Delta)
 *           dV += P^T G, dK += dS^T (tau Q~), dQ' += dS K~ (a per-thread copy of dQ, summed
 *           once at the end: no atomics), and dW for an explicit W.
 *         P and dS are formed once per pair (exp is the largest cost at small d).
 * Padding instead of tests: the queries' arrays run to a multiple of BR rows, the padded rows with
 * -lse = -inf (their weights are exp(-inf) = 0, their gradients 0); the keys' tiles run to a
 * multiple of BC, and only the last key block (and blocks a mask crosses) pays for a mask.
 *
 * The RoPE family (fr_rotation_is_rope_family) rotates every row by its own position first, so a
 * score block is a plain product; dQ and dK are found for the rotated rows and rotated back with
 * the transpose of the same per-row map (the map is linear, so that is the chain rule). Any
 * other W (clipped RoPE that bites, general explicit W) goes through the support tables,
 * O(|S|) per score.
 *
 * Sampled gradients (fr_exact_backward_rows: dq at some query rows, dk and dv at some key
 * rows, after a full pass 1) run the same block over gathered blocks: each listed query block
 * meets every key block (dQ only), each listed key block every query block (dK, dV only). */

#define BR 32 /* query rows per block (multiple of 8) */
/* Keys per block (multiple of PW). Each query block (its rows, G and its dQ' tile) streams from
 * memory once per key block: 128 keys halve that traffic against 64, while the key block's five
 * d x BC tiles still sit in L2. */
#define BC 128
#define PW (2 * NV)  /* keys of a register tile: two vectors */
#define PAR_MIN 4096 /* rows below which the O(n d) set-up stays on one thread */

enum { X(DOT), X(SUPPORT) };

/* What pass 2 reads, all padded (see the top of the file). */
typedef struct {
    int64_t n, d, dv, nd; /* nd = 2n - 1 offsets */
    int64_t dp;           /* d rounded up to NV: the row stride of kr and of dQ's accumulators */
    int64_t nrp, nkb;     /* query rows padded to BR; key blocks */
    int causal;
    int64_t window; /* < 0: none */
    int mode;
    REAL tau;
    const REAL *qs;              /* nrp x d: tau times the rotated (or raw) queries */
    const REAL *g;               /* nrp x dv: dL/dT */
    const REAL *nlse, *ndl;      /* nrp: -lse_i and -Delta_i */
    const unsigned char *single; /* nrp: row i keeps one key */
    const REAL *kt, *vt;         /* per key block: d x BC and dv x BC transposed tiles */
    const REAL *kr;              /* nkb BC x dp: the rotated keys' rows, zero-padded */
    const REAL *qraw, *kraw;     /* the caller's q and k (dW) */
    const fr__support *sup;
} X(bctx);

/* One block of BR queries and BC keys: where its rows are, and which pairs exist. */
typedef struct {
    const REAL *qb, *gb, *nlse, *ndl; /* BR rows */
    const unsigned char *single;
    const REAL *kt, *vt, *kr; /* BC keys */
    int64_t ridx[BR], cidx[BC];
    int nrok, ncok; /* the first nrok rows and ncok keys are real */
    int ccontig;    /* the keys are cidx[0] + 0..BC-1 */
    int64_t rmin, rmax, cmin, cmax;
} X(blk);

typedef struct {
    REAL *s, *dp;     /* BR x BC: scores then P; dP then dS */
    REAL *dkt, *dvt;  /* d x BC, dv x BC: the key block's dK, dV (transposed) */
    REAL *acc;        /* BR x dp: a sampled query block's dQ */
    REAL *qb, *gb;    /* BR x d, BR x dv: a gathered query block */
    REAL *nlse, *ndl; /* BR */
    unsigned char single[BR];
    REAL *kt, *vt, *kr; /* d x BC, dv x BC, BC x dp: a gathered key block */
    REAL *dw;           /* this thread's dW, or NULL */
    REAL *dq;           /* fused pass: this thread's dQ' (nrp x dp), or NULL */
    REAL wbuf[BC];
} X(bscratch);

/* ---- block products ------------------------------------------------------------------------- */

/* out[BR][BC] = init[r] + a[BR][K] bt[K][BC], in 8-row x 2-vector register tiles: sixteen
 * independent FMA chains, enough to cover the latency of both FMA ports. The key panel (K x PW)
 * stays in L1 while the row tiles pass over it. */
static void X(mm_init)(const REAL *restrict a, const REAL *restrict bt, int64_t K,
                       const REAL *restrict init, REAL *restrict out)
{
    for (int c = 0; c < BC; c += PW)
        for (int r = 0; r < BR; r += 8) {
            const REAL *a0 = a + r * K;
            RV x[8][2];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                x[i][0] = x[i][1] = (RV){0} + init[r + i];
            for (int64_t t = 0; t < K; t++) {
                RV b0 = *(const RV *)(bt + t * BC + c), b1 = *(const RV *)(bt + t * BC + c + NV);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    REAL ai = a0[i * K + t];
                    x[i][0] += ai * b0;
                    x[i][1] += ai * b1;
                }
            }
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                *(RV *)(out + (r + i) * BC + c) = x[i][0];
                *(RV *)(out + (r + i) * BC + c + NV) = x[i][1];
            }
        }
}

/* outt[K][BC] += a[BR][K]^T m[BR][BC]: TT rows of the output x 2 vectors stay in registers over
 * the block's BR rows. */
#define MM_T_TILE(TT)                                                                              \
    static inline void X(mm_t_##TT)(const REAL *restrict a, const REAL *restrict m, int64_t K,     \
                                    int64_t t, REAL *restrict outt)                                \
    {                                                                                              \
        for (int c = 0; c < BC; c += PW) {                                                         \
            REAL *o = outt + t * BC + c;                                                           \
            RV x[TT][2];                                                                           \
            _Pragma("GCC unroll 8") for (int u = 0; u < TT; u++)                                   \
            {                                                                                      \
                x[u][0] = *(RV *)(o + u * BC);                                                     \
                x[u][1] = *(RV *)(o + u * BC + NV);                                                \
            }                                                                                      \
            for (int r = 0; r < BR; r++) {                                                         \
                RV m0 = *(const RV *)(m + r * BC + c), m1 = *(const RV *)(m + r * BC + c + NV);    \
                const REAL *ar = a + r * K + t;                                                    \
                _Pragma("GCC unroll 8") for (int u = 0; u < TT; u++)                               \
                {                                                                                  \
                    x[u][0] += ar[u] * m0;                                                         \
                    x[u][1] += ar[u] * m1;                                                         \
                }                                                                                  \
            }                                                                                      \
            _Pragma("GCC unroll 8") for (int u = 0; u < TT; u++)                                   \
            {                                                                                      \
                *(RV *)(o + u * BC) = x[u][0];                                                     \
                *(RV *)(o + u * BC + NV) = x[u][1];                                                \
            }                                                                                      \
        }                                                                                          \
    }
MM_T_TILE(8)
MM_T_TILE(4)
MM_T_TILE(1)
#undef MM_T_TILE

static void X(mm_t)(const REAL *a, const REAL *m, int64_t K, REAL *outt)
{
    int64_t t = 0;
    for (; t + 8 <= K; t += 8)
        X(mm_t_8)(a, m, K, t, outt);
    for (; t + 4 <= K; t += 4)
        X(mm_t_4)(a, m, K, t, outt);
    for (; t < K; t++)
        X(mm_t_1)(a, m, K, t, outt);
}

/* out[BR][dp] += m[BR][BC] b[BC][dp], b the block's keys' rows (row stride dp, a multiple of
 * NV): 4 rows x VT vectors of the output in registers over the block, each key's row loaded
 * once per 4 rows, no horizontal sums. */
#define MM_ROWS_TILE(VT)                                                                           \
    static inline void X(mm_rows_##VT)(const REAL *restrict m, const REAL *restrict b, int64_t dp, \
                                       int64_t o, REAL *restrict out)                              \
    {                                                                                              \
        for (int r = 0; r < BR; r += 4) {                                                          \
            RV x[4][VT];                                                                           \
            _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)                                    \
                _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) x[i][u] =                     \
                    *(const RV *)(out + (r + i) * dp + o + u * NV);                                \
            for (int c = 0; c < BC; c++) {                                                         \
                RV bb[VT];                                                                         \
                _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) bb[u] =                       \
                    *(const RV *)(b + c * dp + o + u * NV);                                        \
                _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)                                \
                {                                                                                  \
                    REAL mi = m[(r + i) * BC + c];                                                 \
                    _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) x[i][u] += mi * bb[u];    \
                }                                                                                  \
            }                                                                                      \
            _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)                                    \
                    _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) *                         \
                (RV *)(out + (r + i) * dp + o + u * NV) = x[i][u];                                 \
        }                                                                                          \
    }
MM_ROWS_TILE(4)
MM_ROWS_TILE(1)
#undef MM_ROWS_TILE

static void X(mm_rows)(const REAL *m, const REAL *b, int64_t dp, REAL *out)
{
    int64_t o = 0;
    for (; o + 4 * NV <= dp; o += 4 * NV)
        X(mm_rows_4)(m, b, dp, o, out);
    for (; o < dp; o += NV)
        X(mm_rows_1)(m, b, dp, o, out);
}

/* ---- masks and the general W ---------------------------------------------------------------- */

/* The mask removes every pair of the block. */
static int X(block_empty)(const X(bctx) * x, const X(blk) * b)
{
    if (x->causal && b->cmin > b->rmax) return 1;
    if (x->window >= 0 && (b->cmin > b->rmax + x->window || b->cmax < b->rmin - x->window))
        return 1;
    return 0;
}

static int X(block_needs_mask)(const X(bctx) * x, const X(blk) * b)
{
    if (b->ncok < BC) return 1;
    if (x->causal && b->cmax > b->rmin) return 1;
    if (x->window >= 0 && (b->cmin < b->rmax - x->window || b->cmax > b->rmin + x->window))
        return 1;
    return 0;
}

static void X(apply_mask)(const X(bctx) * x, const X(blk) * b, REAL *s)
{
    for (int r = 0; r < BR; r++) {
        int64_t i = b->ridx[r];
        REAL *sr = s + r * BC;
        for (int c = 0; c < BC; c++) {
            int64_t j = b->cidx[c];
            if (c >= b->ncok || (x->causal && j > i) ||
                (x->window >= 0 && (j - i > x->window || i - j > x->window)))
                sr[c] = -INFINITY;
        }
    }
}

/* The kernel values w_e(j - i) of row r against the block's keys: a slice of the table when the
 * keys are consecutive (no gather), else gathered into buf. Keys past ncok read offset 0 (their
 * pairs are masked). */
static const double *X(kernel_row)(const X(bctx) * x, const X(blk) * b, int r, int64_t e,
                                   double *buf)
{
    const double *wt = x->sup->w + e * x->nd;
    int64_t i = b->ridx[r];
    if (b->ccontig && b->cidx[0] + BC - 1 - i <= x->n - 1) return wt + (b->cidx[0] - i + x->n - 1);
    for (int c = 0; c < BC; c++)
        buf[c] = c < b->ncok ? wt[b->cidx[c] - i + x->n - 1] : 0;
    return buf;
}

/* s[BR][BC] = -lse_r + sum_e q_{r,a_e} w_e(j - i) k_{j,b_e} (an explicit W through its
 * support). */
static void X(scores_support)(const X(bctx) * x, const X(blk) * b, REAL *s)
{
    const fr__support *sp = x->sup;
    double buf[BC];
    for (int r = 0; r < BR; r++) {
        REAL *sr = s + r * BC;
        for (int c = 0; c < BC; c++)
            sr[c] = b->nlse[r];
        for (int64_t e = 0; e < sp->ns; e++) {
            REAL qa = b->qb[r * x->d + sp->a[e]];
            if (qa == 0) continue;
            const double *wt = X(kernel_row)(x, b, r, e, buf);
            const REAL *kr = b->kt + sp->b[e] * BC;
#pragma omp simd
            for (int c = 0; c < BC; c++)
                sr[c] += qa * (REAL)wt[c] * kr[c];
        }
    }
}

/* acc[BR][dp] += dS K~ through the support (row r, coordinate a_e). */
static void X(dq_support)(const X(bctx) * x, const X(blk) * b, const REAL *ds, REAL *acc)
{
    const fr__support *sp = x->sup;
    double buf[BC];
    for (int r = 0; r < BR; r++) {
        const REAL *dr = ds + r * BC;
        for (int64_t e = 0; e < sp->ns; e++) {
            const double *wt = X(kernel_row)(x, b, r, e, buf);
            const REAL *kr = b->kt + sp->b[e] * BC;
            REAL sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int c = 0; c < BC; c++)
                sum += dr[c] * (REAL)wt[c] * kr[c];
            acc[r * x->dp + sp->a[e]] += sum;
        }
    }
}

/* dkt[d][BC] += (tau Q~)^T dS through the support. */
static void X(dk_support)(const X(bctx) * x, const X(blk) * b, const REAL *ds, REAL *dkt)
{
    const fr__support *sp = x->sup;
    double buf[BC];
    for (int r = 0; r < BR; r++) {
        const REAL *dr = ds + r * BC;
        for (int64_t e = 0; e < sp->ns; e++) {
            REAL qa = b->qb[r * x->d + sp->a[e]];
            if (qa == 0) continue;
            const double *wt = X(kernel_row)(x, b, r, e, buf);
            REAL *o = dkt + sp->b[e] * BC;
#pragma omp simd
            for (int c = 0; c < BC; c++)
                o[c] += qa * (REAL)wt[c] * dr[c];
        }
    }
}

/* dW_{j-i} += dS_ij (tau Q_i)^T K_j for the block's pairs (raw, unrotated rows). */
static void X(block_dw)(const X(bctx) * x, const X(blk) * b, const REAL *ds, REAL *dw)
{
    int64_t d = x->d, dd = d * d;
    for (int r = 0; r < b->nrok; r++)
        for (int c = 0; c < b->ncok; c++) {
            REAL gsc = ds[r * BC + c] * x->tau;
            if (gsc == 0) continue;
            int64_t i = b->ridx[r], j = b->cidx[c];
            REAL *dst = dw + (j - i + x->n - 1) * dd;
            const REAL *qa = x->qraw + i * d, *kb = x->kraw + j * d;
            for (int64_t a = 0; a < d; a++) {
                REAL ga = gsc * qa[a];
#pragma omp simd
                for (int64_t e = 0; e < d; e++)
                    dst[a * d + e] += ga * kb[e];
            }
        }
}

/* ---- one block --------------------------------------------------------------------------------
 */

/* P and dS of the block into w->s and w->dp; then what is asked: dq (BR x dp, += dS K~), dkt
 * and dvt (+= dS^T tau Q~, P^T G), and dW into w->dw. */
static void X(block)(const X(bctx) * x, X(bscratch) * w, const X(blk) * b, REAL *dq, REAL *dkt,
                     REAL *dvt)
{
    REAL *s = w->s, *dp = w->dp;
    if (x->mode == X(DOT))
        X(mm_init)(b->qb, b->kt, x->d, b->nlse, s);
    else
        X(scores_support)(x, b, s);
    if (X(block_needs_mask)(x, b)) X(apply_mask)(x, b, s);
    X(mm_init)(b->gb, b->vt, x->dv, b->ndl, dp);
    for (int r = 0; r < BR; r++) {
        REAL *sr = s + r * BC, *dr = dp + r * BC;
        /* A row with one key has T_i = V_j whatever its score: dS is 0 exactly, which the
         * rounding of P = exp(s - lse) (a hair off 1) would otherwise blur. */
        REAL keep = b->single[r] ? 0 : 1;
#pragma omp simd
        for (int c = 0; c < BC; c++) {
            REAL e = EXPR(sr[c]);
            sr[c] = e;
            dr[c] = keep * (e * dr[c]);
        }
    }
    if (dvt) X(mm_t)(b->gb, s, x->dv, dvt);
    if (dkt) {
        if (x->mode == X(DOT))
            X(mm_t)(b->qb, dp, x->d, dkt);
        else
            X(dk_support)(x, b, dp, dkt);
    }
    if (dq) {
        if (x->mode == X(DOT))
            X(mm_rows)(dp, b->kr, x->dp, dq);
        else
            X(dq_support)(x, b, dp, dq);
    }
    if (w->dw) X(block_dw)(x, b, dp, w->dw);
}

/* The block's query side: rows i0.. of the padded arrays (list == NULL), or rows list[t0..]
 * gathered into w (at most BR of total). */
static void X(rows_of)(const X(bctx) * x, X(bscratch) * w, const int64_t *list, int64_t t0,
                       int64_t total, X(blk) * b)
{
    int64_t d = x->d, dv = x->dv;
    if (!list) {
        b->qb = x->qs + t0 * d;
        b->gb = x->g + t0 * dv;
        b->nlse = x->nlse + t0;
        b->ndl = x->ndl + t0;
        b->single = x->single + t0;
        b->nrok = (int)(x->n - t0 < BR ? x->n - t0 : BR);
        for (int r = 0; r < BR; r++)
            b->ridx[r] = r < b->nrok ? t0 + r : t0;
    } else {
        b->nrok = (int)(total - t0 < BR ? total - t0 : BR);
        for (int r = 0; r < BR; r++) {
            int ok = r < b->nrok;
            int64_t i = ok ? list[t0 + r] : list[t0];
            b->ridx[r] = i;
            memcpy(w->qb + r * d, x->qs + i * d, (size_t)d * sizeof(REAL));
            if (ok)
                memcpy(w->gb + r * dv, x->g + i * dv, (size_t)dv * sizeof(REAL));
            else
                memset(w->gb + r * dv, 0, (size_t)dv * sizeof(REAL));
            w->nlse[r] = ok ? x->nlse[i] : -INFINITY;
            w->ndl[r] = ok ? x->ndl[i] : 0;
            w->single[r] = ok ? x->single[i] : 0;
        }
        b->qb = w->qb, b->gb = w->gb, b->nlse = w->nlse, b->ndl = w->ndl, b->single = w->single;
    }
    b->rmin = b->rmax = b->ridx[0];
    for (int r = 1; r < b->nrok; r++) {
        if (b->ridx[r] < b->rmin) b->rmin = b->ridx[r];
        if (b->ridx[r] > b->rmax) b->rmax = b->ridx[r];
    }
}

/* The block's keys: key block kb's tiles (list == NULL, t0 = kb BC), or keys list[t0..]
 * gathered into w. */
static void X(cols_of)(const X(bctx) * x, X(bscratch) * w, const int64_t *list, int64_t t0,
                       int64_t total, X(blk) * b)
{
    int64_t d = x->d, dv = x->dv;
    if (!list) {
        int64_t kb = t0 / BC;
        b->kt = x->kt + kb * d * BC;
        b->vt = x->vt + kb * dv * BC;
        b->kr = x->kr + kb * BC * x->dp;
        b->ncok = (int)(x->n - t0 < BC ? x->n - t0 : BC);
        b->ccontig = 1;
        for (int c = 0; c < BC; c++)
            b->cidx[c] = t0 + c;
    } else {
        b->ncok = (int)(total - t0 < BC ? total - t0 : BC);
        b->ccontig = 0;
        for (int c = 0; c < BC; c++) {
            int ok = c < b->ncok;
            int64_t j = ok ? list[t0 + c] : list[t0], kb = j / BC, cc = j % BC;
            b->cidx[c] = j;
            for (int64_t a = 0; a < d; a++)
                w->kt[a * BC + c] = ok ? x->kt[(kb * d + a) * BC + cc] : 0;
            for (int64_t o = 0; o < dv; o++)
                w->vt[o * BC + c] = ok ? x->vt[(kb * dv + o) * BC + cc] : 0;
        }
        b->kt = w->kt, b->vt = w->vt, b->kr = NULL; /* no dQ from a gathered key block */
    }
    b->cmin = b->cmax = b->cidx[0];
    for (int c = 1; c < b->ncok; c++) {
        if (b->cidx[c] < b->cmin) b->cmin = b->cidx[c];
        if (b->cidx[c] > b->cmax) b->cmax = b->cidx[c];
    }
}

/* The query blocks [*lo, *hi) that keys cmin..cmax can meet under the mask. */
static void X(query_range)(const X(bctx) * x, int64_t cmin, int64_t cmax, int64_t *lo, int64_t *hi)
{
    int64_t i0 = 0, i1 = x->n - 1;
    if (x->causal && cmin > i0) i0 = cmin;
    if (x->window >= 0) {
        if (cmin - x->window > i0) i0 = cmin - x->window;
        if (cmax + x->window < i1) i1 = cmax + x->window;
    }
    *lo = i0 / BR;
    *hi = i1 < i0 ? *lo : i1 / BR + 1;
}

/* The key blocks [*lo, *hi) that rows rmin..rmax can meet under the mask. */
static void X(key_range)(const X(bctx) * x, int64_t rmin, int64_t rmax, int64_t *lo, int64_t *hi)
{
    int64_t j0 = 0, j1 = x->n - 1;
    if (x->causal && rmax < j1) j1 = rmax;
    if (x->window >= 0) {
        if (rmin - x->window > j0) j0 = rmin - x->window;
        if (rmax + x->window < j1) j1 = rmax + x->window;
    }
    *lo = j0 / BC;
    *hi = j1 < j0 ? *lo : j1 / BC + 1;
}

/* ---- the passes -------------------------------------------------------------------------------
 */

/* Fused pass 2 for key block kb: its dk'_j, dv_j rows (before rotating back), this thread's dQ'
 * and dW. */
static void X(pass_keys)(const X(bctx) * x, X(bscratch) * w, int64_t kb, REAL *dk, REAL *dv)
{
    int64_t d = x->d, dvd = x->dv;
    X(blk) b;
    X(cols_of)(x, w, NULL, kb * BC, x->n, &b);
    memset(w->dkt, 0, (size_t)(d * BC) * sizeof(REAL));
    memset(w->dvt, 0, (size_t)(dvd * BC) * sizeof(REAL));
    int64_t lo, hi;
    X(query_range)(x, b.cmin, b.cmax, &lo, &hi);
    for (int64_t qb = lo; qb < hi; qb++) {
        X(rows_of)(x, w, NULL, qb * BR, x->n, &b);
        if (X(block_empty)(x, &b)) continue;
        X(block)(x, w, &b, w->dq + qb * BR * x->dp, w->dkt, w->dvt);
    }
    for (int c = 0; c < b.ncok; c++) {
        for (int64_t a = 0; a < d; a++)
            dk[(kb * BC + c) * d + a] = w->dkt[a * BC + c];
        for (int64_t o = 0; o < dvd; o++)
            dv[(kb * BC + c) * dvd + o] = w->dvt[o * BC + c];
    }
}

/* Sampled: dq'_t for query rows list[t0..] (tau included, before rotating back). */
static void X(pass_query_list)(const X(bctx) * x, X(bscratch) * w, const int64_t *list, int64_t t0,
                               int64_t total, REAL *dq)
{
    int64_t d = x->d;
    X(blk) b;
    X(rows_of)(x, w, list, t0, total, &b);
    memset(w->acc, 0, (size_t)(BR * x->dp) * sizeof(REAL));
    int64_t lo, hi;
    X(key_range)(x, b.rmin, b.rmax, &lo, &hi);
    for (int64_t kb = lo; kb < hi; kb++) {
        X(cols_of)(x, w, NULL, kb * BC, x->n, &b);
        if (X(block_empty)(x, &b)) continue;
        X(block)(x, w, &b, w->acc, NULL, NULL);
    }
    for (int r = 0; r < b.nrok; r++)
        for (int64_t a = 0; a < d; a++)
            dq[(t0 + r) * d + a] = x->tau * w->acc[r * x->dp + a];
}

/* Sampled: dk'_t, dv_t for key rows list[t0..]. */
static void X(pass_key_list)(const X(bctx) * x, X(bscratch) * w, const int64_t *list, int64_t t0,
                             int64_t total, REAL *dk, REAL *dv)
{
    int64_t d = x->d, dvd = x->dv;
    X(blk) b;
    X(cols_of)(x, w, list, t0, total, &b);
    memset(w->dkt, 0, (size_t)(d * BC) * sizeof(REAL));
    memset(w->dvt, 0, (size_t)(dvd * BC) * sizeof(REAL));
    int64_t lo, hi;
    X(query_range)(x, b.cmin, b.cmax, &lo, &hi);
    for (int64_t qb = lo; qb < hi; qb++) {
        X(rows_of)(x, w, NULL, qb * BR, x->n, &b);
        if (X(block_empty)(x, &b)) continue;
        X(block)(x, w, &b, NULL, w->dkt, w->dvt);
    }
    for (int c = 0; c < b.ncok; c++) {
        for (int64_t a = 0; a < d; a++)
            dk[(t0 + c) * d + a] = w->dkt[a * BC + c];
        for (int64_t o = 0; o < dvd; o++)
            dv[(t0 + c) * dvd + o] = w->dvt[o * BC + c];
    }
}

/* ---- rotating gradients back ------------------------------------------------------------------
 */

/* g (row of position pos) <- the gradient with respect to the unrotated row, given g with
 * respect to the rotated one: the transpose of the rotation's linear map, in double. */
static void X(rotate_back)(const fr_problem *p, int64_t npairs, const int64_t *pa,
                           const int64_t *pb, const double *freq, int64_t pos, REAL *g, double *tmp)
{
    int64_t d = p->d;
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        /* forward: x W_{-pos}; back: g W_{-pos}^T */
        const double *wm = p->rot.w + (-pos + p->n - 1) * d * d;
        for (int64_t a = 0; a < d; a++) {
            double sum = 0;
            for (int64_t b = 0; b < d; b++)
                sum += (double)g[b] * wm[a * d + b];
            tmp[a] = sum;
        }
        for (int64_t a = 0; a < d; a++)
            g[a] = (REAL)tmp[a];
        return;
    }
    for (int64_t m = 0; m < npairs; m++) {
        double ang = (double)pos * freq[m], c = cos(ang), s = sin(ang);
        double ga = g[pa[m]], gb = g[pb[m]];
        g[pa[m]] = (REAL)(ga * c + gb * s);
        g[pb[m]] = (REAL)(-ga * s + gb * c);
    }
}

/* ---- driver -----------------------------------------------------------------------------------
 */

static void X(scratch_free)(X(bscratch) * w)
{
    free(w->s), free(w->dp), free(w->dkt), free(w->dvt), free(w->acc), free(w->qb), free(w->gb);
    free(w->nlse), free(w->ndl), free(w->kt), free(w->vt), free(w->kr);
}

static int X(scratch_alloc)(X(bscratch) * w, int64_t d, int64_t dv, int64_t dp)
{
    memset(w, 0, sizeof *w);
    size_t r = sizeof(REAL);
    w->s = fr__alloc_aligned((int64_t)(BR * BC * r));
    w->dp = fr__alloc_aligned((int64_t)(BR * BC * r));
    w->dkt = fr__alloc_aligned(d * BC * (int64_t)r);
    w->dvt = fr__alloc_aligned(dv * BC * (int64_t)r);
    w->acc = fr__alloc_aligned(BR * dp * (int64_t)r);
    w->qb = fr__alloc_aligned(BR * d * (int64_t)r);
    w->gb = fr__alloc_aligned(BR * dv * (int64_t)r);
    w->nlse = fr__alloc_aligned(BR * (int64_t)r);
    w->ndl = fr__alloc_aligned(BR * (int64_t)r);
    w->kt = fr__alloc_aligned(d * BC * (int64_t)r);
    w->vt = fr__alloc_aligned(dv * BC * (int64_t)r);
    w->kr = fr__alloc_aligned(BC * dp * (int64_t)r);
    return w->s && w->dp && w->dkt && w->dvt && w->acc && w->qb && w->gb && w->nlse && w->ndl &&
           w->kt && w->vt && w->kr;
}

static int64_t X(find_nonfinite)(const REAL *x, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* The argument checks every backward makes: exactly one of dout and target, the required
 * tensors present, no NaN/Inf in the inputs (naming the tensor). who prefixes the usage
 * messages. */
static int X(backward_check)(const fr_problem *p, const char *who, const REAL *q, const REAL *k,
                             const REAL *v, const REAL *dout, const REAL *target, const REAL *dq,
                             const REAL *dk, const REAL *dv, char *err, size_t errlen)
{
    if ((dout == NULL) == (target == NULL))
        return fr__err(err, errlen, FR_EUSAGE, "%s: give exactly one of dout (dL/dT) and target",
                       who);
    if (!q || !k || !v || !dq || !dk || !dv)
        return fr__err(err, errlen, FR_EUSAGE, "%s: q, k, v, dq, dk and dv are required", who);
    int64_t n = p->n, d = p->d, dvv = p->dv, at;
    const char *bad = NULL;
    if ((at = X(find_nonfinite)(q, n * d)) >= 0)
        bad = "q";
    else if ((at = X(find_nonfinite)(k, n * d)) >= 0)
        bad = "k";
    else if ((at = X(find_nonfinite)(v, n * dvv)) >= 0)
        bad = "v";
    else if ((at = X(find_nonfinite)(dout ? dout : target, n * dvv)) >= 0)
        bad = dout ? "dout" : "target";
    if (bad)
        return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value at flat index %lld", bad,
                       (long long)at);
    return FR_OK;
}

/* The query side of pass 2: tau times the rotated (or raw) queries, zero-padded to nrp rows. */
static void X(prep_queries)(const fr_problem *p, int mode, const REAL *q, int64_t nrp, REAL *qs)
{
    int64_t n = p->n, d = p->d;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t cnt = n - i0 < 256 ? n - i0 : 256;
        if (mode == X(DOT))
            ROTATE_CHUNK(p, q, i0, cnt, qs + i0 * d);
        else
            memcpy(qs + i0 * d, q + i0 * d, (size_t)(cnt * d) * sizeof(REAL));
        for (int64_t e = i0 * d; e < (i0 + cnt) * d; e++)
            qs[e] *= (REAL)p->tau;
    }
    memset(qs + n * d, 0, (size_t)((nrp - n) * d) * sizeof(REAL));
}

/* The key side: the rotated (or raw) keys as transposed tiles and as padded rows, the values as
 * transposed tiles. ks: n x d scratch. */
static void X(prep_keys)(const fr_problem *p, int mode, const REAL *k, const REAL *v, int64_t nkb,
                         int64_t dp, REAL *ks, REAL *kt, REAL *vt, REAL *kr)
{
    int64_t n = p->n, d = p->d, dv = p->dv;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t cnt = n - i0 < 256 ? n - i0 : 256;
        if (mode == X(DOT))
            ROTATE_CHUNK(p, k, i0, cnt, ks + i0 * d);
        else
            memcpy(ks + i0 * d, k + i0 * d, (size_t)(cnt * d) * sizeof(REAL));
    }
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t kb = 0; kb < nkb; kb++)
        for (int c = 0; c < BC; c++) {
            int64_t j = kb * BC + c;
            for (int64_t a = 0; a < d; a++)
                kt[(kb * d + a) * BC + c] = j < n ? ks[j * d + a] : 0;
            for (int64_t o = 0; o < dv; o++)
                vt[(kb * dv + o) * BC + c] = j < n ? v[j * dv + o] : 0;
            for (int64_t a = 0; a < dp; a++)
                kr[j * dp + a] = j < n && a < d ? ks[j * d + a] : 0;
        }
}

/* G (dout, or T - E with the loss), Delta_i = G_i . T_i and which rows keep one key, into the
 * padded arrays (lse becomes -lse; padded rows -inf). */
static double X(prep_rows)(const fr_problem *p, const REAL *tt, const REAL *dout,
                           const REAL *target, int64_t nrp, REAL *g, REAL *nlse, REAL *ndl,
                           unsigned char *single)
{
    int64_t n = p->n, dv = p->dv, w = p->window;
    double lsum = 0;
#pragma omp parallel for reduction(+ : lsum) schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < nrp; i++) {
        if (i >= n) {
            memset(g + i * dv, 0, (size_t)dv * sizeof(REAL));
            nlse[i] = -INFINITY;
            ndl[i] = 0;
            single[i] = 0;
            continue;
        }
        double delta = 0;
        for (int64_t o = 0; o < dv; o++) {
            REAL gi = target ? tt[i * dv + o] - target[i * dv + o] : dout[i * dv + o];
            g[i * dv + o] = gi;
            if (target) lsum += (double)gi * (double)gi;
            delta += (double)gi * (double)tt[i * dv + o];
        }
        nlse[i] = -nlse[i];
        ndl[i] = (REAL)-delta;
        int64_t lo = w >= 0 && w < i ? i - w : 0, hi = i;
        if (!p->causal) hi = w >= 0 && w < n - 1 - i ? i + w : n - 1;
        single[i] = lo == hi;
    }
    return 0.5 * lsum;
}

/* rows == NULL: every row (full gradients, dw allowed); else dq at query rows rows[] and dk, dv
 * at key rows rows[]. t (n x dv, may be NULL) receives T; *loss (may be NULL) the loss when
 * target is given. Pass 2 uses every thread from par_min scores (FR_EXACT_PAR_MIN_SCORES; tests
 * lower it). */
static int X(backward)(const fr_problem *p, const REAL *q, const REAL *k, const REAL *v,
                       const REAL *dout, const REAL *target, const int64_t *rows, int64_t nrows,
                       REAL *t, REAL *dq, REAL *dk, REAL *dv, REAL *dw, double *loss,
                       double par_min, fr__prog *pg, char *err, size_t errlen)
{
    int64_t n = p->n, d = p->d, dvd = p->dv;
    X(bctx) x;
    memset(&x, 0, sizeof x);
    x.n = n;
    x.d = d;
    x.dv = dvd;
    x.nd = 2 * n - 1;
    x.dp = (d + NV - 1) / NV * NV;
    x.nrp = (n + BR - 1) / BR * BR;
    x.nkb = (n + BC - 1) / BC;
    x.causal = p->causal;
    x.window = p->window < 0 ? -1 : p->window;
    x.tau = (REAL)p->tau;
    x.qraw = q;
    x.kraw = k;
    /* Same test as the forward: W_delta = W_1^delta to rounding (FR_FAMILY_ULPS). */
    x.mode = fr__rope_family(p, NULL, 0) ? X(DOT) : X(SUPPORT);

    /* One thread below the forward's threshold (FR_EXACT_PAR_MIN_SCORES): a team's start-up
     * costs more than such a problem's pairs (at n = 1024 it made the backward 9x its forward). */
    int par = (double)(rows ? nrows : n) * (double)n >= par_min;
    int nthreads = par ? omp_get_max_threads() : 1, fused = rows == NULL;
    size_t r = sizeof(REAL);
    int64_t nq = rows ? nrows : n, dwsize = x.nd * d * d, nkt = x.nkb * BC;
    fr__support sup;
    memset(&sup, 0, sizeof sup);
    REAL *qs = fr__alloc_aligned(x.nrp * d * (int64_t)r);
    REAL *g = fr__alloc_aligned(x.nrp * dvd * (int64_t)r);
    REAL *nlse = fr__alloc_aligned(x.nrp * (int64_t)r),
         *ndl = fr__alloc_aligned(x.nrp * (int64_t)r);
    unsigned char *single = malloc((size_t)x.nrp);
    REAL *kt = fr__alloc_aligned(nkt * d * (int64_t)r),
         *vt = fr__alloc_aligned(nkt * dvd * (int64_t)r);
    REAL *kr = fr__alloc_aligned(nkt * x.dp * (int64_t)r);
    /* The rotated keys' rows: kr itself when its rows are unpadded (pages touched once, not
     * twice: first touches cost this VM ~2 ms per MB). */
    REAL *ks = x.dp == d ? kr : fr__alloc_aligned(n * d * (int64_t)r);
    REAL *tt = t ? t : fr__alloc_aligned(n * dvd * (int64_t)r);
    double *pairs_f = malloc((size_t)(d / 2 + 1) * sizeof(double));
    int64_t *pairs_a = malloc((size_t)(d / 2 + 1) * sizeof(int64_t));
    int64_t *pairs_b = malloc((size_t)(d / 2 + 1) * sizeof(int64_t));
    X(bscratch) *ws = calloc((size_t)nthreads, sizeof *ws);
    REAL **dwt = calloc((size_t)nthreads, sizeof *dwt),
         **dqt = calloc((size_t)nthreads, sizeof *dqt);
    int st = qs && ks && g && nlse && ndl && single && kt && vt && kr && tt && pairs_f && pairs_a &&
                     pairs_b && ws && dwt && dqt
                 ? FR_OK
                 : FR_ENOMEM;
    for (int i = 0; !st && i < nthreads; i++)
        if (!X(scratch_alloc)(&ws[i], d, dvd, x.dp)) st = FR_ENOMEM;
    /* Per-thread accumulators: dQ' (fused pass; each thread zeroes its own, so that their
     * first touches run side by side) and dW, the first thread's being the output's own when
     * the layouts agree. */
    for (int i = 0; !st && fused && i < nthreads; i++)
        if (!(dqt[i] = fr__alloc_aligned(x.nrp * x.dp * (int64_t)r))) st = FR_ENOMEM;
    if (!st && dw) {
        memset(dw, 0, (size_t)dwsize * r);
        dwt[0] = dw;
        for (int i = 1; !st && i < nthreads; i++)
            if (!(dwt[i] = calloc((size_t)dwsize, r))) st = FR_ENOMEM;
    }
    if (st) {
        st = fr__err(err, errlen, FR_ENOMEM, "out of memory for the exact backward (n = %lld)",
                     (long long)n);
        goto done;
    }
    if (x.mode == X(SUPPORT)) {
        if ((st = fr__support_build(p, &sup, err, errlen))) goto done;
        x.sup = &sup;
    }

    /* Pass 1: T and lse for every row (dK and dV need all of them, even for sampled rows), by
     * the forward engine; nlse holds lse until prep_rows negates it. */
    /* Progress: the forward is about a third of the work (its scores are formed once more and
     * the gradient's products are twice its own). */
    fr__prog_range rg = fr__prog_narrow(pg, 0, 1.0 / 3);
    st = FORWARD_LSE(p, q, k, v, tt, nlse, pg, err, errlen);
    fr__prog_restore(pg, rg);
    if (st) goto done;
    rg = fr__prog_narrow(pg, 1.0 / 3, 1);
    double l = X(prep_rows)(p, tt, dout, target, x.nrp, g, nlse, ndl, single);
    if (target && loss) *loss = l;
    X(prep_queries)(p, x.mode, q, x.nrp, qs);
    X(prep_keys)(p, x.mode, k, v, x.nkb, x.dp, ks, kt, vt, kr);
    x.qs = qs, x.g = g, x.nlse = nlse, x.ndl = ndl, x.single = single;
    x.kt = kt, x.vt = vt, x.kr = kr;

    /* Pass 2, over the asked rows. Full gradients: one fused pass over key blocks. Sampled
     * rows: dq by listed query blocks, then dk, dv by listed key blocks. */
    int64_t nqb = (nq + BR - 1) / BR, nkb = (nq + BC - 1) / BC;
    int team = 1; /* the threads that ran (fewer than nthreads inside another team) */
#pragma omp parallel if (par)
    {
        int th = omp_get_thread_num();
        if (th == 0) team = omp_get_num_threads();
        X(bscratch) *w = &ws[th];
        w->dw = dw ? dwt[th] : NULL;
        w->dq = fused ? dqt[th] : NULL;
        if (fused) {
            memset(w->dq, 0, (size_t)(x.nrp * x.dp) * sizeof(REAL));
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < x.nkb; b++) {
                if (fr__prog_canceled(pg)) continue;
                X(pass_keys)(&x, w, b, dk, dv);
                if (th == 0) fr__prog_step(pg, (double)(b + 1) / (double)x.nkb);
            }
        } else {
            double units = (double)(nqb + nkb);
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < nqb; b++) {
                if (fr__prog_canceled(pg)) continue;
                X(pass_query_list)(&x, w, rows, b * BR, nq, dq);
                if (th == 0) fr__prog_step(pg, (double)(b + 1) / units);
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < nkb; b++) {
                if (fr__prog_canceled(pg)) continue;
                X(pass_key_list)(&x, w, rows, b * BC, nq, dk, dv);
                if (th == 0) fr__prog_step(pg, (double)(nqb + b + 1) / units);
            }
        }
    }
    fr__prog_restore(pg, rg);
    if (fr__prog_canceled(pg)) {
        st = fr__prog_err(pg, err, errlen);
        goto done;
    }
    if (fused) {
        /* dq = tau (the threads' dQ' summed), in a fixed order */
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            for (int64_t a = 0; a < d; a++) {
                REAL sum = dqt[0][i * x.dp + a];
                for (int th = 1; th < team; th++)
                    sum += dqt[th][i * x.dp + a];
                dq[i * d + a] = x.tau * sum;
            }
    }
    if (dw && nthreads > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t e = 0; e < dwsize; e++)
            for (int i = 1; i < nthreads; i++)
                dw[e] += dwt[i][e];
    }

    /* Gradients of the rotated rows back to the caller's rows. */
    if (x.mode == X(DOT) && p->rot.kind != FR_ROT_NONE) {
        int64_t np =
            p->rot.kind == FR_ROT_EXPLICIT ? 0 : fr__rope_pairs(p, pairs_a, pairs_b, pairs_f);
#pragma omp parallel if (nq >= PAR_MIN)
        {
            double tmp[d];
#pragma omp for schedule(static)
            for (int64_t tq = 0; tq < nq; tq++) {
                int64_t pos = rows ? rows[tq] : tq;
                X(rotate_back)(p, np, pairs_a, pairs_b, pairs_f, pos, dq + tq * d, tmp);
                X(rotate_back)(p, np, pairs_a, pairs_b, pairs_f, pos, dk + tq * d, tmp);
            }
        }
    }

done:
    for (int i = 0; ws && i < nthreads; i++)
        X(scratch_free)(&ws[i]);
    for (int i = 1; dwt && i < nthreads; i++)
        free(dwt[i]);
    for (int i = 0; dqt && i < nthreads; i++)
        free(dqt[i]);
    free(ws), free(dwt), free(dqt);
    if (ks != kr) free(ks);
    free(qs), free(g), free(nlse), free(ndl), free(single), free(kt), free(vt), free(kr);
    if (tt != t) free(tt);
    free(pairs_f), free(pairs_a), free(pairs_b);
    fr__support_free(&sup);
    return st;
}

#undef BR
#undef BC
#undef PW
#undef PAR_MIN
