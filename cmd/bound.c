/* bound.c - `fastrope bound`: what the fast path would do for a given size and entry bound,
 * without reading any tensor: R, the degree and certified eta, the a-priori error bound, the
 * counts and the predicted times. Lists and ranges make a sweep one command. */
#include "cli.h"
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: fastrope bound --n N --d D [--dv DV] --B B [--eps E] [rotation | --support-size S]\n"
    "                      [--scale ...] [--causal] [--window W] [--format table|json]\n"
    "\n"
    "Without reading any tensor: the score bound R for entries bounded by B, the degree and\n"
    "certified eta the fast path would use, the a-priori bound on ||T_fast - T||_inf, the\n"
    "monomial and FFT counts, the predicted time of each method, and B / sqrt(ln n).\n"
    "--n, --d, --B and --eps take a value, a list (1024,4096) or an inclusive range\n"
    "start:stop:step (0.25:3:0.25); one row per combination.\n"
    "\n"
    "  --support-size S       a general W with S non-zero entries per W_delta, |entries| <= 1\n"
    "                         (instead of a rotation option)\n"
    "  --format table|json    a table for people (default) or a JSON array of rows\n"
    "%s";

#define MAX_VALUES 100000

typedef struct {
    double *x;
    int64_t count;
} values;

/* "a", "a,b,c" or "start:stop:step" (inclusive). integer: every value must be whole. */
static int parse_values(const char *flag, const char *s, int integer, values *out)
{
    out->x = NULL;
    out->count = 0;
    double r[3];
    char *dup = strdup(s), *save = NULL;
    if (!dup) return cli_fail(EXIT_INTERNAL, "out of memory");
    int st = EXIT_OK;
    if (strchr(s, ':')) {
        int k = 0;
        for (char *tok = strtok_r(dup, ":", &save); tok && !st; tok = strtok_r(NULL, ":", &save))
            st = k < 3 ? parse_double(flag, tok, &r[k++]) : EXIT_USAGE;
        if (!st && (k != 3 || !(r[2] > 0) || r[0] > r[1]))
            st = cli_fail(EXIT_USAGE,
                          "%s: '%s' is not a range start:stop:step with start <= stop and step > 0",
                          flag, s);
        double cnt = st ? 0 : floor((r[1] - r[0]) / r[2] * (1 + 1e-12)) + 1;
        if (!st && cnt > MAX_VALUES)
            st = cli_fail(EXIT_USAGE, "%s: '%s' has more than %d values", flag, s, MAX_VALUES);
        if (!st && !(out->x = malloc((size_t)cnt * sizeof(double))))
            st = cli_fail(EXIT_INTERNAL, "out of memory");
        for (int64_t i = 0; !st && i < (int64_t)cnt; i++)
            out->x[out->count++] = r[0] + (double)i * r[2]; /* no accumulated rounding */
    } else {
        int64_t cap = 1;
        for (const char *c = s; *c; c++)
            cap += *c == ',';
        if (!(out->x = malloc((size_t)cap * sizeof(double))))
            st = cli_fail(EXIT_INTERNAL, "out of memory");
        for (char *tok = strtok_r(dup, ",", &save); tok && !st; tok = strtok_r(NULL, ",", &save))
            st = parse_double(flag, tok, &out->x[out->count++]);
        if (!st && out->count == 0) st = cli_fail(EXIT_USAGE, "%s: no value in '%s'", flag, s);
    }
    for (int64_t i = 0; i < out->count && !st && integer; i++)
        if (out->x[i] != floor(out->x[i]) || out->x[i] < 1 || out->x[i] > 1e12)
            st = cli_fail(EXIT_USAGE, "%s: %g is not a whole number >= 1", flag, out->x[i]);
    free(dup);
    if (st) {
        free(out->x);
        out->x = NULL;
    }
    return st;
}

/* R for entries bounded by B without data: every row has ||x||_2 <= B sqrt(d), so the RoPE and
 * spectral bounds give tau d B^2; a general W with S entries of size <= 1 gives tau S B^2. */
static double score_bound(const fr_problem *p, int64_t support, double B, const char **from)
{
    double rot = p->tau * (double)p->d * B * B;
    if (support <= 0) {
        *from = p->rot.kind == FR_ROT_CLIP ? "spectral" : "rope-norm";
        return rot;
    }
    *from = "support";
    return p->tau * (double)support * B * B;
}

