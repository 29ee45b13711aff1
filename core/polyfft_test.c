/* polyfft_test.c - the polynomial + FFT pipeline against the exact reference (fr_exact_rows),
 * for every rotation kind and mask, every storage mode, and the literal algorithm, on every FFT
 * back end (each test runs once per back end, cur_fft), and the back ends against each other;
 * double FFTW down to eps 1e-10; the term counts of ALGORITHM.md's table. */
#include "internal.h"
#include "polyfft_impl.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static char err[300];

/* The engine tested here directly, without the plan's certificate: the rows with few keys
 * (where a float FFT's absolute rounding is large against D) computed exactly, as the plan
 * would ask for at a moderate eps. */
#define TEST_EXACT_KEYS(n) ((n) / 16 < 16 ? 16 : (n) / 16 > 4096 ? 4096 : (n) / 16)
static fr_fft_backend cur_fft = FR_FFT_KISSFFT; /* the back end the tests run on */

/* What a back end's rounding may add to the a-priori bound in these small tests. */
static double allowance(void)
{
    return fr__fft_is_double(cur_fft) ? 1e-11 : 2e-5;
}

typedef struct {
    double obs;   /* max |T_fast - T| */
    double bound; /* a-priori bound */
    double eps;
    int degree;
    fr_plan_info info;
} run_result;

static void fill(double *x, int64_t cnt, double scale, unsigned long long *seed)
{
    for (int64_t i = 0; i < cnt; i++)
        x[i] = scale * t_rand(seed);
}

/* Degree from eps through the bounds, polyfft (mode/budgets given), compare with exact. */
static int run(const fr_problem *p, const double *q, const double *k, const double *v, double eps,
               int literal, int64_t plan_budget, int64_t exec_budget, int want_mode, run_result *r,
               double *out_keep)
{
    int64_t n = p->n, dv = p->dv;
    fr_bounds b;
    memset(r, 0, sizeof *r);
    r->eps = eps;
    if (fr_bounds_compute(p, q, k, v, &b, err, sizeof err)) return 0;
    double eta, coef[32];
    if (fr_poly_choose_degree(b.R, b.B_v, eps, 24, &r->degree, &eta, err, sizeof err)) return 0;
    if (fr_poly_fit(b.R, r->degree, coef, &eta, err, sizeof err)) return 0;
    r->bound = fr_a_priori_bound(eta, b.B_v);
    fr__polyfft *pl;
    if (fr__polyfft_create_budget(&pl, p, coef, r->degree, literal, cur_fft, TEST_EXACT_KEYS(p->n),
                                  plan_budget, exec_budget, err, sizeof err))
        return 0;
    if (want_mode >= 0 && fr__polyfft_mode(pl) != want_mode) {
        snprintf(err, sizeof err, "mode %d, wanted %d", fr__polyfft_mode(pl), want_mode);
        fr__polyfft_free(pl);
        return 0;
    }
    fr__polyfft_info(pl, &r->info);
    double *out = malloc(n * dv * sizeof *out), *ref = malloc(n * dv * sizeof *ref);
    int ok = fr__polyfft_execute(pl, q, k, v, out, NULL, NULL, err, sizeof err) == 0 &&
             fr_exact_rows(p, q, k, v, NULL, n, ref, err, sizeof err) == 0;
    if (ok) r->obs = fr_compare(out, ref, n * dv).max_abs;
    if (ok && out_keep) memcpy(out_keep, out, n * dv * sizeof *out);
    fr__polyfft_free(pl);
    free(out);
    free(ref);
    return ok;
}

/* One problem: random Q, K, V with entries in [-B, B]; pipeline within eps and within the
 * a-priori bound (plus a float allowance far below it). */
