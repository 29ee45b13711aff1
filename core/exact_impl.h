/* exact_impl.h - the exact forward engine (ALGORITHM.md 8), written once for both precisions.
 *
 * exact.c includes it for double and exact_f32.c for float; the includer defines
 *   REAL            double or float: inputs, tiles, products, exps and sums all in this type
 *   RV, NV          the vector type of the micro-kernels (64 bytes) and its lane count
 *   EXPR            the exp of REAL (libmvec's vector variant through omp simd)
 *   SHIFT_MAX       the widest score range [-M, M] for which exp(s - M) can neither overflow nor
 *                   leave the normal range (double: 600, float: 80)
 *   X(name)         the name of this instance's copy of a function
 *   ROTATE_CHUNK(p, x, i0, cnt, out)  rows i0..i0+cnt-1 of x (n x d, REAL) rotated by their
 *                   own positions into out (cnt x d, REAL): the RoPE family only
 *
 * How a row block of BR queries meets the keys, BC at a time (one key block):
 *   - scores: on the RoPE family the rows are rotated once (O(n d)), so a block of scores is a
 *     plain product Q K^T, formed in RT x (2 NV) register tiles (16 accumulators: enough
 *     independent chains to keep both FMA ports busy through their latency); clipped RoPE is
 *     three such products (inside the clip, and beyond it on either side where W is the
 *     constant R_{+-C}); any other W goes through its support S, O(|S|) per score;
 *   - softmax: every score is bounded a priori, |s_ij| <= M_i = tau |q_i| max_j |k_j| (the
 *     rotations are orthogonal). When 2 M_i <= SHIFT_MAX for every row of the block, the
 *     weights are exp(s_ij - M_i) directly: no running maximum, no rescaling of what has been
 *     accumulated, and the shift is folded into the score tile's initial value. The weights
 *     then lie in [e^-SHIFT_MAX, 1]: normal numbers, exact to the exp's own rounding, and the
 *     normalisation by their sum cancels the shift. Otherwise (huge scores, or a general W
 *     with no such bound) the block runs the online softmax with a running maximum;
 *   - P V: the weights of the block, still in L1, times the block's values, in register tiles
 *     of the accumulator;
 *   - masks: key blocks that the mask removes entirely are never visited, and only blocks
 *     crossing a mask boundary pay for the per-entry mask.
 *
 * Summation structure (for a rounding bound of this engine): row i's denominator and each
 * entry of its accumulator are sums over the kept keys j in ascending key blocks of BC keys
 * (FR_EXACT_BC): within a block, the weights of the NV lanes are summed in NV separate vector
 * partial sums over BC / NV keys each (the accumulator: one FMA chain per output entry over the
 * BC keys), then added to the row's running total, one rounding per block. A score is one
 * FMA chain over the d coordinates (tau folded into the rotated query), minus M_i as its
 * chain's starting value. */

#define BR FR_EXACT_BR /* rows per block (multiple of RT) */
#define BC FR_EXACT_BC /* keys per block (multiple of PW) */
#define RT 8           /* rows of a score register tile */
#define PW (2 * NV)    /* keys of a score register tile: two vectors */
/* O(n d) preparation below this many entries runs on one thread: a team's barrier costs more
 * than the work, especially when the cores are shared. */
#define PAR_MIN (1 << 16)

/* How a score block is formed. */
enum { MODE_DOT, MODE_CLIP, MODE_SUPPORT };

typedef struct {
    int64_t n, d, dv, dvp; /* dvp: dv rounded up to NV */
    int64_t nb;            /* key blocks */
    int causal;
    int64_t window, clip;
    int mode;
    /* Query side, nrows padded to a multiple of BR, d values per row, tau folded in.
     * DOT: q[0] = rotated. CLIP: q[0] rotated, q[1] = Q R_C, q[2] = Q R_{-C}. SUPPORT: q[0] raw. */
    REAL *q[3];
    /* Per query row: the score bound M_i (DOT and CLIP), or -1 when there is none. */
    REAL *shift;
    /* Key side, per block a d x BC transposed tile (zero-padded past n). kt[0] is rotated
     * (DOT, CLIP) or raw (SUPPORT); kt[1] raw (CLIP). */
    REAL *kt[2];
    REAL *v; /* nb * BC rows of dvp values, zero-padded */
    const fr__support *sup;
} X(ctx);

