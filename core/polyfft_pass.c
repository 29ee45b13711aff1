/* polyfft_pass.c - one Toeplitz pass of the polyfft pipeline (ALGORITHM.md 5), the engine of
 * both the forward (core/polyfft.c) and the backward (core/polyfft_grad.c):
 *
 *   y_o[x](i) = sum_{alpha -> (o, in)} coef_alpha sum_j c_alpha(j - i) in(j) x(j)
 *
 * for every output monomial o and input column x. On the forward pass o = u (Q side) and
 * in = v (K side); on the transposed pass o = v, in = u and every kernel is reflected,
 * c(i - j), whose spectrum is the conjugate. The consumer (fr__pass) says what y_o becomes.
 *
 * Per degree g (a term of degree g pairs monomials of degree g only; a streamed plan computes
 * the degree's kernel spectra here) and per block of columns (PASS_BYTES):
 *   1. Z = F(in * x) for every input monomial of degree g and column      threads: transforms
 *   2. Y_o = sum_{pairs (o, in)} K_pair (.) Z_in,
 *      K_pair = sum_{alpha -> pair} coef_alpha C_c(alpha)                 threads: bin tiles
 *   3. y_o = F^-1(Y_o), then the consumer                                 threads: transforms
 *
 * Why tiles of bins in step 2: Y_o sums over many pairs and K_pair over many alphas. A whole
 * spectrum at a time, every multiply-add would stream its operands from memory (13 GB at
 * n = 256K, d = 4, degree 5); a tile keeps K and all the Y of one degree in the thread's cache,
 * reads every Z and kernel spectrum once, and writes every Y once. A pair whose kernels are
 * all even (or all odd) has a real (imaginary) K_pair: half the multiply-adds (polyfft.c).
 *
 * Why Y overwrites Z in the same array: once a tile's Y is complete, nothing reads that tile's
 * Z again (other tiles are other bins), so the pass needs one array, not two. Memory is time
 * here: this machine (a VM) pays about 2.6 ms per MB the first time a process touches it
 * (1.34 s for 512 MB, 16 ms the second time), as much as the FFTs that fill it.
 *
 * The spectra, time samples and spectral sums are in the plan's precision: this file sets a
 * pass up (sizes, pair lists, buffers) and runs it through core/polyfft_pass_t.h, instantiated
 * for float and double. */
/* -std=c11 turns contraction off; the pass's multiply-adds (spectral sums, gathers) are FMAs
 * again: one rounding where there were two, so the certificate's counts still bound them. */
#pragma GCC optimize("fp-contract=fast")

#include "polyfft_impl.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 256              /* rows per monomial evaluation: 2 KB of doubles, in L1 */
#define TILE_BYTES (256 << 10) /* a thread's Y tiles of one degree, in its L2 */

/* out[j] *= f[0][j] ... f[nf-1][j] for j < len, nf <= 4, in one pass. */
static void mono_mul(double *restrict out, const double *const *f, int nf, int64_t len)
{
    const double *restrict a = f[0], *restrict b = nf > 1 ? f[1] : NULL,
                           *restrict c = nf > 2 ? f[2] : NULL, *restrict e = nf > 3 ? f[3] : NULL;
    if (nf == 4)
        for (int64_t j = 0; j < len; j++)
            out[j] = out[j] * a[j] * b[j] * c[j] * e[j];
    else if (nf == 3)
        for (int64_t j = 0; j < len; j++)
            out[j] = out[j] * a[j] * b[j] * c[j];
    else if (nf == 2)
        for (int64_t j = 0; j < len; j++)
            out[j] = out[j] * a[j] * b[j];
    else
        for (int64_t j = 0; j < len; j++)
            out[j] *= a[j];
}

/* out[0..len) = x[j0..j0+len) * prod_a xt[a][j0..]^(e[a] - [a == drop]), xt column-major
 * (d x n); x NULL: 1; drop -1: the monomial itself, drop a: its derivative in x_a over e[a].
 * Vectorises over rows, unlike a product per row over its exponents, and multiplies up to four
 * factors per pass over the chunk: the passes, not the multiplications, were its cost. The
 * product is the same g multiplications in another order (the certificate counts g + 2
 * roundings for a monomial and its product with the transform's output, in any order). */
