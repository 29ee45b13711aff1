/* calibrate.c - `fastrope calibrate`: measure this machine's cost constants (core/cost.c), as
 * FFTW measures its wisdom, and keep them in the cache directory for auto, check and bound.
 *
 * Each method runs a few short problems, each run in a fresh child process (this command with
 * the hidden --case), planned and executed as `run` would: the time a report's time_s.compute
 * counts, with FFTW's wisdom loaded, a team of threads to start and memory touched for the
 * first time, which a run in this process would pay once for all; the best of a few runs, after
 * an untimed one that leaves FFTW's plans in the wisdom. The model's
 * times are linear in its constants, so the core's own prediction under a model with one
 * constant 1 and the rest 0 is the count that constant multiplies; each method's constants are
 * then the least squares fit of its times in relative error, kept >= 0. The counts are the
 * core's, so the file cannot drift from the model that reads it. */
#include "cli.h"
#include "cost.h"
#include "wisdom.h"

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int quick;
    const char *out;
    const char *child; /* --case: one timed run, in a child process */
} cal_opts;

static const cli_opt cal_table[] = {
    OPT_FLAG("quick", 0, cal_opts, quick,
             "small sizes, one timed run each (seconds): a smoke test, not constants to keep"),
    OPT_STRING("output", 'o', cal_opts, out, "FILE",
               "write the constants to FILE (default: the cache, $XDG_CACHE_HOME/fastrope/"
               "cost-model or ~/.cache/fastrope/cost-model)"),
    OPT_HIDDEN_STRING("case", cal_opts, child), OPT_END};
static const cli_section sections[] = {{cal_table, 0, NULL}, {NULL, 0, NULL}};
static const cli_command command = {
    "calibrate", "",
    "Times short runs of each method on this machine (under a minute) and writes the cost "
    "model's constants, keyed by CPU model and thread count, where run, grad, check and bound "
    "find them: their reports' plan.cost then says \"calibrated FILE\" (--cost FILE names "
    "another file).",
    sections, CLI_NO_ARGS};

/* The constants a method's fit sets (offsets into fr_cost_model), at most MAXC. */
enum { MAXC = 4, MAXCASES = 16 };
#define OFF(member) offsetof(fr_cost_model, member)

typedef struct {
    const char *name;
    fr_method method;
    fr_fft_backend fft;
    size_t cols[MAXC];
    int ncols;
    const int64_t (*cases)[2]; /* {n, d}, ends with {0, 0} */
    const int64_t (*quick)[2];
} method_fit;

static const int64_t exact_cases[][2] = {{16, 4},    {1024, 8},  {4096, 4}, {4096, 64},
                                         {8192, 16}, {8192, 64}, {0, 0}};
static const int64_t exact_quick[][2] = {{16, 4}, {512, 4}, {512, 32}, {0, 0}};
static const int64_t rope_cases[][2] = {{16, 4},    {1024, 4}, {4096, 4},  {16384, 4}, {65536, 4},
                                        {16384, 8}, {4096, 8}, {4096, 16}, {0, 0}};
static const int64_t rope_quick[][2] = {{16, 4}, {1024, 4}, {2048, 8}, {0, 0}};
static const int64_t fft_cases[][2] = {{16, 4},    {1024, 4},  {4096, 4}, {16384, 4},
                                       {65536, 4}, {16384, 8}, {0, 0}};
static const int64_t fft_quick[][2] = {{16, 4}, {512, 4}, {1024, 4}, {0, 0}};
static const int64_t fftf_cases[][2] = {{4096, 4}, {16384, 4}, {65536, 4}, {0, 0}};
static const int64_t fftf_quick[][2] = {{512, 4}, {1024, 4}, {0, 0}};

/* polyfft's fixed cost is fitted with FFTW's; the single-precision back ends fit their rate. */
static const method_fit fits[] = {
    {"exact",
     FR_METHOD_EXACT,
     FR_FFT_AUTO,
     {OFF(exact_0), OFF(exact_flop), OFF(exact_exp)},
     3,
     exact_cases,
     exact_quick},
    {"polyrope",
     FR_METHOD_POLYROPE,
     FR_FFT_AUTO,
     {OFF(rope_0), OFF(rope_row), OFF(rope)},
     3,
     rope_cases,
     rope_quick},
    {"polyfft (fftw)",
     FR_METHOD_POLYFFT,
     FR_FFT_FFTW,
     {OFF(fft_0), OFF(fft[FR_FFT_FFTW])},
     2,
     fft_cases,
     fft_quick},
    {"polyfft (fftw-float)",
     FR_METHOD_POLYFFT,
     FR_FFT_FFTW_FLOAT,
     {OFF(fft[FR_FFT_FFTW_FLOAT])},
     1,
     fftf_cases,
     fftf_quick},
    {"polyfft (kissfft)",
     FR_METHOD_POLYFFT,
     FR_FFT_KISSFFT,
     {OFF(fft[FR_FFT_KISSFFT])},
     1,
     fftf_cases,
     fftf_quick},
};