static void row_json(cJSON *row, const fr_problem *p, double B, const fr_options *o,
                     const fr_bounds *b, const fr_plan_info *info)
{
    cJSON_AddNumberToObject(row, "n", (double)p->n);
    cJSON_AddNumberToObject(row, "d", (double)p->d);
    cJSON_AddNumberToObject(row, "dv", (double)p->dv);
    rep_num(row, "B", B);
    rep_num(row, "eps", o->eps);
    rep_num(row, "scale", p->tau);
    rep_num(row, "R", b->R);
    rep_num(row, "B_over_sqrt_ln_n", b->B_over_sqrt_ln_n);
    if (info->degree >= 0) {
        cJSON_AddNumberToObject(row, "degree", info->degree);
        rep_num(row, "eta", info->eta);
        rep_num(row, "a_priori_bound", info->a_priori_bound);
    } else {
        cJSON_AddNullToObject(row, "degree");
        cJSON_AddNullToObject(row, "eta");
        cJSON_AddNullToObject(row, "a_priori_bound");
    }
    const char *keys[] = {"alphas", "q_monomials", "k_monomials", "kernels",
                          "ffts",   "fft_size",    "features"};
    const int64_t vals[] = {info->alphas, info->q_monomials, info->k_monomials, info->kernels,
                            info->ffts,   info->fft_size,    info->features};
    for (int i = 0; i < 7; i++) {
        if (vals[i] > 0 && info->degree >= 0)
            cJSON_AddNumberToObject(row, keys[i], (double)vals[i]);
        else
            cJSON_AddNullToObject(row, keys[i]);
    }
    cJSON *t = cJSON_AddObjectToObject(row, "predicted_s");
    for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
        if (info->predicted_s[m] >= 0)
            cJSON_AddNumberToObject(t, fr_method_name((fr_method)m), info->predicted_s[m]);
        else
            cJSON_AddNullToObject(t, fr_method_name((fr_method)m));
    cJSON_AddStringToObject(row, "chosen", fr_method_name(info->method));
    cJSON_AddStringToObject(row, "reason", info->reason ? info->reason : "");
}

static void cell(char *buf, size_t len, const char *fmt, double x, int ok)
{
    if (ok && isfinite(x))
        snprintf(buf, len, fmt, x);
    else
        snprintf(buf, len, "-");
}

static void row_table(const fr_problem *p, double B, const fr_options *o, const fr_bounds *b,
                      const fr_plan_info *info)
{
    char deg[16], eta[16], apb[16], ffts[16], feat[16], te[16], tf[16], tr[16];
    int fast = info->degree >= 0;
    cell(deg, sizeof deg, "%.0f", info->degree, fast);
    cell(eta, sizeof eta, "%.2e", info->eta, fast);
    cell(apb, sizeof apb, "%.2e", info->a_priori_bound, fast);
    cell(ffts, sizeof ffts, "%.0f", (double)info->ffts, fast && info->ffts > 0);
    cell(feat, sizeof feat, "%.0f", (double)info->features, fast && info->features > 0);
    const double *t = info->predicted_s;
    cell(te, sizeof te, "%.3g", t[FR_METHOD_EXACT], t[FR_METHOD_EXACT] >= 0);
    cell(tf, sizeof tf, "%.3g", t[FR_METHOD_POLYFFT], t[FR_METHOD_POLYFFT] >= 0);
    cell(tr, sizeof tr, "%.3g", t[FR_METHOD_POLYROPE], t[FR_METHOD_POLYROPE] >= 0);
    printf("%9lld %4lld %6.3g %8.2g %7.3g %7.3g %4s %9s %9s %8s %8s %9s %9s %9s  %s\n",
           (long long)p->n, (long long)p->d, B, o->eps, b->R, b->B_over_sqrt_ln_n, deg, eta, apb,
           ffts, feat, te, tf, tr, fr_method_name(info->method));
}