static void check_problem(const char *name, fr_problem p, double B, double eps)
{
    unsigned long long seed = 1234 + (unsigned long long)p.n * 7 + (unsigned long long)p.d;
    int64_t n = p.n;
    double *q = malloc(n * p.d * sizeof *q), *k = malloc(n * p.d * sizeof *k),
           *v = malloc(n * p.dv * sizeof *v);
    fill(q, n * p.d, B, &seed);
    fill(k, n * p.d, B, &seed);
    fill(v, n * p.dv, B, &seed);
    run_result r;
    int ok = run(&p, q, k, v, eps, 0, (int64_t)1 << 30, (int64_t)1 << 30, -1, &r, NULL);
    T_CHECK(ok, "%s: %s", name, err);
    if (ok) {
        T_CHECK(r.obs <= eps, "%s: error %.3g above eps %.3g (degree %d)", name, r.obs, eps,
                r.degree);
        T_CHECK(r.obs <= r.bound + allowance(), "%s: error %.3g above the a-priori bound %.3g",
                name, r.obs, r.bound);
        T_CHECK(r.info.fft == cur_fft, "%s: ran on %s", name, fr_fft_name(r.info.fft));
        T_CHECK(r.info.ffts ==
                    (r.info.q_monomials + r.info.k_monomials) * (p.dv + 1) + r.info.kernels,
                "%s: ffts %lld", name, (long long)r.info.ffts);
    }
    free(q);
    free(k);
    free(v);
}

static void test_rotation_kinds(void)
{
    fr_problem p = fr_problem_default(61, 4, 4); /* odd n */
    check_problem("rope interleaved", p, 1, 1e-3);
    p.rot.pairs = FR_PAIRS_HALF;
    check_problem("rope half", p, 1, 1e-3);
    p = fr_problem_default(40, 6, 3);
    p.rot.rotary_dim = 4;
    check_problem("rope partial rotary", p, 1, 1e-3);
    p = fr_problem_default(50, 4, 2);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 5;
    check_problem("clip", p, 1, 1e-3);
    p = fr_problem_default(33, 3, 5);
    p.rot.kind = FR_ROT_NONE;
    check_problem("none", p, 1, 1e-3);
    p = fr_problem_default(64, 4, 4);
    p.tau = 0.5;
    check_problem("rope tau 1/sqrt(d)", p, 1, 1e-3);
}

static void test_explicit_w(void)
{
    int64_t n = 37, d = 4;
    double *w = calloc((2 * n - 1) * d * d, sizeof *w);
    unsigned long long seed = 99;
    /* A random sparse support: 6 of the 16 entries, random values per offset. */
    int sa[6] = {0, 1, 1, 2, 3, 3}, sb[6] = {0, 1, 2, 0, 3, 1};
    for (int64_t t = 0; t < 2 * n - 1; t++)
        for (int s = 0; s < 6; s++)
            w[(t * d + sa[s]) * d + sb[s]] = t_rand(&seed);
    fr_problem p = fr_problem_default(n, d, 3);
    p.rot.kind = FR_ROT_EXPLICIT;
    p.rot.w = w;
    check_problem("explicit sparse", p, 1, 1e-3);
    p.causal = 1;
    check_problem("explicit sparse causal", p, 1, 1e-3);
    free(w);
}

static void test_masks(void)
{
    fr_problem p = fr_problem_default(45, 4, 3);
    p.causal = 1;
    check_problem("causal", p, 1, 1e-3);
    p.causal = 0;
    p.window = 6;
    check_problem("window", p, 1, 1e-3);
    p.causal = 1;
    check_problem("causal + window", p, 1, 1e-3);
    p.window = 0;
    check_problem("window 0", p, 1, 1e-3);
    p = fr_problem_default(30, 4, 4);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 3;
    p.window = 10;
    check_problem("clip window", p, 1, 1e-3);
}

static void test_small_n(void)
{
    check_problem("n = 1", fr_problem_default(1, 4, 2), 1, 1e-3);
    check_problem("n = 2", fr_problem_default(2, 2, 1), 1, 1e-3);
    fr_problem p = fr_problem_default(1, 4, 2);
    p.causal = 1;
    check_problem("n = 1 causal", p, 1, 1e-3);
}

static void test_tighter_eps(void)
{
    fr_problem p = fr_problem_default(50, 4, 2);
    check_problem("eps 1e-4", p, 1, 1e-4);
    check_problem("larger entries", p, 2, 1e-3);
}

/* Both storage modes, column blocking and the literal algorithm agree to float rounding, for
 * kernels of every parity: causal (complex spectra), and no mask or a window on clipped RoPE
 * (even and odd kernels: real and imaginary spectra, which the literal mode does not use). */
