/* run.c - `fastrope run`: the forward pass, its output, and the error report. */
#include "job.h"
#include "report.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    job_opts job;
    const char *out;
    int strict;
} run_opts;

static const cli_opt run_table[] = {
    OPT_GROUP("Output (written: .npy, .npz or .json, by the extension):"),
    OPT_CUSTOM("output", 'o', run_opts, out, cli_out_tensor, "OUT",
               "T, shape [..., n, dv] ('-': .npy to stdout)"),
    OPT_FLAG("strict", 0, run_opts, strict,
             "exit 4, writing nothing, when the observed error exceeds --eps"),
    OPT_END};

static const cli_section sections[] = {
    {run_table, 0, NULL},
    {job_table, offsetof(run_opts, job), job_finish_section},
    {cli_attn_table, offsetof(run_opts, job.attn), cli_attn_finish_section},
    {cli_limits_table, offsetof(run_opts, job.limits), NULL},
    {NULL, 0, NULL}};

static const cli_command command = {
    "run", "(--input BUNDLE | -q FILE -k FILE -v FILE) -o OUT",
    "Computes T = softmax(tau * Q_i W_{j-i} K_j^T) V for every leading (batch) index: q, k are "
    "[..., n, d], v is [..., n, dv]; the leading axes are a batch, and T keeps them. The fast "
    "methods are checked against exact attention on sampled rows; the report (JSON) gives the "
    "bounds, the plan and the observed error."
    "\vExit codes: 0 ok, 1 internal/resources, 2 usage, 3 bad input, 4 accuracy not "
    "guaranteed.",
    sections, CLI_NO_ARGS};

static int parse(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    job_init(&o->job);
    int st = cli_parse(&command, argc, argv, o);
    if (st) return st;
    if (!o->out) return cli_fail(EXIT_USAGE, "run: -o OUT is required (see fastrope run --help)");
    const char *outs[2] = {o->out, o->job.report};
    return job_check_paths(&o->job, "run", outs, 2, NULL, 0);
}

typedef struct {
    int64_t rows;
    double max_abs, max_rel, seconds;
} check_result;

/* Compare out with exact attention on a sample of rows of every batch entry. */
static int check(const fr_problem *p, const cli_inputs *in, const double *out, int64_t want,
                 check_result *res)
{
    char err[512];
    int64_t n = in->n, m = job_check_count(n, want);
    memset(res, 0, sizeof *res);
    if (m == 0) return EXIT_OK;
    double t0 = cli_now();
    int64_t *rows = job_sample_rows(n, m);
    if (!rows) return cli_fail(EXIT_INTERNAL, "out of memory");
    fr_diff all;
    int st = fr_check_rows(p, in->q->data, in->k->data, in->v->data, out, rows, m, NULL, &all, err,
                           sizeof err);
    free(rows);
    if (st) return cli_fail(st, "checking against exact attention: %s", err);
    res->rows = m * in->batch;
    res->max_abs = all.max_abs;
    res->max_rel = all.max_rel;
    res->seconds = cli_now() - t0;
    return EXIT_OK;
}

