/* polyrope_impl.h - the polyrope plan's internals, shared by the forward (core/polyrope.c) and
 * its backward (core/polyrope_grad.c): the plan, the feature blocks, the two register-tiled
 * products, the per-thread workspace and the masked sweep's interval arithmetic. Every function
 * is static inline so that both files keep their kernels inlined. Not for any other file. */
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

struct fr__polyrope {
    fr_problem p;
    int g, d, nc;   /* degree, head dimension, dv + 1 */
    int64_t r, rp;  /* features, and padded to a multiple of TW */
    int64_t bn;     /* query/key block for the masked sweep */
    double *coef_q; /* r: c_k tau^k multinomial(beta) */
    double *pcoef;  /* g + 1: c_k tau^k, for P evaluated directly on Q'.K' */
    seg *segs;
    int nsegs;
    double par_units; /* work (n r (dv+1)) from which to use every thread: see threads_for */
    /* Standard RoPE's rotation of the rows: pair m is (pa[m], pb[m]), and position i turns it by
     * cos, sin = rot[(i np + m) 2 + 0, 1]: the same for every execution, so computed once (NULL
     * past the size where computing them costs less than storing them). */
    int64_t np, *pa, *pb;
    double *freq, *rot;
};

static inline void *alloc_aligned(size_t bytes)
{
    size_t sz = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    void *ptr = aligned_alloc(ALIGN, sz ? sz : ALIGN);
    if (ptr) memset(ptr, 0, sz ? sz : ALIGN);
    return ptr;
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

/* ---- per-thread workspace ------------------------------------------------------------------ */

typedef struct {
    double *psi;  /* JB x rp */
    double *phit; /* r x TW */
    double *xt;   /* d x TW */
    double *mt;   /* nc x rp: the running key sum, column-major */
    double *ms;   /* r x nc: coef_q times mt, row-major */
    double *yt;   /* nc x TW */
    double *acc;  /* bn x nc: unnormalised outputs of a query block */
} work;

static inline void work_free(work *w)
{
    free(w->psi), free(w->phit), free(w->xt), free(w->mt), free(w->ms), free(w->yt), free(w->acc);
}

static inline int work_alloc(const fr__polyrope *pl, work *w)
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
    if (w->psi && w->phit && w->xt && w->mt && w->ms && w->yt && w->acc) return 1;
    work_free(w);
    return 0;
}

/* mt += sign * Psi(kr[j0..j1))^T x[j0..j1) */
static inline void add_keys(const fr__polyrope *pl, work *w, const double *kr, const double *x,
                            int64_t j0, int64_t j1, double sign)
{
    for (int64_t j = j0; j < j1; j += JB) {
        int jb = (int)(j1 - j < JB ? j1 - j : JB);
        psi_rows(pl, kr + j * pl->d, jb, w->psi);
        psi_t_x(w->psi, pl->rp, jb, x + j * pl->nc, pl->nc, w->mt, sign);
    }
}

static inline void scale_m(const fr__polyrope *pl, work *w)
{
    for (int64_t f = 0; f < pl->r; f++)
        for (int c = 0; c < pl->nc; c++)
            w->ms[f * pl->nc + c] = pl->coef_q[f] * w->mt[c * pl->rp + f];
}

/* acc[i - i0][c] = (Phi(qr[i]) ms)[c] for i in [i0, i1) */
static inline void phi_rows(const fr__polyrope *pl, work *w, const double *qr, int64_t i0,
                            int64_t i1)
{
    for (int64_t i = i0; i < i1; i += TW) {
        int cnt = (int)(i1 - i < TW ? i1 - i : TW);
        phi_tile(pl, qr + i * pl->d, cnt, w->xt, w->phit);
        phi_m(w->phit, pl->r, w->ms, pl->nc, w->yt);
        for (int l = 0; l < cnt; l++)
            for (int c = 0; c < pl->nc; c++)
                w->acc[(i - i0 + l) * pl->nc + c] = w->yt[c * TW + l];
    }
}

/* Normalise rows [i0, i1) of acc into out; a non-positive denominator (the polynomial went
 * negative on these scores) is reported, not divided by. Returns the first bad row or -1. */