int cmd_bound(int argc, char **argv)
{
    const char *sn = NULL, *sd = NULL, *sB = NULL, *seps = "1e-3", *v, *format = "table";
    int64_t dv = -1, support = 0;
    cli_attn attn;
    cli_attn_init(&attn);
    cli_args a = {argc, argv, 1, 0, "bound"};
    for (; a.i < argc && !a.bad; a.i++) {
        if (arg_flag(&a, "--help") || arg_flag(&a, "-h")) {
            printf(usage, cli_attn_help);
            return 0;
        } else if (arg_value(&a, "--n", &sn) || arg_value(&a, "--d", &sd) ||
                   arg_value(&a, "--B", &sB) || arg_value(&a, "--eps", &seps) ||
                   arg_value(&a, "--format", &format)) {
            /* before the shared options: here --eps takes a list */
        } else if (cli_attn_option(&a, &attn)) {
        } else if (arg_value(&a, "--dv", &v)) {
            if (v && (parse_int64("--dv", v, &dv) || dv < 1))
                return cli_fail(EXIT_USAGE, "--dv must be a whole number >= 1");
        } else if (arg_value(&a, "--support-size", &v)) {
            if (v && (parse_int64("--support-size", v, &support) || support < 1))
                return cli_fail(EXIT_USAGE, "--support-size must be a whole number >= 1");
        } else {
            return cli_fail(EXIT_USAGE, "bound: unknown option '%s' (see fastrope bound --help)",
                            argv[a.i]);
        }
    }
    if (a.bad) return EXIT_USAGE;
    if (!sn || !sd || !sB) return cli_fail(EXIT_USAGE, "bound: --n, --d and --B are required");
    if (strcmp(format, "table") && strcmp(format, "json"))
        return cli_fail(EXIT_USAGE, "--format: '%s' is not table or json", format);
    if (attn.rot.kind == FR_ROT_EXPLICIT)
        return cli_fail(EXIT_USAGE, "bound reads no tensor: use --support-size S instead of -w");
    if (support && attn.rot_options)
        return cli_fail(EXIT_USAGE, "bound: give a rotation option or --support-size, not both");
    int st = cli_attn_finish(&attn);
    values N = {0}, D = {0}, BB = {0}, E = {0};
    if (!st) st = parse_values("--n", sn, 1, &N);
    if (!st) st = parse_values("--d", sd, 1, &D);
    if (!st) st = parse_values("--B", sB, 0, &BB);
    if (!st) st = parse_values("--eps", seps, 0, &E);
    for (int64_t i = 0; !st && i < BB.count; i++)
        if (!(BB.x[i] >= 0)) st = cli_fail(EXIT_USAGE, "--B: %g is negative", BB.x[i]);
    for (int64_t i = 0; !st && i < E.count; i++)
        if (!(E.x[i] > 0)) st = cli_fail(EXIT_USAGE, "--eps: %g is not positive", E.x[i]);
    if (!st && N.count * D.count * BB.count * E.count > MAX_VALUES)
        st = cli_fail(EXIT_USAGE, "bound: more than %d rows; narrow the sweep", MAX_VALUES);

    int json = strcmp(format, "json") == 0;
    cJSON *rows = json ? cJSON_CreateArray() : NULL;
    if (!st && !json)
        printf("%9s %4s %6s %8s %7s %7s %4s %9s %9s %8s %8s %9s %9s %9s  %s\n", "n", "d", "B",
               "eps", "R", "B/sqrtln", "deg", "eta", "a-priori", "ffts", "features", "t_exact",
               "t_polyfft", "t_polyrope", "auto");
    char err[512];
    for (int64_t in = 0; !st && in < N.count; in++)
        for (int64_t id = 0; !st && id < D.count; id++)
            for (int64_t ib = 0; !st && ib < BB.count; ib++)
                for (int64_t ie = 0; !st && ie < E.count; ie++) {
                    int64_t n = (int64_t)N.x[in], d = (int64_t)D.x[id];
                    fr_problem p = fr_problem_default(n, d, dv > 0 ? dv : d);
                    p.rot = attn.rot;
                    p.causal = attn.causal;
                    p.window = attn.window;
                    if (support) { /* a general W known only by its support size */
                        p.rot.kind = FR_ROT_EXPLICIT;
                        p.rot.w = NULL;
                        p.rot.support_hint = support;
                    }
                    if ((st = cli_scale(&attn, d, &p.tau))) break;
                    if ((p.rot.kind == FR_ROT_ROPE || p.rot.kind == FR_ROT_CLIP) &&
                        (p.rot.rotary_dim ? p.rot.rotary_dim : d) % 2) {
                        st = cli_fail(EXIT_USAGE, "bound: RoPE needs an even d, got %lld",
                                      (long long)d);
                        break;
                    }
                    double B = BB.x[ib];
                    fr_bounds b = {B, B,   B, B, n > 1 ? B / sqrt(log((double)n)) : INFINITY,
                                   0, NULL};
                    b.R = score_bound(&p, support, B, &b.R_from);
                    fr_options o = attn.opt;
                    o.eps = E.x[ie];
                    fr_plan_info info;
                    if ((st = fr_plan_estimate(&p, &b, &o, &info, err, sizeof err))) {
                        cli_fail(st, "%s", err);
                        break;
                    }
                    if (json) {
                        cJSON *row = cJSON_CreateObject();
                        cJSON_AddItemToArray(rows, row);
                        row_json(row, &p, B, &o, &b, &info);
                    } else {
                        row_table(&p, B, &o, &b, &info);
                    }
                }
    if (!st && json) {
        char *text = cJSON_Print(rows);
        if (text) puts(text);
        free(text);
    }
    cJSON_Delete(rows);
    free(N.x);
    free(D.x);
    free(BB.x);
    free(E.x);
    return st;
}
