/* run.c - `fastrope run`: the forward pass, its output, and the error report. */
#include "cli.h"
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: fastrope run (--input BUNDLE | -q FILE -k FILE -v FILE) [rotation] [options]\n"
    "                    -o OUT [--report FILE]\n"
    "\n"
    "Computes T = softmax(tau * Q_i W_{j-i} K_j^T) V for every leading (batch) index and writes\n"
    "it to OUT (.npy, .npz, .json; '-' writes .npy to stdout). q, k: [..., n, d]; v: [..., n, dv].\n"
    "\n"
    "Inputs and outputs:\n"
    "  --input BUNDLE         .npz or .json bundle with members q, k, v ('-': stdin)\n"
    "  -q FILE -k FILE -v FILE  one tensor per file\n"
    "  -o OUT                 output file ('-': stdout)\n"
    "  --dtype f4|f8          output precision (f8)\n"
    "  --report FILE          JSON report ('-': stdout)\n"
    "  --report-fd N          JSON report to the open file descriptor N (for pipes)\n"
    "  --check-rows N|all     rows checked against exact attention (all when n <= 4096, else 256;\n"
    "                         0: none)\n"
    "  --strict               exit 4, writing nothing, when the observed error exceeds --eps\n"
    "  --quiet                no summary line on stderr\n"
    "%s"
    "\n"
    "Exit codes: 0 ok, 1 internal/resources, 2 usage, 3 bad input, 4 accuracy not guaranteed.\n";

typedef struct {
    const char *input, *q, *k, *v, *out, *report;
    fr_dtype dtype;
    int quiet, strict;
    int64_t check_rows; /* -1: default, -2: all */
    int64_t report_fd;  /* -1: none */
    cli_attn attn;
} run_opts;

static int parse(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = FR_DTYPE_F8;
    o->check_rows = -1;
    o->report_fd = -1;
    cli_attn_init(&o->attn);
    cli_args a = {argc, argv, 1, 0, "run"};
    for (; a.i < argc && !a.bad; a.i++) {
        const char *v;
        if (arg_flag(&a, "--help") || arg_flag(&a, "-h")) {
            printf(usage, cli_attn_help);
            exit(0);
        } else if (cli_attn_option(&a, &o->attn)) {
        } else if (arg_value(&a, "--input", &o->input) || arg_value(&a, "-q", &o->q) ||
                   arg_value(&a, "-k", &o->k) || arg_value(&a, "-v", &o->v) ||
                   arg_value(&a, "-o", &o->out) || arg_value(&a, "--output", &o->out) ||
                   arg_value(&a, "--report", &o->report)) {
        } else if (arg_value(&a, "--report-fd", &v)) {
            if (v && (parse_int64("--report-fd", v, &o->report_fd) || o->report_fd < 0 ||
                      o->report_fd > 1 << 20))
                return cli_fail(EXIT_USAGE, "--report-fd must be an open file descriptor");
        } else if (arg_flag(&a, "--quiet")) {
            o->quiet = 1;
        } else if (arg_flag(&a, "--strict")) {
            o->strict = 1;
        } else if (arg_value(&a, "--dtype", &v)) {
            if (v && (strcmp(v, "f4") == 0 || strcmp(v, "float32") == 0))
                o->dtype = FR_DTYPE_F4;
            else if (v && (strcmp(v, "f8") == 0 || strcmp(v, "float64") == 0))
                o->dtype = FR_DTYPE_F8;
            else if (v)
                return cli_fail(EXIT_USAGE, "--dtype: '%s' is not f4 or f8", v);
        } else if (arg_value(&a, "--check-rows", &v)) {
            if (v && strcmp(v, "all") == 0)
                o->check_rows = -2;
            else if (v && (parse_int64("--check-rows", v, &o->check_rows) || o->check_rows < 0))
                return cli_fail(EXIT_USAGE, "--check-rows must be a count >= 0 or 'all'");
        } else {
            return cli_fail(EXIT_USAGE, "run: unknown option '%s' (see fastrope run --help)",
                            argv[a.i]);
        }
    }
    if (a.bad) return EXIT_USAGE;
    if (!o->out) return cli_fail(EXIT_USAGE, "run: -o OUT is required (see fastrope run --help)");
    if (o->report && o->report_fd >= 0)
        return cli_fail(EXIT_USAGE, "run: give --report or --report-fd, not both");
    if (o->report_fd >= 0 && fcntl((int)o->report_fd, F_GETFD) < 0)
        return cli_fail(EXIT_USAGE, "--report-fd %lld: not an open file descriptor",
                        (long long)o->report_fd);
    if (o->report_fd == 1 && strcmp(o->out, "-") == 0)
        return cli_fail(EXIT_USAGE, "run: -o - and --report-fd 1 cannot both use stdout");
    if (o->report && strcmp(o->report, "-") == 0 && strcmp(o->out, "-") == 0)
        return cli_fail(EXIT_USAGE, "run: -o - and --report - cannot both use stdout");
    return cli_attn_finish(&o->attn);
}

