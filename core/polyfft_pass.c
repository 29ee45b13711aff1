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
 * (1.34 s for 512 MB, 16 ms the second time), as much as the FFTs that fill it. */
#include "polyfft_impl.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 256              /* rows per monomial evaluation: 2 KB of doubles, in L1 */
#define TILE_BYTES (256 << 10) /* a thread's Y tiles of one degree, in its L2 */

/* out[0..len) = x[j0..j0+len) * prod_a xt[a][j0..]^(e[a] - [a == drop]), xt column-major
 * (d x n); x NULL: 1; drop -1: the monomial itself, drop a: its derivative in x_a over e[a].
 * Vectorises over rows, unlike a product per row over its exponents. */
static void mono_chunk(const unsigned char *e, int drop, int d, const double *xt, int64_t n,
                       int64_t j0, int64_t len, const double *x, double *out)
{
    if (x)
        memcpy(out, x + j0, (size_t)len * sizeof *out);
    else
        for (int64_t j = 0; j < len; j++)
            out[j] = 1;
    for (int a = 0; a < d; a++) {
        const double *c = xt + a * n + j0;
        for (int t = 0, et = e[a] - (a == drop); t < et; t++)
            for (int64_t j = 0; j < len; j++)
                out[j] *= c[j];
    }
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

/* Step 2 on bins [b0, b0 + bl) of one degree and block of columns: W holds Z_in at slot
 * (in - i0) * ncb + col and receives Y_o at slot (o - o0) * ncb + col. Yt: nout x ncb tiles of
 * split re/im (2 * tile floats each); Kt: one split tile. */
typedef struct {
    const fr__polyfft *pl;
    const int64_t *poff, *plist; /* the pairs of output o: plist[poff[o] .. poff[o + 1]) */
    const int32_t *pair_in;
    const float *const *kp; /* kernel monomial c's spectrum of this degree, packed by parity */
    int conj;               /* transposed pass: reflected kernels, conjugate spectra */
    int64_t i0, o0, o1, ncb, tile;
} accum;

/* k += s * c over bl bins; first: k = s * c. One alpha's real or imaginary part into its
 * pair's kernel. */
static inline void kernel_madd(float *restrict k, const float *restrict c, float s, int first,
                               int64_t bl)
{
    if (first)
        for (int64_t b = 0; b < bl; b++)
            k[b] = s * c[b];
    else
        for (int64_t b = 0; b < bl; b++)
            k[b] += s * c[b];
}

/* The same from an interleaved complex spectrum, into split kr, ki. */
static inline void kernel_madd_cpx(float *restrict kr, float *restrict ki,
                                   const fr__cpx *restrict c, float s, float si, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        kr[b] += s * c[b].re;
        ki[b] += si * c[b].im;
    }
}

/* (yr, yi) += K (.) z, z interleaved as the FFT leaves it: K complex (kr, ki), real (kr) or
 * imaginary (i ki). The real and imaginary cases are why parities are kept: half the work. */
static inline void cmadd(float *restrict yr, float *restrict yi, const float *restrict kr,
                         const float *restrict ki, const fr__cpx *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        yr[b] += kr[b] * z[b].re - ki[b] * z[b].im;
        yi[b] += kr[b] * z[b].im + ki[b] * z[b].re;
    }
}

static inline void cmadd_re(float *restrict yr, float *restrict yi, const float *restrict kr,
                            const fr__cpx *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        yr[b] += kr[b] * z[b].re;
        yi[b] += kr[b] * z[b].im;
    }
}

static inline void cmadd_im(float *restrict yr, float *restrict yi, const float *restrict ki,
                            const fr__cpx *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        yr[b] -= ki[b] * z[b].im;
        yi[b] += ki[b] * z[b].re;
    }
}

