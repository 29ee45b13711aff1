/* grad.c - `fastrope grad`: gradients of a loss through RoPE attention, exact or fast, with an
 * error report against the exact gradients. */
#include "fastrope_planner.h"
#include "job.h"
#include "progress.h"
#include "report.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char synopsis[] =
    "(--input BUNDLE | -q FILE -k FILE -v FILE) (--dout FILE | --target FILE) -o OUT\n"
    "(--input BUNDLE | -q FILE -k FILE -v FILE) (--dout FILE | --target FILE) --dq F --dk F "
    "--dv F";

static const char doc[] =
    "Gradients of a loss L through T = softmax(tau * Q_i W_{j-i} K_j^T) V: --dout gives "
    "G = dL/dT; --target E uses L = 1/2 ||T - E||_F^2 (G = T - E) and reports the loss. The fast "
    "methods return the exact gradient of their own polynomial forward; the report measures its "
    "distance from the exact gradient on sampled rows.";

enum { G_DQ, G_DK, G_DV, G_OUT, G_DW, G_N };
static const char *const gname[G_N] = {"dq", "dk", "dv", "out", "dw"};

typedef struct {
    job_opts job;
    const char *dout, *target, *bundle_out;
    const char *file[G_N]; /* individual outputs */
    int grad_w;
} grad_opts;

static const cli_opt grad_table[] = {
    OPT_GROUP("The loss (exactly one):"),
    OPT_STRING("dout", 0, grad_opts, dout, "FILE",
               "upstream gradient dL/dT, shape of T [..., n, dv] (a tensor, or a bundle's member "
               "'dout')"),
    OPT_STRING("target", 0, grad_opts, target, "FILE",
               "target E of L = 1/2 ||T - E||_F^2 (a tensor, or a bundle's member 'target')"),
    OPT_GROUP("Outputs (written: .npy, .npz, .json or .safetensors, by the extension):"),
    OPT_CUSTOM(NULL, 'o', grad_opts, bundle_out, cli_out_bundle, "OUT",
               "a bundle with dq, dk, dv, out (and dw with --grad-w) ('-': .npz to stdout)"),
    OPT_CUSTOM("dq", 0, grad_opts, file[G_DQ], cli_out_tensor, "FILE", "dL/dQ alone, shape of q"),
    OPT_CUSTOM("dk", 0, grad_opts, file[G_DK], cli_out_tensor, "FILE", "dL/dK alone, shape of k"),
    OPT_CUSTOM("dv", 0, grad_opts, file[G_DV], cli_out_tensor, "FILE", "dL/dV alone, shape of v"),
    OPT_CUSTOM("dw", 0, grad_opts, file[G_DW], cli_out_tensor, "FILE",
               "dL/dW alone, shape of W (implies --grad-w)"),
    OPT_CUSTOM("out", 0, grad_opts, file[G_OUT], cli_out_tensor, "FILE",
               "T alone, shape [..., n, dv]"),
    OPT_FLAG("grad-w", 0, grad_opts, grad_w, "also dL/dW (explicit -w only), shape of W"),
    OPT_END};

typedef struct {
    grad_opts o;   /* first: grad_table's offsets are into it */
    fr_tensor *up; /* dout or target */
    char uplabel[512];
    double loss;
    fr_diff all[FR_NGRADS]; /* the check over every entry */
} grad_cmd;

/* Result g's place in the core's comparisons. */
static const int core_grad[G_N] = {FR_GRAD_DQ, FR_GRAD_DK, FR_GRAD_DV, -1, FR_GRAD_DW};

static int prepare(job *j, void *cmd)
{
    grad_cmd *c = cmd;
    const char *path = c->o.dout ? c->o.dout : c->o.target;
    int st = cli_load_output_like(&j->in, path, c->o.dout ? "dout" : "target", &c->up, c->uplabel,
                                  sizeof c->uplabel);
    if (st) return st;
    job_result_shape(j, G_DQ, j->in.q, 0);
    job_result_shape(j, G_DK, j->in.k, 0);
    job_result_shape(j, G_DV, j->in.v, 0);
    job_result_shape(j, G_OUT, j->in.q, j->in.dv);
    if (c->o.grad_w) job_result_shape(j, G_DW, j->in.w, 0);
    return EXIT_OK;
}

static int compute_f32(job *j, grad_cmd *c, const fr_plan *plan, char *err, size_t errlen)
{
    const float *up = c->up->f32;
    float loss = 0;
    int st = fr_execute_backward_f32(
        plan, j->in.q->f32, j->in.k->f32, j->in.v->f32, c->o.dout ? up : NULL,
        c->o.target ? up : NULL, j->res[G_OUT].f32, j->res[G_DQ].f32, j->res[G_DK].f32,
        j->res[G_DV].f32, j->res[G_DW].f32, c->o.target ? &loss : NULL, j->exec, err, errlen);
    c->loss = loss;
    return st;
}

