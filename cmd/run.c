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
static int check(const fr_problem *p0, const cli_inputs *in, const double *out, int64_t want,
                 check_result *res)
{
    char err[512];
    int64_t n = in->n, m = job_check_count(n, want);
    memset(res, 0, sizeof *res);
    if (m == 0) return EXIT_OK;
    double t0 = cli_now();
    int64_t *rows = job_sample_rows(n, m);
    double *ref = malloc((size_t)m * (size_t)in->dv * sizeof *ref);
    double *got = malloc((size_t)m * (size_t)in->dv * sizeof *got);
    double ref_max = 0;
    int st = (rows && ref && got) ? EXIT_OK : cli_fail(EXIT_INTERNAL, "out of memory");
    for (int64_t b = 0; b < in->batch && !st; b++) {
        fr_problem p = *p0;
        p.rot.w = job_w(in, p0, b);
        st = fr_exact_rows(&p, in->q->data + b * n * p.d, in->k->data + b * n * p.d,
                           in->v->data + b * n * p.dv, rows, m, ref, err, sizeof err);
        if (st) {
            cli_fail(st, "checking against exact attention: %s", err);
            break;
        }
        for (int64_t t = 0; t < m; t++)
            memcpy(got + t * p.dv, out + (b * n + rows[t]) * p.dv, (size_t)p.dv * sizeof *got);
        fr_diff dd = fr_compare(got, ref, m * p.dv);
        if (!(dd.max_abs <= res->max_abs)) res->max_abs = dd.max_abs;
        for (int64_t t = 0; t < m * p.dv; t++)
            ref_max = fmax(ref_max, fabs(ref[t]));
        res->rows += m;
    }
    /* Normwise over every checked row of every entry, like fr_compare within one. */
    res->max_rel = ref_max > 0 ? res->max_abs / ref_max : (res->max_abs > 0 ? INFINITY : 0);
    res->seconds = cli_now() - t0;
    free(rows);
    free(ref);
    free(got);
    return st;
}

/* One plan for the batch (one W), or one per entry when every entry has its own W. */
static int compute(const run_opts *o, const cli_inputs *in, fr_problem *p, const fr_bounds *bounds,
                   fr_plan_info *info, double *out, double t0)
{
    char err[512];
    int st = EXIT_OK;
    fr_plan *plan = NULL;
    for (int64_t b = 0; b < in->batch && !st; b++) {
        p->rot.w = job_w(in, p, b);
        if (!plan) {
            st = fr_plan_create(&plan, p, bounds, &o->job.attn.opt, err, sizeof err);
            if (st) break;
            fr_plan_get_info(plan, info);
        }
        st = fr_execute(plan, in->q->data + b * p->n * p->d, in->k->data + b * p->n * p->d,
                        in->v->data + b * p->n * p->dv, out + b * p->n * p->dv, err, sizeof err);
        if (in->w_batch > 1) {
            fr_plan_free(plan);
            plan = NULL;
        }
        job_progress(b + 1, in->batch, t0);
    }
    fr_plan_free(plan);
    p->rot.w = job_w(in, p, 0);
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

static void report_error(cJSON *r, const fr_plan_info *info, const check_result *chk, double eps)
{
    if (info->method == FR_METHOD_EXACT) {
        cJSON_AddNullToObject(r, "error");
        return;
    }
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    cJSON_AddNumberToObject(e, "rows_checked", (double)chk->rows);
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
    fr_bounds bounds;
    fr_plan_info info;
    st = job_bounds(&p, &in, &bounds);
    if (!st) st = compute(&o, &in, &p, &bounds, &info, out, t0);
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
        cJSON_AddNumberToObject(t, "compute", compute_s);
        cJSON_AddNumberToObject(t, "check", chk.seconds);
        cJSON_AddNumberToObject(t, "total", cli_now() - t0);
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
