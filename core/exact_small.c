/* exact_small.c - exact attention in double for problems of few keys, one problem per thread.
 *
 * Why a second exact kernel: the engine (exact_impl.h) is built for long rows, and its set-up
 * is sized by its tiles: n = 64 pays for 64 rows padded to a 32-row block each and 64 keys
 * padded to a 128-key block (twice the exps and products the problem has), plus a dozen
 * allocations and the transposition of every tile, ~65 us per problem where the arithmetic
 * needs a few. A batch of thousands of such heads ran at that rate. Here a problem's rotated
 * queries, keys and values are laid out once, and each row meets exactly its kept keys.
 *
 * The arithmetic, row i:
 *   - scores s_ij over the kept keys j only (a mask keeps one contiguous range per row): one
 *     FMA chain over the d coordinates of the rotated rows (tau folded into the query);
 *   - weights exp(s_ij - m_i) with m_i the row's largest computed score, one exp each and no
 *     rescaling; so the largest weight is exactly 1, the row sum is at least 1 whatever the
 *     scores' size, and a row with one kept key returns that key's value exactly;
 *   - the row sum and each entry of sum_j w_ij V_j: one sum over the row's keys (vector lanes,
 *     then the lanes);
 *   - T_i = that sum / the row sum, one division.
 * This stays inside the engine's certified rounding bound (certify.c's fr__exact_round), which
 * the fast methods and single precision rely on: the exponent s_ij - m_i is a chain over d
 * terms from zero, then one subtraction of m_i, whose partial sums stay within 2 R' of zero as
 * the shifted chain's do; each weight is one exp, as in its shifted case (the common factor
 * e^-m_i cancels in the normalisation like its a-priori shift does); fewer than FR_EXACT_BC
 * keys make one key block, so every sum's terms pass through fewer roundings than its depth
 * FR_EXACT_BC + blocks + 4 (a sum in any order of m terms is within gamma_{m-1} of their
 * absolute sum); and the last step is one rounding where it allows one. */
/* -std=c11 turns off the contraction into fused multiply-adds; the chains above want them. */
#pragma GCC optimize("fp-contract=fast")

#include "internal.h"
#include "tiles.h" /* the vector exp */

#include <math.h>
#include <stdlib.h>

_Static_assert(FR_SMALL_EXACT_MAX_N <= FR_EXACT_BC, "one key block: certify.c's sum depth");

struct fr__small_exact {
    fr_problem p;
    int table; /* rt holds the RoPE kind's trigonometry (else fr__rotate_rows per problem) */
    fr__rope_table rt;
};

int fr__small_exact_fits(const fr_problem *p)
{
    return p->n <= FR_SMALL_EXACT_MAX_N && fr__rope_family(p, NULL, 0);
}

int fr__small_exact_create(fr__small_exact **out, const fr_problem *p, char *err, size_t errlen)
{
    *out = NULL;
    if (!fr__small_exact_fits(p))
        return fr__err(err, errlen, FR_EUSAGE, "the small exact kernel does not fit this problem");
    fr__small_exact *se = calloc(1, sizeof *se);
    if (!se) return fr__err(err, errlen, FR_ENOMEM, "out of memory creating the plan");
    se->p = *p;
    se->p.batch = se->p.kv_batch = 1;
    /* Not built (no RoPE kind, or no memory): the rotation's own per-row arithmetic, the same
     * to the bit. */
    se->table = fr__rope_table_build(&se->p, &se->rt);
    *out = se;
    return FR_OK;
}

void fr__small_exact_free(fr__small_exact *se)
{
    if (!se) return;
    fr__rope_table_free(&se->rt);
    free(se);
}

/* Rows 0..n-1 of x rotated by their positions into out (n x d). */
static void rotate(const fr__small_exact *se, const double *x, double *out)
{
    if (se->table)
        fr__rope_table_rotate(&se->rt, x, se->p.d, 0, se->p.n, out);
    else
        fr__rotate_rows(&se->p, x, 0, se->p.n, out);
}