typedef struct {
    REAL *s[3]; /* BR x BC score blocks (3 for the clip selection) */
    REAL *acc;  /* BR x dvp */
    REAL m[BR], l[BR], mshift[BR];
} X(scratch);

/* s[BR][BC] = q[BR][d] kt[d][BC] - shift[r], in RT x PW register tiles. The key panel (d x PW)
 * stays in L1 while the row tiles pass over it. */
static void X(scores_dot)(const REAL *restrict q, const REAL *restrict kt, int64_t d,
                          const REAL *restrict shift, REAL *restrict s)
{
    for (int c = 0; c < BC; c += PW)
        for (int r = 0; r < BR; r += RT) {
            const REAL *a = q + r * d;
            RV x[RT][2];
#pragma GCC unroll 8
            for (int i = 0; i < RT; i++) {
                x[i][0] = (RV){0} - shift[r + i];
                x[i][1] = x[i][0];
            }
            for (int64_t t = 0; t < d; t++) {
                RV b0 = *(const RV *)(kt + t * BC + c), b1 = *(const RV *)(kt + t * BC + c + NV);
#pragma GCC unroll 8
                for (int i = 0; i < RT; i++) {
                    REAL ai = a[i * d + t];
                    x[i][0] += ai * b0;
                    x[i][1] += ai * b1;
                }
            }
#pragma GCC unroll 8
            for (int i = 0; i < RT; i++) {
                *(RV *)(s + (r + i) * BC + c) = x[i][0];
                *(RV *)(s + (r + i) * BC + c + NV) = x[i][1];
            }
        }
}

/* Explicit W through its support: s_ij = sum_s q_{i,a_s} w_s(j - i) k_{j,b_s}; the kernel
 * table is contiguous in j, so the inner loop vectorises. Columns past n stay 0 (masked later). */
static void X(scores_support)(const X(ctx) * x, const REAL *q, const REAL *kt, const int64_t *ridx,
                              int64_t j0, int64_t cnt, REAL *s)
{
    const fr__support *sp = x->sup;
    int64_t n = x->n, d = x->d, nd = 2 * n - 1;
    for (int r = 0; r < BR; r++) {
        REAL *sr = s + r * BC;
        memset(sr, 0, BC * sizeof *sr);
        const REAL *qr = q + r * d;
        const int64_t off = j0 - ridx[r] + n - 1; /* table index of column 0 */
        for (int64_t e = 0; e < sp->ns; e++) {
            REAL coef = qr[sp->a[e]];
            if (coef == 0) continue;
            const double *w = sp->w + e * nd + off;
            const REAL *k = kt + sp->b[e] * BC;
#pragma omp simd
            for (int64_t c = 0; c < cnt; c++)
                sr[c] += coef * (REAL)w[c] * k[c];
        }
    }
}

static int X(block_needs_mask)(const X(ctx) * x, int64_t imin, int64_t imax, int64_t j0)
{
    int64_t j1 = j0 + BC - 1;
    if (j1 >= x->n) return 1;
    if (x->causal && j1 > imin) return 1;
    if (x->window >= 0 && (j0 < imax - x->window || j1 > imin + x->window)) return 1;
    return 0;
}

