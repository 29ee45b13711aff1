/* polyfft_pass_t.h - the Toeplitz pass in one precision (REAL, CPX: core/real_t.h): its
 * transforms, the spectral accumulation in bin tiles and the consumers; instantiated twice by
 * core/polyfft_pass.c, whose pass_mem, mono helpers and sizes it uses. No include guard: see
 * core/real_t.h. */
#include "real_t.h"

void T_(fr__polyfft_fill)(const fr__polyfft *pl, const double *restrict mono,
                          const double *restrict col, REAL *restrict buf)
{
    int64_t n = pl->p.n;
    for (int64_t j = 0; j < n; j++)
        buf[j] = (REAL)(mono[j] * col[j]);
    memset(buf + n, 0, (size_t)(pl->N - n) * sizeof *buf);
}

void T_(fr__polyfft_gather)(int64_t n, const double *restrict mono, const REAL *restrict y,
                            double *restrict acc)
{
    for (int64_t i = 0; i < n; i++)
        acc[i] += mono[i] * y[i];
}

/* Step 2 on bins [b0, b0 + bl) of one degree and block of columns: W holds Z_in at slot
 * (in - i0) * ncb + col and receives Y_o at slot (o - o0) * ncb + col. Yt: nout x ncb tiles of
 * split re/im (2 * tile reals each); Kt: one split tile. */
typedef struct {
    const fr__polyfft *pl;
    const int64_t *poff, *plist; /* the pairs of output o: plist[poff[o] .. poff[o + 1]) */
    const int32_t *pair_in;
    const REAL *const *kp; /* kernel monomial c's spectrum of this degree, packed by parity */
    int conj;              /* transposed pass: reflected kernels, conjugate spectra */
    int64_t i0, o0, o1, ncb, tile;
} T_(accum);

/* k += s * c over bl bins; first: k = s * c. One alpha's real or imaginary part into its
 * pair's kernel. */
static inline void T_(kernel_madd)(REAL *restrict k, const REAL *restrict c, REAL s, int first,
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
static inline void T_(kernel_madd_cpx)(REAL *restrict kr, REAL *restrict ki, const CPX *restrict c,
                                       REAL s, REAL si, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        kr[b] += s * c[b].re;
        ki[b] += si * c[b].im;
    }
}

/* (yr, yi) += K (.) z, z interleaved as the FFT leaves it: K complex (kr, ki), real (kr) or
 * imaginary (i ki). The real and imaginary cases are why parities are kept: half the work. */
static inline void T_(cmadd)(REAL *restrict yr, REAL *restrict yi, const REAL *restrict kr,
                             const REAL *restrict ki, const CPX *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        yr[b] += kr[b] * z[b].re - ki[b] * z[b].im;
        yi[b] += kr[b] * z[b].im + ki[b] * z[b].re;
    }
}

static inline void T_(cmadd_re)(REAL *restrict yr, REAL *restrict yi, const REAL *restrict kr,
                                const CPX *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        yr[b] += kr[b] * z[b].re;
        yi[b] += kr[b] * z[b].im;
    }
}

static inline void T_(cmadd_im)(REAL *restrict yr, REAL *restrict yi, const REAL *restrict ki,
                                const CPX *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        yr[b] -= ki[b] * z[b].im;
        yi[b] += ki[b] * z[b].re;
    }
}

/* Ask for the bins [b0, b0 + bl) of pair pq's kernels and input spectra ahead of their use. Why:
 * each is a tile's short slice of another array, too short for the hardware prefetcher to
 * follow; at n = 48K, d = 8 the pass spent most of its accumulation waiting on them (3% of the
 * whole run saved). */
static void T_(prefetch_pair)(const T_(accum) * A, const CPX *W, int64_t pq, int64_t b0, int64_t bl)
{
    const fr__polyfft *pl = A->pl;
    const fr__monomials *m = &pl->m;
    for (int64_t al = m->p_first[pq]; al < m->p_first[pq + 1]; al++) {
        int c = m->a_c[al];
        int64_t w = pl->kpar[c] == FR_PAR_NONE ? 2 : 1;
        const char *C = (const char *)(A->kp[c] + w * b0);
        for (int64_t o = 0; o < w * bl * (int64_t)sizeof(REAL); o += 64)
            __builtin_prefetch(C + o);
    }
    const CPX *Z = W + (A->pair_in[pq] - A->i0) * A->ncb * pl->nbs + b0;
    for (int64_t col = 0; col < A->ncb; col++)
        for (int64_t o = 0; o < bl * (int64_t)sizeof(CPX); o += 64)
            __builtin_prefetch((const char *)(Z + col * pl->nbs) + o);
}