static int compute(job *j, void *cmd, const fr_plan *plan, char *err, size_t errlen)
{
    grad_cmd *c = cmd;
    if (job_f32(j->o)) return compute_f32(j, c, plan, err, errlen);
    const double *up = c->up->data;
    return fr_execute_backward(
        plan, j->in.q->data, j->in.k->data, j->in.v->data, c->o.dout ? up : NULL,
        c->o.target ? up : NULL, j->res[G_OUT].data, j->res[G_DQ].data, j->res[G_DK].data,
        j->res[G_DV].data, j->res[G_DW].data, c->o.target ? &c->loss : NULL, j->exec, err, errlen);
}

/* A shared W's dW in single precision against the double one: the exact dW summed over the
 * key/value groups (each group's reference sees only its own problems). Only when every row is
 * checked, as fr_check_backward_rows does for dW. */
static int check_shared_dw_f32(job *j, grad_cmd *c, char *err, size_t errlen)
{
    const fr_problem *p = &j->p;
    int64_t KV = p->kv_batch > 0 ? p->kv_batch : p->batch, G = p->batch / KV;
    int64_t n = p->n, d = p->d, dv = p->dv, wsize = (2 * n - 1) * d * d;
    double *ref = calloc((size_t)wsize, sizeof *ref), *dw = malloc((size_t)wsize * sizeof *dw);
    double *dq = malloc((size_t)(G * n * d) * sizeof *dq), *dk = malloc((size_t)(n * d) * 8);
    double *dvv = malloc((size_t)(n * dv) * sizeof *dvv);
    int st = ref && dw && dq && dk && dvv ? FR_OK : FR_ENOMEM;
    if (st) snprintf(err, errlen, "out of memory");
    for (int64_t h = 0; h < KV && !st; h++) {
        job_group g;
        if ((st = job_group_widen(j, c->up, h, &g, err, errlen))) break;
        st = fr_exact_backward(&g.p, g.q, g.k, g.v, c->o.dout ? g.up : NULL,
                               c->o.target ? g.up : NULL, NULL, dq, dk, dvv, dw, NULL, err, errlen);
        for (int64_t e = 0; e < wsize && !st; e++)
            ref[e] += dw[e];
        job_group_free(&g);
    }
    if (!st) {
        double *got = job_widen(j->res[G_DW].f32, wsize);
        if (got) c->all[FR_GRAD_DW] = fr_compare(got, ref, wsize);
        st = got ? FR_OK : FR_ENOMEM;
        free(got);
    }
    free(ref), free(dw), free(dq), free(dk), free(dvv);
    return st;
}

/* Single precision: every key/value group against the double reference in turn (job_f32.c),
 * the group's results widened; per-entry comparisons into j->per's usual places. */
static int check_f32(job *j, grad_cmd *c, char *err, size_t errlen)
{
    const fr_problem *p = &j->p;
    int64_t KV = p->kv_batch > 0 ? p->kv_batch : p->batch, G = p->batch / KV;
    int64_t n = p->n, d = p->d, dv = p->dv, wsize = (2 * n - 1) * d * d;
    int per_w = j->res[G_DW].f32 && p->rot.w_count > 1, st = FR_OK;
    fr_diff *per = calloc((size_t)(G * FR_NGRADS), sizeof *per), all[FR_NGRADS];
    if (!per) return snprintf(err, errlen, "out of memory"), FR_ENOMEM;
    for (int64_t h = 0; h < KV && !st; h++) {
        job_group g;
        if ((st = job_group_widen(j, c->up, h, &g, err, errlen))) break;
        double *dq = job_widen(j->res[G_DQ].f32 + h * G * n * d, G * n * d);
        double *dk = job_widen(j->res[G_DK].f32 + h * n * d, n * d);
        double *dvv = job_widen(j->res[G_DV].f32 + h * n * dv, n * dv);
        double *dw = per_w ? job_widen(j->res[G_DW].f32 + h * G * wsize, G * wsize) : NULL;
        if (!dq || !dk || !dvv || (per_w && !dw))
            st = FR_ENOMEM, snprintf(err, errlen, "out of memory");
        else
            st = fr_check_backward_rows_progress(
                &g.p, g.q, g.k, g.v, c->o.dout ? g.up : NULL, c->o.target ? g.up : NULL, dq, dk,
                dvv, dw, j->rows, j->nrows, per, all, cli_progress_fn, NULL, err, errlen);
        for (int e = 0; e < FR_NGRADS && !st; e++)
            fr_diff_merge(&c->all[e], &all[e]);
        for (int64_t b = 0; b < G && !st; b++)
            j->per[(h * G + b) * FR_NGRADS + FR_GRAD_DQ] = per[b * FR_NGRADS + FR_GRAD_DQ];
        for (int e = FR_GRAD_DK; e <= FR_GRAD_DV && !st; e++)
            j->per[h * FR_NGRADS + e] = per[e];
        free(dq), free(dk), free(dvv), free(dw);
        job_group_free(&g);
    }
    free(per);
    if (!st && j->res[G_DW].f32 && !per_w && !j->rows) st = check_shared_dw_f32(j, c, err, errlen);
    return st;
}

