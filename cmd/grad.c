/* grad.c - `fastrope grad`: gradients of a loss through RoPE attention, exact or fast, with an
 * error report against the exact gradients. */
#include "job.h"
#include "report.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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
    OPT_GROUP("Outputs (written: .npz or .json bundles; .npy, .npz or .json tensors):"),
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

static const cli_section sections[] = {
    {grad_table, 0, NULL},
    {job_table, offsetof(grad_opts, job), job_finish_section},
    {cli_attn_table, offsetof(grad_opts, job.attn), cli_attn_finish_section},
    {cli_limits_table, offsetof(grad_opts, job.limits), NULL},
    {NULL, 0, NULL}};

static const cli_command command = {
    "grad",
    "(--input BUNDLE | -q FILE -k FILE -v FILE) (--dout FILE | --target FILE) -o OUT\n"
    "(--input BUNDLE | -q FILE -k FILE -v FILE) (--dout FILE | --target FILE) --dq F --dk F "
    "--dv F",
    "Gradients of a loss L through T = softmax(tau * Q_i W_{j-i} K_j^T) V: --dout gives "
    "G = dL/dT; --target E uses L = 1/2 ||T - E||_F^2 (G = T - E) and reports the loss. The fast "
    "methods return the exact gradient of their own polynomial forward; the report measures its "
    "distance from the exact gradient on sampled rows."
    "\vExit codes: 0 ok, 1 internal/resources, 2 usage, 3 bad input, 4 accuracy not "
    "guaranteed.",
    sections, CLI_NO_ARGS};

static int parse(int argc, char **argv, grad_opts *o)
{
    memset(o, 0, sizeof *o);
    job_init(&o->job);
    int st = cli_parse(&command, argc, argv, o);
    if (st) return st;
    if (!o->dout == !o->target)
        return cli_fail(EXIT_USAGE, "grad: give exactly one of --dout FILE and --target FILE");
    int any = o->bundle_out != NULL;
    for (int g = 0; g < G_N; g++)
        any |= o->file[g] != NULL;
    if (!any) return cli_fail(EXIT_USAGE, "grad: give -o OUT.npz or --dq/--dk/--dv output files");
    if (o->file[G_DW]) o->grad_w = 1;
    if (o->grad_w && o->job.attn.rot.kind != FR_ROT_EXPLICIT)
        return cli_fail(EXIT_USAGE, "grad: --grad-w needs an explicit W (-w FILE)");
    const char *outs[G_N + 2] = {o->bundle_out, o->job.report};
    for (int g = 0; g < G_N; g++)
        outs[2 + g] = o->file[g];
    const char *ups[2] = {o->dout, o->target};
    return job_check_paths(&o->job, "grad", outs, G_N + 2, ups, 2);
}

typedef struct {
    double *g[G_N]; /* the results, batch-major like the inputs */
    double loss;
} grads;

typedef struct {
    int64_t rows;
    double max_abs[G_N], max_rel[G_N];
    int checked[G_N];
    double seconds;
} grad_check;

