/* bound.c - `fastrope bound`: what the fast path would do for a given size and entry bound,
 * without reading any tensor: R, the degree and certified eta, the a-priori error bound, the
 * counts and the predicted times. Lists and ranges make a sweep one command. */
#include "cli.h"
#include "cost.h"
#include "fastrope_planner.h"
#include "report.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    cli_values n, d, B, eps;
    int64_t dv, support;
    int json;
    cli_attn attn;
} bound_opts;

/* The shared -w (an explicit W) means a tensor, and bound reads none. */
static int refuse_w(const char *flag, const char *value, void *field)
{
    (void)value;
    (void)field;
    return cli_fail(EXIT_USAGE, "bound reads no tensor: use --support-size S instead of %s", flag);
}

static const cli_choice formats[] = {{"table", 0}, {"json", 1}, {NULL, 0}};

static const cli_opt bound_table[] = {
    OPT_GROUP("The problem (--n, --d, --B and --eps take a value, a list 1024,4096 or an inclusive "
              "range start:stop:step 0.25:3:0.25; one row per combination):"),
    OPT_LIST("n", bound_opts, n, 1, 1e12, CLI_WHOLE, "N", "tokens (required)"),
    OPT_LIST("d", bound_opts, d, 1, 1e12, CLI_WHOLE, "D", "head dimension (required)"),
    OPT_I64("dv", bound_opts, dv, 1, CLI_BIG, "DV", "value dimension (d)"),
    OPT_LIST("B", bound_opts, B, 0, INFINITY, 0, "B", "bound on |entries| of q, k, v (required)"),
    OPT_LIST("eps", bound_opts, eps, 0, INFINITY, CLI_ABOVE, "E", "target max |T_fast - T| (1e-3)"),
    OPT_I64(
        "support-size", bound_opts, support, 1, CLI_BIG, "S",
        "a general W with S non-zero entries per W_delta, |entries| <= 1 (instead of a rotation "
        "option)"),
    CLI_ROW(NULL, 'w', CLI_CUSTOM, bound_opts, attn.w_path, 0, 0, "FILE", NULL, CLI_HIDDEN, NULL,
            refuse_w),
    OPT_GROUP("Output (stdout):"),
    OPT_CHOICE("format", bound_opts, json, formats, "F",
               "table: for people (default); json: an array of rows"),
    OPT_END};

static const cli_section sections[] = {
    {bound_table, 0, NULL},
    {cli_attn_table, offsetof(bound_opts, attn), cli_attn_finish_section},
    {NULL, 0, NULL}};

static const cli_command command = {
    "bound", "--n N --d D --B B [OPTION...]",
    "Without reading any tensor: the score bound R for entries bounded by B, the degree and "
    "certified eta the fast path would use, the a-priori bound on ||T_fast - T||_inf, the "
    "monomial and FFT counts, the predicted time of each method, and B / sqrt(ln n).",
    sections, CLI_NO_ARGS};

static int parse(int argc, char **argv, bound_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dv = -1;
    cli_attn_init(&o->attn);
    int st = cli_parse(&command, argc, argv, o);
    if (st) return st;
    if (!o->n.count || !o->d.count || !o->B.count)
        return cli_fail(EXIT_USAGE, "bound: --n, --d and --B are required");
    if (o->attn.rot.kind == FR_ROT_EXPLICIT)
        return cli_fail(EXIT_USAGE, "bound reads no tensor: use --support-size S instead of -w");
    int rot_given = o->attn.rope || o->attn.no_rope || o->attn.rot.kind == FR_ROT_CLIP;
    if (o->support && rot_given)
        return cli_fail(EXIT_USAGE, "bound: give a rotation option or --support-size, not both");
    if (!o->eps.count && (st = cli_parse_values("--eps", "1e-3", 0, INFINITY, CLI_ABOVE, &o->eps)))
        return st;
    if (o->n.count * o->d.count * o->B.count * o->eps.count > CLI_MAX_VALUES)
        return cli_fail(EXIT_USAGE, "bound: more than %d rows; narrow the sweep", CLI_MAX_VALUES);
    return EXIT_OK;
}

static void free_opts(bound_opts *o)
{
    cli_values_free(&o->n);
    cli_values_free(&o->d);
    cli_values_free(&o->B);
    cli_values_free(&o->eps);
}

/* The rotary dimension against each d of the sweep, named as the user gave them. */
static int rope_fits(const fr_problem *p)
{
    if (p->rot.kind != FR_ROT_ROPE && p->rot.kind != FR_ROT_CLIP) return EXIT_OK;
    if (p->rot.rotary_dim > p->d)
        return cli_fail(EXIT_USAGE, "bound: --rotary-dim %lld is larger than --d %lld",
                        (long long)p->rot.rotary_dim, (long long)p->d);
    if (!p->rot.rotary_dim && p->d % 2)
        return cli_fail(EXIT_USAGE,
                        "bound: RoPE rotates pairs of coordinates, but --d %lld is odd; use "
                        "--rotary-dim or --no-rope",
                        (long long)p->d);
    return EXIT_OK;
}