static void X(apply_mask)(const X(ctx) * x, const int64_t *ridx, int64_t j0, REAL *s)
{
    for (int r = 0; r < BR; r++) {
        int64_t i = ridx[r];
        REAL *sr = s + r * BC;
        for (int c = 0; c < BC; c++) {
            int64_t j = j0 + c;
            if (j >= x->n || (x->causal && j > i) ||
                (x->window >= 0 && (j - i > x->window || i - j > x->window)))
                sr[c] = -INFINITY;
        }
    }
}

/* The clip selection for a block that straddles |delta| = C. */
static void X(clip_select)(const X(ctx) * x, const int64_t *ridx, int64_t j0, REAL *s,
                           const REAL *splus, const REAL *sminus)
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

/* Scores of row block qoff (rows ridx[0..BR)) against key block kb into w->s[0], minus
 * sh[r] (zeros for the online softmax). */
static void X(block_scores)(const X(ctx) * x, int64_t qoff, const int64_t *ridx, int64_t imin,
                            int64_t imax, int64_t kb, const REAL *sh, X(scratch) * w)
{
    int64_t d = x->d, j0 = kb * BC;
    const REAL *kt0 = x->kt[0] + kb * d * BC;
    if (x->mode == MODE_DOT) {
        X(scores_dot)(x->q[0] + qoff * d, kt0, d, sh, w->s[0]);
    } else if (x->mode == MODE_SUPPORT) {
        int64_t cnt = x->n - j0 < BC ? x->n - j0 : BC;
        X(scores_support)(x, x->q[0] + qoff * d, kt0, ridx, j0, cnt, w->s[0]);
    } else {
        const REAL *kt1 = x->kt[1] + kb * d * BC;
        int64_t dmin = j0 - imax, dmax = j0 + BC - 1 - imin, cl = x->clip;
        if (dmin > cl) {
            X(scores_dot)(x->q[1] + qoff * d, kt1, d, sh, w->s[0]);
        } else if (dmax < -cl) {
            X(scores_dot)(x->q[2] + qoff * d, kt1, d, sh, w->s[0]);
        } else {
            X(scores_dot)(x->q[0] + qoff * d, kt0, d, sh, w->s[0]);
            if (dmax > cl) X(scores_dot)(x->q[1] + qoff * d, kt1, d, sh, w->s[1]);
            if (dmin < -cl) X(scores_dot)(x->q[2] + qoff * d, kt1, d, sh, w->s[2]);
            X(clip_select)(x, ridx, j0, w->s[0], w->s[1], w->s[2]);
        }
    }
}

/* One key block of the online softmax for one row: sr[0..BC) holds the scores, *m and *l the
 * row's running maximum and sum. On return sr holds exp(score - new maximum), or zeros when the
 * mask removed every key of the block; the result is the factor by which what the row has
 * accumulated so far must be scaled (1: nothing to do; 0 on the row's first block). */
static REAL X(softmax_online)(REAL *restrict sr, REAL *m, REAL *l)
{
    REAL mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int c = 0; c < BC; c++)
        mx = sr[c] > mx ? sr[c] : mx;
    if (mx == -INFINITY) {
        memset(sr, 0, BC * sizeof *sr);
        return 1;
    }
    REAL mnew = mx > *m ? mx : *m;
    REAL alpha = EXPR(*m - mnew), sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < BC; c++) {
        REAL e = EXPR(sr[c] - mnew);
        sr[c] = e;
        sum += e;
    }
    *l = *l * alpha + sum;
    *m = mnew;
    return alpha;
}

/* The shifted block: s already holds s_ij - M_i (or -inf where masked); the weights in place,
 * their sums added to l. */
static void X(softmax_shifted)(REAL *restrict s, REAL *restrict l)
{
    for (int r = 0; r < BR; r++) {
        REAL *sr = s + r * BC, sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < BC; c++) {
            REAL e = EXPR(sr[c]);
            sr[c] = e;
            sum += e;
        }
        l[r] += sum;
    }
}

