/* bench_pass.c - the time of polyfft's pass at a forced degree on one FFT back end, without the
 * certificate: what `fastrope run --method polyfft --degree G` would compute if the plan did
 * not refuse it. scripts/bench_polyfft.py builds it against build/libfastrope.a and uses it for
 * the single-precision back ends at sizes where their certified rounding cannot meet any eps
 * (their normwise bound passes 1 near n = 64K): the same polynomial as the double back end's
 * certified run, so that the back ends' times compare like for like.
 *
 *   bench_pass N D CLIP DEGREE FFT REPEAT   (CLIP < 0: standard RoPE; FFT: kissfft, fftw, ...)
 *
 * Prints one JSON object: the best of REPEAT timed runs of plan + execute (what the command's
 * time_s.compute holds, less the certificate's O(n) work), after one untimed plan that puts
 * FFTW's measured plans in its wisdom. Inputs: uniform in [-1, 1] (B = 1), dv = d, tau 1/d. */
#include "internal.h"

#include <malloc.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The command's FFTW wisdom (cmd/wisdom.c's file), so that the untimed first plan does not
 * measure again what every command run on this machine reuses; missing or bad: measured. */
static void load_wisdom(void)
{
    char path[4096];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/')
        snprintf(path, sizeof path, "%s/fastrope/fftw-wisdom", xdg);
    else if (home && home[0])
        snprintf(path, sizeof path, "%s/.cache/fastrope/fftw-wisdom", home);
    else
        return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    static char text[16 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    fr_fft_wisdom_import(text);
}

static double uniform(unsigned long long *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ULL) >> 11) / 4503599627370496.0 - 1;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: bench_pass N D CLIP DEGREE FFT REPEAT\n");
        return 2;
    }
    /* Every large buffer from fresh pages, as in a command's one run: without this, glibc's
     * adaptive threshold hands the repetitions the memory of the first, already touched, and
     * first touches cost ~2 ms per MB on this kind of machine (most of the pass at n = 8K). */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    load_wisdom();
    int64_t n = atoll(argv[1]), d = atoll(argv[2]);
    int clip = atoi(argv[3]), degree = atoi(argv[4]), repeat = atoi(argv[6]);
    fr_fft_backend fft;
    char err[400];
    if (n < 1 || d < 2 || degree < 0 || degree > 30 || repeat < 1 || fr_fft_parse(argv[5], &fft)) {
        fprintf(stderr, "bench_pass: bad arguments\n");
        return 2;
    }
    fr_problem p = fr_problem_default(n, d, d);
    if (clip >= 0) {
        p.rot.kind = FR_ROT_CLIP;
        p.rot.clip = clip;
    }
    double *q = malloc((size_t)(n * d) * sizeof *q), *k = malloc((size_t)(n * d) * sizeof *k),
           *v = malloc((size_t)(n * d) * sizeof *v), *out = malloc((size_t)(n * d) * sizeof *out);
    if (!q || !k || !v || !out) {
        fprintf(stderr, "bench_pass: out of memory\n");
        return 1;
    }
    unsigned long long seed = 0x9e3779b97f4a7c15ULL;
    for (int64_t i = 0; i < n * d; i++) {
        q[i] = uniform(&seed);
        k[i] = uniform(&seed);
        v[i] = uniform(&seed);
    }
    fr_bounds b;
    double coef[32], eta;
    if (fr_bounds_compute(&p, q, k, v, &b, err, sizeof err) ||
        fr_poly_fit(b.R, degree, coef, &eta, err, sizeof err)) {
        fprintf(stderr, "bench_pass: %s\n", err);
        return 1;
    }
    double best = -1, plan_s = 0;
    fr_plan_info info = {0};
    for (int r = 0; r <= repeat; r++) {
        double t0 = omp_get_wtime();
        fr__polyfft *pl;
        /* exact_keys 0: no row is recomputed exactly, only the pass is timed */
        int st = fr__polyfft_create(&pl, &p, coef, degree, 0, fft, 0, err, sizeof err);
        double t1 = omp_get_wtime();
        if (!st) {
            fr__polyfft_info(pl, &info);
            st = fr__polyfft_execute(pl, q, k, v, out, NULL, NULL, err, sizeof err);
            fr__polyfft_free(pl);
        }
        double t2 = omp_get_wtime();
        if (st) {
            fprintf(stderr, "bench_pass: %s\n", err);
            return 1;
        }
        if (r > 0 && (best < 0 || t2 - t0 < best)) { /* run 0 only plans FFTW's transforms */
            best = t2 - t0;
            plan_s = t1 - t0;
        }
    }
    printf("{\"n\": %lld, \"d\": %lld, \"clip\": %d, \"degree\": %d, \"fft\": \"%s\", "
           "\"fft_size\": %lld, \"ffts\": %lld, \"threads\": %d, \"seconds\": %.6f, "
           "\"plan_seconds\": %.6f}\n",
           (long long)n, (long long)d, clip, degree, fr_fft_name(info.fft),
           (long long)info.fft_size, (long long)info.ffts, omp_get_max_threads(), best, plan_s);
    free(q);
    free(k);
    free(v);
    free(out);
    return 0;
}