/* The real and imaginary cases with K = s c: one alpha's kernel, scaled as it is read. */
static inline void T_(cmadd_re_s)(REAL *restrict yr, REAL *restrict yi, const REAL *restrict c,
                                  REAL s, const CPX *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        REAL k = s * c[b];
        yr[b] += k * z[b].re;
        yi[b] += k * z[b].im;
    }
}

static inline void T_(cmadd_im_s)(REAL *restrict yr, REAL *restrict yi, const REAL *restrict c,
                                  REAL s, const CPX *restrict z, int64_t bl)
{
    for (int64_t b = 0; b < bl; b++) {
        REAL k = s * c[b];
        yr[b] -= k * z[b].im;
        yi[b] += k * z[b].re;
    }
}

static void T_(accumulate_tile)(const T_(accum) * A, CPX *W, int64_t b0, int64_t bl, REAL *Yt,
                                REAL *Kt)
{
    const fr__polyfft *pl = A->pl;
    const fr__monomials *m = &pl->m;
    int64_t nbs = pl->nbs, ncb = A->ncb, tile = A->tile;
    REAL *kr = Kt, *ki = Kt + tile;
    memset(Yt, 0, (size_t)((A->o1 - A->o0) * ncb * 2 * tile) * sizeof *Yt);
    for (int64_t o = A->o0; o < A->o1; o++) {
        REAL *Yo = Yt + (o - A->o0) * ncb * 2 * tile;
        for (int64_t r = A->poff[o]; r < A->poff[o + 1]; r++) {
            int64_t pq = A->plist[r], a0 = m->p_first[pq], a1 = m->p_first[pq + 1];
            if (r + 1 < A->poff[A->o1]) T_(prefetch_pair)(A, W, A->plist[r + 1], b0, bl);
            int par = pl->ppar[pq];
            const CPX *Z = W + (A->pair_in[pq] - A->i0) * ncb * nbs + b0;
            if (a1 - a0 == 1 && par != FR_PAR_NONE) {
                /* One alpha, even or odd (most pairs): its kernel scaled on the fly, K never
                 * stored. */
                const REAL *C = A->kp[m->a_c[a0]] + b0;
                REAL s = (REAL)m->a_coef[a0], si = A->conj ? -s : s;
                for (int64_t col = 0; col < ncb; col++) {
                    REAL *yr = Yo + col * 2 * tile, *yi = yr + tile;
                    if (par == FR_PAR_EVEN)
                        T_(cmadd_re_s)(yr, yi, C, s, Z + col * nbs, bl);
                    else
                        T_(cmadd_im_s)(yr, yi, C, si, Z + col * nbs, bl);
                }
                continue;
            }
            if (par == FR_PAR_NONE) {
                memset(kr, 0, (size_t)bl * sizeof *kr);
                memset(ki, 0, (size_t)bl * sizeof *ki);
            }
            for (int64_t al = a0; al < a1; al++) {
                int c = m->a_c[al], kpar = pl->kpar[c];
                const REAL *C = A->kp[c];
                REAL s = (REAL)m->a_coef[al], si = A->conj ? -s : s;
                if (par == FR_PAR_EVEN)
                    T_(kernel_madd)(kr, C + b0, s, al == a0, bl);
                else if (par == FR_PAR_ODD)
                    T_(kernel_madd)(ki, C + b0, si, al == a0, bl);
                else if (kpar == FR_PAR_EVEN)
                    T_(kernel_madd)(kr, C + b0, s, 0, bl);
                else if (kpar == FR_PAR_ODD)
                    T_(kernel_madd)(ki, C + b0, si, 0, bl);
                else
                    T_(kernel_madd_cpx)(kr, ki, (const CPX *)C + b0, s, si, bl);
            }
            for (int64_t col = 0; col < ncb; col++) {
                REAL *yr = Yo + col * 2 * tile, *yi = yr + tile;
                if (par == FR_PAR_EVEN)
                    T_(cmadd_re)(yr, yi, kr, Z + col * nbs, bl);
                else if (par == FR_PAR_ODD)
                    T_(cmadd_im)(yr, yi, ki, Z + col * nbs, bl);
                else
                    T_(cmadd)(yr, yi, kr, ki, Z + col * nbs, bl);
            }
        }
    }
    for (int64_t sl = 0; sl < (A->o1 - A->o0) * ncb; sl++) {
        CPX *y = W + sl * nbs + b0;
        const REAL *yr = Yt + sl * 2 * tile, *yi = yr + tile;
        for (int64_t b = 0; b < bl; b++) {
            y[b].re = yr[b];
            y[b].im = yi[b];
        }
    }
}

