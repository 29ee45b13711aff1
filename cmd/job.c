/* job.c - what `run` and `grad` share: their common options, the problem built from the
 * inputs, bounds over a batch, the rows sampled for checking, and writing the report. */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char job_help[] =
    "Inputs and outputs:\n"
    "  --input BUNDLE         .npz or .json bundle with members q, k, v ('-': stdin)\n"
    "  -q FILE -k FILE -v FILE  one tensor per file\n"
    "  --dtype f4|f8          output precision (f8)\n"
    "  --report FILE          JSON report ('-': stdout)\n"
    "  --report-fd N          JSON report to the open file descriptor N (for pipes)\n"
    "  --check-rows N|all     rows checked against exact attention (all when n <= 4096, else\n"
    "                         256; 0: none)\n"
    "  --quiet                no summary line on stderr\n";

void job_init(job_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = FR_DTYPE_F8;
    o->check_rows = -1;
    o->report_fd = -1;
    cli_attn_init(&o->attn);
}

int job_option(cli_args *a, job_opts *o)
{
    const char *v;
    if (cli_attn_option(a, &o->attn)) return 1;
    if (arg_value(a, "--input", &o->input) || arg_value(a, "-q", &o->q) ||
        arg_value(a, "-k", &o->k) || arg_value(a, "-v", &o->v) ||
        arg_value(a, "--report", &o->report))
        return 1;
    if (arg_flag(a, "--quiet")) return o->quiet = 1;
    if (arg_value(a, "--report-fd", &v)) {
        if (v && (parse_int64("--report-fd", v, &o->report_fd) || o->report_fd < 0 ||
                  o->report_fd > INT32_MAX))
            a->bad = 1;
        return 1;
    }
    if (arg_value(a, "--dtype", &v)) {
        if (v && (strcmp(v, "f4") == 0 || strcmp(v, "float32") == 0))
            o->dtype = FR_DTYPE_F4;
        else if (v && (strcmp(v, "f8") == 0 || strcmp(v, "float64") == 0))
            o->dtype = FR_DTYPE_F8;
        else if (v)
            a->bad = 1, cli_fail(EXIT_USAGE, "--dtype: '%s' is not f4 or f8", v);
        return 1;
    }
    if (arg_value(a, "--check-rows", &v)) {
        if (v && strcmp(v, "all") == 0) {
            o->check_rows = -2;
        } else if (v && (parse_int64("--check-rows", v, &o->check_rows) || o->check_rows < 0)) {
            cli_fail(EXIT_USAGE, "--check-rows must be a count >= 0 or 'all'");
            a->bad = 1;
        }
        return 1;
    }
    return 0;
}

int job_finish(job_opts *o, const char *cmd, const char *out)
{
    if (o->report && o->report_fd >= 0)
        return cli_fail(EXIT_USAGE, "%s: give --report or --report-fd, not both", cmd);
    if (o->report_fd >= 0 && fcntl((int)o->report_fd, F_GETFD) < 0)
        return cli_fail(EXIT_USAGE, "--report-fd %lld: not an open file descriptor",
                        (long long)o->report_fd);
    int report_stdout = (o->report && strcmp(o->report, "-") == 0) || o->report_fd == 1;
    if (out && strcmp(out, "-") == 0 && report_stdout)
        return cli_fail(EXIT_USAGE, "%s: the output and the report cannot both go to stdout", cmd);
    return cli_attn_finish(&o->attn);
}

int job_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || strcmp(a, "-") == 0 || strcmp(b, "-") == 0) return 0;
    if (stat(a, &sa) || stat(b, &sb)) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int job_refuse_overwrite(const job_opts *o, const char *cmd, const char *const *outs, int nouts)
{
    const char *inputs[5] = {o->input, o->q, o->k, o->v, o->attn.w_path};
    for (int j = 0; j < nouts; j++)
        for (int i = 0; i < 5; i++)
            if (job_same_file(outs[j], inputs[i]))
                return cli_fail(EXIT_USAGE, "%s: refusing to overwrite the input %s", cmd,
                                inputs[i]);
    return EXIT_OK;
}

