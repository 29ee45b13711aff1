/* polyrope_sweep.c - the sweep the polyrope forward and backward both run (ALGORITHM.md 6):
 * blocks of rows, each against the sum Psi^T X over the columns it keeps, built once when
 * nothing is masked, or slid along the rows under a causal mask or a window.
 *
 * Masks keep, for row i, the columns in an interval whose ends never decrease with i. Rows go in
 * blocks of bn; the column blocks that every row of a block keeps are summed (a sliding sum:
 * blocks enter at the top, leave at the bottom), the few columns near the interval ends are the
 * caller's to evaluate directly (fr__polyrope_direct). Threads take contiguous chunks of row
 * blocks; each chunk starts its sliding sum from scratch, and the chunk boundaries are chosen so
 * that this start-up cost is balanced across threads. The backward's key side runs the
 * transposed mask, where the sums are suffix sums: its blocks go from the last to the first.
 *
 * A problem small enough for one thread runs without an OpenMP region at all: in this VM every
 * region, even of one thread, ends in futex calls (five per execution, a tenth of a small
 * problem's time in a batch). */
#include "polyrope_impl.h"

/* ---- workspaces --------------------------------------------------------------------------- */

static void *alloc_aligned(size_t bytes)
{
    size_t sz = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    void *ptr = aligned_alloc(ALIGN, sz ? sz : ALIGN);
    if (ptr) memset(ptr, 0, sz ? sz : ALIGN);
    return ptr;
}

static void work_free(work *w)
{
    free(w->psi), free(w->phit), free(w->xt), free(w->mt), free(w->ms), free(w->yt), free(w->acc);
    free(w->rt), free(w->ct), free(w->cv);
    free(w->ob), free(w->wt), free(w->xbar), free(w->rv);
}

static int work_alloc(const fr__polyrope *pl, work *w, int grad)
{
    memset(w, 0, sizeof *w);
    size_t D = sizeof(double);
    w->psi = alloc_aligned(JB * pl->rp * D);
    w->phit = alloc_aligned(pl->rp * TW * D);
    w->xt = alloc_aligned((size_t)pl->d * TW * D);
    w->mt = alloc_aligned(pl->nc * pl->rp * D);
    w->ms = alloc_aligned(pl->rp * pl->nc * D);
    w->yt = alloc_aligned((size_t)pl->nc * TW * D);
    w->acc = alloc_aligned(pl->bn * pl->nc * D);
    w->rt = alloc_aligned(pl->bn * pl->d * D);
    w->ct = alloc_aligned((size_t)CT * pl->d * D);
    w->cv = alloc_aligned((size_t)CT * pl->nc * D);
    int ok =
        w->psi && w->phit && w->xt && w->mt && w->ms && w->yt && w->acc && w->rt && w->ct && w->cv;
    if (ok && grad) {
        w->ob = alloc_aligned(pl->rp * TW * D);
        w->wt = alloc_aligned((size_t)pl->nc * TW * D);
        w->xbar = alloc_aligned((size_t)pl->d * TW * D);
        w->rv = alloc_aligned(pl->bn * pl->nc * D);
        ok = w->ob && w->wt && w->xbar && w->rv;
    }
    if (!ok) work_free(w);
    return ok;
}

typedef struct {
    const fr__polyrope *pl;
    const mask *m;
    fr__rope_fill fill;
    const void *fctx;
    fr__rope_block fn;
    void *ctx;
    fr__prog *pg;
} sweep;

/* mt += sign * Psi(cols[j0..j1))^T vals[j0..j1), the columns made a tile at a time (CT is a
 * multiple of JB: the blocks of JB from j0 are the same). */
static void add_cols(const sweep *s, work *w, int64_t j0, int64_t j1, double sign)
{
    const fr__polyrope *pl = s->pl;
    for (int64_t t0 = j0; t0 < j1; t0 += CT) {
        int64_t tc = j1 - t0 < CT ? j1 - t0 : CT;
        s->fill(s->fctx, t0, tc, w->ct, w->cv);
        for (int64_t j = 0; j < tc; j += JB) {
            int jb = (int)(tc - j < JB ? tc - j : JB);
            psi_rows(pl, w->ct + j * pl->d, jb, w->psi);
            psi_t_x(w->psi, pl->rp, jb, w->cv + j * pl->nc, pl->nc, w->mt, sign);
        }
    }
}

