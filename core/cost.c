/* cost.c - the cost model behind --method auto: predicted seconds of each method.
 *
 * Each method's time is a few counted operations times a constant measured on this machine:
 *
 *   exact            pairs * (c_exact_flop * (score_len + dv) + c_exact_exp)
 *                    pairs = the (i, j) the mask keeps; score_len = d when rows are rotated
 *                    first (RoPE family), |S| otherwise (one product per support entry)
 *   polyfft          ffts * c_fft * N log2 N + alphas * (N/2 + 1) * (dv+1) * c_acc
 *                    ffts = (#u + #v)(dv+1) + #c (spectral accumulation, ALGORITHM.md 5)
 *   polyfft-literal  ffts = (2(dv+1) + 1) * alphas, the same constants
 *   polyrope         n * c_rope_row + n * r * (dv+1) * c_rope * mask factor, r = C(g + d, d)
 *                    (per row: rotation, [V, 1], normalisation)
 *
 * plus a fixed start-up cost per method (threads, allocation), which is what makes exact win
 * at tiny n. Only the ratios between methods matter to auto; the absolute values make the
 * report's predicted_s readable.
 *
 * The built-in constants were measured once by scripts/calibrate_cost.py (timed CLI runs, least
 * squares per method) on the project's 2-core AMD EPYC (AVX-512) machine, with OpenMP on both
 * cores; see the comment at each for when. On other machines they can be off several times
 * over, so `fastrope calibrate` (cmd/calibrate.c) measures this machine's and a caller hands
 * them over in fr_options.cost (the core reads no files). */
#include "fft.h"
#include "internal.h"
#include "monomial.h"

#include <math.h>
#include <omp.h>

/* Measured 2026-11-24 by scripts/calibrate_cost.py on the 2-core AMD EPYC (AVX-512) machine,
 * quiet, at nice -10 (cases: exact at n = 4K-8K, d = 4-64; polyrope at n = 1K-64K, degrees 2-6;
 * polyfft at n = 1K-16K, degrees 2-6), after polyfft's pass was rewritten (an earlier
 * calibration, taken while a fuzzer ran, had every constant about 2x too high). The fixed costs
 * c_exact_0 and c_rope_0 are the best of 7 CLI runs at n = 16 (0.35 ms and 1.2 ms). polyrope's
 * other constants keep the earlier fit: the quiet one (6.52e-11, 4.16e-7, 1.43, 1.79), from
 * cases of d <= 8, predicted d = 16 at n = 4096 1.5x too fast and auto then chose polyrope over
 * a faster exact; the earlier ones chose within 1.3x on every row of bench_polyrope. c_acc fits
 * to 0: since even and odd kernels halve it, the accumulation is a few percent of polyfft at
 * these sizes, below what the fit resolves, and c_fft carries it. */
static const fr_cost_model builtin = {
    .exact_0 = 4e-4,
    .exact_flop = 2.64e-11, /* s per multiply-add per pair */
    .exact_exp = 8.56e-10,  /* s per pair for exp and bookkeeping */
    .rope_0 = 1.2e-3,       /* s per call: degree choice, threads, workspaces */
    .rope_row = 9.03e-7,    /* s per row: sin/cos, copies, first touch */
    .rope = 1.51e-10,       /* s per feature x column x row (unmasked) */
    .rope_causal = 1.16,    /* the running sum's extra product, per chunk */
    .rope_window = 1.65,    /* keys enter and leave the sliding sum */
    .fft_0 = 5.6e-3,
    /* Per FFT back end (AUTO: as FFTW in double, fr__fft_resolve). c_fft: s per N log2 N of one
     * transform; c_acc: s per complex multiply-add of the accumulation. KissFFT's: the fit
     * above; FFTW's: PRELIMINARY. */
    .fft = {[FR_FFT_KISSFFT] = 3.08e-10, [FR_FFT_FFTW] = 1.1e-10, [FR_FFT_FFTW_FLOAT] = 0.8e-10},
    .acc = {0},
};

void fr_cost_model_builtin(fr_cost_model *c)
{
    *c = builtin;
}

/* Pairs (i, j) kept by the mask, counted exactly. */
static double kept_pairs(const fr_problem *p)
{
    double n = (double)p->n;
    int64_t w = p->window;
    if (w >= p->n - 1) w = -1;
    double ww = (double)w;
    if (p->causal) return w < 0 ? n * (n + 1) / 2 : n * (ww + 1) - ww * (ww + 1) / 2;
    return w < 0 ? n * n : n * (2 * ww + 1) - ww * (ww + 1);
}

void fr_predict_times(const fr_problem *p, int degree, int64_t support, double *t)
{
    fr_predict_times_cost(NULL, p, degree, support, FR_FFT_AUTO, t);
}

void fr_predict_times_cost(const fr_cost_model *cost, const fr_problem *p, int degree,
                           int64_t support, fr_fft_backend fft, double *t)
{
    const fr_cost_model *c = cost ? cost : &builtin;
    for (int m = 0; m < FR_NMETHODS; m++)
        t[m] = -1;
    double n = (double)p->n, dv = (double)p->dv, nc = dv + 1;
    int family = p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_NONE;
    if (p->rot.kind == FR_ROT_EXPLICIT) family = fr__rope_family(p, NULL, 0);
    double score_len = family ? (double)p->d : (double)support;
    /* The constants are the two-thread rate; below the threshold exact runs on one thread
     * (at n = 1024, d = 4 the two-thread rate predicted 1.5 ms against 2.9 ms measured, and
     * auto picked exact over polyrope's 1.8 ms). */
    int max_threads = omp_get_max_threads();
    double threads = n * n >= FR_EXACT_PAR_MIN_SCORES ? 1 : (double)max_threads;
    t[FR_METHOD_EXACT] =
        c->exact_0 + kept_pairs(p) * (c->exact_flop * (score_len + dv) + c->exact_exp) * threads;
    if (degree < 0) return;

    fft = fr__fft_resolve(fft);
    int64_t fft_size = fr__fft_fast_size(fft, 2 * p->n - 1);
    double N = (double)fft_size, nlogn = N * log2(N > 2 ? N : 2);
    int64_t iu, ic, ialphas;
    fr__polyfft_counts(p, degree, support, &ialphas, &iu, &ic);
    double u = (double)iu, cc = (double)ic, alphas = (double)ialphas;
    double acc = alphas * (N / 2 + 1) * nc * c->acc[fft];
    t[FR_METHOD_POLYFFT] = c->fft_0 + (2 * u * nc + cc) * nlogn * c->fft[fft] + acc;
    t[FR_METHOD_POLYFFT_LITERAL] = c->fft_0 + (2 * nc + 1) * alphas * nlogn * c->fft[fft] + acc;

    if (family) {
        int64_t rank = fr__binom(degree + p->d, p->d);
        double r = (double)rank;
        int64_t w = p->window >= p->n - 1 ? -1 : p->window;
        double f = w >= 0 ? c->rope_window : p->causal ? c->rope_causal : 1;
        t[FR_METHOD_POLYROPE] = c->rope_0 + c->rope_row * n + c->rope * n * r * nc * f;
    }
}