typedef struct {
    REAL *buf;   /* N: an FFT's time samples */
    void *S;     /* the FFT's scratch */
    REAL *Yt;    /* the Y tiles of one degree and block, then one kernel tile */
    double *acc; /* values: (dv+1) x n sums; gradients: d x n (+ dv x n) */
    double *til, *mv;
} T_(thread_mem);

static T_(thread_mem) T_(thread_buffers)(const fr__polyfft *pl, const pass_mem *w, int t)
{
    char *b = w->tb.p[t];
    void *x, *X, *scr;
    fr__polyfft_area(pl, b, &x, &X, &scr);
    T_(thread_mem)
    r = {.buf = x,
         .S = scr,
         .Yt = (REAL *)(b + w->off_yt),
         .acc = (double *)(b + w->off_acc),
         .til = (double *)(b + w->off_tmp)};
    r.mv = r.til + pl->p.n;
    return r;
}

static int T_(pass_run)(const fr__polyfft *pl, const fr__pass *ps, pass_mem *w)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, nbs = pl->nbs, d = pl->p.d, dvd = pl->p.dv, cols = dvd + 1;
    int tr = ps->transposed, values = ps->num != NULL;
    const unsigned char *e_in = tr ? m->u_exp : m->v_exp, *e_out = tr ? m->v_exp : m->u_exp;
    const int64_t *in_first = tr ? m->u_first : m->v_first;
    int stream = pl->literal || pl->mode == MODE_STREAM;
    int64_t cb = w->cb, tile = w->tile, nout_max = w->nout_max;
    CPX *W = w->W;
    REAL *ystore = ps->ystore;
    fr__prog *pg = ps->pg;
    /* Progress by transforms: each degree's inputs' forward and outputs' inverse FFTs. */
    double total = 0, done = 0;
    for (int g = 0; g <= pl->degree; g++) {
        int64_t o0, o1;
        out_range(pl, ps, g, &o0, &o1);
        if (in_first[g + 1] > in_first[g] && o1 > o0)
            total += (double)(in_first[g + 1] - in_first[g] + o1 - o0);
    }

    for (int g = 0; g <= pl->degree; g++) {
        int64_t i0 = in_first[g], i1 = in_first[g + 1], o0, o1;
        out_range(pl, ps, g, &o0, &o1);
        if (i1 == i0 || o1 <= o0) continue;
        if (fr__prog_canceled(pg)) return 1;
        if (stream) {
            /* The kernels this degree uses, computed now, once for every block. */
            int64_t ncl = fr__polyfft_degree_kernels(m, g, w->cslot, w->clist), fl = 0;
            for (int64_t i = 0; i < ncl; i++) {
                w->kp[w->clist[i]] = (REAL *)w->Cs + fl;
                fl += fr__polyfft_kernel_reals(pl, w->clist[i]);
            }
            if (!T_(fr__polyfft_kernel_spectra)(pl, w->clist, ncl, (REAL *const *)w->kp, &w->tb))
                return 0;
        } else {
            for (int64_t c = 0; c < m->nc; c++)
                w->kp[c] = (REAL *)pl->spec + pl->koff[c];
        }
        for (int64_t c0 = 0; c0 < cols; c0 += cb) {
            int64_t ncb = c0 + cb <= cols ? cb : cols - c0;
            double share = (double)ncb / (double)cols / total;
            T_(accum)
            A = {.pl = pl,
                 .poff = w->poff,
                 .plist = w->plist,
                 .pair_in = tr ? m->p_u : m->p_v,
                 .kp = (const REAL *const *)w->kp,
                 .conj = tr,
                 .i0 = i0,
                 .o0 = o0,
                 .o1 = o1,
                 .ncb = ncb,
                 .tile = tile};
#pragma omp parallel
            {
                T_(thread_mem) tm = T_(thread_buffers)(pl, w, omp_get_thread_num());
                REAL *buf = tm.buf, *Yt = tm.Yt;
                void *S = tm.S;
                double *acc = tm.acc, *til = tm.til, *mv = tm.mv;
                int th = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
                for (int64_t in = i0; in < i1; in++) {
                    if (fr__prog_canceled(pg)) continue;
                    fr__polyfft_mono(pl, e_in + in * d, w->xin, mv);
                    for (int64_t col = 0; col < ncb; col++) {
                        T_(fr__polyfft_fill)(pl, mv, w->ain + (c0 + col) * n, buf);
                        FFT_FORWARD(pl->fft, buf, W + ((in - i0) * ncb + col) * nbs, S);
                    }
                    if (th == 0) fr__prog_step(pg, done + share * (double)(in - i0 + 1));
                }
#pragma omp for schedule(dynamic, 1)
                for (int64_t b0 = 0; b0 < pl->nb; b0 += tile)
                    if (!fr__prog_canceled(pg)) T_(accumulate_tile)
                (&A, W, b0, pl->nb - b0 < tile ? pl->nb - b0 : tile, Yt,
                 Yt + nout_max * cb * 2 * tile);
                if (values) {
#pragma omp for schedule(dynamic, 1)
                    for (int64_t o = o0; o < o1; o++) {
                        if (fr__prog_canceled(pg)) continue;
                        if (th == 0)
                            fr__prog_step(pg, done + share * (double)(i1 - i0 + o - o0 + 1));
                        fr__polyfft_mono(pl, e_out + o * d, w->xout, mv);
                        for (int64_t col = 0; col < ncb; col++) {
                            FFT_INVERSE(pl->fft, W + ((o - o0) * ncb + col) * nbs, buf, S);
                            T_(fr__polyfft_gather)(n, mv, buf, acc + (c0 + col) * n);
                            if (ystore && o >= ps->ukeep)
                                memcpy(ystore + ((o - ps->ukeep) * cols + c0 + col) * n, buf,
                                       (size_t)n * sizeof *buf);
                        }
                    }
                } else {
#pragma omp for schedule(dynamic, 1)
                    for (int64_t o = o0; o < o1; o++) {
                        if (fr__prog_canceled(pg)) continue;
                        if (th == 0)
                            fr__prog_step(pg, done + share * (double)(i1 - i0 + o - o0 + 1));
                        const unsigned char *e = e_out + o * d;
                        int want_v = ps->dvals && c0 < dvd;
                        memset(til, 0, (size_t)n * sizeof *til);
                        if (want_v) fr__polyfft_mono(pl, e, w->xout, mv);
                        for (int64_t col = 0; col < ncb; col++) {
                            int64_t x = c0 + col;
                            FFT_INVERSE(pl->fft, W + ((o - o0) * ncb + col) * nbs, buf, S);
                            const double *bx = w->bout + x * n;
                            for (int64_t i = 0; i < n; i++)
                                til[i] += bx[i] * buf[i];
                            if (want_v && x < dvd) {
                                double *gv = acc + n * d + x * n;
                                for (int64_t i = 0; i < n; i++)
                                    gv[i] += mv[i] * buf[i];
                            }
                        }
                        mono_grad(e, (int)d, w->xout, n, til, acc);
                    }
                }
            }
            done += share * (double)(i1 - i0 + o1 - o0);
        }
    }
    if (fr__prog_canceled(pg)) return 1;
    if (values) {
        for (int t = 0; t < w->tb.n; t++) {
            const double *acc = T_(thread_buffers)(pl, w, t).acc;
            for (int64_t i = 0; i < cols * n; i++)
                ps->num[i] += acc[i];
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            for (int t = 0; t < w->tb.n; t++) {
                const double *a = T_(thread_buffers)(pl, w, t).acc;
                for (int64_t b = 0; b < d; b++)
                    ps->grad[i * d + b] += a[b * n + i];
                if (ps->dvals)
                    for (int64_t o = 0; o < dvd; o++)
                        ps->dvals[i * dvd + o] += a[n * d + o * n + i];
            }
    }
    return 1;
}