/* ms = coef_q (.) mt, row-major: the sum as the row side's products read it. */
static void scale(const fr__polyrope *pl, const double *mt, double *ms)
{
    for (int64_t f = 0; f < pl->r; f++)
        for (int c = 0; c < pl->nc; c++)
            ms[f * pl->nc + c] = pl->coef_q[f] * mt[c * pl->rp + f];
}

static void note_bad(int64_t b, int64_t *bad)
{
    if (b < 0) return;
#pragma omp critical(polyrope_bad)
    if (*bad < 0 || b < *bad) *bad = b;
}

/* ---- threads --------------------------------------------------------------------------------- */

/* Threads for a problem of this size. In a fresh process (every CLI run) the first parallel
 * region costs 5-7 ms to start the team in this project's VM and the new thread's first-touch
 * faults ~10 ms more: measured with `fastrope run --method polyrope`, d = 8, degree 4, one thread
 * wins up to n = 16K (73M units: 26 ms against 30 ms) and two from 64K (292M: 45 ms against
 * 57 ms). A program that executes a plan many times pays the start once; it loses a little.
 * The threshold lives in the plan (FR_POLYROPE_PAR_UNITS) so that tests can lower it. */
int fr__polyrope_threads(const fr__polyrope *pl)
{
    double units = (double)pl->p.n * (double)pl->r * pl->nc;
    return units < pl->par_units ? 1 : omp_get_max_threads();
}

/* ---- masks ------------------------------------------------------------------------------------
 */

int fr__polyrope_mask(const fr__polyrope *pl, mask *m)
{
    int64_t n = pl->p.n, w = pl->p.window;
    if (w >= n - 1) w = -1; /* a window as wide as the sequence masks nothing */
    *m = (mask){n, pl->bn, (n + pl->bn - 1) / pl->bn, w, pl->p.causal, 0};
    return pl->p.causal || w >= 0;
}

/* The column blocks [*kl, *kh) that every row of block qb keeps. */
static void full_range(const mask *m, int64_t qb, int64_t *kl, int64_t *kh)
{
    int64_t i0 = qb * m->bn, i1 = i0 + m->bn < m->n ? i0 + m->bn : m->n;
    int64_t lo = lo_of(m, i1 - 1), hi = hi_of(m, i0);
    *kl = (lo + m->bn - 1) / m->bn;
    *kh = hi + 1 >= m->n ? m->nkb : (hi + 1) / m->bn;
    if (*kh < *kl) *kh = *kl;
}

/* Column blocks the sliding sum adds or removes when going from block qb-1 to qb. */
static int64_t step_cost(const mask *m, int64_t qb)
{
    int64_t l0, h0, l1, h1;
    full_range(m, qb - 1, &l0, &h0);
    full_range(m, qb, &l1, &h1);
    if (l1 >= h0) return h1 - l1;
    return (h1 - h0) + (l1 - l0);
}

static int64_t start_cost(const mask *m, int64_t qb)
{
    int64_t l, h;
    full_range(m, qb, &l, &h);
    return h - l;
}

/* Greedy split of the row blocks into chunks of cost <= target, from the first block up (or,
 * reverse, from the last down, a chunk paying the start-up cost of its last block); returns
 * the number of chunks (bounds[] receives each chunk's first block, or reverse its end, when
 * not NULL). A row block costs about one column block. */
static int64_t split(const mask *m, int64_t nqb, int reverse, int64_t target, int64_t *bounds,
                     int64_t maxc)
{
    int64_t nch = 0, cost = 0;
    for (int64_t t = 0; t < nqb; t++) {
        int64_t qb = reverse ? nqb - 1 - t : t;
        int64_t c = t ? step_cost(m, reverse ? qb + 1 : qb) + 1 : 0;
        if (t == 0 || cost + c > target) {
            if (nch >= maxc) return maxc + 1;
            if (bounds) bounds[nch] = reverse ? qb + 1 : qb;
            nch++;
            cost = start_cost(m, qb) + 1;
        } else {
            cost += c;
        }
    }
    return nch;
}