/* The keys row i keeps: [*j0, *j1]. */
static void kept(const fr_problem *p, int64_t i, int64_t *j0, int64_t *j1)
{
    *j0 = 0;
    *j1 = p->n - 1;
    if (p->causal) *j1 = i;
    if (p->window >= 0) {
        if (i - p->window > *j0) *j0 = i - p->window;
        if (i + p->window < *j1) *j1 = i + p->window;
    }
}

/* Row i: qi the rotated query times tau, kt (d x n) the rotated keys and vt (dv x n) the
 * values transposed, s (n) scratch for the row's scores and weights. */
static void row(const fr_problem *p, int64_t i, const double *restrict qi,
                const double *restrict kt, const double *restrict vt, double *restrict s,
                double *restrict out, double *lse)
{
    int64_t n = p->n, d = p->d, dv = p->dv, j0, j1;
    kept(p, i, &j0, &j1);
#pragma omp simd
    for (int64_t j = j0; j <= j1; j++)
        s[j] = qi[0] * kt[j];
    for (int64_t t = 1; t < d; t++) {
        const double *kr = kt + t * n, a = qi[t];
#pragma omp simd
        for (int64_t j = j0; j <= j1; j++)
            s[j] += a * kr[j];
    }
    double mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = j0; j <= j1; j++)
        mx = s[j] > mx ? s[j] : mx;
    double *sr = s + j0;
    int cnt = (int)(j1 - j0 + 1);
#pragma omp simd
    for (int c = 0; c < cnt; c++)
        sr[c] = exp(sr[c] - mx);
    double l = 0;
#pragma omp simd reduction(+ : l)
    for (int c = 0; c < cnt; c++)
        l += sr[c];
    for (int64_t o = 0; o < dv; o++) {
        const double *vr = vt + o * n + j0;
        double a = 0;
#pragma omp simd reduction(+ : a)
        for (int c = 0; c < cnt; c++)
            a += sr[c] * vr[c];
        out[o] = a / l;
    }
    if (lse) *lse = mx + log(l);
}

int fr__small_exact_rows(const fr__small_exact *se, const double *q, const double *k,
                         const double *v, double *out, double *lse, char *err, size_t errlen)
{
    const fr_problem *p = &se->p;
    int64_t n = p->n, d = p->d, dv = p->dv, at;
    const char *bad = NULL;
    if ((at = fr_find_nonfinite(q, n * d)) >= 0)
        bad = "q";
    else if ((at = fr_find_nonfinite(k, n * d)) >= 0)
        bad = "k";
    else if ((at = fr_find_nonfinite(v, n * dv)) >= 0)
        bad = "v";
    if (bad)
        return fr__err(err, errlen, FR_EINPUT, "%s has a non-finite value at flat index %lld", bad,
                       (long long)at);
    /* One allocation: rotated queries, rotated keys and their transpose, values transposed, a
     * row's scores. */
    double *qr = malloc((size_t)(n * (3 * d + dv + 1)) * sizeof *qr);
    if (!qr)
        return fr__err(err, errlen, FR_ENOMEM, "out of memory (exact, n = %lld)", (long long)n);
    double *kr = qr + n * d, *kt = kr + n * d, *vt = kt + n * d, *s = vt + n * dv;
    rotate(se, q, qr);
    for (int64_t x = 0; x < n * d; x++)
        qr[x] *= p->tau;
    rotate(se, k, kr);
    for (int64_t j = 0; j < n; j++)
        for (int64_t t = 0; t < d; t++)
            kt[t * n + j] = kr[j * d + t];
    for (int64_t j = 0; j < n; j++)
        for (int64_t o = 0; o < dv; o++)
            vt[o * n + j] = v[j * dv + o];
    for (int64_t i = 0; i < n; i++)
        row(p, i, qr + i * d, kt, vt, s, out + i * dv, lse ? lse + i : NULL);
    free(qr);
    return FR_OK;
}
