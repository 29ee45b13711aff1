/* polyrope_impl.h - the polyrope plan's internals, shared by the forward (core/polyrope.c), its
 * backward (core/polyrope_grad.c) and the sweep both run (core/polyrope_sweep.c): the plan, and
 * the kernels that must inline where they are used (the feature blocks and the register-tiled
 * products), then the sweep's interface. Not for any other file. */
#ifndef FR_POLYROPE_IMPL_H
#define FR_POLYROPE_IMPL_H

#include "internal.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VL 8      /* doubles per vector */
#define CC_MAX 12 /* columns per kernel call: 2 x 12 accumulators fit in 32 zmm registers */
#else
#define VL 4
#define CC_MAX 6 /* 2 x 6 accumulators in 16 ymm registers */
#endif
typedef double vd __attribute__((vector_size(VL * sizeof(double))));
#define TW (2 * VL) /* tile width: features per Psi^T X tile, rows per Phi M tile */
#define JB 16       /* key rows per Psi block */
#define ALIGN 64

/* The monomials of degree k are x_a times the monomials of degree k-1 whose first (smallest)
 * coordinate is >= a, for a = 0..d-1; in graded order these are contiguous suffixes of the
 * previous degree, so the whole feature vector is built by scaled contiguous copies. */
typedef struct {
    int64_t dst, src, len;
    int a;
} seg;

/* Work (n r (dv+1)) from which an execution uses every thread (fr__polyrope_threads); in the
 * plan, so that tests can lower it. */
#define FR_POLYROPE_PAR_UNITS ((double)((int64_t)1 << 27))

struct fr__polyrope {
    fr_problem p;
    int g, d, nc;   /* degree, head dimension, dv + 1 */
    int64_t r, rp;  /* features, and padded to a multiple of TW */
    int64_t bn;     /* query/key block for the masked sweep */
    double *coef_q; /* r: c_k tau^k multinomial(beta) */
    double *pcoef;  /* g + 1: c_k tau^k, for P evaluated directly on Q'.K' */
    seg *segs;
    int nsegs;
    double par_units; /* FR_POLYROPE_PAR_UNITS */
    /* Standard RoPE's rotation of the rows: pair m is (pa[m], pb[m]), and position i turns it by
     * cos, sin = rot[(i np + m) 2 + 0, 1]: the same for every execution, so computed once. Past
     * 2^20 (position, pair) entries rot is NULL and position i = h 2^tb + l turns pair m by the
     * angle sum of rhi[(h np + m) 2] and rlo[(l np + m) 2]: O(np sqrt(n)) memory, and a few
     * multiplications per row instead of a sin and a cos (the rows are rotated again each time a
     * sweep needs them: nothing of size n is stored). */
    int64_t np, *pa, *pb;
    double *freq, *rot, *rhi, *rlo;
    int tb;
};

/* cos and sin of position i's angle for pair m (standard RoPE). */
static inline void rope_cs(const fr__polyrope *pl, int64_t i, int64_t m, double *c, double *s)
{
    if (pl->rot) {
        *c = pl->rot[(i * pl->np + m) * 2], *s = pl->rot[(i * pl->np + m) * 2 + 1];
        return;
    }
    const double *h = pl->rhi + ((i >> pl->tb) * pl->np + m) * 2;
    const double *l = pl->rlo + ((i & (((int64_t)1 << pl->tb) - 1)) * pl->np + m) * 2;
    *c = h[0] * l[0] - h[1] * l[1];
    *s = h[1] * l[0] + h[0] * l[1];
}

/* ---- feature blocks ---------------------------------------------------------------------- */