static int compute(const grad_opts *o, const cli_inputs *in, fr_problem *p, const fr_bounds *bounds,
                   const double *upstream, fr_plan_info *info, grads *r, double t0)
{
    char err[512];
    fr_options opt = o->job.attn.opt;
    opt.progress = job_progress_fn;
    opt.progress_user = &t0;
    fr_plan *plan = NULL;
    r->loss = 0;
    int st = fr_plan_create(&plan, p, bounds, &opt, err, sizeof err);
    if (!st) {
        fr_plan_get_info(plan, info);
        st = fr_execute_backward(plan, in->q->data, in->k->data, in->v->data,
                                 o->dout ? upstream : NULL, o->target ? upstream : NULL,
                                 r->g[G_OUT], r->g[G_DQ], r->g[G_DK], r->g[G_DV], r->g[G_DW],
                                 o->target ? &r->loss : NULL, NULL, err, sizeof err);
    }
    fr_plan_free(plan);
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

/* Exact gradients on all rows (small n) or on sampled query/key rows, compared with r. */
static int check(const grad_opts *o, const cli_inputs *in, const fr_problem *p,
                 const double *upstream, const grads *r, grad_check *c)
{
    char err[512];
    int64_t n = in->n, m = job_check_count(n, o->job.check_rows);
    memset(c, 0, sizeof *c);
    if (m == 0) return EXIT_OK;
    double t0 = cli_now();
    int full = m == n;
    int64_t *rows = full ? NULL : job_sample_rows(n, m);
    if (!full && !rows) return cli_fail(EXIT_INTERNAL, "out of memory checking the gradients");
    fr_diff all[FR_NGRADS];
    int st =
        fr_check_backward_rows(p, in->q->data, in->k->data, in->v->data, o->dout ? upstream : NULL,
                               o->target ? upstream : NULL, r->g[G_DQ], r->g[G_DK], r->g[G_DV],
                               r->g[G_DW], rows, m, NULL, all, err, sizeof err);
    free(rows);
    if (st) return cli_fail(st, "computing the exact gradients for the check: %s", err);
    const int gs[FR_NGRADS] = {G_DQ, G_DK, G_DV, G_DW};
    for (int i = 0; i < FR_NGRADS; i++) {
        int g = gs[i];
        c->checked[g] = all[i].count > 0;
        c->max_abs[g] = all[i].max_abs;
        c->max_rel[g] = all[i].max_rel;
    }
    c->rows = m * in->batch;
    c->seconds = cli_now() - t0;
    return EXIT_OK;
}

/* The tensor of gradient g: the shape of q, k, v, T or W. */
static void shape_of(const cli_inputs *in, int g, fr_tensor *t)
{
    memset(t, 0, sizeof *t);
    const fr_tensor *like = g == G_DQ ? in->q : g == G_DK ? in->k : g == G_DW ? in->w : in->v;
    t->ndim = like->ndim;
    memcpy(t->shape, like->shape, sizeof t->shape);
}

static int write_outputs(const grad_opts *o, const cli_inputs *in, grads *r)
{
    char err[512];
    int st = EXIT_OK;
    for (int g = 0; g < G_N && !st; g++) {
        if (!o->file[g] || !r->g[g]) continue;
        fr_tensor t;
        shape_of(in, g, &t);
        t.data = r->g[g];
        if ((st = fr_write_tensor(o->file[g], FR_FMT_UNKNOWN, &t, o->job.dtype, err, sizeof err)))
            cli_fail(st, "%s", err);
    }
    if (st || !o->bundle_out) return st;
    fr_bundle b;
    memset(&b, 0, sizeof b);
    for (int g = 0; g < G_N && !st; g++) {
        if (!r->g[g]) continue;
        fr_tensor t;
        shape_of(in, g, &t);
        t.data = r->g[g];
        if ((st = fr_bundle_add(&b, gname[g], &t, err, sizeof err)))
            cli_fail(st, "%s", err);
        else
            r->g[g] = NULL; /* the bundle owns it now */
    }
    fr_format fmt = strcmp(o->bundle_out, "-") == 0 ? FR_FMT_NPZ : FR_FMT_UNKNOWN;
    if (!st && (st = fr_write_bundle(o->bundle_out, fmt, &b, o->job.dtype, 0, err, sizeof err)))
        cli_fail(st, "%s", err);
    fr_bundle_free(&b);
    return st;
}

static void report_check(cJSON *r, const fr_plan_info *info, const grad_check *c, double eps)
{
    if (info->method == FR_METHOD_EXACT) {
        cJSON_AddNullToObject(r, "error");
        return;
    }
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    rep_int(e, "rows_checked", c->rows);
    rep_num(e, "eps", eps);
    rep_num(e, "a_priori_bound_out", info->a_priori_bound);
    for (int g = 0; g < G_N; g++) {
        if (g == G_OUT) continue;
        if (!c->checked[g]) {
            cJSON_AddNullToObject(e, gname[g]);
            continue;
        }
        cJSON *x = cJSON_AddObjectToObject(e, gname[g]);
        rep_num(x, "max_abs", c->max_abs[g]);
        rep_num(x, "max_rel", c->max_rel[g]);
    }
}

int cmd_grad(int argc, char **argv)
{
    double t0 = cli_now();
    grad_opts o;
    int st = parse(argc, argv, &o);
    if (st) return st == CLI_HELP ? EXIT_OK : st;

    cli_inputs in;
    fr_problem p;
    fr_tensor *up = NULL;
    char uplabel[512];
    st = cli_load(&in, &o.job.limits, o.job.input, o.job.q, o.job.k, o.job.v, o.job.attn.w_path);
    if (!st)
        st = cli_load_output_like(&in, o.dout ? o.dout : o.target, o.dout ? "dout" : "target", &up,
                                  uplabel, sizeof uplabel);
    if (st || (st = job_problem(&o.job, &in, &p))) {
        cli_inputs_free(&in);
        return st;
    }
    grads r;
    memset(&r, 0, sizeof r);
    int64_t nb = in.batch * in.n;
    int64_t size[G_N] = {nb * in.d, nb * in.d, nb * in.dv, nb * in.dv,
                         o.grad_w ? in.w_batch * (2 * in.n - 1) * in.d * in.d : 0};
    for (int g = 0; g < G_N && !st; g++)
        if (size[g] && !(r.g[g] = calloc((size_t)size[g], sizeof(double))))
            st = cli_fail(EXIT_INTERNAL, "out of memory for %s (%lld doubles)", gname[g],
                          (long long)size[g]);
    double tc = cli_now();
    fr_bounds bounds, *entries = NULL;
    fr_plan_info info;
    if (!st) st = job_bounds(&p, &in, &entries, &bounds);
    if (!st) st = compute(&o, &in, &p, entries, up->data, &info, &r, t0);
    free(entries);
    double compute_s = cli_now() - tc;
    grad_check chk;
    memset(&chk, 0, sizeof chk);
    if (!st && info.method != FR_METHOD_EXACT) st = check(&o, &in, &p, up->data, &r, &chk);
    if (!st) st = write_outputs(&o, &in, &r);
    if (!st && (o.job.report || o.job.report_fd >= 0)) {
        cJSON *rep = rep_problem(&p, fr_method_name(info.method), in.batch, in.w ? in.wlabel : NULL,
                                 cli_preset_name(o.job.attn.preset));
        rep_bounds(rep, &bounds);
        rep_plan(rep, &info);
        report_check(rep, &info, &chk, o.job.attn.opt.eps);
        if (o.target)
            rep_num(rep, "loss", r.loss);
        else
            cJSON_AddNullToObject(rep, "loss");
        cJSON *t = cJSON_AddObjectToObject(rep, "time_s");
        rep_num(t, "compute", compute_s);
        rep_num(t, "check", chk.seconds);
        rep_num(t, "total", cli_now() - t0);
        st = job_write_report(&o.job, rep);
        cJSON_Delete(rep);
    }
    if (!st && !o.job.quiet)
        fprintf(stderr, "fastrope: grad %s, n = %lld, batch %lld%s: %.3g s%s\n",
                fr_method_name(info.method), (long long)in.n, (long long)in.batch,
                o.target ? ", loss in the report" : "", compute_s,
                chk.rows ? ", checked against exact gradients" : "");
    for (int g = 0; g < G_N; g++)
        free(r.g[g]);
    cli_inputs_free(&in);
    return st;
}