/* The row blocks in at most T chunks (starts[0..nch], starts[nch] = nqb) with the smallest
 * maximal cost; returns nch. */
static int64_t balanced_chunks(const mask *m, int64_t nqb, int reverse, int T, int64_t *starts)
{
    int64_t lo = 1, hi = 1;
    for (int64_t qb = 0; qb < nqb; qb++)
        hi += (qb ? step_cost(m, qb) : 0) + start_cost(m, qb) + 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (split(m, nqb, reverse, mid, NULL, T) <= T)
            hi = mid;
        else
            lo = mid + 1;
    }
    int64_t nch = split(m, nqb, reverse, lo, starts, T);
    if (!reverse) {
        starts[nch] = nqb;
        return nch;
    }
    int64_t ends[T + 1]; /* chunks found from the top: their ends, last chunk first */
    memcpy(ends, starts, (size_t)nch * sizeof *ends);
    ends[nch] = 0;
    for (int64_t t = 0; t <= nch; t++)
        starts[t] = ends[nch - t];
    return nch;
}

/* ---- the sweeps --------------------------------------------------------------------------------
 */

/* The row blocks of chunks [starts[ch], starts[ch + 1]) under the mask, with one workspace. */
static int64_t masked_chunk(const sweep *s, work *w, const int64_t *starts, int64_t ch)
{
    const fr__polyrope *pl = s->pl;
    const mask *m = s->m;
    int64_t n = m->n, bad = -1, cl = 0, chh = 0; /* column blocks [cl, chh) summed in w->mt */
#define BLK(b) ((b)*m->bn < n ? (b)*m->bn : n)
    int th = omp_get_thread_num();
    for (int64_t t = starts[ch]; t < starts[ch + 1]; t++) {
        /* every chunk is about as long: thread 0's part of its own is the whole's */
        if (th == 0) fr__prog_step(s->pg, (double)(t - starts[ch]) / (starts[ch + 1] - starts[ch]));
        if (fr__prog_canceled(s->pg)) break;
        int64_t qb = m->anti ? starts[ch + 1] - 1 - (t - starts[ch]) : t, kl, kh;
        full_range(m, qb, &kl, &kh);
        if (t == starts[ch] || kl >= chh || kh <= cl) {
            memset(w->mt, 0, (size_t)pl->nc * pl->rp * sizeof(double));
            cl = chh = kl;
        }
        if (kh > chh) add_cols(s, w, BLK(chh), BLK(kh), 1);
        if (kh < chh) add_cols(s, w, BLK(kh), BLK(chh), -1);
        if (kl < cl) add_cols(s, w, BLK(kl), BLK(cl), 1);
        if (kl > cl) add_cols(s, w, BLK(cl), BLK(kl), -1);
        cl = kl, chh = kh;
        int64_t i0 = qb * m->bn, i1 = i0 + m->bn < n ? i0 + m->bn : n;
        if (kh > kl) scale(pl, w->mt, w->ms);
        int64_t b = s->fn(s->ctx, w, kh > kl ? w->ms : NULL, m, i0, i1, kl, kh);
        if (b >= 0 && (bad < 0 || b < bad)) bad = b;
    }
#undef BLK
    return bad;
}

static int64_t masked(const sweep *s, int grad, int *oom)
{
    const fr__polyrope *pl = s->pl;
    int64_t nqb = (s->m->n + s->m->bn - 1) / s->m->bn, bad = -1;
    int T = fr__polyrope_threads(pl);
    if (T > nqb) T = (int)nqb;
    int64_t *starts = malloc((size_t)(T + 1) * sizeof *starts);
    if (!starts) {
        *oom = 1;
        return -1;
    }
    int64_t nch = balanced_chunks(s->m, nqb, s->m->anti, T, starts);
    if (nch == 1) {
        work w;
        if (!work_alloc(pl, &w, grad)) {
            *oom = 1;
        } else {
            bad = masked_chunk(s, &w, starts, 0);
            work_free(&w);
        }
    } else {
        /* one balanced chunk per thread, chunk 0 on thread 0: the thread that reports */
#pragma omp parallel for schedule(static, 1) num_threads(T)
        for (int64_t ch = 0; ch < nch; ch++) {
            work w;
            if (!work_alloc(pl, &w, grad)) {
#pragma omp atomic write
                *oom = 1;
                continue;
            }
            note_bad(masked_chunk(s, &w, starts, ch), &bad);
            work_free(&w);
        }
    }
    free(starts);
    return bad;
}