static double *member(fr_cost_model *c, size_t off)
{
    return (double *)(void *)((char *)c + off);
}

/* Uniform entries in [-1, 1] from a fixed stream: bounded data, low degrees. */
static void fill(double *x, int64_t count, uint64_t *s)
{
    for (int64_t i = 0; i < count; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (double)(*s >> 11) * 0x1.0p-52 - 1;
    }
}

/* The single-precision back ends certify only loose eps (core/certify.c): the first of these
 * that plans. */
static const double eps_tries[] = {1e-3, 1e-2, 1e-1, 0.5};

/* The child's side of one timed run (--case): the problem made and its bounds taken outside
 * the clock, as `run` loads its inputs; then planning and execution timed once, in this fresh
 * process, as `run`'s time_s.compute. Prints "seconds degree support fft". An exit code. */
static int child_case(const char *spec)
{
    int fi;
    long long n, d;
    if (sscanf(spec, "%d,%lld,%lld", &fi, &n, &d) != 3 || fi < 0 ||
        fi >= (int)(sizeof fits / sizeof *fits) || n < 1 || d < 1 || n * d > (1LL << 26))
        return cli_fail(EXIT_USAGE, "calibrate: bad --case '%s'", spec);
    const method_fit *mf = &fits[fi];
    fr_problem p = fr_problem_default(n, d, d);
    size_t cnt = (size_t)(n * d);
    double *buf = malloc(4 * cnt * sizeof(double));
    if (!buf) return cli_fail(EXIT_INTERNAL, "calibrate: out of memory");
    double *q = buf, *k = q + cnt, *v = k + cnt, *out = v + cnt;
    uint64_t s = 12345;
    fill(buf, (int64_t)(3 * cnt), &s);
    char err[512];
    fr_bounds b;
    int st = fr_bounds_compute(&p, q, k, v, &b, err, sizeof err);
    fr_options opt = fr_options_default();
    opt.method = mf->method;
    opt.fft = mf->fft;
    for (size_t t = 0; !st && t < sizeof eps_tries / sizeof *eps_tries; t++) {
        fr_plan_info est;
        opt.eps = eps_tries[t];
        if (mf->method == FR_METHOD_EXACT ||
            (fr_plan_estimate(&p, &b, &opt, &est, err, sizeof err) == FR_OK && est.degree >= 0))
            break;
    }
    cli_wisdom wis;
    cli_wisdom_load(&wis);
    fr_plan *plan = NULL;
    fr_plan_info info;
    /* What job.c's compute() times: planning and execution (not the wisdom's save). */
    double t0 = cli_now();
    if (!st) st = fr_plan_create(&plan, &p, &b, &opt, err, sizeof err);
    double tw = cli_now();
    cli_wisdom_save(&wis);
    t0 += cli_now() - tw;
    if (!st) st = fr_execute(plan, q, k, v, out, NULL, err, sizeof err);
    double dt = cli_now() - t0;
    if (!st) fr_plan_get_info(plan, &info);
    fr_plan_free(plan);
    free(buf);
    if (st) return cli_fail(st, "%s", err);
    printf("%.9g %d %lld %d\n", dt, info.degree, (long long)info.support, (int)info.fft);
    return EXIT_OK;
}

/* One cold run of method fi on an n x d problem in a child process: its seconds, and the plan's
 * degree, support and back end in *info; -1 when the method cannot run it (*why says why). */
static double run_case(const char *self, int fi, int64_t n, int64_t d, fr_plan_info *info,
                       char *why, size_t len)
{
    char cmd[4400], line[1024];
    snprintf(cmd, sizeof cmd, "'%s' calibrate --case %d,%lld,%lld 2>&1", self, fi, (long long)n,
             (long long)d);
    FILE *f = popen(cmd, "r");
    if (!f) {
        snprintf(why, len, "cannot start the timed run");
        return -1;
    }
    line[0] = '\0';
    char *got = fgets(line, sizeof line, f);
    int rc = pclose(f);
    double dt;
    int g, fft;
    long long support;
    if (!got || rc != 0 || sscanf(line, "%lf %d %lld %d", &dt, &g, &support, &fft) != 4) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(why, len, "%.*s", (int)(len > 1 ? len - 1 : 0),
                 line[0] ? line : "the timed run failed");
        return -1;
    }
    info->degree = g;
    info->support = support;
    info->fft = (fr_fft_backend)fft;
    return dt;
}

/* One case's timing: the best of its timed runs (-1: the method cannot run it). */
typedef struct {
    fr_problem p;
    fr_plan_info info;
    double best;
    int runs; /* timed runs still to make */
    char why[512];
} cal_case;