static void mono_chunk(const unsigned char *e, int drop, int d, const double *xt, int64_t n,
                       int64_t j0, int64_t len, const double *x, double *out)
{
    if (x)
        memcpy(out, x + j0, (size_t)len * sizeof *out);
    else
        for (int64_t j = 0; j < len; j++)
            out[j] = 1;
    const double *f[4];
    int nf = 0;
    for (int a = 0; a < d; a++)
        for (int t = 0, et = e[a] - (a == drop); t < et; t++) {
            f[nf++] = xt + a * n + j0;
            if (nf == 4) {
                mono_mul(out, f, nf, len);
                nf = 0;
            }
        }
    if (nf) mono_mul(out, f, nf, len);
}

void fr__polyfft_mono(const fr__polyfft *pl, const unsigned char *e, const double *xt, double *out)
{
    int64_t n = pl->p.n;
    for (int64_t j0 = 0; j0 < n; j0 += CHUNK)
        mono_chunk(e, -1, (int)pl->p.d, xt, n, j0, n - j0 < CHUNK ? n - j0 : CHUNK, NULL, out + j0);
}

double *fr__transpose(const double *a, int64_t rows, int64_t cols)
{
    double *t = malloc((size_t)(rows * cols + 1) * sizeof *t);
    if (!t) return NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c++)
            t[c * rows + i] = a[i * cols + c];
    return t;
}

/* g[a][i] += e[a] til[i] prod_b x_b(i)^(e[b] - [b == a]) for every a: the gradient of the
 * monomial e, times til, column-major. */
static void mono_grad(const unsigned char *e, int d, const double *xt, int64_t n, const double *til,
                      double *g)
{
    double tmp[CHUNK];
    for (int a = 0; a < d; a++) {
        if (!e[a]) continue;
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            int64_t len = n - i0 < CHUNK ? n - i0 : CHUNK;
            mono_chunk(e, a, d, xt, n, i0, len, til, tmp);
            double *ga = g + a * n + i0, s = e[a];
            for (int64_t i = 0; i < len; i++)
                ga[i] += s * tmp[i];
        }
    }
}

/* The output monomials of degree g this pass computes: [*o0, *o1). */
static void out_range(const fr__polyfft *pl, const fr__pass *ps, int g, int64_t *o0, int64_t *o1)
{
    const int64_t *first = ps->transposed ? pl->m.v_first : pl->m.u_first;
    *o0 = first[g];
    *o1 = first[g + 1];
    if (!ps->transposed && !ps->num && *o1 > ps->ukeep) *o1 = ps->ukeep;
}

/* How many columns a block holds: all of them while the spectra of one degree stay under
 * PASS_BYTES, else fewer. Why the cap: blocks of one column redo only the cheap kernel sums
 * per pair, while memory first touched costs ~1.9 ms per MB here: at n = 256K, d = 4 one column
 * at a time (117 MB) took 3.6 s against 4.4 s for all five at once (587 MB). */
#define PASS_BYTES ((int64_t)64 << 20)

typedef struct {
    int64_t cap, nout_max;           /* the largest degree's input or output count, outputs */
    int64_t cb, tile;                /* columns per block, bins per tile */
    double *xin, *xout, *ain, *bout; /* the pass's rows and columns, column-major */
    int64_t *poff, *plist;           /* the pairs by output monomial */
    int64_t *clist, *cslot;          /* STREAM: the kernels of one degree */
    void **kp;                       /* per kernel monomial: its spectrum (REAL) of this degree */
    void *W;                         /* cap x cb spectra (CPX), nbs apart */
    void *Cs;                        /* STREAM: one degree's kernel spectra (REAL) */
    fr__thread_bufs tb; /* per thread: FFT area, Y tiles, sums, two rows (thread_buffers) */
    int64_t off_yt, off_acc, off_tmp, per; /* byte offsets in a thread's buffer; doubles of sums */
} pass_mem;

static void pass_free(pass_mem *w)
{
    free(w->xin);
    free(w->xout);
    free(w->ain);
    free(w->bout);
    free(w->poff);
    free(w->plist);
    free(w->clist);
    free(w->cslot);
    free(w->kp);
    free(w->W);
    free(w->Cs);
    fr__thread_bufs_free(&w->tb);
}

/* Everything a pass needs before its first transform: the sizes (from the largest degree), the
 * pairs of every output monomial, the column-major copies of its rows, the buffers. 0 when out
 * of memory. */