/* acc[BR][dvp] += P[BR][BC] V[BC][dvp] in TR x VT register tiles over lanes o0..o0+VT*NV. */
#define PV_TILE(TR, VT)                                                                            \
    static inline void X(pv_##TR##x##VT)(const REAL *restrict p, const REAL *restrict vb,          \
                                         int64_t dvp, int64_t o0, REAL *restrict acc)              \
    {                                                                                              \
        for (int r = 0; r < BR; r += TR) {                                                         \
            RV a[TR][VT];                                                                          \
            _Pragma("GCC unroll 8") for (int i = 0; i < TR; i++)                                   \
                _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) a[i][u] =                     \
                    *(RV *)(acc + (r + i) * dvp + o0 + u * NV);                                    \
            for (int c = 0; c < BC; c++) {                                                         \
                RV b[VT];                                                                          \
                _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) b[u] =                        \
                    *(const RV *)(vb + c * dvp + o0 + u * NV);                                     \
                _Pragma("GCC unroll 8") for (int i = 0; i < TR; i++)                               \
                {                                                                                  \
                    REAL pi = p[(r + i) * BC + c];                                                 \
                    _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) a[i][u] += pi * b[u];     \
                }                                                                                  \
            }                                                                                      \
            _Pragma("GCC unroll 8") for (int i = 0; i < TR; i++)                                   \
                    _Pragma("GCC unroll 4") for (int u = 0; u < VT; u++) *                         \
                (RV *)(acc + (r + i) * dvp + o0 + u * NV) = a[i][u];                               \
        }                                                                                          \
    }
PV_TILE(4, 4)
PV_TILE(8, 2)
PV_TILE(8, 1)
#undef PV_TILE

static void X(pv)(const REAL *p, const REAL *vb, int64_t dvp, REAL *acc)
{
    int64_t nv = dvp / NV, o = 0;
    for (; o + 4 <= nv; o += 4)
        X(pv_4x4)(p, vb, dvp, o * NV, acc);
    for (; o + 2 <= nv; o += 2)
        X(pv_8x2)(p, vb, dvp, o * NV, acc);
    for (; o < nv; o++)
        X(pv_8x1)(p, vb, dvp, o * NV, acc);
}

static void X(row_block)(const X(ctx) * x, int64_t rb, const int64_t *rows, int64_t nrows,
                         REAL *out, REAL *lse, X(scratch) * w)
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
    /* The a-priori shift applies when every row of the block has one small enough. */
    int shifted = x->shift != NULL;
    for (int r = 0; r < BR && shifted; r++) {
        REAL m = x->shift[r0 + r];
        if (!(m >= 0 && 2 * m <= SHIFT_MAX)) shifted = 0;
    }
    for (int r = 0; r < BR; r++) {
        w->mshift[r] = shifted ? x->shift[r0 + r] : 0;
        w->m[r] = -INFINITY;
        w->l[r] = 0;
    }
    memset(w->acc, 0, (size_t)(BR * x->dvp) * sizeof *w->acc);
    for (int64_t kb = jlo / BC; kb <= jhi / BC; kb++) {
        X(block_scores)(x, r0, ridx, imin, imax, kb, w->mshift, w);
        if (X(block_needs_mask)(x, imin, imax, kb * BC)) X(apply_mask)(x, ridx, kb * BC, w->s[0]);
        if (shifted) {
            X(softmax_shifted)(w->s[0], w->l);
        } else {
            for (int r = 0; r < BR; r++) {
                REAL alpha = X(softmax_online)(w->s[0] + r * BC, &w->m[r], &w->l[r]);
                if (alpha != 1) {
                    REAL *ar = w->acc + r * x->dvp;
                    for (int64_t o = 0; o < x->dvp; o++)
                        ar[o] *= alpha;
                }
            }
        }
        X(pv)(w->s[0], x->v + kb * BC * x->dvp, x->dvp, w->acc);
    }
    for (int64_t r = 0; r < nr; r++) {
        /* A row that keeps one key (n = 1, window 0, the first row under a causal mask) is that
         * key's value, exactly: the shifted weight divided by itself could round off by an ulp,
         * and gradients that subtract T from V there (Delta = G . T) must see zero. */
        int64_t i = ridx[r], lo = i, hi = i;
        if (!x->causal) hi = x->window >= 0 && x->window < x->n - 1 - i ? i + x->window : x->n - 1;
        lo = x->window >= 0 && x->window < i ? i - x->window : 0;
        /* Online: l >= exp(0) = 1, the diagonal j = i is never masked and the maximum itself
         * contributes exp(0). Shifted: l >= exp(s_ii - M_i) >= e^-SHIFT_MAX, a normal number. */
        if (lse) lse[r0 + r] = (shifted ? w->mshift[r] : w->m[r]) + log((double)w->l[r]);
        if (lo == hi) {
            for (int64_t o = 0; o < x->dv; o++)
                out[(r0 + r) * x->dv + o] = x->v[i * x->dvp + o];
            continue;
        }
        REAL inv = 1 / w->l[r];
        for (int64_t o = 0; o < x->dv; o++)
            out[(r0 + r) * x->dv + o] = w->acc[r * x->dvp + o] * inv;
    }
}