/* Every case of every method: an untimed run first (it leaves FFTW's plans in the cache's
 * wisdom and says whether the method runs the case at all), then reps timed runs, made in rounds
 * over all the cases rather than back to back: a spell in which the machine is busy elsewhere
 * then spoils one run of many cases, not every run of a few, and the best of a case's runs is its
 * steady time. A case whose untimed run took over half a second is steady already: one timed
 * run. */
static void time_cases(const char *self, int quick, cal_case cs[][MAXCASES], int *ncase)
{
    int reps = quick ? 1 : 3, nfit = (int)(sizeof fits / sizeof *fits);
    for (int fi = 0; fi < nfit; fi++) {
        const int64_t(*cases)[2] = quick ? fits[fi].quick : fits[fi].cases;
        ncase[fi] = 0;
        for (int i = 0; cases[i][0] && i < MAXCASES; i++) {
            cal_case *c = &cs[fi][ncase[fi]++];
            memset(c, 0, sizeof *c);
            c->p = fr_problem_default(cases[i][0], cases[i][1], cases[i][1]);
            double t =
                run_case(self, fi, cases[i][0], cases[i][1], &c->info, c->why, sizeof c->why);
            c->best = t < 0 ? -1 : INFINITY;
            c->runs = t < 0 ? 0 : t > 0.5 ? 1 : reps;
        }
    }
    for (int round = 0; round < reps; round++)
        for (int fi = 0; fi < nfit; fi++)
            for (int i = 0; i < ncase[fi]; i++) {
                cal_case *c = &cs[fi][i];
                if (c->runs <= round) continue;
                double t = run_case(self, fi, c->p.n, c->p.d, &c->info, c->why, sizeof c->why);
                if (t < 0) {
                    c->best = -1;
                    c->runs = 0;
                } else if (t < c->best) {
                    c->best = t;
                }
            }
}

/* Solve the k x k system a x = y by Gaussian elimination with partial pivoting; 0 if singular. */
static int solve(int k, double a[MAXC][MAXC], double *y, double *x)
{
    for (int c = 0; c < k; c++) {
        int piv = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c])) piv = r;
        if (!(fabs(a[piv][c]) > 0)) return 0;
        for (int j = 0; j < k; j++) {
            double tmp = a[c][j];
            a[c][j] = a[piv][j];
            a[piv][j] = tmp;
        }
        double tmp = y[c];
        y[c] = y[piv];
        y[piv] = tmp;
        for (int r = c + 1; r < k; r++) {
            double f = a[r][c] / a[c][c];
            for (int j = c; j < k; j++)
                a[r][j] -= f * a[c][j];
            y[r] -= f * y[c];
        }
    }
    for (int c = k - 1; c >= 0; c--) {
        double s = y[c];
        for (int j = c + 1; j < k; j++)
            s -= a[c][j] * x[j];
        x[c] = s / a[c][c];
    }
    return 1;
}

/* min sum_i ((A_i x - y_i) / y_i)^2 over x >= 0: every subset of the columns solved freely, the
 * best whose solution is non-negative (a handful of columns: 2^k is small). 0 if none. */
static int nnls_rel(int m, int k, double A[MAXCASES][MAXC], const double *y, double *x)
{
    double best = INFINITY;
    for (unsigned set = 1; set < (1u << k); set++) {
        int idx[MAXC], kk = 0;
        for (int j = 0; j < k; j++)
            if (set & (1u << j)) idx[kk++] = j;
        double a[MAXC][MAXC] = {{0}}, rhs[MAXC] = {0}, z[MAXC] = {0};
        for (int i = 0; i < m; i++) {
            double w = 1 / (y[i] * y[i]);
            for (int r = 0; r < kk; r++) {
                rhs[r] += w * A[i][idx[r]] * y[i];
                for (int c = 0; c < kk; c++)
                    a[r][c] += w * A[i][idx[r]] * A[i][idx[c]];
            }
        }
        if (!solve(kk, a, rhs, z)) continue;
        int neg = 0;
        for (int r = 0; r < kk; r++)
            neg |= !(z[r] >= 0);
        if (neg) continue;
        double res = 0;
        for (int i = 0; i < m; i++) {
            double pred = 0;
            for (int r = 0; r < kk; r++)
                pred += A[i][idx[r]] * z[r];
            res += (pred - y[i]) * (pred - y[i]) / (y[i] * y[i]);
        }
        if (res < best) {
            best = res;
            for (int j = 0; j < k; j++)
                x[j] = 0;
            for (int r = 0; r < kk; r++)
                x[idx[r]] = z[r];
        }
    }
    return isfinite(best);
}