static void accumulate_tile(const accum *A, fr__cpx *W, int64_t b0, int64_t bl, float *Yt,
                            float *Kt)
{
    const fr__polyfft *pl = A->pl;
    const fr__monomials *m = &pl->m;
    int64_t nb = pl->nb, ncb = A->ncb, tile = A->tile;
    float *kr = Kt, *ki = Kt + tile;
    memset(Yt, 0, (size_t)((A->o1 - A->o0) * ncb * 2 * tile) * sizeof *Yt);
    for (int64_t o = A->o0; o < A->o1; o++) {
        float *Yo = Yt + (o - A->o0) * ncb * 2 * tile;
        for (int64_t r = A->poff[o]; r < A->poff[o + 1]; r++) {
            int64_t pq = A->plist[r], a0 = m->p_first[pq], a1 = m->p_first[pq + 1];
            int par = pl->ppar[pq];
            if (par == FR_PAR_NONE) {
                memset(kr, 0, (size_t)bl * sizeof *kr);
                memset(ki, 0, (size_t)bl * sizeof *ki);
            }
            for (int64_t al = a0; al < a1; al++) {
                int c = m->a_c[al], kpar = pl->kpar[c];
                const float *C = A->kp[c];
                float s = (float)m->a_coef[al], si = A->conj ? -s : s;
                if (par == FR_PAR_EVEN)
                    kernel_madd(kr, C + b0, s, al == a0, bl);
                else if (par == FR_PAR_ODD)
                    kernel_madd(ki, C + b0, si, al == a0, bl);
                else if (kpar == FR_PAR_EVEN)
                    kernel_madd(kr, C + b0, s, 0, bl);
                else if (kpar == FR_PAR_ODD)
                    kernel_madd(ki, C + b0, si, 0, bl);
                else
                    kernel_madd_cpx(kr, ki, (const fr__cpx *)C + b0, s, si, bl);
            }
            const fr__cpx *Z = W + (A->pair_in[pq] - A->i0) * ncb * nb + b0;
            for (int64_t col = 0; col < ncb; col++) {
                float *yr = Yo + col * 2 * tile, *yi = yr + tile;
                if (par == FR_PAR_EVEN)
                    cmadd_re(yr, yi, kr, Z + col * nb, bl);
                else if (par == FR_PAR_ODD)
                    cmadd_im(yr, yi, ki, Z + col * nb, bl);
                else
                    cmadd(yr, yi, kr, ki, Z + col * nb, bl);
            }
        }
    }
    for (int64_t sl = 0; sl < (A->o1 - A->o0) * ncb; sl++) {
        fr__cpx *y = W + sl * nb + b0;
        const float *yr = Yt + sl * 2 * tile, *yi = yr + tile;
        for (int64_t b = 0; b < bl; b++) {
            y[b].re = yr[b];
            y[b].im = yi[b];
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

typedef struct {
    double *xin, *xout, *ain, *bout; /* the pass's rows and columns, column-major */
    int64_t *poff, *plist;           /* the pairs by output monomial */
    int64_t *clist;                  /* STREAM: the kernels of one degree */
    const float **kp;                /* per kernel monomial: its spectrum (this degree's) */
    fr__cpx *W;
    float *Cs;          /* STREAM: one degree's spectra */
    fr__thread_bufs tb; /* per thread: time buffer and FFT scratch, Y tiles, sums, two rows */
    int64_t off_yt, off_acc, off_tmp, per; /* byte offsets in a thread's buffer; doubles of sums */
} pass_mem;

typedef struct {
    float *buf;  /* N + 2 floats: an FFT's time samples (or a kernel's spectrum) */
    fr__cpx *S;  /* N/2: the FFT's scratch */
    float *Yt;   /* the Y tiles of one degree and block, then one kernel tile */
    double *acc; /* values: (dv+1) x n sums; gradients: d x n (+ dv x n) */
    double *til, *mv;
} thread_mem;

static thread_mem thread_buffers(const pass_mem *w, int t, int64_t N, int64_t n)
{
    char *b = w->tb.p[t];
    thread_mem r = {.buf = (float *)b,
                    .S = (fr__cpx *)(b + (N + 2) * sizeof(float)),
                    .Yt = (float *)(b + w->off_yt),
                    .acc = (double *)(b + w->off_acc),
                    .til = (double *)(b + w->off_tmp)};
    r.mv = r.til + n;
    return r;
}

static void pass_free(pass_mem *w)
{
    free(w->xin);
    free(w->xout);
    free(w->ain);
    free(w->bout);
    free(w->poff);
    free(w->plist);
    free(w->clist);
    free(w->kp);
    free(w->W);
    free(w->Cs);
    fr__thread_bufs_free(&w->tb);
}

/* How many columns a block holds: all of them while the spectra of one degree stay under
 * PASS_BYTES, else fewer. Why the cap: blocks of one column redo only the cheap kernel sums
 * per pair, while memory first touched costs ~1.9 ms per MB here: at n = 256K, d = 4 one column
 * at a time (117 MB) took 3.6 s against 4.4 s for all five at once (587 MB). */
#define PASS_BYTES ((int64_t)64 << 20)

int fr__polyfft_pass(const fr__polyfft *pl, const fr__pass *ps)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, N = pl->N, nb = pl->nb, d = pl->p.d, dvd = pl->p.dv, cols = dvd + 1;
    int tr = ps->transposed, values = ps->num != NULL;
    const unsigned char *e_in = tr ? m->u_exp : m->v_exp, *e_out = tr ? m->v_exp : m->u_exp;
    const int64_t *in_first = tr ? m->u_first : m->v_first;
    int64_t nout = tr ? m->nv : m->nu;
    int stream = pl->literal || pl->mode == MODE_STREAM; /* a literal plan keeps no spectra */
    pass_mem w = {0};
    int64_t *cslot = NULL;

    /* Sizes: the largest degree's monomials (its slots of W, its Y tiles, its kernels). */
    int64_t cap = 1, nout_max = 1, cfl_max = 1;
    w.clist = malloc((size_t)(m->nc + 1) * sizeof *w.clist);
    cslot = malloc((size_t)(m->nc + 1) * sizeof *cslot);
    w.kp = calloc((size_t)(m->nc + 1), sizeof *w.kp);
    if (!w.clist || !cslot || !w.kp) goto oom;
    for (int g = 0; g <= pl->degree; g++) {
        int64_t nin = in_first[g + 1] - in_first[g], o0, o1;
        out_range(pl, ps, g, &o0, &o1);
        if (!nin || o1 <= o0) continue;
        cap = nin > cap ? nin : cap;
        cap = o1 - o0 > cap ? o1 - o0 : cap;
        nout_max = o1 - o0 > nout_max ? o1 - o0 : nout_max;
        if (stream) {
            int64_t ncl = fr__polyfft_degree_kernels(m, g, cslot, w.clist), fl = 0;
            for (int64_t i = 0; i < ncl; i++)
                fl += fr__polyfft_kernel_floats(pl, w.clist[i]);
            cfl_max = fl > cfl_max ? fl : cfl_max;
        }
    }
    int64_t budget = pl->exec_budget < PASS_BYTES ? pl->exec_budget : PASS_BYTES;
    int64_t cb = budget / (cap * nb * (int64_t)sizeof(fr__cpx));
    cb = cb < 1 ? 1 : cb > cols ? cols : cb;
    int64_t tile = TILE_BYTES / (nout_max * cb * 2 * (int64_t)sizeof(float)) / 16 * 16;
    tile = tile < 16 ? 16 : tile > 4096 ? 4096 : tile;
    if (tile > nb) tile = nb;

    /* The pairs of every output monomial: u's are contiguous already; v's by a counting sort. */
    w.poff = calloc((size_t)(nout + 1), sizeof *w.poff);
    w.plist = malloc((size_t)(m->npairs + 1) * sizeof *w.plist);
    if (!w.poff || !w.plist) goto oom;
    for (int64_t q = 0; q < m->npairs; q++)
        w.poff[(tr ? m->p_v[q] : m->p_u[q]) + 1]++;
    for (int64_t o = 0; o < nout; o++)
        w.poff[o + 1] += w.poff[o];
    for (int64_t q = 0, o; q < m->npairs; q++) {
        o = tr ? m->p_v[q] : m->p_u[q];
        w.plist[w.poff[o]++] = q;
    }
    for (int64_t o = nout; o > 0; o--) /* the fill advanced each start to the next one's */
        w.poff[o] = w.poff[o - 1];
    w.poff[0] = 0;

    w.xin = fr__transpose(ps->xin, n, d);
    w.xout = fr__transpose(ps->xout, n, d);
    w.ain = fr__transpose(ps->ain, n, cols);
    w.bout = values ? NULL : fr__transpose(ps->bout, n, cols);
    w.W = fr__alloc_big((size_t)(cap * cb * nb) * sizeof *w.W);
    w.Cs = stream ? fr__alloc_big((size_t)cfl_max * sizeof *w.Cs) : NULL;
    w.per = values ? cols * n : n * d + (ps->dvals ? n * dvd : 0);
    w.off_yt = ((2 * N + 2) * (int64_t)sizeof(float) + 63) / 64 * 64;
    w.off_acc = w.off_yt + ((nout_max * cb + 1) * 2 * tile * (int64_t)sizeof(float) + 63) / 64 * 64;
    w.off_tmp = w.off_acc + w.per * (int64_t)sizeof(double);
    if (!w.xin || !w.xout || !w.ain || (!values && !w.bout) || !w.W || (stream && !w.Cs) ||
        !fr__thread_bufs_alloc(&w.tb, (size_t)(w.off_tmp + 2 * n * (int64_t)sizeof(double))))
        goto oom;

    for (int g = 0; g <= pl->degree; g++) {
        int64_t i0 = in_first[g], i1 = in_first[g + 1], o0, o1;
        out_range(pl, ps, g, &o0, &o1);
        if (i1 == i0 || o1 <= o0) continue;
        if (stream) {
            /* The kernels this degree uses, computed now, once for every block. */
            int64_t ncl = fr__polyfft_degree_kernels(m, g, cslot, w.clist), fl = 0;
            for (int64_t i = 0; i < ncl; i++) {
                w.kp[w.clist[i]] = w.Cs + fl;
                fl += fr__polyfft_kernel_floats(pl, w.clist[i]);
            }
            if (!fr__polyfft_kernel_spectra(pl, w.clist, ncl, (float *const *)w.kp, &w.tb))
                goto oom;
        } else {
            for (int64_t c = 0; c < m->nc; c++)
                w.kp[c] = pl->spec + pl->koff[c];
        }
        for (int64_t c0 = 0; c0 < cols; c0 += cb) {
            int64_t ncb = c0 + cb <= cols ? cb : cols - c0;
            accum A = {.pl = pl,
                       .poff = w.poff,
                       .plist = w.plist,
                       .pair_in = tr ? m->p_u : m->p_v,
                       .kp = w.kp,
                       .conj = tr,
                       .i0 = i0,
                       .o0 = o0,
                       .o1 = o1,
                       .ncb = ncb,
                       .tile = tile};
#pragma omp parallel
            {
                thread_mem tm = thread_buffers(&w, omp_get_thread_num(), N, n);
                float *buf = tm.buf, *Yt = tm.Yt;
                fr__cpx *S = tm.S;
                double *acc = tm.acc, *til = tm.til, *mv = tm.mv;
#pragma omp for schedule(dynamic, 1)
                for (int64_t in = i0; in < i1; in++) {
                    fr__polyfft_mono(pl, e_in + in * d, w.xin, mv);
                    for (int64_t col = 0; col < ncb; col++) {
                        fr__polyfft_fill(pl, mv, w.ain + (c0 + col) * n, buf);
                        fr__fft_forward(pl->fft, buf, w.W + ((in - i0) * ncb + col) * nb, S);
                    }
                }
#pragma omp for schedule(dynamic, 1)
                for (int64_t b0 = 0; b0 < nb; b0 += tile)
                    accumulate_tile(&A, w.W, b0, nb - b0 < tile ? nb - b0 : tile, Yt,
                                    Yt + nout_max * cb * 2 * tile);
                if (values) {
#pragma omp for schedule(dynamic, 1)
                    for (int64_t o = o0; o < o1; o++) {
                        fr__polyfft_mono(pl, e_out + o * d, w.xout, mv);
                        for (int64_t col = 0; col < ncb; col++) {
                            fr__fft_inverse(pl->fft, w.W + ((o - o0) * ncb + col) * nb, buf, S);
                            fr__polyfft_gather(n, mv, buf, acc + (c0 + col) * n);
                            if (ps->ystore && o >= ps->ukeep)
                                memcpy(ps->ystore + ((o - ps->ukeep) * cols + c0 + col) * n, buf,
                                       (size_t)n * sizeof *buf);
                        }
                    }
                } else {
#pragma omp for schedule(dynamic, 1)
                    for (int64_t o = o0; o < o1; o++) {
                        const unsigned char *e = e_out + o * d;
                        int want_v = ps->dvals && c0 < dvd;
                        memset(til, 0, (size_t)n * sizeof *til);
                        if (want_v) fr__polyfft_mono(pl, e, w.xout, mv);
                        for (int64_t col = 0; col < ncb; col++) {
                            int64_t x = c0 + col;
                            fr__fft_inverse(pl->fft, w.W + ((o - o0) * ncb + col) * nb, buf, S);
                            const double *bx = w.bout + x * n;
                            for (int64_t i = 0; i < n; i++)
                                til[i] += bx[i] * buf[i];
                            if (want_v && x < dvd) {
                                double *gv = acc + n * d + x * n;
                                for (int64_t i = 0; i < n; i++)
                                    gv[i] += mv[i] * buf[i];
                            }
                        }
                        mono_grad(e, (int)d, w.xout, n, til, acc);
                    }
                }
            }
        }
    }
    if (values) {
        for (int t = 0; t < w.tb.n; t++) {
            const double *acc = thread_buffers(&w, t, N, n).acc;
            for (int64_t i = 0; i < cols * n; i++)
                ps->num[i] += acc[i];
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            for (int t = 0; t < w.tb.n; t++) {
                const double *a = thread_buffers(&w, t, N, n).acc;
                for (int64_t b = 0; b < d; b++)
                    ps->grad[i * d + b] += a[b * n + i];
                if (ps->dvals)
                    for (int64_t o = 0; o < dvd; o++)
                        ps->dvals[i * dvd + o] += a[n * d + o * n + i];
            }
    }
    free(cslot);
    pass_free(&w);
    return 1;
oom:
    free(cslot);
    pass_free(&w);
    return 0;
}