static void modes_agree(const char *name, fr_problem p)
{
    int64_t n = p.n;
    unsigned long long seed = 5;
    double *q = malloc(n * 4 * sizeof *q), *k = malloc(n * 4 * sizeof *k),
           *v = malloc(n * 3 * sizeof *v), *o[5];
    fill(q, n * 4, 1, &seed);
    fill(k, n * 4, 1, &seed);
    fill(v, n * 3, 1, &seed);
    for (int i = 0; i < 5; i++)
        o[i] = malloc(n * 3 * sizeof *o[i]);
    run_result r;
    int64_t big = (int64_t)1 << 30;
    int64_t spec = (fr__fft_is_double(cur_fft) ? 8 : 4) * 128 + 8; /* one spectrum at N = 128 */
    T_REQUIRE(run(&p, q, k, v, 1e-3, 0, big, big, 1, &r, o[0]), "%s kernels: %s", name, err);
    T_REQUIRE(run(&p, q, k, v, 1e-3, 0, 200 * spec, 3 * spec, 1, &r, o[1]),
              "%s kernels, 1 column: %s", name, err);
    T_REQUIRE(run(&p, q, k, v, 1e-3, 0, 0, big, 2, &r, o[2]), "%s stream: %s", name, err);
    T_REQUIRE(run(&p, q, k, v, 1e-3, 0, 0, 1, 2, &r, o[3]), "%s stream, 1 column: %s", name, err);
    T_REQUIRE(run(&p, q, k, v, 1e-3, 1, big, big, -1, &r, o[4]), "%s literal: %s", name, err);
    T_CHECK(r.info.ffts == (2 * 4 + 1) * r.info.alphas, "literal ffts %lld",
            (long long)r.info.ffts);
    for (int i = 1; i < 5; i++) {
        double e = fr_compare(o[i], o[0], n * 3).max_abs;
        double tol = fr__fft_is_double(cur_fft) ? 1e-13 : 1e-5;
        T_CHECK(e < tol, "%s: variant %d differs from kept kernels by %.3g", name, i, e);
    }
    free(q);
    free(k);
    free(v);
    for (int i = 0; i < 5; i++)
        free(o[i]);
}

static void test_modes_agree(void)
{
    fr_problem p = fr_problem_default(57, 4, 3);
    p.causal = 1;
    modes_agree("causal", p);
    p.causal = 0;
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 9;
    modes_agree("clip, no mask", p);
    p.window = 20;
    modes_agree("clip, window", p);
}

/* The parities the plan finds are those of the kernels' values (checked here from the tables,
 * offset by offset), and RoPE's structure gives every (u, v) pair one parity when the mask is
 * symmetric: the case that halves the accumulation. */
static void check_parities(const char *name, fr_problem p, int want_all_pairs)
{
    double coef[4] = {1, 1, 0.5, 0.25};
    fr__polyfft *pl;
    T_REQUIRE(fr__polyfft_create(&pl, &p, coef, 3, 0, cur_fft, TEST_EXACT_KEYS(p.n), err,
                                 sizeof err) == 0,
              "%s: %s", name, err);
    const fr__monomials *m = &pl->m;
    int64_t n = p.n, L = 2 * n - 1;
    for (int64_t c = 0; c < m->nc; c++) {
        int even = pl->lo == -pl->hi, odd = even;
        for (int64_t dl = pl->lo; dl <= pl->hi; dl++) {
            double a = 1, b = 1;
            for (int f = 0; f < m->nk; f++)
                for (int t = 0; t < m->c_exp[c * m->nk + f]; t++) {
                    a *= m->ftab[f * L + dl + n - 1];
                    b *= m->ftab[f * L - dl + n - 1];
                }
            even = even && a == b;
            odd = odd && a == -b;
        }
        int want = even ? FR_PAR_EVEN : odd ? FR_PAR_ODD : FR_PAR_NONE;
        T_CHECK(pl->kpar[c] == want, "%s: kernel %lld parity %d, its values say %d", name,
                (long long)c, pl->kpar[c], want);
    }
    int64_t paired = 0;
    for (int64_t q = 0; q < m->npairs; q++)
        paired += pl->ppar[q] != FR_PAR_NONE;
    if (want_all_pairs)
        T_CHECK(paired == m->npairs, "%s: %lld of %lld pairs have one parity", name,
                (long long)paired, (long long)m->npairs);
    else
        T_CHECK(paired == 0, "%s: %lld pairs with a parity", name, (long long)paired);
    fr__polyfft_free(pl);
}

