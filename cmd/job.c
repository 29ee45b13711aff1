/* job.c - the pipeline of run and grad, written once: outputs staged before any work (a missing
 * directory fails at once), inputs loaded, the problem, each entry's bounds, the plan (or the
 * refusal, reported), the computation, the sampled check, the results' finiteness, then every
 * output written into its staging and all committed together, or none. */
#include "job.h"

#include "fastrope_planner.h"
#include "progress.h"
#include "report.h"
#include "wisdom.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void begin(job *j, const char *cmd, job_opts *o)
{
    memset(j, 0, sizeof *j);
    j->cmd = cmd;
    j->o = o;
    j->t0 = cli_now();
    j->bundle_id = j->report_id = -1;
    cli_progress_begin(cmd, o->quiet);
}

int job_add_result(job *j, const char *name, const char *file, int in_bundle)
{
    if (j->nres >= JOB_MAX_RESULTS) abort(); /* a programming error */
    job_result *r = &j->res[j->nres];
    r->name = name;
    r->file = file;
    r->in_bundle = in_bundle;
    r->id = -1;
    return j->nres++;
}

void job_result_shape(job *j, int r, const fr_tensor *like, int64_t last)
{
    j->res[r].like = like;
    j->res[r].last = last;
}

/* ---- the steps ------------------------------------------------------------------------------- */

/* Before any work: no two outputs name one file ('-' is stdout, where the report may go too
 * through --report-fd 1), and no output is an input: a typo there destroys data. */
static int check_paths(const job *j)
{
    const job_opts *o = j->o;
    const char *outs[JOB_MAX_RESULTS + 2],
        *ins[7] = {o->input, o->q, o->k, o->v, o->attn.w_path, j->also_read[0], j->also_read[1]};
    int nouts = 0;
    for (int r = 0; r < j->nres; r++)
        outs[nouts++] = j->res[r].file;
    outs[nouts++] = j->bundle;
    outs[nouts++] = o->report;
    for (int a = 0; a < nouts; a++)
        for (int b = a + 1; b < nouts; b++)
            if (outs[a] && outs[b] && fr_same_file(outs[a], outs[b]))
                return cli_fail(EXIT_USAGE, "%s: two outputs name %s%s: each needs its own file",
                                j->cmd, strcmp(outs[a], "-") ? "the file " : "stdout ",
                                strcmp(outs[a], "-") ? outs[a] : "('-')");
    for (int a = 0; a < nouts; a++) {
        if (!outs[a]) continue;
        if (o->report_fd == 1 && strcmp(outs[a], "-") == 0)
            return cli_fail(EXIT_USAGE, "%s: an output and the report cannot both go to stdout",
                            j->cmd);
        for (int i = 0; i < 7; i++)
            if (ins[i] && strcmp(ins[i], "-") != 0 && fr_same_file(outs[a], ins[i]))
                return cli_fail(EXIT_USAGE, "%s: refusing to overwrite the input %s", j->cmd,
                                ins[i]);
    }
    return EXIT_OK;
}

