/* job.c - what `run` and `grad` share: their common options, the problem built from the
 * inputs, bounds over a batch, the rows sampled for checking, and writing the report. */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int parse_report_fd(const char *flag, const char *value, void *field)
{
    int64_t fd;
    if (parse_int64(flag, value, &fd)) return EXIT_USAGE;
    if (fd < 0 || fd > INT32_MAX)
        return cli_fail(EXIT_USAGE, "%s: '%s' is not a file descriptor (a whole number >= 0)", flag,
                        value);
    if (fcntl((int)fd, F_GETFD) < 0)
        return cli_fail(EXIT_USAGE, "%s %lld: not an open file descriptor", flag, (long long)fd);
    *(int64_t *)field = fd;
    return EXIT_OK;
}

static int parse_check_rows(const char *flag, const char *value, void *field)
{
    int64_t m;
    if (strcmp(value, "all") == 0) {
        *(int64_t *)field = -2;
        return EXIT_OK;
    }
    char *end;
    errno = 0;
    m = strtoll(value, &end, 10);
    if (end == value || *end != '\0' || errno == ERANGE || m < 0)
        return cli_fail(EXIT_USAGE, "%s: '%s' is not a count >= 0 or 'all'", flag, value);
    *(int64_t *)field = m;
    return EXIT_OK;
}

static const cli_choice dtypes[] = {{"f8", FR_DTYPE_F8},
                                    {"float64", FR_DTYPE_F8},
                                    {"f4", FR_DTYPE_F4},
                                    {"float32", FR_DTYPE_F4},
                                    {NULL, 0}};

const cli_opt job_table[] = {
    OPT_GROUP("Inputs (read: .npy, .npz, .json, .safetensors, recognised by their first bytes):"),
    OPT_STRING("input", 0, job_opts, input, "BUNDLE",
               "a bundle (.npz, .safetensors, a JSON object) with members q, k, v ('-': stdin)"),
    OPT_STRING(NULL, 'q', job_opts, q, "FILE",
               "q [..., n, d]: a tensor file, or a bundle's member 'q' (with -k and -v)"),
    OPT_STRING(NULL, 'k', job_opts, k, "FILE", "k [..., n, d], likewise"),
    OPT_STRING(NULL, 'v', job_opts, v, "FILE", "v [..., n, dv], likewise"),
    OPT_GROUP("Report and check:"),
    OPT_STRING("report", 0, job_opts, report, "FILE", "JSON report ('-': stdout)"),
    OPT_CUSTOM("report-fd", 0, job_opts, report_fd, parse_report_fd, "N",
               "JSON report to the open file descriptor N (for pipes)"),
    OPT_CUSTOM("check-rows", 0, job_opts, check_rows, parse_check_rows, "N|all",
               "rows checked against the exact computation (all when n <= 4096, else 256; 0: "
               "none)"),
    OPT_CHOICE("dtype", job_opts, dtype, dtypes, "f4|f8", "precision of the outputs (f8)"),
    OPT_FLAG("quiet", 0, job_opts, quiet, "no summary line on stderr"),
    OPT_END};

void job_init(job_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = FR_DTYPE_F8;
    o->check_rows = -1;
    o->report_fd = -1;
    o->limits = cli_default_limits;
    cli_attn_init(&o->attn);
}

int job_finish_section(void *fields, uint64_t given)
{
    job_opts *o = fields;
    (void)given;
    if (o->report && o->report_fd >= 0)
        return cli_fail(EXIT_USAGE, "give --report or --report-fd, not both");
    if (o->input && (o->q || o->k || o->v))
        return cli_fail(EXIT_USAGE, "give either --input BUNDLE or -q/-k/-v, not both");
    if (!o->input && !(o->q && o->k && o->v))
        return cli_fail(EXIT_USAGE, "give --input BUNDLE or all of -q, -k and -v");
    return EXIT_OK;
}

int job_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || strcmp(a, "-") == 0 || strcmp(b, "-") == 0) return 0;
    if (stat(a, &sa) || stat(b, &sb)) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* One file under two names, existing or not (-o x.npy --report ./x.npy): the same text, the same
 * inode, or the same name in the same directory. */
static int same_target(const char *a, const char *b)
{
    if (strcmp(a, b) == 0 || job_same_file(a, b)) return 1;
    if (strcmp(a, "-") == 0 || strcmp(b, "-") == 0) return 0;
    const char *ba = strrchr(a, '/'), *bb = strrchr(b, '/');
    ba = ba ? ba + 1 : a;
    bb = bb ? bb + 1 : b;
    if (strcmp(ba, bb) != 0) return 0;
    char da[4096], db[4096];
    snprintf(da, sizeof da, "%.*s", ba == a ? 1 : (int)(ba - a), ba == a ? "." : a);
    snprintf(db, sizeof db, "%.*s", bb == b ? 1 : (int)(bb - b), bb == b ? "." : b);
    return job_same_file(da, db);
}

int job_check_paths(const job_opts *o, const char *cmd, const char *const *outs, int nouts,
                    const char *const *extra_inputs, int nextra)
{
    for (int i = 0; i < nouts; i++)
        for (int j = i + 1; j < nouts; j++)
            if (outs[i] && outs[j] && same_target(outs[i], outs[j]))
                return cli_fail(EXIT_USAGE, "%s: two outputs name %s%s: each needs its own file",
                                cmd, strcmp(outs[i], "-") ? "the file " : "stdout ",
                                strcmp(outs[i], "-") ? outs[i] : "('-')");
    if (o->report_fd == 1)
        for (int i = 0; i < nouts; i++)
            if (outs[i] && strcmp(outs[i], "-") == 0)
                return cli_fail(EXIT_USAGE, "%s: an output and the report cannot both go to stdout",
                                cmd);
    const char *inputs[5] = {o->input, o->q, o->k, o->v, o->attn.w_path};
    for (int j = 0; j < nouts; j++) {
        for (int i = 0; i < 5 + nextra; i++) {
            const char *in = i < 5 ? inputs[i] : extra_inputs[i - 5];
            if (outs[j] && in && job_same_file(outs[j], in))
                return cli_fail(EXIT_USAGE, "%s: refusing to overwrite the input %s", cmd, in);
        }
    }
    return EXIT_OK;
}

int job_problem(const job_opts *o, const cli_inputs *in, fr_problem *p)
{
    char err[512], sq[128];
    *p = fr_problem_default(in->n, in->d, in->dv);
    p->rot = o->attn.rot;
    p->causal = o->attn.causal;
    p->window = o->attn.window;
    if (in->w) p->rot.w = in->w->data, p->rot.w_count = in->w_batch;
    p->batch = in->batch;
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

int job_bounds(const fr_problem *p, const cli_inputs *in, fr_bounds **entries, fr_bounds *pooled)
{
    char err[512];
    *entries = malloc((size_t)in->batch * sizeof **entries);
    if (!*entries) return cli_fail(EXIT_INTERNAL, "out of memory for the bounds");
    int st = fr_bounds_compute(p, in->q->data, in->k->data, in->v->data, *entries, err, sizeof err);
    if (st) {
        free(*entries);
        *entries = NULL;
        return cli_fail(st, "%s", err);
    }
    fr_bounds_pool(*entries, in->batch, pooled);
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

int job_progress_fn(void *user, const char *phase, double fraction)
{
    (void)phase;
    job_progress((int64_t)(fraction * 1000), 1000, *(const double *)user);
    return 0;
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