/* Refuse to write the output over one of the inputs: a typo there destroys data. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || strcmp(a, "-") == 0 || strcmp(b, "-") == 0) return 0;
    if (stat(a, &sa) || stat(b, &sb)) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Rows checked against exact attention: evenly spaced, first and last included. */
static int64_t *sample_rows(int64_t n, int64_t m)
{
    int64_t *rows = malloc((size_t)(m > 0 ? m : 1) * sizeof *rows);
    if (!rows) return NULL;
    for (int64_t t = 0; t < m; t++)
        rows[t] = m == 1 ? 0 : (int64_t)((double)t * (double)(n - 1) / (double)(m - 1));
    return rows;
}

static void progress(int64_t done, int64_t total, double t0)
{
    static int shown;
    if (total < 2 || !isatty(2)) return;
    if (!shown && cli_now() - t0 < 1.5) return;
    shown = 1;
    int w = 30, fill = (int)(w * done / total);
    fprintf(stderr, "\r[%.*s%*s] %lld/%lld", fill, "==============================", w - fill,
            "", (long long)done, (long long)total);
    if (done == total) fputc('\n', stderr);
}

/* Write text to a descriptor the caller opened (a pipe to a Python helper, say). */
static int write_fd(int fd, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return cli_fail(EXIT_INTERNAL, "--report-fd %d: write failed", fd);
        off += (size_t)w;
    }
    return write(fd, "\n", 1) == 1 ? EXIT_OK : cli_fail(EXIT_INTERNAL, "--report-fd %d: write failed", fd);
}