static void test_parities(void)
{
    fr_problem p = fr_problem_default(40, 4, 2);
    check_parities("rope", p, 1);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 5;
    check_parities("clip", p, 1);
    p.window = 7;
    check_parities("clip, window", p, 1);
    p.causal = 1;
    check_parities("clip, causal", p, 0);
    p = fr_problem_default(40, 6, 2);
    p.rot.rotary_dim = 4;
    p.rot.pairs = FR_PAIRS_HALF;
    check_parities("partial rotary, half pairs", p, 1);
}

static void counts(fr_problem p, int g, fr_plan_info *info)
{
    double coef[32];
    for (int i = 0; i <= g; i++)
        coef[i] = 1;
    fr__polyfft *pl;
    memset(info, 0, sizeof *info);
    if (fr__polyfft_create_budget(&pl, &p, coef, g, 0, cur_fft, TEST_EXACT_KEYS(p.n), 0, 1, err,
                                  sizeof err))
        return;
    fr__polyfft_info(pl, info);
    fr__polyfft_free(pl);
}

static void test_counts(void)
{
    fr_plan_info info;
    counts(fr_problem_default(16, 4, 4), 3, &info);
    T_CHECK(info.alphas == 165 && info.q_monomials == 35 && info.k_monomials == 35 &&
                info.kernels == 35,
            "d=4 g=3: %lld alphas, %lld/%lld/%lld", (long long)info.alphas,
            (long long)info.q_monomials, (long long)info.k_monomials, (long long)info.kernels);
    T_CHECK(info.ffts == (35 + 35) * 5 + 35, "ffts %lld", (long long)info.ffts);
    counts(fr_problem_default(16, 8, 8), 4, &info);
    T_CHECK(info.alphas == 4845 && info.q_monomials == 495 && info.k_monomials == 495 &&
                info.kernels == 495,
            "d=8 g=4: %lld alphas, %lld/%lld/%lld", (long long)info.alphas,
            (long long)info.q_monomials, (long long)info.k_monomials, (long long)info.kernels);
    T_CHECK(info.ffts == 9405, "d=8 g=4 ffts %lld (ALGORITHM.md: 9,405)", (long long)info.ffts);
    /* No rotation: every kernel is the constant 1, so there is a single kernel monomial. */
    fr_problem p = fr_problem_default(16, 4, 4);
    p.rot.kind = FR_ROT_NONE;
    counts(p, 3, &info);
    T_CHECK(info.kernels == 1 && info.alphas == 35, "none: %lld kernels, %lld alphas",
            (long long)info.kernels, (long long)info.alphas);
}

/* The normaliser check: a polynomial that goes negative on the scores must be refused. */
static void test_negative_d(void)
{
    fr_problem p = fr_problem_default(20, 2, 1);
    p.rot.kind = FR_ROT_NONE;
    p.tau = 1;
    double q[40], k[40], v[20], out[20];
    for (int i = 0; i < 40; i++)
        q[i] = k[i] = 2; /* every score is 8 */
    for (int i = 0; i < 20; i++)
        v[i] = 1;
    double coef[2] = {1, -1}; /* P(8) = -7 */
    fr__polyfft *pl;
    T_REQUIRE(fr__polyfft_create(&pl, &p, coef, 1, 0, cur_fft, TEST_EXACT_KEYS(p.n), err,
                                 sizeof err) == 0,
              "%s", err);
    int st = fr__polyfft_execute(pl, q, k, v, out, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EACCURACY, "status %d (%s)", st, err);
    fr__polyfft_free(pl);
}

/* The grid: every rotation (RoPE, clipped RoPE, a sparse explicit W) and mask (none,
 * causal, window), odd n and n = 1, dv != d. *w receives an explicit W to free (or NULL). */