/* psi (row-major, stride rp) for cnt rows of x (stride d). Padding columns stay zero. */
static inline void psi_rows(const fr__polyrope *pl, const double *x, int cnt, double *psi)
{
    for (int j = 0; j < cnt; j++) {
        double *o = psi + j * pl->rp;
        const double *xj = x + (int64_t)j * pl->d;
        o[0] = 1;
        for (int s = 0; s < pl->nsegs; s++) {
            const seg sg = pl->segs[s];
            const double xa = xj[sg.a];
            for (int64_t t = 0; t < sg.len; t++)
                o[sg.dst + t] = xa * o[sg.src + t];
        }
    }
}

/* phit (feature-major: r x TW) for cnt <= TW rows of x; rows past cnt are zero features but
 * the constant, and their outputs are discarded. */
static inline void phi_tile(const fr__polyrope *pl, const double *x, int cnt, double *xt,
                            double *phit)
{
    for (int a = 0; a < pl->d; a++)
        for (int l = 0; l < TW; l++)
            xt[a * TW + l] = l < cnt ? x[(int64_t)l * pl->d + a] : 0;
    vd one = {0};
    one += 1;
    vd *o = (vd *)phit;
    o[0] = one, o[1] = one;
    for (int s = 0; s < pl->nsegs; s++) {
        const seg sg = pl->segs[s];
        const vd *xa = (const vd *)(xt + sg.a * TW);
        vd *dst = (vd *)(phit + sg.dst * TW);
        const vd *src = (const vd *)(phit + sg.src * TW);
        for (int64_t t = 0; t < sg.len; t++) {
            dst[2 * t] = xa[0] * src[2 * t];
            dst[2 * t + 1] = xa[1] * src[2 * t + 1];
        }
    }
}

/* ---- the two products ---------------------------------------------------------------------- */

/* mt[c][f] += sign * sum_j psi[j][f] x[j][c0 + c] for cc columns (mt: column-major, stride
 * rp). cc is a constant at every call site, so acc lives in registers. */
static inline __attribute__((always_inline)) void psi_t_x_tile(int cc, const double *psi,
                                                               int64_t rp, int jb, const double *x,
                                                               int nc, int c0, double *mt,
                                                               double sign)
{
    for (int64_t f0 = 0; f0 < rp; f0 += TW) {
        vd acc[CC_MAX][2];
#pragma GCC unroll 12
        for (int c = 0; c < cc; c++)
            acc[c][0] = acc[c][1] = (vd){0};
        for (int j = 0; j < jb; j++) {
            const vd p0 = *(const vd *)(psi + j * rp + f0);
            const vd p1 = *(const vd *)(psi + j * rp + f0 + VL);
            const double *xj = x + (int64_t)j * nc + c0;
#pragma GCC unroll 12
            for (int c = 0; c < cc; c++) {
                acc[c][0] += xj[c] * p0;
                acc[c][1] += xj[c] * p1;
            }
        }
#pragma GCC unroll 12
        for (int c = 0; c < cc; c++) {
            vd *m = (vd *)(mt + (c0 + c) * rp + f0);
            m[0] += sign * acc[c][0];
            m[1] += sign * acc[c][1];
        }
    }
}

/* yt[c][l] = sum_f phit[f][l] ms[f][c0 + c] for the TW rows of a tile (yt: nc x TW). */
static inline __attribute__((always_inline)) void
phi_m_tile(int cc, const double *phit, int64_t r, const double *ms, int nc, int c0, double *yt)
{
    vd acc[CC_MAX][2];
#pragma GCC unroll 12
    for (int c = 0; c < cc; c++)
        acc[c][0] = acc[c][1] = (vd){0};
    for (int64_t f = 0; f < r; f++) {
        const vd p0 = *(const vd *)(phit + f * TW);
        const vd p1 = *(const vd *)(phit + f * TW + VL);
        const double *m = ms + f * nc + c0;
#pragma GCC unroll 12
        for (int c = 0; c < cc; c++) {
            acc[c][0] += m[c] * p0;
            acc[c][1] += m[c] * p1;
        }
    }
#pragma GCC unroll 12
    for (int c = 0; c < cc; c++) {
        *(vd *)(yt + (c0 + c) * TW) = acc[c][0];
        *(vd *)(yt + (c0 + c) * TW + VL) = acc[c][1];
    }
}