/* Write text to path atomically ("-": stdout). */
static int write_text(const char *path, const char *text)
{
    if (strcmp(path, "-") == 0) {
        fputs(text, stdout);
        fputc('\n', stdout);
        return fflush(stdout) ? cli_fail(EXIT_INTERNAL, "stdout: write failed") : EXIT_OK;
    }
    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    if (!tmp) return cli_fail(EXIT_INTERNAL, "out of memory");
    snprintf(tmp, len + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        return cli_fail(EXIT_INTERNAL, "%s: cannot create a temporary file beside it", path);
    }
    FILE *f = fdopen(fd, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = (f ? fclose(f) == 0 : (close(fd), 0)) && ok;
    if (ok && rename(tmp, path) == 0) {
        free(tmp);
        return EXIT_OK;
    }
    unlink(tmp);
    free(tmp);
    return cli_fail(EXIT_INTERNAL, "%s: write failed", path);
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
    int64_t n = in->n, m = want < 0 ? (want == -2 || n <= 4096 ? n : 256) : want;
    if (m > n) m = n;
    memset(res, 0, sizeof *res);
    if (m == 0) return EXIT_OK;
    double t0 = cli_now();
    int64_t *rows = sample_rows(n, m);
    double *ref = malloc((size_t)m * (size_t)in->dv * sizeof *ref);
    double *got = malloc((size_t)m * (size_t)in->dv * sizeof *got);
    double ref_max = 0;
    int st = (rows && ref && got) ? EXIT_OK : cli_fail(EXIT_INTERNAL, "out of memory");
    for (int64_t b = 0; b < in->batch && !st; b++) {
        fr_problem p = *p0;
        if (in->w) p.rot.w = in->w->data + (in->w_batch > 1 ? b : 0) * (2 * n - 1) * p.d * p.d;
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
        for (int64_t t = 0; t < m * p.dv; t++) ref_max = fmax(ref_max, fabs(ref[t]));
        res->rows += m;
    }
    /* Normwise over all checked rows of all entries, as fr_compare is per entry. */
    res->max_rel = ref_max > 0 ? res->max_abs / ref_max : (res->max_abs > 0 ? INFINITY : 0);
    res->seconds = cli_now() - t0;
    free(rows);
    free(ref);
    free(got);
    return st;
}

static int compute(run_opts *o, cli_inputs *in, fr_problem *p, fr_bounds *bounds,
                   fr_plan_info *info, double *out, double t0)
{
    char err[512];
    int st;
    /* Bounds over the whole batch, so one plan (one degree) serves every entry. With one W per
     * entry, R is the largest over the entries. */
    memset(bounds, 0, sizeof *bounds);
    for (int64_t b = 0; b < (in->w_batch > 1 ? in->batch : 1); b++) {
        fr_problem pb = *p;
        int64_t nb = in->w_batch > 1 ? 1 : in->batch;
        fr_bounds bb;
        if (in->w) pb.rot.w = in->w->data + b * (2 * p->n - 1) * p->d * p->d;
        st = fr_bounds_compute(&pb, in->q->data + b * p->n * p->d, in->k->data + b * p->n * p->d,
                               in->v->data + b * p->n * p->dv, nb, &bb, err, sizeof err);
        if (st) return cli_fail(st, "%s", err);
        if (b == 0 || bb.R > bounds->R) *bounds = bb;
        bounds->B_q = fmax(bounds->B_q, bb.B_q);
        bounds->B_k = fmax(bounds->B_k, bb.B_k);
        bounds->B_v = fmax(bounds->B_v, bb.B_v);
        bounds->B = fmax(bounds->B, bb.B);
        bounds->B_over_sqrt_ln_n = fmax(bounds->B_over_sqrt_ln_n, bb.B_over_sqrt_ln_n);
    }
    fr_plan *plan = NULL;
    for (int64_t b = 0; b < in->batch; b++) {
        if (in->w) p->rot.w = in->w->data + (in->w_batch > 1 ? b : 0) * (2 * p->n - 1) * p->d * p->d;
        if (!plan) {
            st = fr_plan_create(&plan, p, bounds, &o->attn.opt, err, sizeof err);
            if (st) return cli_fail(st, "%s", err);
            fr_plan_get_info(plan, info);
        }
        st = fr_execute(plan, in->q->data + b * p->n * p->d, in->k->data + b * p->n * p->d,
                        in->v->data + b * p->n * p->dv, out + b * p->n * p->dv, err, sizeof err);
        if (st) {
            fr_plan_free(plan);
            return cli_fail(st, "%s", err);
        }
        if (in->w_batch > 1) { /* a new W needs a new plan (its kernels differ) */
            fr_plan_free(plan);
            plan = NULL;
        }
        progress(b + 1, in->batch, t0);
    }
    fr_plan_free(plan);
    return EXIT_OK;
}

int cmd_run(int argc, char **argv)
{
    double t0 = cli_now();
    run_opts o;
    int st = parse(argc, argv, &o);
    if (st) return st;
    const char *inputs[5] = {o.input, o.q, o.k, o.v, o.attn.w_path};
    for (int i = 0; i < 5; i++)
        if (same_file(o.out, inputs[i]) || (o.report && same_file(o.report, inputs[i])))
            return cli_fail(EXIT_USAGE, "run: refusing to overwrite the input %s", inputs[i]);

    cli_inputs in;
    st = cli_load(&in, o.input, o.q, o.k, o.v, o.attn.w_path);
    if (st) {
        cli_inputs_free(&in);
        return st;
    }
    fr_problem p = fr_problem_default(in.n, in.d, in.dv);
    p.rot = o.attn.rot;
    p.causal = o.attn.causal;
    p.window = o.attn.window;
    if (in.w) p.rot.w = in.w->data;
    char err[512];
    if ((st = cli_scale(&o.attn, in.d, &p.tau))) goto done;
    if ((p.rot.kind == FR_ROT_ROPE || p.rot.kind == FR_ROT_CLIP) &&
        (p.rot.rotary_dim ? p.rot.rotary_dim : p.d) % 2) {
        char sq[128];
        cli_shape_str(in.q, sq, sizeof sq);
        st = cli_fail(EXIT_INPUT, "%s: RoPE rotates pairs of coordinates, but q has shape %s (d = %lld is odd); use --rotary-dim or --no-rope",
                      in.qlabel, sq, (long long)in.d);
        goto done;
    }
    if ((st = fr_problem_check(&p, err, sizeof err))) {
        cli_fail(st, "%s", err);
        goto done;
    }

    size_t count = (size_t)(in.batch * in.n * in.dv);
    double *out = malloc(count * sizeof *out);
    if (!out) {
        st = cli_fail(EXIT_INTERNAL, "out of memory for the output (%zu doubles)", count);
        goto done;
    }
    double tc = cli_now();
    fr_bounds bounds;
    fr_plan_info info;
    st = compute(&o, &in, &p, &bounds, &info, out, t0);
    double compute_s = cli_now() - tc;
    check_result chk = {0, 0, 0, 0};
    int fast = !st && info.method != FR_METHOD_EXACT;
    if (fast) st = check(&p, &in, out, o.check_rows, &chk);
    int within = chk.max_abs <= o.attn.opt.eps;
    if (!st && fast && o.strict && chk.rows && !within)
        st = cli_fail(EXIT_ACCURACY,
                      "observed max error %.3g exceeds --eps %.3g on %lld checked rows (--strict: "
                      "nothing written)",
                      chk.max_abs, o.attn.opt.eps, (long long)chk.rows);

    if (!st) { /* the output tensor: q's leading axes, then [n, dv] */
        fr_tensor t;
        memset(&t, 0, sizeof t);
        t.ndim = in.q->ndim;
        memcpy(t.shape, in.q->shape, sizeof t.shape);
        t.shape[t.ndim - 1] = in.dv;
        t.data = out;
        st = fr_write_tensor(o.out, FR_FMT_UNKNOWN, &t, o.dtype, err, sizeof err);
        if (st) cli_fail(st, "%s", err);
    }
    if (!st && (o.report || o.report_fd >= 0)) {
        cJSON *r = rep_problem(&p, fr_method_name(info.method), in.batch, in.w ? in.wlabel : NULL);
        rep_bounds(r, &bounds);
        rep_plan(r, &info);
        if (fast) {
            cJSON *e = cJSON_AddObjectToObject(r, "error");
            cJSON_AddNumberToObject(e, "rows_checked", (double)chk.rows);
            rep_num(e, "max_abs", chk.rows ? chk.max_abs : NAN);
            rep_num(e, "max_rel", chk.rows ? chk.max_rel : NAN);
            rep_num(e, "a_priori_bound", info.a_priori_bound);
            rep_num(e, "eps", o.attn.opt.eps);
            if (chk.rows)
                cJSON_AddBoolToObject(e, "within_eps", within);
            else
                cJSON_AddNullToObject(e, "within_eps");
        } else {
            cJSON_AddNullToObject(r, "error");
        }
        cJSON *t = cJSON_AddObjectToObject(r, "time_s");
        cJSON_AddNumberToObject(t, "compute", compute_s);
        cJSON_AddNumberToObject(t, "check", chk.seconds);
        cJSON_AddNumberToObject(t, "total", cli_now() - t0);
        char *text = cJSON_Print(r);
        if (!text)
            st = cli_fail(EXIT_INTERNAL, "out of memory");
        else
            st = o.report ? write_text(o.report, text) : write_fd((int)o.report_fd, text);
        free(text);
        cJSON_Delete(r);
    }
    if (!st && !o.quiet) {
        if (fast && chk.rows)
            fprintf(stderr,
                    "fastrope: %s, degree %d: max abs error %.3g (eps %.3g, %s; a-priori bound "
                    "%.3g) on %lld rows; %.3g s\n",
                    fr_method_name(info.method), info.degree, chk.max_abs, o.attn.opt.eps,
                    within ? "met" : "MISSED", info.a_priori_bound, (long long)chk.rows,
                    compute_s);
        else
            fprintf(stderr, "fastrope: %s, n = %lld, d = %lld, dv = %lld, batch %lld: %.3g s\n",
                    fr_method_name(info.method), (long long)in.n, (long long)in.d,
                    (long long)in.dv, (long long)in.batch, compute_s);
    }
    free(out);
done:
    cli_inputs_free(&in);
    return st;
}