/* The column blocks a thread sums when nothing is masked, and the row blocks it then runs. */
#define KB (JB * 8)

static int64_t unmasked_rows(const sweep *s, work *w, const double *ms, int64_t b)
{
    int64_t n = s->pl->p.n, bn = s->pl->bn, i0 = b * bn, i1 = i0 + bn < n ? i0 + bn : n;
    return s->fn(s->ctx, w, ms, NULL, i0, i1, 0, 0);
}

/* No mask: one sum over every column for every row, from per-thread partial sums. */
static int64_t unmasked(const sweep *s, int grad, int *oom)
{
    const fr__polyrope *pl = s->pl;
    int64_t n = pl->p.n, nkb = (n + KB - 1) / KB, nb = (n + pl->bn - 1) / pl->bn, bad = -1;
    int T = fr__polyrope_threads(pl);
    size_t msz = (size_t)pl->nc * pl->rp;
    double *ms = malloc(msz * sizeof(double));
    if (!ms) {
        *oom = 1;
        return -1;
    }
    if (T == 1) {
        work w;
        if (!work_alloc(pl, &w, grad)) {
            *oom = 1;
        } else {
            add_cols(s, &w, 0, n, 1);
            scale(pl, w.mt, ms);
            for (int64_t b = 0; b < nb && !fr__prog_step(s->pg, (double)b / nb); b++)
                note_bad(unmasked_rows(s, &w, ms, b), &bad);
            work_free(&w);
        }
        free(ms);
        return bad;
    }
    double *mt = calloc(msz, sizeof(double));
    if (!mt) {
        free(ms);
        *oom = 1;
        return -1;
    }
#pragma omp parallel num_threads(T)
    {
        work w;
        int ok = work_alloc(pl, &w, grad);
        if (!ok) {
#pragma omp atomic write
            *oom = 1;
        }
        /* thread 0 runs the first of T equal static parts: its progress is the whole's */
        int th = omp_get_thread_num();
        double kpart = (double)((nkb + T - 1) / T), rpart = (double)((nb + T - 1) / T);
#pragma omp for schedule(static)
        for (int64_t kb = 0; kb < nkb; kb++) {
            if (!ok || fr__prog_canceled(s->pg)) continue;
            add_cols(s, &w, kb * KB, kb * KB + KB < n ? kb * KB + KB : n, 1);
            if (th == 0) fr__prog_step(s->pg, 0.5 * (double)(kb + 1) / kpart);
        }
#pragma omp critical(polyrope_reduce)
        if (ok)
            for (size_t t = 0; t < msz; t++)
                mt[t] += w.mt[t];
#pragma omp barrier
#pragma omp single
        scale(pl, mt, ms);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nb; b++) {
            if (!ok || fr__prog_canceled(s->pg)) continue;
            note_bad(unmasked_rows(s, &w, ms, b), &bad);
            if (th == 0) fr__prog_step(s->pg, 0.5 + 0.5 * (double)(b + 1) / rpart);
        }
        if (ok) work_free(&w);
    }
    free(mt), free(ms);
    return bad;
}

int64_t fr__polyrope_sweep(const fr__polyrope *pl, const mask *m, fr__rope_fill fill,
                           const void *fctx, int grad, fr__rope_block fn, void *ctx, fr__prog *pg,
                           int *oom)
{
    sweep s = {pl, m, fill, fctx, fn, ctx, pg};
    return m ? masked(&s, grad, oom) : unmasked(&s, grad, oom);
}