/* All n rows rotated by their positions, in parallel chunks. */
static void X(rotate_all)(const fr_problem *p, const REAL *x, REAL *dst)
{
    int64_t n = p->n, chunk = 256;
#pragma omp parallel for schedule(static) if (n * p->d >= PAR_MIN)
    for (int64_t i0 = 0; i0 < n; i0 += chunk)
        ROTATE_CHUNK(p, x, i0, n - i0 < chunk ? n - i0 : chunk, dst + i0 * p->d);
}

/* Rows of x (the listed ones, or all when rows is NULL) into dst, scaled by tau, row t of dst
 * holding rows[t]. rotate: 0 copy, 1 per-position rotation, 2 times the constant matrix wc (row
 * vector times matrix, in double); -1 (internal) already rotated in place. */
static void X(prep_queries)(const fr_problem *p, const REAL *x, const int64_t *rows, int64_t nrows,
                            int rotate, const double *wc, REAL *dst)
{
    int64_t d = p->d;
    if (rotate == 1 && !rows) {
        /* all rows: in chunks, which share the rotation's per-pair set-up */
        X(rotate_all)(p, x, dst);
        rotate = -1;
    }
#pragma omp parallel for schedule(static) if (nrows * d >= PAR_MIN)
    for (int64_t t = 0; t < nrows; t++) {
        int64_t i = rows ? rows[t] : t;
        REAL *o = dst + t * d;
        if (rotate == 1) {
            ROTATE_CHUNK(p, x, i, 1, o);
        } else if (rotate == 2) {
            for (int64_t b = 0; b < d; b++) {
                double sum = 0;
                for (int64_t a = 0; a < d; a++)
                    sum += (double)x[i * d + a] * wc[a * d + b];
                o[b] = (REAL)sum;
            }
        } else if (rotate == 0) {
            memcpy(o, x + i * d, (size_t)d * sizeof *o);
        }
        for (int64_t b = 0; b < d; b++)
            o[b] *= (REAL)p->tau;
    }
}

/* Keys (n x d) into transposed d x BC tiles, zero past n. */
static void X(tile_keys)(const REAL *k, int64_t n, int64_t d, int64_t nb, REAL *kt)
{
#pragma omp parallel for schedule(static) if (n * d >= PAR_MIN)
    for (int64_t kb = 0; kb < nb; kb++) {
        int64_t j0 = kb * BC, cnt = n - j0 < BC ? n - j0 : BC;
        REAL *tile = kt + kb * d * BC;
        for (int64_t t = 0; t < d; t++)
            for (int64_t c = 0; c < BC; c++)
                tile[t * BC + c] = c < cnt ? k[(j0 + c) * d + t] : 0;
    }
}