/* The batch's plan (one per distinct decision inside) and its execution. */
static int compute(const run_opts *o, const cli_inputs *in, fr_problem *p, const fr_bounds *bounds,
                   fr_plan_info *info, double *out, double t0)
{
    char err[512];
    fr_options opt = o->job.attn.opt;
    opt.progress = job_progress_fn;
    opt.progress_user = &t0;
    fr_plan *plan = NULL;
    int st = fr_plan_create(&plan, p, bounds, &opt, err, sizeof err);
    if (!st) {
        fr_plan_get_info(plan, info);
        st = fr_execute(plan, in->q->data, in->k->data, in->v->data, out, NULL, err, sizeof err);
    }
    fr_plan_free(plan);
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

static void report_error(cJSON *r, const fr_plan_info *info, const check_result *chk, double eps)
{
    if (info->method == FR_METHOD_EXACT) {
        cJSON_AddNullToObject(r, "error");
        return;
    }
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    rep_int(e, "rows_checked", chk->rows);
    rep_num(e, "max_abs", chk->rows ? chk->max_abs : NAN);
    rep_num(e, "max_rel", chk->rows ? chk->max_rel : NAN);
    rep_num(e, "a_priori_bound", info->a_priori_bound);
    rep_num(e, "eps", eps);
    if (chk->rows)
        cJSON_AddBoolToObject(e, "within_eps", chk->max_abs <= eps);
    else
        cJSON_AddNullToObject(e, "within_eps");
}

int cmd_run(int argc, char **argv)
{
    double t0 = cli_now();
    run_opts o;
    int st = parse(argc, argv, &o);
    if (st) return st == CLI_HELP ? EXIT_OK : st;

    cli_inputs in;
    st = cli_load(&in, &o.job.limits, o.job.input, o.job.q, o.job.k, o.job.v, o.job.attn.w_path);
    fr_problem p;
    if (st || (st = job_problem(&o.job, &in, &p))) {
        cli_inputs_free(&in);
        return st;
    }
    size_t count = (size_t)(in.batch * in.n * in.dv);
    double *out = malloc(count * sizeof *out);
    if (!out) {
        cli_inputs_free(&in);
        return cli_fail(EXIT_INTERNAL, "out of memory for the output (%zu doubles)", count);
    }
    double tc = cli_now();
    fr_bounds bounds, *entries = NULL;
    fr_plan_info info;
    st = job_bounds(&p, &in, &entries, &bounds);
    if (!st) st = compute(&o, &in, &p, entries, &info, out, t0);
    free(entries);
    double compute_s = cli_now() - tc;
    check_result chk = {0, 0, 0, 0};
    int fast = !st && info.method != FR_METHOD_EXACT;
    double eps = o.job.attn.opt.eps;
    if (fast) st = check(&p, &in, out, o.job.check_rows, &chk);
    if (!st && fast && o.strict && chk.rows && !(chk.max_abs <= eps))
        st = cli_fail(EXIT_ACCURACY,
                      "observed max error %.3g exceeds --eps %.3g on %lld checked rows (--strict: "
                      "nothing written)",
                      chk.max_abs, eps, (long long)chk.rows);
    if (!st) { /* the output tensor: q's leading axes, then [n, dv] */
        char err[512];
        fr_tensor t;
        memset(&t, 0, sizeof t);
        t.ndim = in.q->ndim;
        memcpy(t.shape, in.q->shape, sizeof t.shape);
        t.shape[t.ndim - 1] = in.dv;
        t.data = out;
        if ((st = fr_write_tensor(o.out, FR_FMT_UNKNOWN, &t, o.job.dtype, err, sizeof err)))
            cli_fail(st, "%s", err);
    }
    if (!st && (o.job.report || o.job.report_fd >= 0)) {
        cJSON *r = rep_problem(&p, fr_method_name(info.method), in.batch, in.w ? in.wlabel : NULL,
                               cli_preset_name(o.job.attn.preset));
        rep_bounds(r, &bounds);
        rep_plan(r, &info);
        report_error(r, &info, &chk, eps);
        cJSON *t = cJSON_AddObjectToObject(r, "time_s");
        rep_num(t, "compute", compute_s);
        rep_num(t, "check", chk.seconds);
        rep_num(t, "total", cli_now() - t0);
        st = job_write_report(&o.job, r);
        cJSON_Delete(r);
    }
    if (!st && !o.job.quiet) {
        if (fast && chk.rows)
            fprintf(stderr,
                    "fastrope: %s, degree %d: max abs error %.3g (eps %.3g %s; a-priori bound "
                    "%.3g) on %lld rows; %.3g s\n",
                    fr_method_name(info.method), info.degree, chk.max_abs, eps,
                    chk.max_abs <= eps ? "met" : "MISSED", info.a_priori_bound, (long long)chk.rows,
                    compute_s);
        else
            fprintf(stderr, "fastrope: %s, n = %lld, d = %lld, dv = %lld, batch %lld: %.3g s\n",
                    fr_method_name(info.method), (long long)in.n, (long long)in.d, (long long)in.dv,
                    (long long)in.batch, compute_s);
    }
    free(out);
    cli_inputs_free(&in);
    return st;
}
