/* polyfft_kernels.c - polyfft's kernels: the circulant column of each kernel monomial, its
 * spectrum (kept by the plan, or computed degree by degree by each pass), and the parities
 * that let even and odd kernels keep half a spectrum.
 *
 * A kernel monomial c(delta) = prod_k f_k(delta)^e_k (f_k: the support's kernel functions)
 * enters every Toeplitz product as the circulant column h[(-delta) mod N] = c(delta) for delta
 * in the kept offsets [lo, hi], 0 elsewhere. Then (h * x)_i = sum_j c(j - i) x_j for i < n: the
 * correlation the scores need. No wrap-around because N >= n + max(hi, -lo). The mask is this
 * range: it multiplies every kernel, the degree-0 (all-ones) one included.
 *
 * The spectra are in the plan's precision: the generic part is core/polyfft_kernels_t.h,
 * instantiated here for float and double. */
#include "polyfft_impl.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* out[0..len) = scale * c(delta) for delta = d0 .. d0 + len - 1 (kernel monomial c), a factor
 * at a time over contiguous offsets: vectorised, unlike a product per offset. */
static void kernel_values(const fr__polyfft *pl, int64_t c, double scale, int64_t d0, int64_t len,
                          double *out)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, L = 2 * n - 1;
    const unsigned char *e = m->c_exp + c * m->nk;
    for (int64_t i = 0; i < len; i++)
        out[i] = scale;
    for (int k = 0; k < m->nk; k++) {
        const double *f = m->ftab + k * L + d0 + n - 1;
        for (int t = 0; t < e[k]; t++)
            for (int64_t i = 0; i < len; i++)
                out[i] *= f[i];
    }
}

int64_t fr__polyfft_kernel_reals(const fr__polyfft *pl, int64_t c)
{
    return pl->kpar[c] == FR_PAR_NONE ? 2 * pl->nb : pl->nb;
}

/* The transforms a list of kernels needs: job[2 j] alone, or with job[2 j + 1] >= 0 an even
 * and an odd kernel in one transform. Even kernels fill the first slots of the jobs, odd ones
 * join them, the rest go alone. Returns the count, or -1 when out of memory (*job malloc'd). */
static int64_t kernel_jobs(const fr__polyfft *pl, const int64_t *list, int64_t cnt, int64_t **jobp)
{
    int64_t *job = malloc((size_t)(2 * cnt + 2) * sizeof *job), nj = 0, ne = 0, no = 0;
    *jobp = job;
    if (!job) return -1;
    for (int64_t i = 0; i < cnt; i++)
        if (pl->kpar[list[i]] == FR_PAR_EVEN) {
            job[2 * nj] = list[i];
            job[2 * nj++ + 1] = -1;
            ne++;
        }
    for (int64_t i = 0; i < cnt; i++) {
        int64_t c = list[i];
        if (pl->kpar[c] == FR_PAR_ODD && no < ne) {
            job[2 * no++ + 1] = c;
        } else if (pl->kpar[c] != FR_PAR_EVEN) {
            job[2 * nj] = c;
            job[2 * nj++ + 1] = -1;
        }
    }
    return nj;
}

#define FR_T_DOUBLE 0
#include "polyfft_kernels_t.h"
#undef FR_T_DOUBLE
#define FR_T_DOUBLE 1
#include "polyfft_kernels_t.h"

/* Parity of every kernel monomial on the kept offsets [lo, hi], from its factors': even when
 * c(-delta) = c(delta), odd when c(-delta) = -c(delta), both exactly (RoPE's cos and sin of a
 * position that is odd in delta, clipped or not, under no mask or a window), else none (a
 * causal mask, a W without the symmetry). Then the parity of every (u, v) pair: its alphas'
 * common parity, or none. */
int fr__polyfft_parities(fr__polyfft *pl)
{
    const fr__monomials *m = &pl->m;
    int64_t n = pl->p.n, L = 2 * n - 1;
    unsigned char *fpar = malloc((size_t)m->nk + 1);
    pl->kpar = malloc((size_t)m->nc + 1);
    pl->ppar = malloc((size_t)m->npairs + 1);
    if (!fpar || !pl->kpar || !pl->ppar) {
        free(fpar);
        return 0;
    }
    for (int k = 0; k < m->nk; k++) {
        const double *f = m->ftab + k * L + n - 1; /* f[delta] */
        int even = pl->lo == -pl->hi, odd = even && f[0] == 0;
        for (int64_t dl = 1; dl <= pl->hi && (even || odd); dl++) {
            even = even && f[dl] == f[-dl];
            odd = odd && f[dl] == -f[-dl];
        }
        fpar[k] = even ? FR_PAR_EVEN : odd ? FR_PAR_ODD : FR_PAR_NONE;
    }
    for (int64_t c = 0; c < m->nc; c++) {
        const unsigned char *e = m->c_exp + c * m->nk;
        int none = pl->lo != -pl->hi, odd = 0;
        for (int k = 0; k < m->nk; k++)
            if (e[k]) {
                none = none || fpar[k] == FR_PAR_NONE;
                odd ^= fpar[k] == FR_PAR_ODD && (e[k] & 1);
            }
        pl->kpar[c] = none ? FR_PAR_NONE : odd ? FR_PAR_ODD : FR_PAR_EVEN;
    }
    for (int64_t q = 0; q < m->npairs; q++) {
        unsigned char par = pl->kpar[m->a_c[m->p_first[q]]];
        for (int64_t al = m->p_first[q]; al < m->p_first[q + 1]; al++)
            if (pl->kpar[m->a_c[al]] != par) par = FR_PAR_NONE;
        pl->ppar[q] = par;
    }
    free(fpar);
    return 1;
}