int job_problem(const job_opts *o, const cli_inputs *in, fr_problem *p)
{
    char err[512];
    *p = fr_problem_default(in->n, in->d, in->dv);
    p->rot = o->attn.rot;
    p->causal = o->attn.causal;
    p->window = o->attn.window;
    if (in->w) p->rot.w = in->w->data;
    int st = cli_scale(&o->attn, in->d, &p->tau);
    if (st) return st;
    if ((p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP) &&
        (p->rot.rotary_dim ? p->rot.rotary_dim : p->d) % 2) {
        char sq[128];
        cli_shape_str(in->q, sq, sizeof sq);
        return cli_fail(EXIT_INPUT,
                        "%s: RoPE rotates pairs of coordinates, but q has shape %s (d = %lld is "
                        "odd); use --rotary-dim or --no-rope",
                        in->qlabel, sq, (long long)in->d);
    }
    if ((st = fr_problem_check(p, err, sizeof err))) return cli_fail(st, "%s", err);
    return EXIT_OK;
}

const double *job_w(const cli_inputs *in, const fr_problem *p, int64_t b)
{
    if (!in->w) return NULL;
    return in->w->data + (in->w_batch > 1 ? b : 0) * (2 * p->n - 1) * p->d * p->d;
}

int job_bounds(const fr_problem *p, const cli_inputs *in, fr_bounds *out)
{
    char err[512];
    /* Over the whole batch, so one plan (one degree) serves every entry. With one W per entry,
     * R is the largest over the entries. */
    memset(out, 0, sizeof *out);
    int per_entry = in->w_batch > 1;
    for (int64_t b = 0; b < (per_entry ? in->batch : 1); b++) {
        fr_problem pb = *p;
        fr_bounds bb;
        pb.rot.w = job_w(in, p, b);
        int st = fr_bounds_compute(&pb, in->q->data + b * p->n * p->d,
                                   in->k->data + b * p->n * p->d, in->v->data + b * p->n * p->dv,
                                   per_entry ? 1 : in->batch, &bb, err, sizeof err);
        if (st) return cli_fail(st, "%s", err);
        if (b == 0 || bb.R > out->R) {
            out->R = bb.R;
            out->R_from = bb.R_from;
        }
        out->B_q = fmax(out->B_q, bb.B_q);
        out->B_k = fmax(out->B_k, bb.B_k);
        out->B_v = fmax(out->B_v, bb.B_v);
        out->B = fmax(out->B, bb.B);
        out->B_over_sqrt_ln_n = bb.B_over_sqrt_ln_n > out->B_over_sqrt_ln_n || b == 0
                                    ? bb.B_over_sqrt_ln_n
                                    : out->B_over_sqrt_ln_n;
    }
    return EXIT_OK;
}

int64_t job_check_count(int64_t n, int64_t want)
{
    int64_t m = want == -2 ? n : (want < 0 ? (n <= 4096 ? n : 256) : want);
    return m > n ? n : m;
}

int64_t *job_sample_rows(int64_t n, int64_t m)
{
    /* Evenly spaced with the first and last row: the first row of a causal problem has one
     * key, the last has all of them; both ends are where errors show first. */
    int64_t *rows = malloc((size_t)(m > 0 ? m : 1) * sizeof *rows);
    if (!rows) return NULL;
    for (int64_t t = 0; t < m; t++)
        rows[t] = m == 1 ? 0 : (int64_t)((double)t * (double)(n - 1) / (double)(m - 1));
    return rows;
}

void job_progress(int64_t done, int64_t total, double t0)
{
    static int shown;
    if (total < 2 || !isatty(2)) return;
    if (!shown && cli_now() - t0 < 1.5) return;
    shown = 1;
    int w = 30, fill = (int)(w * done / total);
    fprintf(stderr, "\r[%.*s%*s] %lld/%lld", fill, "==============================", w - fill, "",
            (long long)done, (long long)total);
    if (done == total) fputc('\n', stderr);
}

static int write_fd(int fd, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return cli_fail(EXIT_INTERNAL, "--report-fd %d: write failed", fd);
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1) return cli_fail(EXIT_INTERNAL, "--report-fd %d: write failed", fd);
    return EXIT_OK;
}

int job_write_report(const job_opts *o, cJSON *r)
{
    char err[512];
    char *text = cJSON_Print(r);
    if (!text) return cli_fail(EXIT_INTERNAL, "out of memory printing the report");
    int st = EXIT_OK;
    if (o->report_fd >= 0)
        st = write_fd((int)o->report_fd, text);
    else if (o->report && (st = fr_write_text(o->report, text, err, sizeof err)))
        cli_fail(st, "%s", err);
    free(text);
    return st;
}