/* Columns go in near-equal chunks of at most CC_MAX, each through a kernel specialised for its
 * width (a switch on a small constant). */
#define CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12)

static inline int chunk_width(int nc)
{
    int nch = (nc + CC_MAX - 1) / CC_MAX;
    return (nc + nch - 1) / nch;
}

static inline void psi_t_x(const double *psi, int64_t rp, int jb, const double *x, int nc,
                           double *mt, double sign)
{
    int w = chunk_width(nc);
    for (int c0 = 0; c0 < nc; c0 += w) {
        int cc = nc - c0 < w ? nc - c0 : w;
        switch (cc) {
#define X1(N)                                                                                      \
    case N: psi_t_x_tile(N <= CC_MAX ? N : 1, psi, rp, jb, x, nc, c0, mt, sign); break;
            CASES(X1)
#undef X1
        }
    }
}

static inline void phi_m(const double *phit, int64_t r, const double *ms, int nc, double *yt)
{
    int w = chunk_width(nc);
    for (int c0 = 0; c0 < nc; c0 += w) {
        int cc = nc - c0 < w ? nc - c0 : w;
        switch (cc) {
#define X2(N)                                                                                      \
    case N: phi_m_tile(N <= CC_MAX ? N : 1, phit, r, ms, nc, c0, yt); break;
            CASES(X2)
#undef X2
        }
    }
}

/* ---- the sweep (core/polyrope_sweep.c) ------------------------------------------------------ */

/* Column tiles: rows a sweep rotates (and pairs with their values) at a time. */
#define CT 256

/* A thread's blocks: the forward's, and (grad) the backward's gradient tiles. */
typedef struct {
    double *psi;  /* JB x rp */
    double *phit; /* r x TW */
    double *xt;   /* d x TW */
    double *mt;   /* nc x rp: the running key sum, column-major */
    double *ms;   /* r x nc: coef_q times mt, row-major */
    double *yt;   /* nc x TW */
    double *acc;  /* bn x nc: unnormalised outputs of a query block */
    double *rt;   /* bn x d: the block's rows, rotated */
    double *ct;   /* CT x d: a tile of columns, rotated */
    double *cv;   /* CT x nc: their values */
    double *ob;   /* grad: rp x TW, dL/dfeature for a tile, then its reverse sweep */
    double *wt;   /* grad: nc x TW, the weights contracted with M (or N) for a tile */
    double *xbar; /* grad: d x TW */
    double *rv;   /* grad: bn x nc, the block's row values */
} work;

/* The columns of a sweep, made a tile at a time (nothing of size n is kept): cnt <= CT rows from
 * j0 of the column side, rotated (cols, cnt x d), and their values (vals, cnt x nc). */
typedef void (*fr__rope_fill)(const void *ctx, int64_t j0, int64_t cnt, double *cols, double *vals);

/* Masks (causal, window) keep, for row i, the columns in an interval [lo(i), hi(i)] whose ends
 * never decrease with i; rows and columns go in blocks of bn. */
typedef struct {
    int64_t n, bn, nkb;
    int64_t w; /* window, or -1 */
    int causal;
    /* The transposed mask (the backward's key side: key i is kept by the queries j >= i), so
     * that one sweep serves prefix and suffix sums alike. 0 in the forward. */
    int anti;
} mask;

static inline int64_t lo_of(const mask *m, int64_t i)
{
    if (m->causal && m->anti) return i;
    return m->w >= 0 && i > m->w ? i - m->w : 0;
}
static inline int64_t hi_of(const mask *m, int64_t i)
{
    if (m->causal && !m->anti) return i;
    if (m->w >= 0 && i + m->w < m->n - 1) return i + m->w;
    return m->n - 1;
}