#define GRID_CASES 18
static fr_problem grid_case(int c, double **w)
{
    int rot = c % 3, mask = c / 3 % 3;
    int64_t n = c < 9 ? 45 : 1, d = 4;
    fr_problem p = fr_problem_default(n, d, 3);
    *w = NULL;
    if (rot == 1) {
        p.rot.kind = FR_ROT_CLIP;
        p.rot.clip = 5;
    } else if (rot == 2) {
        double *x = calloc((size_t)((2 * n - 1) * d * d), sizeof *x);
        unsigned long long seed = 99 + (unsigned long long)c;
        int sa[6] = {0, 1, 1, 2, 3, 3}, sb[6] = {0, 1, 2, 0, 3, 1};
        for (int64_t t = 0; t < 2 * n - 1; t++)
            for (int s = 0; s < 6; s++)
                x[(t * d + sa[s]) * d + sb[s]] = t_rand(&seed);
        p.rot.kind = FR_ROT_EXPLICIT;
        p.rot.w = *w = x;
    }
    p.causal = mask == 1;
    p.window = mask == 2 ? 12 : -1; /* 25 keys: more than TEST_EXACT_KEYS for most rows */
    return p;
}

static void grid_name(char *buf, size_t len, const fr_problem *p)
{
    static const char *rots[] = {"rope", "clip", "explicit"};
    int rot = p->rot.kind == FR_ROT_CLIP ? 1 : p->rot.kind == FR_ROT_EXPLICIT ? 2 : 0;
    snprintf(buf, len, "%s%s%s n = %lld", rots[rot], p->causal ? " causal" : "",
             p->window >= 0 ? " window" : "", (long long)p->n);
}

/* The back ends against each other: one polynomial, every back end, both storage modes, on the
 * grid; the float ones within their rounding of the double one, which is within its own of
 * exact. */
static void test_backends_agree(void)
{
    fr_fft_backend all[3] = {FR_FFT_FFTW, FR_FFT_KISSFFT, FR_FFT_FFTW_FLOAT}, keep = cur_fft;
    for (int c = 0; c < GRID_CASES; c++) {
        double *w;
        fr_problem p = grid_case(c, &w);
        char name[80];
        grid_name(name, sizeof name, &p);
        int64_t n = p.n;
        unsigned long long seed = 77 + (unsigned long long)c;
        double *q = malloc(n * p.d * sizeof *q), *kk = malloc(n * p.d * sizeof *kk),
               *v = malloc(n * p.dv * sizeof *v), *o[3];
        fill(q, n * p.d, 1, &seed);
        fill(kk, n * p.d, 1, &seed);
        fill(v, n * p.dv, 1, &seed);
        for (int mode = 0; mode < 2; mode++) {
            int ok = 1;
            for (int b = 0; b < 3; b++) {
                o[b] = malloc(n * p.dv * sizeof *o[b]);
                cur_fft = all[b];
                run_result r;
                int st = run(&p, q, kk, v, 1e-3, 0, mode ? 0 : (int64_t)1 << 30, (int64_t)1 << 30,
                             mode ? 2 : 1, &r, o[b]);
                T_CHECK(st, "%s: %s: %s", name, fr_fft_name(all[b]), err);
                ok = ok && st;
            }
            for (int b = 1; ok && b < 3; b++) {
                double e = fr_compare(o[b], o[0], n * p.dv).max_abs;
                T_CHECK(e < 1e-5, "%s mode %d: %s differs from fftw by %.3g", name, mode,
                        fr_fft_name(all[b]), e);
                /* n = 1: one key, every output is V's row whatever the rounding of D */
                T_CHECK(n == 1 || e > 0, "%s: %s is fftw to the bit: no float in it?", name,
                        fr_fft_name(all[b]));
            }
            for (int b = 0; b < 3; b++)
                free(o[b]);
        }
        free(q);
        free(kk);
        free(v);
        free(w);
    }
    cur_fft = keep;
}

/* One certified run through the plan (what a caller gets): the tightest eps of the ladder that
 * the back end's certificate accepts, then every row of the execution within its certified
 * bound and within eps of exact attention. Returns that eps (0: none certified). */