static int pass_setup(const fr__polyfft *pl, const fr__pass *ps, pass_mem *w)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, nb = pl->nb, d = pl->p.d, dvd = pl->p.dv, cols = dvd + 1, rs = pl->rs;
    int tr = ps->transposed, values = ps->num != NULL;
    const int64_t *in_first = tr ? m->u_first : m->v_first;
    int64_t nout = tr ? m->nv : m->nu;
    int stream = pl->literal || pl->mode == MODE_STREAM; /* a literal plan keeps no spectra */

    /* Sizes: the largest degree's monomials (its slots of W, its Y tiles, its kernels). */
    int64_t cfl_max = 1;
    w->cap = w->nout_max = 1;
    w->clist = malloc((size_t)(m->nc + 1) * sizeof *w->clist);
    w->cslot = malloc((size_t)(m->nc + 1) * sizeof *w->cslot);
    w->kp = calloc((size_t)(m->nc + 1), sizeof *w->kp);
    if (!w->clist || !w->cslot || !w->kp) return 0;
    for (int g = 0; g <= pl->degree; g++) {
        int64_t nin = in_first[g + 1] - in_first[g], o0, o1;
        out_range(pl, ps, g, &o0, &o1);
        if (!nin || o1 <= o0) continue;
        w->cap = nin > w->cap ? nin : w->cap;
        w->cap = o1 - o0 > w->cap ? o1 - o0 : w->cap;
        w->nout_max = o1 - o0 > w->nout_max ? o1 - o0 : w->nout_max;
        if (stream) {
            int64_t ncl = fr__polyfft_degree_kernels(m, g, w->cslot, w->clist), fl = 0;
            for (int64_t i = 0; i < ncl; i++)
                fl += fr__polyfft_kernel_reals(pl, w->clist[i]);
            cfl_max = fl > cfl_max ? fl : cfl_max;
        }
    }
    int64_t budget = pl->exec_budget < PASS_BYTES ? pl->exec_budget : PASS_BYTES;
    int64_t cb = budget / (w->cap * nb * 2 * rs);
    w->cb = cb = cb < 1 ? 1 : cb > cols ? cols : cb;
    int64_t tile = TILE_BYTES / (w->nout_max * cb * 2 * rs) / 16 * 16;
    tile = tile < 16 ? 16 : tile > 4096 ? 4096 : tile;
    w->tile = tile > nb ? nb : tile;

    /* The pairs of every output monomial: u's are contiguous already; v's by a counting sort. */
    w->poff = calloc((size_t)(nout + 1), sizeof *w->poff);
    w->plist = malloc((size_t)(m->npairs + 1) * sizeof *w->plist);
    if (!w->poff || !w->plist) return 0;
    for (int64_t q = 0; q < m->npairs; q++)
        w->poff[(tr ? m->p_v[q] : m->p_u[q]) + 1]++;
    for (int64_t o = 0; o < nout; o++)
        w->poff[o + 1] += w->poff[o];
    for (int64_t q = 0, o; q < m->npairs; q++) {
        o = tr ? m->p_v[q] : m->p_u[q];
        w->plist[w->poff[o]++] = q;
    }
    for (int64_t o = nout; o > 0; o--) /* the fill advanced each start to the next one's */
        w->poff[o] = w->poff[o - 1];
    w->poff[0] = 0;

    w->xin = fr__transpose(ps->xin, n, d);
    w->xout = fr__transpose(ps->xout, n, d);
    w->ain = fr__transpose(ps->ain, n, cols);
    w->bout = values ? NULL : fr__transpose(ps->bout, n, cols);
    w->W = fr__fft_alloc((size_t)(w->cap * cb * pl->nbs * 2 * rs));
    w->Cs = stream ? fr__fft_alloc((size_t)(cfl_max * rs)) : NULL;
    w->per = values ? cols * n : n * d + (ps->dvals ? n * dvd : 0);
    w->off_yt = pl->area_bytes;
    w->off_acc = w->off_yt + fr__align((w->nout_max * cb + 1) * 2 * w->tile * rs);
    w->off_tmp = w->off_acc + w->per * (int64_t)sizeof(double);
    return w->xin && w->xout && w->ain && (values || w->bout) && w->W && (!stream || w->Cs) &&
           fr__thread_bufs_alloc(&w->tb, (size_t)(w->off_tmp + 2 * n * (int64_t)sizeof(double)));
}

#define FR_T_DOUBLE 0
#include "polyfft_pass_t.h"
#undef FR_T_DOUBLE
#define FR_T_DOUBLE 1
#include "polyfft_pass_t.h"

int fr__polyfft_pass(const fr__polyfft *pl, const fr__pass *ps)
{
    pass_mem w = {0};
    int ok = pass_setup(pl, ps, &w) && (pl->dbl ? pass_run_d(pl, ps, &w) : pass_run_f(pl, ps, &w));
    pass_free(&w);
    return ok;
}