static inline int64_t finish_rows(const fr__polyrope *pl, const double *acc, int64_t i0, int64_t i1,
                                  double *out)
{
    int dv = pl->nc - 1;
    for (int64_t i = i0; i < i1; i++) {
        const double *a = acc + (i - i0) * pl->nc;
        double den = a[dv];
        if (!(den > 0)) return i;
        double inv = 1 / den;
        for (int c = 0; c < dv; c++)
            out[i * dv + c] = a[c] * inv;
    }
    return -1;
}

/* Threads for a problem of this size. In a fresh process (every CLI run) the first parallel
 * region costs 5-7 ms to start the team in this project's VM and the new thread's first-touch
 * faults ~10 ms more: measured with `fastrope run --method polyrope`, d = 8, degree 4, one thread
 * wins up to n = 16K (73M units: 26 ms against 30 ms) and two from 64K (292M: 45 ms against
 * 57 ms). A program that executes a plan many times pays the start once; it loses a little.
 * The threshold lives in the plan (FR_POLYROPE_PAR_UNITS) so that tests can lower it. */
#define FR_POLYROPE_PAR_UNITS ((double)((int64_t)1 << 27))
static inline int threads_for(const fr__polyrope *pl, int64_t n)
{
    double units = (double)n * (double)pl->r * pl->nc;
    return units < pl->par_units ? 1 : omp_get_max_threads();
}

/* ---- inputs ---------------------------------------------------------------------------- */

/* The rotated rows qr = R_i q_i, kr = R_j k_j (n x d) and x = [V, 1] (n x nc). 0 when out of
 * memory. */
static inline int prepare_rows(const fr__polyrope *pl, const double *q, const double *k,
                               const double *v, double *qr, double *kr, double *x)
{
    const fr_problem *p = &pl->p;
    int64_t n = p->n, d = p->d, dv = p->dv, nc = pl->nc, np = pl->np;
    const int64_t *pa = pl->pa, *pb = pl->pb;
    const int64_t RB = 4096;
#pragma omp parallel for schedule(static) if (n > 2 * RB)
    for (int64_t i0 = 0; i0 < n; i0 += RB) {
        int64_t cnt = n - i0 < RB ? n - i0 : RB;
        if (p->rot.kind == FR_ROT_ROPE) {
            /* One sin/cos per (position, pair) for both Q and K: with positions up to n the
             * arguments are large and each call is slow, so sharing it halves the rotation. */
            memcpy(qr + i0 * d, q + i0 * d, (size_t)(cnt * d) * sizeof(double));
            memcpy(kr + i0 * d, k + i0 * d, (size_t)(cnt * d) * sizeof(double));
            for (int64_t i = i0; i < i0 + cnt; i++) {
                double *qi = qr + i * d, *ki = kr + i * d;
                for (int64_t m = 0; m < np; m++) {
                    double c, sn;
                    if (pl->rot) {
                        c = pl->rot[(i * np + m) * 2], sn = pl->rot[(i * np + m) * 2 + 1];
                    } else {
                        double ang = (double)i * pl->freq[m];
                        c = cos(ang), sn = sin(ang);
                    }
                    double xa = qi[pa[m]], xb = qi[pb[m]];
                    qi[pa[m]] = xa * c - xb * sn, qi[pb[m]] = xa * sn + xb * c;
                    xa = ki[pa[m]], xb = ki[pb[m]];
                    ki[pa[m]] = xa * c - xb * sn, ki[pb[m]] = xa * sn + xb * c;
                }
            }
        } else {
            fr__rotate_rows(p, q, i0, cnt, qr + i0 * d);
            fr__rotate_rows(p, k, i0, cnt, kr + i0 * d);
        }
        for (int64_t j = i0; j < i0 + cnt; j++) {
            for (int64_t c = 0; c < dv; c++)
                x[j * nc + c] = v[j * dv + c];
            x[j * nc + dv] = 1;
        }
    }
    return 1;
}

/* ---- the masked sweep ------------------------------------------------------------------------ */

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

/* The key blocks [*kl, *kh) that every query of block qb keeps. */
static inline void full_range(const mask *m, int64_t qb, int64_t *kl, int64_t *kh)
{
    int64_t i0 = qb * m->bn, i1 = i0 + m->bn < m->n ? i0 + m->bn : m->n;
    int64_t lo = lo_of(m, i1 - 1), hi = hi_of(m, i0);
    *kl = (lo + m->bn - 1) / m->bn;
    *kh = hi + 1 >= m->n ? m->nkb : (hi + 1) / m->bn;
    if (*kh < *kl) *kh = *kl;
}