/* ---- inputs and the direct part ----------------------------------------------------------------
 */

void fr__polyrope_rotate(const fr__polyrope *pl, const double *x, int64_t i0, int64_t cnt,
                         double *out)
{
    const fr_problem *p = &pl->p;
    if (p->rot.kind != FR_ROT_ROPE) {
        fr__rotate_rows(p, x, i0, cnt, out);
        return;
    }
    int64_t d = p->d, np = pl->np;
    const int64_t *pa = pl->pa, *pb = pl->pb;
    memcpy(out, x + i0 * d, (size_t)(cnt * d) * sizeof(double));
    for (int64_t i = i0; i < i0 + cnt; i++) {
        double *o = out + (i - i0) * d;
        for (int64_t m = 0; m < np; m++) {
            double c, sn;
            rope_cs(pl, i, m, &c, &sn);
            double xa = o[pa[m]], xb = o[pb[m]];
            o[pa[m]] = xa * c - xb * sn, o[pb[m]] = xa * sn + xb * c;
        }
    }
}

void fr__polyrope_ones(const fr__polyrope *pl, const double *v, int64_t j0, int64_t cnt, double *x)
{
    int64_t nc = pl->nc, dv = nc - 1;
    for (int64_t j = 0; j < cnt; j++) {
        for (int64_t c = 0; c < dv; c++)
            x[j * nc + c] = v[(j0 + j) * dv + c];
        x[j * nc + dv] = 1;
    }
}

void fr__polyrope_edge_tiles(const mask *m, work *w, fr__rope_fill fill, const void *fctx,
                             int64_t i0, int64_t i1, int64_t kl, int64_t kh,
                             void (*fn)(void *ctx, work *w, int64_t j0, int64_t j1), void *ctx)
{
    int64_t ranges[2][2];
    edge_ranges(m, i0, i1, kl, kh, ranges);
    for (int rg = 0; rg < 2; rg++)
        for (int64_t j0 = ranges[rg][0]; j0 < ranges[rg][1]; j0 += CT) {
            int64_t j1 = ranges[rg][1] - j0 < CT ? ranges[rg][1] : j0 + CT;
            fill(fctx, j0, j1 - j0, w->ct, w->cv);
            fn(ctx, w, j0, j1);
        }
}

typedef struct {
    const fr__polyrope *pl;
    const mask *m;
    const double *qr;
    int64_t i0, i1;
    double *acc;
} direct_ctx;

/* The rows of the block against the columns j0..j1-1 they keep. */
static void direct_tile(void *ctx, work *w, int64_t j0, int64_t j1)
{
    const direct_ctx *dc = ctx;
    const fr__polyrope *pl = dc->pl;
    int d = pl->d, nc = pl->nc, g = pl->g;
    for (int64_t i = dc->i0; i < dc->i1; i++) {
        const double *qi = dc->qr + (i - dc->i0) * d;
        double *ai = dc->acc + (i - dc->i0) * nc;
        int64_t lo = lo_of(dc->m, i), hi = hi_of(dc->m, i);
        int64_t ja = j0 > lo ? j0 : lo, jb = j1 < hi + 1 ? j1 : hi + 1;
        for (int64_t j = ja; j < jb; j++) {
            const double *kj = w->ct + (j - j0) * d;
            double s = 0;
            for (int a = 0; a < d; a++)
                s += qi[a] * kj[a];
            double pv = pl->pcoef[g];
            for (int t = g - 1; t >= 0; t--)
                pv = pv * s + pl->pcoef[t];
            const double *xj = w->cv + (j - j0) * nc;
            for (int c = 0; c < nc; c++)
                ai[c] += pv * xj[c];
        }
    }
}

void fr__polyrope_direct(const fr__polyrope *pl, const mask *m, work *w, fr__rope_fill fill,
                         const void *fctx, const double *qr, int64_t i0, int64_t i1, int64_t kl,
                         int64_t kh, double *acc)
{
    direct_ctx dc = {pl, m, qr, i0, i1, acc};
    fr__polyrope_edge_tiles(m, w, fill, fctx, i0, i1, kl, kh, direct_tile, &dc);
}