/* The count each of mf's constants multiplies in problem p's predicted time. */
static void counts(const method_fit *mf, const fr_problem *p, const fr_plan_info *info, double *row)
{
    for (int j = 0; j < mf->ncols; j++) {
        fr_cost_model unit;
        memset(&unit, 0, sizeof unit);
        unit.rope_causal = unit.rope_window = 1;
        *member(&unit, mf->cols[j]) = 1;
        double t[FR_NMETHODS];
        int g = info->degree >= 0 ? info->degree : 1;
        fr_predict_times_cost(&unit, p, g, info->support, info->fft, t);
        row[j] = t[mf->method] > 0 ? t[mf->method] : 0;
    }
}

/* Fit method fi's constants into *c from its timed cases (those it cannot fit keep their
 * value). The constants fitted before (polyfft's fixed cost, for the single-precision back ends)
 * are subtracted first. */
static void fit_method(int fi, const cal_case *cases, int ncases, fr_cost_model *c)
{
    const method_fit *mf = &fits[fi];
    int m = 0;
    double A[MAXCASES][MAXC], y[MAXCASES], tm[MAXCASES], x[MAXC];
    fr_problem ps[MAXCASES];
    fr_plan_info infos[MAXCASES];
    for (int i = 0; i < ncases; i++) {
        const cal_case *cc = &cases[i];
        if (cc->best < 0) {
            printf("  %-22s n = %6lld d = %3lld: skipped (%s)\n", mf->name, (long long)cc->p.n,
                   (long long)cc->p.d, cc->why);
            continue;
        }
        double t = cc->best;
        ps[m] = cc->p;
        infos[m] = cc->info;
        tm[m] = t;
        counts(mf, &ps[m], &infos[m], A[m]);
        /* What the constants outside this fit already account for. */
        fr_cost_model rest = *c;
        for (int j = 0; j < mf->ncols; j++)
            *member(&rest, mf->cols[j]) = 0;
        double tr[FR_NMETHODS];
        fr_predict_times_cost(&rest, &ps[m], infos[m].degree >= 0 ? infos[m].degree : 1,
                              infos[m].support, infos[m].fft, tr);
        y[m] = t - (tr[mf->method] > 0 ? tr[mf->method] : 0);
        if (y[m] <= 0.05 * t) y[m] = 0.05 * t;
        m++;
    }
    if (m == 0 || !nnls_rel(m, mf->ncols, A, y, x)) {
        printf("  %-22s nothing measured: its built-in constants are kept\n", mf->name);
        return;
    }
    for (int j = 0; j < mf->ncols; j++)
        *member(c, mf->cols[j]) = x[j];
    for (int i = 0; i < m; i++) {
        double t[FR_NMETHODS];
        fr_predict_times_cost(c, &ps[i], infos[i].degree >= 0 ? infos[i].degree : 1,
                              infos[i].support, infos[i].fft, t);
        printf("  %-22s n = %6lld d = %3lld degree %2d: measured %9.3f ms, model %9.3f ms\n",
               mf->name, (long long)ps[i].n, (long long)ps[i].d, infos[i].degree, 1e3 * tm[i],
               1e3 * t[mf->method]);
    }
}

int cmd_calibrate(int argc, char **argv)
{
    cal_opts o;
    memset(&o, 0, sizeof o);
    int st = cli_parse(&command, argc, argv, &o);
    if (st) return st == CLI_HELP ? EXIT_OK : st;
    if (o.child) return child_case(o.child);
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl > 0) self[sl] = '\0';
    if (sl <= 0 || strchr(self, '\'') != NULL) /* the child's command is quoted with ' */
        return cli_fail(EXIT_INTERNAL, "calibrate: cannot find its own executable");
    char path[4200];
    if (o.out) {
        snprintf(path, sizeof path, "%s", o.out);
    } else if (!cli_cost_cache_path(path, sizeof path)) {
        return cli_fail(EXIT_USAGE, "calibrate: no cache directory (neither XDG_CACHE_HOME nor "
                                    "HOME is set): give -o FILE");
    }
    char cpu[256];
    cli_cpu_model(cpu, sizeof cpu);
    int threads = omp_get_max_threads();
    printf("calibrating on %s, %d threads%s\n", cpu, threads, o.quick ? " (quick)" : "");
    fflush(stdout);
    fr_cost_model c;
    fr_cost_model_builtin(&c);
    double t0 = cli_now();
    static cal_case cs[sizeof fits / sizeof *fits][MAXCASES];
    int ncase[sizeof fits / sizeof *fits];
    time_cases(self, o.quick, cs, ncase);
    for (size_t i = 0; i < sizeof fits / sizeof *fits; i++) {
        fit_method((int)i, cs[i], ncase[i], &c);
        fflush(stdout);
    }
    if ((st = cli_cost_write(path, &c, threads))) return st;
    printf("wrote %s (%.1f s)\n", path, cli_now() - t0);
    return EXIT_OK;
}