static double certified_run(const char *name, const fr_problem *p, const double *q, const double *k,
                            const double *v, fr_fft_backend fft, double eps_min)
{
    static const double ladder[] = {1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3};
    int64_t n = p->n, dv = p->dv;
    fr_bounds b;
    T_CHECK(fr_bounds_compute(p, q, k, v, &b, err, sizeof err) == 0, "%s: %s", name, err);
    fr_plan *pl = NULL;
    double eps = 0;
    for (size_t e = 0; e < sizeof ladder / sizeof *ladder && !pl; e++) {
        if (ladder[e] < eps_min) continue;
        fr_options o = fr_options_default();
        o.method = FR_METHOD_POLYFFT;
        o.fft = fft;
        o.eps = eps = ladder[e];
        int st = fr_plan_create(&pl, p, &b, &o, err, sizeof err);
        T_CHECK(st == 0 || st == FR_EACCURACY, "%s: %s eps %g: %s", name, fr_fft_name(fft), eps,
                err);
        if (st) pl = NULL;
    }
    if (!pl) return 0;
    fr_plan_info info;
    fr_plan_get_info(pl, &info);
    T_CHECK(info.method == FR_METHOD_POLYFFT && info.fft == fr__fft_resolve(fft),
            "%s: ran %s on %s", name, fr_method_name(info.method), fr_fft_name(info.fft));
    double *out = malloc(n * dv * sizeof *out), *ref = malloc(n * dv * sizeof *ref);
    fr_exec_info ex;
    int ok = fr_execute(pl, q, k, v, out, &ex, err, sizeof err) == 0;
    T_CHECK(ok, "%s: %s: %s", name, fr_fft_name(fft), err);
    ok = ok && fr_exact_rows(p, q, k, v, NULL, n, ref, err, sizeof err) == 0;
    if (ok) {
        T_CHECK(ex.a_priori_bound <= eps, "%s: %s: certified %.3g above eps %.3g", name,
                fr_fft_name(fft), ex.a_priori_bound, eps);
        int64_t bad = 0;
        double worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = fr_compare(out + i * dv, ref + i * dv, dv).max_abs;
            bad += !(e <= ex.a_priori_bound);
            worst = e > worst ? e : worst;
        }
        T_CHECK(bad == 0, "%s: %s eps %g: %lld rows beyond the certified %.3g (worst %.3g)", name,
                fr_fft_name(fft), eps, (long long)bad, ex.a_priori_bound, worst);
    }
    free(out);
    free(ref);
    fr_plan_free(pl);
    return eps;
}

/* The grid through the certificate, on every back end: double FFTW certifies 1e-6 on all of
 * it; a single-precision one, whose certified rounding is normwise and far above its actual
 * error, at least 0.03 at these sizes. */
static void test_certified(void)
{
    fr_fft_backend all[3] = {FR_FFT_FFTW, FR_FFT_KISSFFT, FR_FFT_FFTW_FLOAT};
    for (int c = 0; c < GRID_CASES; c++) {
        double *w;
        fr_problem p = grid_case(c, &w);
        char name[80];
        grid_name(name, sizeof name, &p);
        int64_t n = p.n;
        unsigned long long seed = 500 + (unsigned long long)c;
        double *q = malloc(n * p.d * sizeof *q), *k = malloc(n * p.d * sizeof *k),
               *v = malloc(n * p.dv * sizeof *v);
        fill(q, n * p.d, 1, &seed);
        fill(k, n * p.d, 1, &seed);
        fill(v, n * p.dv, 1, &seed);
        for (int b = 0; b < 3; b++) {
            double eps = certified_run(name, &p, q, k, v, all[b], 0);
            double want = fr__fft_is_double(all[b]) ? 1e-6 : 3e-2;
            T_CHECK(eps > 0 && eps <= want, "%s: %s certifies %g at best, wanted %g", name,
                    fr_fft_name(all[b]), eps, want);
        }
        free(q);
        free(k);
        free(v);
        free(w);
    }
}

/* Double FFTW reaches what float FFTs cannot: eps 1e-10 at B <= 1, d = 4, through the degree
 * the double rounding allows, under every mask. */
static void test_double_eps(void)
{
    if (!fr__fft_is_double(cur_fft)) return;
    fr_problem p = fr_problem_default(300, 4, 4);
    check_problem("rope eps 1e-10", p, 1, 1e-10);
    p.causal = 1;
    check_problem("rope causal eps 1e-10", p, 1, 1e-10);
    p = fr_problem_default(257, 4, 3);
    p.rot.kind = FR_ROT_CLIP;
    p.rot.clip = 16;
    p.window = 100;
    check_problem("clip window eps 1e-10", p, 1, 1e-10);
    p = fr_problem_default(64, 4, 2);
    check_problem("rope B = 0.5 eps 1e-12", p, 0.5, 1e-12);
}

/* The promise through the plan: double FFTW certifies eps = 1e-10 at B <= 1, d = 4
 * (auto picks it), and every row is within the certified bound. */