/* Key blocks the sliding sum adds or removes when going from block qb-1 to qb. */
static inline int64_t step_cost(const mask *m, int64_t qb)
{
    int64_t l0, h0, l1, h1;
    full_range(m, qb - 1, &l0, &h0);
    full_range(m, qb, &l1, &h1);
    if (l1 >= h0) return h1 - l1;
    return (h1 - h0) + (l1 - l0);
}

static inline int64_t start_cost(const mask *m, int64_t qb)
{
    int64_t l, h;
    full_range(m, qb, &l, &h);
    return h - l;
}

/* Greedy split of the query blocks into chunks of cost <= target; returns the number of chunks
 * (starts[] receives them when not NULL). A query block costs about one key block. */
static inline int64_t split(const mask *m, int64_t nqb, int64_t target, int64_t *starts,
                            int64_t maxc)
{
    int64_t nch = 0, cost = 0;
    for (int64_t qb = 0; qb < nqb; qb++) {
        int64_t c = qb ? step_cost(m, qb) + 1 : 0;
        if (qb == 0 || cost + c > target) {
            if (nch >= maxc) return maxc + 1;
            if (starts) starts[nch] = qb;
            nch++;
            cost = start_cost(m, qb) + 1;
        } else {
            cost += c;
        }
    }
    return nch;
}

/* Split the nqb query blocks into at most T chunks (starts[0..nch], starts[nch] = nqb) with the
 * smallest maximal cost; returns nch. */
static inline int64_t balanced_chunks(const mask *m, int64_t nqb, int T, int64_t *starts)
{
    int64_t lo = 1, hi = 1;
    for (int64_t qb = 0; qb < nqb; qb++)
        hi += (qb ? step_cost(m, qb) : start_cost(m, 0)) + 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (split(m, nqb, mid, NULL, T) <= T)
            hi = mid;
        else
            lo = mid + 1;
    }
    int64_t nch = split(m, nqb, lo, starts, T);
    starts[nch] = nqb;
    return nch;
}

/* The keys that rows i0..i1-1 see outside the summed key blocks kl..kh-1: below them from the
 * first row's lower end, and above them up to the last row's upper end. Shared by the forward's
 * and the backward's direct evaluation near the edges of the mask. */
static inline void edge_ranges(const mask *m, int64_t i0, int64_t i1, int64_t kl, int64_t kh,
                               int64_t ranges[2][2])
{
    int64_t E = hi_of(m, i1 - 1) + 1;
    int64_t a0 = lo_of(m, i0), a1 = kl * m->bn < E ? kl * m->bn : E;
    int64_t b0 = kh * m->bn < m->n ? kh * m->bn : m->n;
    if (b0 < a1) b0 = a1;
    ranges[0][0] = a0, ranges[0][1] = a1, ranges[1][0] = b0, ranges[1][1] = E;
}

static inline void direct_part(const fr__polyrope *pl, const mask *m, const double *qr,
                               const double *kr, const double *x, int64_t i0, int64_t i1,
                               int64_t kl, int64_t kh, double *acc)
{
    int d = pl->d, nc = pl->nc, g = pl->g;
    int64_t ranges[2][2];
    edge_ranges(m, i0, i1, kl, kh, ranges);
    for (int64_t i = i0; i < i1; i++) {
        const double *qi = qr + i * d;
        double *ai = acc + (i - i0) * nc;
        int64_t lo = lo_of(m, i), hi = hi_of(m, i);
        for (int rg = 0; rg < 2; rg++) {
            int64_t j0 = ranges[rg][0] > lo ? ranges[rg][0] : lo;
            int64_t j1 = ranges[rg][1] < hi + 1 ? ranges[rg][1] : hi + 1;
            for (int64_t j = j0; j < j1; j++) {
                const double *kj = kr + j * d;
                double s = 0;
                for (int a = 0; a < d; a++)
                    s += qi[a] * kj[a];
                double pv = pl->pcoef[g];
                for (int t = g - 1; t >= 0; t--)
                    pv = pv * s + pl->pcoef[t];
                const double *xj = x + j * nc;
                for (int c = 0; c < nc; c++)
                    ai[c] += pv * xj[c];
            }
        }
    }
}

#endif