/* Largest Euclidean norm of the rows of x (nrows x d), in double (the bound must hold for the
 * rounded scores too; see exact_shifts). */
static double X(max_row_norm)(const REAL *x, int64_t nrows, int64_t d)
{
    double best = 0;
#pragma omp parallel for reduction(max : best) schedule(static) if (nrows * d >= PAR_MIN)
    for (int64_t i = 0; i < nrows; i++) {
        double s = 0;
        for (int64_t a = 0; a < d; a++)
            s += (double)x[i * d + a] * (double)x[i * d + a];
        best = s > best ? s : best;
    }
    return sqrt(best);
}

/* M_i = |q~_i| max_j |k~_j| (tau is in q~), the bound the shifted softmax subtracts. A computed
 * score may exceed it by its rounding, a few units in the last place of M_i: exp(s - M_i) is then
 * a hair above 1, which is harmless (the weights are only required not to overflow). Rows of
 * the clipped RoPE's three products have the same norms (every W is orthogonal), so one bound
 * covers them. */
static void X(exact_shifts)(const REAL *q, int64_t nrp, int64_t d, double kmax, REAL *shift)
{
#pragma omp parallel for schedule(static) if (nrp * d >= PAR_MIN)
    for (int64_t i = 0; i < nrp; i++) {
        double s = 0;
        for (int64_t a = 0; a < d; a++)
            s += (double)q[i * d + a] * (double)q[i * d + a];
        double m = sqrt(s) * kmax * (1 + 1e-6);
        shift[i] = 2 * m <= SHIFT_MAX ? (REAL)m : (REAL)-1;
    }
}