static void test_double_certified(void)
{
    fr_problem ps[4];
    ps[0] = fr_problem_default(300, 4, 4);
    ps[1] = ps[0];
    ps[1].causal = 1;
    ps[2] = fr_problem_default(257, 4, 3);
    ps[2].rot.kind = FR_ROT_CLIP;
    ps[2].rot.clip = 16;
    ps[2].window = 100;
    ps[3] = fr_problem_default(64, 4, 2);
    double Bs[4] = {1, 1, 1, 0.5};
    for (int c = 0; c < 4; c++) {
        fr_problem p = ps[c];
        int64_t n = p.n;
        unsigned long long seed = 4000 + (unsigned long long)c;
        double *q = malloc(n * p.d * sizeof *q), *k = malloc(n * p.d * sizeof *k),
               *v = malloc(n * p.dv * sizeof *v);
        fill(q, n * p.d, Bs[c], &seed);
        fill(k, n * p.d, Bs[c], &seed);
        fill(v, n * p.dv, Bs[c], &seed);
        char name[80];
        snprintf(name, sizeof name, "problem %d (n = %lld, B = %g)", c, (long long)n, Bs[c]);
        for (int a = 0; a < 2; a++) {
            fr_fft_backend fft = a ? FR_FFT_AUTO : FR_FFT_FFTW;
            double eps = certified_run(name, &p, q, k, v, fft, 1e-10);
            T_CHECK(eps == 1e-10, "%s: %s does not certify 1e-10 (%g)", name, fr_fft_name(fft),
                    eps);
        }
        free(q);
        free(k);
        free(v);
    }
}

/* The pass's monomials (fr__polyfft_mono: up to four factors per pass over a chunk of rows)
 * equal the product row by row, for degrees that take one, two and three passes with every
 * remainder, on n not a multiple of the chunk, and on n = 1. */
static void test_monomials(void)
{
    int64_t ns[] = {1, 300, 517};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        int64_t n = ns[k], d = 3;
        fr__polyfft pl;
        memset(&pl, 0, sizeof pl);
        pl.p = fr_problem_default(n, d, d);
        double *x = malloc((size_t)(n * d) * sizeof *x), *out = malloc((size_t)n * sizeof *out);
        T_REQUIRE(x && out, "out of memory");
        unsigned long long s = 12345;
        for (int64_t i = 0; i < n * d; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i] = (double)(s >> 11) / 9007199254740992.0 * 2.2 - 1.1;
        }
        double *xt = fr__transpose(x, n, d);
        T_REQUIRE(xt != NULL, "out of memory");
        for (int g = 0; g <= 11; g++) {
            unsigned char e[3] = {(unsigned char)(g / 2), (unsigned char)(g - g / 2 - g / 3),
                                  (unsigned char)(g / 3)};
            fr__polyfft_mono(&pl, e, xt, out);
            double worst = 0;
            for (int64_t i = 0; i < n; i++) {
                double want = fr__monomial_eval(e, x + i * d, (int)d);
                double dev = fabs(out[i] - want) / (fabs(want) > 1e-300 ? fabs(want) : 1);
                worst = dev > worst ? dev : worst;
            }
            /* two products of g factors in different orders: within 2 gamma_g of each other */
            T_CHECK(worst <= 2.0 * (g + 1) * 0x1.0p-53, "n = %lld, degree %d: off by %.3g",
                    (long long)n, g, worst);
        }
        free(xt);
        free(x);
        free(out);
    }
}

int main(void)
{
    fr_fft_backend all[3] = {FR_FFT_KISSFFT, FR_FFT_FFTW, FR_FFT_FFTW_FLOAT};
    for (int b = 0; b < 3; b++) {
        cur_fft = all[b];
        printf("# FFT back end %s\n", fr_fft_name(cur_fft));
        T_RUN(test_rotation_kinds);
        T_RUN(test_explicit_w);
        T_RUN(test_masks);
        T_RUN(test_small_n);
        T_RUN(test_tighter_eps);
        T_RUN(test_modes_agree);
        T_RUN(test_parities);
        T_RUN(test_counts);
        T_RUN(test_negative_d);
        T_RUN(test_double_eps);
    }
    T_RUN(test_monomials);
    T_RUN(test_backends_agree);
    T_RUN(test_certified);
    T_RUN(test_double_certified);
    return t_done();
}