/* Each entry's error is dq's: dk and dv belong to key/value problems, shared by a group. */
static int check(job *j, void *cmd, char *err, size_t errlen)
{
    grad_cmd *c = cmd;
    if (job_f32(j->o)) {
        int st = check_f32(j, c, err, errlen);
        for (int64_t b = 0; b < j->p.batch && !st; b++)
            j->entries[b].diff = j->per[b * FR_NGRADS + FR_GRAD_DQ];
        return st;
    }
    const double *up = c->up->data;
    int st = fr_check_backward_rows_progress(
        &j->p, j->in.q->data, j->in.k->data, j->in.v->data, c->o.dout ? up : NULL,
        c->o.target ? up : NULL, j->res[G_DQ].data, j->res[G_DK].data, j->res[G_DV].data,
        j->res[G_DW].data, j->rows, j->nrows, j->per, c->all, cli_progress_fn, NULL, err, errlen);
    for (int64_t b = 0; b < j->p.batch && !st; b++)
        j->entries[b].diff = j->per[b * FR_NGRADS + FR_GRAD_DQ];
    return st;
}

static int verdict(job *j, void *cmd)
{
    const grad_cmd *c = cmd;
    (void)j;
    if (!c->o.target || isfinite(c->loss)) return EXIT_OK;
    return cli_fail(EXIT_INTERNAL,
                    "grad: the loss is %g although the inputs are finite; nothing "
                    "was written (please report this)",
                    c->loss);
}

static void report(job *j, void *cmd, cJSON *r)
{
    const grad_cmd *c = cmd;
    if (c->o.target)
        rep_num(r, "loss", c->loss);
    else
        cJSON_AddNullToObject(r, "loss");
    if (!j->nrows) {
        cJSON_AddNullToObject(r, "error");
        return;
    }
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    rep_int(e, "rows_checked", j->nrows * j->p.batch);
    rep_num(e, "eps", j->o->attn.opt.eps);
    /* out (T) carries the forward's certificate: the plan's, since the backward computes exactly
     * the rows it cannot certify before the pass. */
    job_report_certificate(j, cJSON_AddObjectToObject(e, "out"));
    rep_num(e, "a_priori_bound_out",
            cJSON_GetObjectItem(cJSON_GetObjectItem(e, "out"), "a_priori_bound")->valuedouble);
    for (int g = 0; g < G_N; g++) {
        if (g == G_OUT) continue;
        const fr_diff *d = &c->all[core_grad[g]];
        if (!d->count) {
            cJSON_AddNullToObject(e, gname[g]);
            continue;
        }
        cJSON *x = cJSON_AddObjectToObject(e, gname[g]);
        rep_num(x, "max_abs", d->max_abs);
        rep_num(x, "max_rel", d->max_rel);
    }
}

static void summary(job *j, void *cmd, char *buf, size_t len)
{
    const grad_cmd *c = cmd;
    size_t off = 0;
    if (c->o.target) off += (size_t)snprintf(buf, len, "loss %.6g", c->loss);
    if (j->nrows && off < len)
        snprintf(buf + off, len - off, "%smax abs error dq %.3g, dk %.3g, dv %.3g on %lld rows",
                 off ? "; " : "", c->all[FR_GRAD_DQ].max_abs, c->all[FR_GRAD_DK].max_abs,
                 c->all[FR_GRAD_DV].max_abs, (long long)(j->nrows * j->p.batch));
}

/* Exactly one loss, some output, and dW only where W is a tensor. */
static int setup(job *j, void *cmd)
{
    grad_opts *o = &((grad_cmd *)cmd)->o;
    if (!o->dout == !o->target)
        return cli_fail(EXIT_USAGE, "grad: give exactly one of --dout FILE and --target FILE");
    int any = o->bundle_out != NULL;
    for (int g = 0; g < G_N; g++)
        any |= o->file[g] != NULL;
    if (!any) return cli_fail(EXIT_USAGE, "grad: give -o OUT.npz or --dq/--dk/--dv output files");
    if (o->file[G_DW]) o->grad_w = 1;
    if (o->grad_w && o->job.attn.rot.kind != FR_ROT_EXPLICIT)
        return cli_fail(EXIT_USAGE, "grad: --grad-w needs an explicit W (-w FILE)");
    j->bundle = o->bundle_out;
    j->also_read[0] = o->dout;
    j->also_read[1] = o->target;
    for (int g = 0; g < G_N; g++)
        job_add_result(j, gname[g], o->file[g], g != G_DW || o->grad_w);
    return EXIT_OK;
}

const job_spec grad_spec = {
    "grad", synopsis, doc,     grad_table, sizeof(grad_cmd), offsetof(grad_cmd, o.job),
    setup,  prepare,  compute, check,      verdict,          report,
    summary};
