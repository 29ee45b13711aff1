/* run.c - `fastrope run`: the forward pass, its output, and the error report. */
#include "fastrope_planner.h"
#include "job.h"
#include "progress.h"
#include "report.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char synopsis[] = "(--input BUNDLE | -q FILE -k FILE -v FILE) -o OUT";

static const char doc[] =
    "Computes T = softmax(tau * Q_i W_{j-i} K_j^T) V for every leading (batch) index: q, k are "
    "[..., n, d], v is [..., n, dv]; the leading axes are a batch, and T keeps them. The fast "
    "methods are checked against exact attention on sampled rows; the report (JSON) gives the "
    "bounds, the plan and the observed error.";

typedef struct {
    job_opts job;
    const char *out;
    int strict;
} run_opts;

static const cli_opt run_table[] = {
    OPT_GROUP("Output (written: .npy, .npz, .json or .safetensors, by the extension):"),
    OPT_CUSTOM("output", 'o', run_opts, out, cli_out_tensor, "OUT",
               "T, shape [..., n, dv] ('-': .npy to stdout)"),
    OPT_FLAG("strict", 0, run_opts, strict,
             "exit 4, writing nothing, when the observed error exceeds --eps"),
    OPT_END};

typedef struct {
    run_opts o;  /* first: run_table's offsets are into it */
    fr_diff all; /* the check over every entry */
} run_cmd;

static int prepare(job *j, void *cmd)
{
    (void)cmd;
    job_result_shape(j, 0, j->in.q, j->in.dv); /* q's leading axes, then [n, dv] */
    return EXIT_OK;
}

static int compute(job *j, void *cmd, const fr_plan *plan, char *err, size_t errlen)
{
    (void)cmd;
    if (job_f32(j->o))
        return fr_execute_f32(plan, j->in.q->f32, j->in.k->f32, j->in.v->f32, j->res[0].f32,
                              j->exec, err, errlen);
    return fr_execute(plan, j->in.q->data, j->in.k->data, j->in.v->data, j->res[0].data, j->exec,
                      err, errlen);
}

/* Single precision: every key/value group against the double reference in turn (job_f32.c). */
static int check_f32(job *j, run_cmd *c, char *err, size_t errlen)
{
    const fr_problem *p = &j->p;
    int64_t KV = p->kv_batch > 0 ? p->kv_batch : p->batch, G = p->batch / KV;
    int64_t n = p->n, dv = p->dv;
    int st = FR_OK;
    for (int64_t h = 0; h < KV && !st; h++) {
        job_group g;
        fr_diff all;
        if ((st = job_group_widen(j, NULL, h, &g, err, errlen))) break;
        double *out = job_widen(j->res[0].f32 + h * G * n * dv, G * n * dv);
        if (!out)
            st = FR_ENOMEM, snprintf(err, errlen, "out of memory");
        else
            st = fr_check_rows_progress(&g.p, g.q, g.k, g.v, out, j->rows, j->nrows, j->per + h * G,
                                        &all, cli_progress_fn, NULL, err, errlen);
        if (!st) fr_diff_merge(&c->all, &all);
        free(out);
        job_group_free(&g);
    }
    return st;
}

static int check(job *j, void *cmd, char *err, size_t errlen)
{
    run_cmd *c = cmd;
    int st;
    if (job_f32(j->o))
        st = check_f32(j, c, err, errlen);
    else
        st = fr_check_rows_progress(&j->p, j->in.q->data, j->in.k->data, j->in.v->data,
                                    j->res[0].data, j->rows, j->nrows, j->per, &c->all,
                                    cli_progress_fn, NULL, err, errlen);
    for (int64_t b = 0; b < j->p.batch && !st; b++)
        j->entries[b].diff = j->per[b];
    return st;
}

static int verdict(job *j, void *cmd)
{
    run_cmd *c = cmd;
    double eps = j->o->attn.opt.eps;
    if (!c->o.strict || !c->all.count || c->all.max_abs <= eps) return EXIT_OK;
    return cli_fail(EXIT_ACCURACY,
                    "observed max error %.3g exceeds --eps %.3g on %lld checked rows (--strict: "
                    "nothing written)",
                    c->all.max_abs, eps, (long long)(j->nrows * j->p.batch));
}

static void report(job *j, void *cmd, cJSON *r)
{
    const run_cmd *c = cmd;
    double eps = j->o->attn.opt.eps;
    if (!j->nrows) {
        cJSON_AddNullToObject(r, "error");
        return;
    }
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    rep_int(e, "rows_checked", j->nrows * j->p.batch);
    rep_num(e, "max_abs", c->all.max_abs);
    rep_num(e, "max_rel", c->all.max_rel);
    job_report_certificate(j, e);
    rep_num(e, "eps", eps);
    cJSON_AddBoolToObject(e, "within_eps", c->all.max_abs <= eps);
}

static void summary(job *j, void *cmd, char *buf, size_t len)
{
    const run_cmd *c = cmd;
    double eps = j->o->attn.opt.eps;
    if (j->nrows)
        snprintf(buf, len, "max abs error %.3g (eps %.3g %s; a-priori bound %.3g) on %lld rows",
                 c->all.max_abs, eps, c->all.max_abs <= eps ? "met" : "MISSED",
                 j->info.a_priori_bound, (long long)(j->nrows * j->p.batch));
}

static int setup(job *j, void *cmd)
{
    const run_cmd *c = cmd;
    if (!c->o.out) return cli_fail(EXIT_USAGE, "run: -o OUT is required (see fastrope run --help)");
    job_add_result(j, "out", c->o.out, 0);
    return EXIT_OK;
}

const job_spec run_spec = {
    "run",  synopsis, doc,     run_table, sizeof(run_cmd), offsetof(run_cmd, o.job),
    setup,  prepare,  compute, check,     verdict,         report,
    summary};