static int stage(job *j)
{
    char err[512];
    int st = EXIT_OK;
    if (!(j->outs = fr_outputs_new())) return cli_fail(EXIT_INTERNAL, "out of memory");
    for (int r = 0; r < j->nres && !st; r++)
        if (j->res[r].file)
            st = fr_outputs_add(j->outs, j->res[r].file, FR_OUT_TENSOR, &j->res[r].id, err,
                                sizeof err);
    if (!st && j->bundle)
        st = fr_outputs_add(j->outs, j->bundle, FR_OUT_BUNDLE, &j->bundle_id, err, sizeof err);
    if (!st && j->o->report)
        st = fr_outputs_add(j->outs, j->o->report, FR_OUT_TEXT, &j->report_id, err, sizeof err);
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

static int problem(const job_opts *o, const cli_inputs *in, fr_problem *p)
{
    char err[512], sq[128];
    *p = fr_problem_default(in->n, in->d, in->dv);
    p->rot = o->attn.rot;
    p->causal = o->attn.causal;
    p->window = o->attn.window;
    if (in->w) p->rot.w = in->w->data, p->rot.w_count = in->w_batch;
    p->batch = in->batch;
    p->kv_batch = in->kv_batch;
    cli_scale(&o->attn, in->d, &p->tau);
    cli_shape_str(in->q, sq, sizeof sq);
    int rope = p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP;
    /* The option or the data: say which one is at odds with the other. */
    if (rope && p->rot.rotary_dim > in->d)
        return cli_fail(EXIT_USAGE, "--rotary-dim %lld is larger than d = %lld (%s has shape %s)",
                        (long long)p->rot.rotary_dim, (long long)in->d, in->qlabel, sq);
    if (rope && !p->rot.rotary_dim && in->d % 2)
        return cli_fail(EXIT_INPUT,
                        "%s: RoPE rotates pairs of coordinates, but q has shape %s (d = %lld is "
                        "odd); use --rotary-dim or --no-rope",
                        in->qlabel, sq, (long long)in->d);
    int st = fr_problem_check(p, err, sizeof err);
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

static int64_t count_of(const job_result *r)
{
    int64_t c = 1;
    for (int i = 0; i < r->like->ndim - 1; i++)
        c *= r->like->shape[i];
    return c * (r->last > 0 ? r->last : r->like->shape[r->like->ndim - 1]);
}

static int allocate(job *j)
{
    int f32 = job_f32(j->o);
    for (int r = 0; r < j->nres; r++) {
        if (!j->res[r].like) continue;
        int64_t c = count_of(&j->res[r]);
        void *x = calloc((size_t)(c > 0 ? c : 1), f32 ? sizeof(float) : sizeof(double));
        if (!x)
            return cli_fail(EXIT_INTERNAL, "out of memory for %s (%lld %s)", j->res[r].name,
                            (long long)c, f32 ? "floats" : "doubles");
        if (f32)
            j->res[r].f32 = x;
        else
            j->res[r].data = x;
    }
    if (!(j->entries = calloc((size_t)j->p.batch, sizeof *j->entries)) ||
        !(j->exec = calloc((size_t)j->p.batch, sizeof *j->exec)) ||
        !(j->bounds = malloc((size_t)j->p.batch * sizeof *j->bounds)))
        return cli_fail(EXIT_INTERNAL, "out of memory for the bounds of %lld entries",
                        (long long)j->p.batch);
    return EXIT_OK;
}

static int bounds(job *j)
{
    char err[512];
    const cli_inputs *in = &j->in;
    int st = job_f32(j->o) ? fr_bounds_compute_f32(&j->p, in->q->f32, in->k->f32, in->v->f32,
                                                   j->bounds, err, sizeof err)
                           : fr_bounds_compute(&j->p, in->q->data, in->k->data, in->v->data,
                                               j->bounds, err, sizeof err);
    if (st) return cli_fail(st, "%s", err);
    fr_bounds_pool(j->bounds, j->p.batch, &j->pooled);
    return EXIT_OK;
}

/* The core says why in its terms (eps, max_degree); the hint is in the command's. */
static int refused(job *j, const char *why)
{
    const char *hint =
        strstr(why, "degree") ? "; --method exact computes it without a polynomial" : "";
    return cli_fail(EXIT_ACCURACY, "%s: %s refused: %s%s", j->cmd,
                    fr_method_name(j->o->attn.opt.method), why, hint);
}

void job_progress(int64_t done, int64_t total, double t0)
{
    (void)t0; /* the line's own clock started with the command (cli_progress_begin) */
    cli_progress_outer(done, total, "file");
}

/* Plan and compute; on a refusal, *refusal holds the core's reason. */
static int compute(job *j, const job_spec *spec, void *cmd, char *refusal, size_t len)
{
    char err[512];
    fr_options opt = j->o->attn.opt;
    opt.progress = cli_progress_fn; /* the line on a terminal; cancels once interrupted */
    opt.progress_user = NULL;
    fr_plan *plan = NULL;
    cli_wisdom wis; /* FFTW's plans measured by earlier runs on this machine */
    cli_wisdom_load(&wis);
    double tc = cli_now();
    int st = fr_plan_create(&plan, &j->p, j->bounds, &opt, err, sizeof err);
    /* The wisdom's save is the cache's bookkeeping, not the computation: with a large wisdom
     * file its comparison takes milliseconds, which the report's time_s.compute leaves out. */
    double tw = cli_now();
    cli_wisdom_save(&wis);
    tc += cli_now() - tw;
    if (st == FR_ECANCELED && cli_interrupted()) return cli_interrupt_exit();
    if (st == EXIT_ACCURACY) {
        snprintf(refusal, len, "%s", err);
        /* The degree eps would need, for the report: the estimate of the worst entry. */
        fr_plan_info est;
        fr_problem p1 = j->p;
        p1.batch = p1.kv_batch = 1;
        char e2[256];
        j->refused_degree =
            fr_plan_estimate(&p1, &j->pooled, &opt, &est, e2, sizeof e2) ? -1 : est.needed_degree;
        return refused(j, err);
    }
    if (st) return cli_fail(st, "%s", err);
    fr_plan_get_info(plan, &j->info);
    /* The worst entry's prediction for every entry; a backward costs about three forwards. */
    double each = j->info.predicted_s[j->info.method];
    cli_progress_expect((each > 0 ? each : 0) * (double)j->p.batch *
                        (strcmp(j->cmd, "grad") == 0 ? 3 : 1));
    for (int64_t b = 0; b < j->p.batch; b++) {
        fr_plan_info e;
        fr_plan_entry_info(plan, b, &e);
        j->entries[b] = (job_entry){e.bounds.B, e.bounds.R, e.degree, e.method, {0, 0, 0, 0}};
    }
    st = spec->compute(j, cmd, plan, err, sizeof err);
    fr_plan_free(plan);
    j->compute_s = cli_now() - tc;
    cli_progress_end();
    if (st == FR_ECANCELED && cli_interrupted()) return cli_interrupt_exit();
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

int64_t job_check_count(int64_t n, int64_t want)
{
    int64_t m = want == -2 ? n : (want < 0 ? (n <= 4096 ? n : 256) : want);
    return m > n ? n : m;
}

/* Evenly spaced with the first and last row: the first row of a causal problem has one key, the
 * last has all of them; both ends are where errors show first. */
int64_t *job_sample_rows(int64_t n, int64_t m)
{
    int64_t *rows = malloc((size_t)(m > 0 ? m : 1) * sizeof *rows);
    if (!rows) return NULL;
    for (int64_t t = 0; t < m; t++)
        rows[t] = m == 1 ? 0 : (int64_t)((double)t * (double)(n - 1) / (double)(m - 1));
    return rows;
}

static int check(job *j, const job_spec *spec, void *cmd)
{
    char err[512];
    int64_t n = j->p.n;
    j->nrows = job_check_count(n, j->o->check_rows);
    int fast = job_f32(j->o); /* the exact method is its own reference, in double */
    for (int64_t b = 0; b < j->p.batch; b++)
        fast |= j->entries[b].method != FR_METHOD_EXACT;
    if (!fast) j->nrows = 0;
    if (j->nrows == 0) return EXIT_OK;
    double t0 = cli_now();
    if (!(j->per = calloc((size_t)j->p.batch * FR_NGRADS, sizeof *j->per)) ||
        (j->nrows < n && !(j->rows = job_sample_rows(n, j->nrows))))
        return cli_fail(EXIT_INTERNAL, "out of memory");
    int st = spec->check(j, cmd, err, sizeof err);
    j->check_s = cli_now() - t0;
    cli_progress_end();
    if (st == FR_ECANCELED && cli_interrupted()) return cli_interrupt_exit();
    return st ? cli_fail(st, "checking against the exact computation: %s", err) : EXIT_OK;
}

/* The last line of defence: a NaN or an infinity never leaves with exit 0. */
static int all_finite(const job *j)
{
    for (int r = 0; r < j->nres; r++) {
        const job_result *x = &j->res[r];
        if (!x->data && !x->f32) continue;
        int64_t bad = -1, count = count_of(x);
        if (x->data) bad = fr_find_nonfinite(x->data, count);
        for (int64_t i = 0; x->f32 && i < count && bad < 0; i++)
            if (!isfinite(x->f32[i])) bad = i;
        if (bad >= 0)
            return cli_fail(EXIT_INTERNAL,
                            "%s: the computed %s holds %s at flat index %lld although the inputs "
                            "are finite; nothing was written (please report this)",
                            j->cmd, x->name,
                            isnan(x->data ? x->data[bad] : x->f32[bad]) ? "NaN" : "Inf",
                            (long long)bad);
    }
    return EXIT_OK;
}

static void tensor_of(const job_result *r, fr_tensor *t)
{
    memset(t, 0, sizeof *t);
    t->ndim = r->like->ndim;
    memcpy(t->shape, r->like->shape, sizeof t->shape);
    if (r->last > 0) t->shape[t->ndim - 1] = r->last;
    t->data = r->data;
    t->f32 = r->f32;
}

static int write_results(job *j)
{
    char err[512];
    int st = EXIT_OK;
    fr_tensor t;
    for (int r = 0; r < j->nres && !st; r++) {
        if (j->res[r].id < 0 || (!j->res[r].data && !j->res[r].f32)) continue;
        tensor_of(&j->res[r], &t);
        st = fr_outputs_write_tensor(j->outs, j->res[r].id, FR_FMT_UNKNOWN, &t, j->o->dtype, err,
                                     sizeof err);
    }
    if (!st && j->bundle_id >= 0) {
        fr_bundle b;
        memset(&b, 0, sizeof b);
        for (int r = 0; r < j->nres && !st; r++) {
            if (!j->res[r].in_bundle || (!j->res[r].data && !j->res[r].f32)) continue;
            tensor_of(&j->res[r], &t);
            if ((st = fr_bundle_add(&b, j->res[r].name, &t, err, sizeof err))) break;
            j->res[r].data = NULL; /* the bundle owns it now */
            j->res[r].f32 = NULL;
        }
        if (!st)
            st = fr_outputs_write_bundle(j->outs, j->bundle_id, FR_FMT_UNKNOWN, &b, j->o->dtype, 0,
                                         err, sizeof err);
        fr_bundle_free(&b);
    }
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

void job_report_certificate(const job *j, cJSON *e)
{
    /* Over the entries a fast method (or single-precision exact) ran: the worst certificate,
     * and every row a fast method handed to the exact path (core/ALGORITHM.md 3.1). */
    double poly = 0, rounding = 0, bound = 0;
    int64_t recomputed = 0;
    for (int64_t b = 0; b < j->p.batch; b++) {
        const fr_exec_info *x = &j->exec[b];
        /* exact in double is the reference itself; in single precision it has its bound */
        if (j->entries[b].method == FR_METHOD_EXACT && !job_f32(j->o)) continue;
        poly = fmax(poly, x->a_priori_bound - x->rounding_bound);
        rounding = fmax(rounding, x->rounding_bound);
        bound = fmax(bound, x->a_priori_bound);
        recomputed += x->rows_recomputed;
    }
    /* The batch's bound is the two worst parts added: at least every entry's own. */
    rep_num(e, "poly_bound", poly);
    rep_num(e, "rounding_bound", rounding);
    rep_num(e, "a_priori_bound", fmax(bound, poly + rounding));
    rep_int(e, "rows_recomputed", recomputed);
}

static void report_entries(const job *j, cJSON *r)
{
    rep_int(r, "worst_entry", j->info.entry);
    rep_int(r, "plans", j->info.plans);
    cJSON *a = cJSON_AddArrayToObject(r, "entries");
    for (int64_t b = 0; b < j->p.batch; b++) {
        const job_entry *e = &j->entries[b];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToArray(a, x);
        rep_int(x, "index", b);
        rep_num(x, "B", e->B);
        rep_num(x, "R", e->R);
        if (e->degree >= 0 && e->method != FR_METHOD_EXACT)
            rep_int(x, "degree", e->degree);
        else
            cJSON_AddNullToObject(x, "degree");
        cJSON_AddStringToObject(x, "method", fr_method_name(e->method));
        rep_num(x, "max_abs", e->diff.count ? e->diff.max_abs : NAN);
        if (e->method != FR_METHOD_EXACT) {
            rep_num(x, "a_priori_bound", j->exec[b].a_priori_bound);
            rep_int(x, "rows_recomputed", j->exec[b].rows_recomputed);
        }
    }
}

static int write_fd(int fd, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off <= len) {
        const char *p = off < len ? text + off : "\n";
        ssize_t w = write(fd, p, off < len ? len - off : 1);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return cli_fail(EXIT_INTERNAL, "--report-fd %d: %s", fd, strerror(w < 0 ? errno : EIO));
        off += off < len ? (size_t)w : 1;
    }
    return EXIT_OK;
}

/* The report, whole, or of a refusal (the plan's reason, no result). */
static int report(job *j, const job_spec *spec, void *cmd, const char *refusal)
{
    char err[512];
    if (!j->o->report && j->o->report_fd < 0) return EXIT_OK;
    fr_method m = refusal ? j->o->attn.opt.method : j->info.method;
    cJSON *r = rep_problem(&j->p, fr_method_name(m), j->p.batch, j->in.w ? j->in.wlabel : NULL,
                           cli_preset_name(j->o->attn.preset));
    rep_bounds(r, &j->pooled);
    if (refusal) {
        cJSON *x = cJSON_AddObjectToObject(r, "refused");
        cJSON_AddStringToObject(x, "reason", refusal);
        rep_num(x, "R", j->pooled.R);
        if (j->refused_degree >= 0)
            rep_int(x, "needed_degree", j->refused_degree);
        else
            cJSON_AddNullToObject(x, "needed_degree");
        rep_int(x, "max_degree", j->o->attn.opt.max_degree);
        cJSON_AddNullToObject(r, "error");
    } else {
        rep_plan(r, &j->info);
        cJSON_AddStringToObject(cJSON_GetObjectItem(r, "plan"), "precision",
                                job_f32(j->o) ? "f32" : "f64");
        report_entries(j, r);
        spec->report(j, cmd, r);
    }
    cJSON *t = cJSON_AddObjectToObject(r, "time_s");
    rep_num(t, "compute", j->compute_s);
    rep_num(t, "check", j->check_s);
    rep_num(t, "total", cli_now() - j->t0);
    char *text = cJSON_Print(r);
    cJSON_Delete(r);
    if (!text) return cli_fail(EXIT_INTERNAL, "out of memory printing the report");
    int st = EXIT_OK;
    if (j->report_id >= 0) {
        if ((st = fr_outputs_write_text(j->outs, j->report_id, text, err, sizeof err)))
            cli_fail(st, "%s", err);
    } else {
        /* A pipe cannot be taken back: written last, just before the files are committed. */
        st = write_fd((int)j->o->report_fd, text);
    }
    free(text);
    return st;
}

static void summary(job *j, const job_spec *spec, void *cmd)
{
    char tail[256] = "", deg[32] = "";
    if (j->o->quiet) return;
    spec->summary(j, cmd, tail, sizeof tail);
    if (j->info.degree >= 0 && j->info.method != FR_METHOD_EXACT)
        snprintf(deg, sizeof deg, ", degree %d", j->info.degree);
    fprintf(stderr, "fastrope: %s%s, n = %lld, d = %lld, dv = %lld, batch %lld: %.3g s%s%s\n",
            fr_method_name(j->info.method), deg, (long long)j->p.n, (long long)j->p.d,
            (long long)j->p.dv, (long long)j->p.batch, j->compute_s, tail[0] ? "; " : "", tail);
}

static void release(job *j)
{
    fr_outputs_abort(j->outs);
    for (int r = 0; r < j->nres; r++)
        free(j->res[r].data), free(j->res[r].f32);
    free(j->entries);
    free(j->exec);
    free(j->bounds);
    free(j->rows);
    free(j->per);
    cli_inputs_free(&j->in);
}

static int run(job *j, const job_spec *spec, void *cmd)
{
    char err[512], refusal[512] = "";
    job_opts *o = j->o;
    int st = check_paths(j);
    if (!st) st = stage(j);
    if (!st)
        st = cli_load(&j->in, &o->limits, job_f32(o) ? FR_DTYPE_F4 : FR_DTYPE_F8, o->input, o->q,
                      o->k, o->v, o->attn.w_path, o->set, &o->words);
    if (!st) st = problem(o, &j->in, &j->p);
    if (!st) st = spec->prepare(j, cmd);
    if (!st) st = allocate(j);
    if (!st) st = bounds(j);
    if (!st) st = compute(j, spec, cmd, refusal, sizeof refusal);
    if (st == EXIT_ACCURACY && refusal[0]) {
        /* Only the report is written: the other staged outputs are dropped at commit. A report
         * that cannot be written outranks the refusal: the caller would look for it. */
        int wst = report(j, spec, cmd, refusal);
        if (!wst) {
            wst = fr_outputs_commit(j->outs, err, sizeof err);
            j->outs = NULL; /* the commit frees the set, whether or not it succeeded */
            if (wst) cli_fail(wst, "%s", err);
        }
        release(j);
        return wst ? wst : st;
    }
    if (!st) st = check(j, spec, cmd);
    if (!st && spec->verdict) st = spec->verdict(j, cmd);
    if (!st) st = all_finite(j);
    if (!st) st = write_results(j);
    if (!st) st = report(j, spec, cmd, NULL);
    /* Interrupted at any step: the staged outputs are removed (release), none committed. */
    if ((!st || st == EXIT_ACCURACY) && cli_interrupted()) st = cli_interrupt_exit();
    if (!st) {
        st = fr_outputs_commit(j->outs, err, sizeof err);
        j->outs = NULL;
        if (st) cli_fail(st, "%s", err);
    }
    if (!st) summary(j, spec, cmd);
    release(j);
    return st;
}

int job_main(const job_spec *spec, int argc, char **argv)
{
    job j;
    char *cmd = calloc(1, spec->size);
    if (!cmd) return cli_fail(EXIT_INTERNAL, "out of memory");
    job_opts *o = (job_opts *)(cmd + spec->job_offset);
    int st = job_parse(spec->name, spec->synopsis, spec->doc, spec->table, spec->job_offset, argc,
                       argv, cmd);
    begin(&j, spec->name, o);
    cli_signals_catch();
    if (!st) st = spec->setup(&j, cmd);
    if (st == CLI_HELP)
        st = EXIT_OK;
    else if (!st)
        st = run(&j, spec, cmd);
    free(cmd);
    return st;
}