static int64_t X(find_nonfinite)(const REAL *x, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* The engine: see the top of this file. Arguments as fr_exact_rows; lse (nrows, or NULL)
 * receives each row's log-sum-exp of its scores, for the backward; pg (may be NULL) hears of
 * the row blocks done (from thread 0), and once it is canceled the blocks left are skipped. */
static int X(exact_rows)(const fr_problem *p, const REAL *q, const REAL *k, const REAL *v,
                         const int64_t *rows, int64_t nrows, REAL *out, REAL *lse, fr__prog *pg,
                         char *err, size_t errlen)
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
    if ((at = X(find_nonfinite)(q, n * d)) >= 0)
        bad = "q";
    else if ((at = X(find_nonfinite)(k, n * d)) >= 0)
        bad = "k";
    else if ((at = X(find_nonfinite)(v, n * dv)) >= 0)
        bad = "v";
    if (bad)
        return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value at flat index %lld", bad,
                       (long long)at);

    X(ctx) x;
    memset(&x, 0, sizeof x);
    x.n = n;
    x.d = d;
    x.dv = dv;
    x.dvp = (dv + NV - 1) / NV * NV;
    x.nb = (n + BC - 1) / BC;
    x.causal = p->causal;
    x.window = p->window < 0 ? -1 : p->window;
    /* W_delta = W_1^delta to rounding (FR_FAMILY_ULPS), usually known by the plan already. */
    int family = fr__rope_family(p, NULL, 0);
    x.mode = family ? MODE_DOT : p->rot.kind == FR_ROT_CLIP ? MODE_CLIP : MODE_SUPPORT;
    x.clip = p->rot.clip;

    int64_t nrp = (nrows + BR - 1) / BR * BR, nq = x.mode == MODE_CLIP ? 3 : 1;
    int64_t nkt = x.mode == MODE_CLIP ? 2 : 1;
    int nthreads = omp_get_max_threads();
    fr__support sup;
    memset(&sup, 0, sizeof sup);
    REAL *krot = NULL;
    double *wc = NULL;
    X(scratch) *ws = calloc((size_t)nthreads, sizeof *ws);
    st = ws ? FR_OK : FR_ENOMEM;
    for (int64_t t = 0; !st && t < nq; t++)
        if (!(x.q[t] = fr__alloc_aligned(nrp * d * (int64_t)sizeof(REAL)))) st = FR_ENOMEM;
    for (int64_t t = 0; !st && t < nkt; t++)
        if (!(x.kt[t] = fr__alloc_aligned(x.nb * BC * d * (int64_t)sizeof(REAL)))) st = FR_ENOMEM;
    if (!st && !(x.v = fr__alloc_aligned(x.nb * BC * x.dvp * (int64_t)sizeof(REAL))))
        st = FR_ENOMEM;
    if (!st && x.mode != MODE_SUPPORT &&
        (!(krot = fr__alloc_aligned(n * d * (int64_t)sizeof(REAL))) ||
         !(x.shift = fr__alloc_aligned(nrp * (int64_t)sizeof(REAL)))))
        st = FR_ENOMEM;
    if (!st && x.mode == MODE_CLIP && !(wc = fr__alloc_doubles(d * d))) st = FR_ENOMEM;
    for (int t = 0; !st && t < nthreads; t++) {
        for (int e = 0; e < (x.mode == MODE_CLIP ? 3 : 1) && !st; e++)
            if (!(ws[t].s[e] = fr__alloc_aligned(BR * BC * (int64_t)sizeof(REAL)))) st = FR_ENOMEM;
        if (!st && !(ws[t].acc = fr__alloc_aligned(BR * x.dvp * (int64_t)sizeof(REAL))))
            st = FR_ENOMEM;
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
        X(prep_queries)(p, q, rows, nrows, 0, NULL, x.q[0]);
    } else {
        X(prep_queries)(p, q, rows, nrows, 1, NULL, x.q[0]);
        if (x.mode == MODE_CLIP) {
            fr_rotation_matrix(p, x.clip, wc);
            X(prep_queries)(p, q, rows, nrows, 2, wc, x.q[1]);
            fr_rotation_matrix(p, -x.clip, wc);
            X(prep_queries)(p, q, rows, nrows, 2, wc, x.q[2]);
        }
    }
    for (int64_t t = 0; t < nq; t++)
        for (int64_t r = nrows; r < nrp; r++)
            memcpy(x.q[t] + r * d, x.q[t] + (nrows - 1) * d, (size_t)d * sizeof(REAL));

    /* Key side. */
    if (x.mode == MODE_SUPPORT) {
        X(tile_keys)(k, n, d, x.nb, x.kt[0]);
    } else {
        X(rotate_all)(p, k, krot);
        X(tile_keys)(krot, n, d, x.nb, x.kt[0]);
        if (x.mode == MODE_CLIP) X(tile_keys)(k, n, d, x.nb, x.kt[1]);
        X(exact_shifts)(x.q[0], nrp, d, X(max_row_norm)(krot, n, d), x.shift);
    }
    free(krot);
    krot = NULL;
    for (int64_t j = 0; j < x.nb * BC; j++)
        for (int64_t o = 0; o < x.dvp; o++)
            x.v[j * x.dvp + o] = j < n && o < dv ? v[j * dv + o] : 0;

    int64_t nrb = nrp / BR;
#pragma omp parallel if (nrb > 1 && (double)nrows * (double)n >= FR_EXACT_PAR_MIN_SCORES)
    {
        X(scratch) *w = &ws[omp_get_thread_num()];
        int th = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
        for (int64_t rb = 0; rb < nrb; rb++) {
            if (fr__prog_canceled(pg)) continue;
            X(row_block)(&x, rb, rows, nrows, out, lse, w);
            if (th == 0) fr__prog_step(pg, (double)(rb + 1) / (double)nrb);
        }
    }
    if (fr__prog_canceled(pg)) st = fr__prog_err(pg, err, errlen);

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
    free(x.shift);
    free(krot);
    free(wc);
    fr__support_free(&sup);
    return st;
}

#undef BR
#undef BC
#undef RT
#undef PW
#undef PAR_MIN