/* The columns that rows i0..i1-1 see outside the summed column blocks kl..kh-1: below them from
 * the first row's lower end, and above them up to the last row's upper end. Shared by the
 * forward's and the backward's direct evaluation near the edges of the mask. */
static inline void edge_ranges(const mask *m, int64_t i0, int64_t i1, int64_t kl, int64_t kh,
                               int64_t ranges[2][2])
{
    int64_t E = hi_of(m, i1 - 1) + 1;
    int64_t a0 = lo_of(m, i0), a1 = kl * m->bn < E ? kl * m->bn : E;
    int64_t b0 = kh * m->bn < m->n ? kh * m->bn : m->n;
    if (b0 < a1) b0 = a1;
    ranges[0][0] = a0, ranges[0][1] = a1, ranges[1][0] = b0, ranges[1][1] = E;
}

/* p's mask in m; 0 when nothing is masked (no causal mask, no window narrower than n). */
int fr__polyrope_mask(const fr__polyrope *pl, mask *m);

/* What a sweep does with one block of rows [i0, i1): ms is the scaled sum over the columns that
 * every row of the block keeps (NULL: none), column blocks [kl, kh) under mask m (NULL: every
 * column). Returns the block's first row with a non-positive denominator, or -1. */
typedef int64_t (*fr__rope_block)(void *ctx, work *w, const double *ms, const mask *m, int64_t i0,
                                  int64_t i1, int64_t kl, int64_t kh);

/* One sweep over the rows of p: for every block, the sum over the columns (made by fill) that
 * the whole block keeps, then fn. m == NULL: every row keeps every column (one sum); else sliding
 * sums (blocks in reverse order for m->anti, where the sums are suffix sums). Threads take
 * balanced chunks of blocks; small problems run on the calling thread alone. grad: the
 * workspaces have the gradient tiles. Returns the first bad row fn reported, or -1; *oom is set
 * when a workspace could not be allocated. pg (may be NULL) hears of the blocks done; once it is
 * canceled the blocks left are skipped (the caller asks fr__prog_canceled). */
int64_t fr__polyrope_sweep(const fr__polyrope *pl, const mask *m, fr__rope_fill fill,
                           const void *fctx, int grad, fr__rope_block fn, void *ctx, fr__prog *pg,
                           int *oom);

/* Rows i0..i0+cnt-1 of x (n x d) turned each by its own position, into out (cnt x d). */
void fr__polyrope_rotate(const fr__polyrope *pl, const double *x, int64_t i0, int64_t cnt,
                         double *out);

/* Rows j0..j0+cnt-1 of [V, 1] (V: n x dv) into x (cnt x nc). */
void fr__polyrope_ones(const fr__polyrope *pl, const double *v, int64_t j0, int64_t cnt, double *x);

/* The column ranges rows [i0, i1) evaluate directly (edge_ranges), a tile of at most CT columns
 * at a time: fn(ctx, w, j0, j1) with the rotated columns j0..j1-1 and their values in w->ct,
 * w->cv (made by fill). Each row meets its columns in increasing order, as in one pass. */
void fr__polyrope_edge_tiles(const mask *m, work *w, fr__rope_fill fill, const void *fctx,
                             int64_t i0, int64_t i1, int64_t kl, int64_t kh,
                             void (*fn)(void *ctx, work *w, int64_t j0, int64_t j1), void *ctx);

/* acc[i - i0] += sum over the columns outside [kl, kh) that row i keeps of P(q'_i . k'_j) x_j:
 * the sliding sum's complement, evaluated directly (the same polynomial). qr: the rows [i0, i1)
 * rotated ((i1 - i0) x d); the columns and their values come from fill. */
void fr__polyrope_direct(const fr__polyrope *pl, const mask *m, work *w, fr__rope_fill fill,
                         const void *fctx, const double *qr, int64_t i0, int64_t i1, int64_t kl,
                         int64_t kh, double *acc);

#endif