static void row_json(cJSON *row, const fr_problem *p, double B, const fr_options *o,
                     const fr_bounds *b, const fr_plan_info *info)
{
    rep_int(row, "n", p->n);
    rep_int(row, "d", p->d);
    rep_int(row, "dv", p->dv);
    rep_num(row, "B", B);
    rep_num(row, "eps", o->eps);
    rep_num(row, "scale", p->tau);
    rep_num(row, "R", b->R);
    rep_num(row, "B_over_sqrt_ln_n", b->B_over_sqrt_ln_n);
    if (info->degree >= 0) {
        rep_int(row, "degree", info->degree);
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
            rep_int(row, keys[i], vals[i]);
        else
            cJSON_AddNullToObject(row, keys[i]);
    }
    cJSON *t = cJSON_AddObjectToObject(row, "predicted_s");
    for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
        if (info->predicted_s[m] >= 0)
            rep_num(t, fr_method_name((fr_method)m), info->predicted_s[m]);
        else
            cJSON_AddNullToObject(t, fr_method_name((fr_method)m));
    cJSON_AddStringToObject(row, "chosen", fr_method_name(info->method));
    cJSON_AddStringToObject(row, "reason", info->reason ? info->reason : "");
    cJSON_AddStringToObject(row, "cost", cli_cost_source());
}

static void cell(char *buf, size_t len, const char *fmt, double x, int ok)
{
    if (ok && isfinite(x))
        snprintf(buf, len, fmt, x);
    else
        snprintf(buf, len, "-");
}

/* A failed write to stdout (closed, a full disk, a reader gone): exit 1 with the reason, as
 * run's outputs do, not a table cut short with exit 0. */
static int stdout_failed(int e)
{
    return cli_fail(EXIT_INTERNAL, "bound: writing to stdout: %s", strerror(e ? e : EIO));
}

static int row_table(const fr_problem *p, double B, const fr_options *o, const fr_bounds *b,
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
    if (printf("%9lld %4lld %6.3g %8.2g %7.3g %7.3g %4s %9s %9s %8s %8s %9s %9s %9s  %s\n",
               (long long)p->n, (long long)p->d, B, o->eps, b->R, b->B_over_sqrt_ln_n, deg, eta,
               apb, ffts, feat, te, tf, tr, fr_method_name(info->method)) < 0)
        return stdout_failed(errno);
    return EXIT_OK;
}

/* One row of the sweep: print it, or add it to rows (JSON). An exit code. */
static int one_row(const bound_opts *o, int64_t n, int64_t d, double B, double eps, cJSON *rows)
{
    char err[512];
    fr_problem p = fr_problem_default(n, d, o->dv > 0 ? o->dv : d);
    p.rot = o->attn.rot;
    p.causal = o->attn.causal;
    p.window = o->attn.window;
    if (o->support) { /* a general W known only by its support size */
        p.rot.kind = FR_ROT_EXPLICIT;
        p.rot.w = NULL;
        p.rot.support_hint = o->support;
    }
    cli_scale(&o->attn, d, &p.tau);
    int st = rope_fits(&p);
    if (st) return st;
    fr_bounds b;
    if ((st = fr_bounds_uniform(&p, B, &b, err, sizeof err))) return cli_fail(st, "%s", err);
    fr_options opt = o->attn.opt;
    opt.eps = eps;
    fr_plan_info info;
    err[0] = 0;
    if ((st = fr_plan_estimate(&p, &b, &opt, &info, err, sizeof err)))
        return cli_fail(st, "%s", err);
    /* A method asked for and refused: the core's own account (the degree it needs, the plan
     * size or the certified rounding) rather than info's one-line summary. */
    if (info.degree < 0 && opt.method != FR_METHOD_AUTO && err[0]) info.reason = err;
    if (!rows) return row_table(&p, B, &opt, &b, &info);
    cJSON *row = cJSON_CreateObject();
    cJSON_AddItemToArray(rows, row);
    row_json(row, &p, B, &opt, &b, &info);
    return EXIT_OK;
}

int cmd_bound(int argc, char **argv)
{
    bound_opts o;
    int st = parse(argc, argv, &o);
    if (st) {
        free_opts(&o);
        return st == CLI_HELP ? EXIT_OK : st;
    }
    /* A reader gone is a write error to report (EPIPE), not a silent death by SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    cJSON *rows = o.json ? cJSON_CreateArray() : NULL;
    if (!o.json && printf("%9s %4s %6s %8s %7s %7s %4s %9s %9s %8s %8s %9s %9s %9s  %s\n", "n", "d",
                          "B", "eps", "R", "B/sqrtln", "deg", "eta", "a-priori", "ffts", "features",
                          "t_exact", "t_polyfft", "t_polyrope", "auto") < 0)
        st = stdout_failed(errno);
    for (int64_t in = 0; !st && in < o.n.count; in++)
        for (int64_t id = 0; !st && id < o.d.count; id++)
            for (int64_t ib = 0; !st && ib < o.B.count; ib++)
                for (int64_t ie = 0; !st && ie < o.eps.count; ie++)
                    st = one_row(&o, (int64_t)o.n.x[in], (int64_t)o.d.x[id], o.B.x[ib], o.eps.x[ie],
                                 rows);
    if (!st && o.json) {
        char *text = cJSON_Print(rows);
        if (!text)
            st = cli_fail(EXIT_INTERNAL, "out of memory printing the rows");
        else if (puts(text) < 0)
            st = stdout_failed(errno);
        free(text);
    }
    if (!st && fflush(stdout)) st = stdout_failed(errno);
    cJSON_Delete(rows);
    free_opts(&o);
    return st;
}
