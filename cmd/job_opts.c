/* job_opts.c - the options run and grad share (inputs, report, check, output precision) as an
 * option table, and the checks of their paths before any work. */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int parse_names(const char *flag, const char *value, void *field)
{
    char err[512];
    set_words_default(field);
    if (set_words_parse(field, value, err, sizeof err))
        return cli_fail(EXIT_USAGE, "%s: %s", flag, err);
    return EXIT_OK;
}

static const cli_choice dtypes[] = {{"f8", FR_DTYPE_F8},
                                    {"float64", FR_DTYPE_F8},
                                    {"f4", FR_DTYPE_F4},
                                    {"float32", FR_DTYPE_F4},
                                    {NULL, 0}};

static const cli_choice precisions[] = {
    {"f64", FR_F64}, {"float64", FR_F64}, {"f32", FR_F32}, {"float32", FR_F32}, {NULL, 0}};

const cli_opt job_table[] = {
    OPT_GROUP("Inputs (read: .npy, .npz, .json, .safetensors, recognised by their first bytes):"),
    OPT_STRING(
        "input", 0, job_opts, input, "BUNDLE",
        "a bundle (.npz, .safetensors, a JSON object) holding a q/k/v set: q, k, v or the names "
        "model code writes ('-': stdin)"),
    OPT_STRING(NULL, 'q', job_opts, q, "FILE",
               "q [..., n, d]: a tensor file, or a bundle's member 'q' (with -k and -v)"),
    OPT_STRING(NULL, 'k', job_opts, k, "FILE", "k [..., n, d], likewise"),
    OPT_STRING(NULL, 'v', job_opts, v, "FILE", "v [..., n, dv], likewise"),
    OPT_STRING("set", 0, job_opts, set, "NAME",
               "the set of the --input bundle to compute, named as `fastrope check` lists it "
               "(model.layers.3.self_attn); needed when the bundle holds several"),
    OPT_CUSTOM("names", 0, job_opts, words, parse_names, "ROLE=WORD,...",
               "what plays q, k, v in the bundle beyond the usual names (q, query, q_proj, xq, "
               "query_states, with prefixes): q=wq,k=wk,v=wv"),
    OPT_GROUP("Report and check:"),
    OPT_STRING("report", 0, job_opts, report, "FILE", "JSON report ('-': stdout)"),
    OPT_CUSTOM("report-fd", 0, job_opts, report_fd, parse_report_fd, "N",
               "JSON report to the open file descriptor N (for pipes)"),
    OPT_CUSTOM("check-rows", 0, job_opts, check_rows, parse_check_rows, "N|all",
               "rows checked against the exact computation (all when n <= 4096, else 256; 0: "
               "none)"),
    OPT_CHOICE("dtype", job_opts, dtype, dtypes, "f4|f8",
               "precision of the outputs (f8; f4 with --precision f32)"),
    OPT_CHOICE("precision", job_opts, attn.opt.precision, precisions, "f32|f64",
               "the arithmetic: f64, or f32 (inputs read as float, exact attention in single "
               "precision, checked against the double reference) (f64)"),
    OPT_FLAG("quiet", 0, job_opts, quiet, "no summary line on stderr"),
    OPT_END};

void job_init(job_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = FR_DTYPE_F8;
    o->check_rows = -1;
    o->report_fd = -1;
    o->limits = cli_default_limits;
    set_words_default(&o->words);
    cli_attn_init(&o->attn);
}

int job_parse(const char *name, const char *synopsis, const char *doc, const cli_opt *table,
              size_t job_offset, int argc, char **argv, void *opts)
{
    const cli_section sections[] = {
        {table, 0, NULL},
        {job_table, job_offset, job_finish_section},
        {cli_attn_table, job_offset + offsetof(job_opts, attn), cli_attn_finish_section},
        {cli_limits_table, job_offset + offsetof(job_opts, limits), NULL},
        {NULL, 0, NULL}};
    char text[2048];
    snprintf(text, sizeof text,
             "%s\vExit codes: 0 ok, 1 internal/resources, 2 usage, 3 bad input, 4 accuracy not "
             "guaranteed (refused before computing, or --strict).",
             doc);
    const cli_command cmd = {name, synopsis, text, sections, CLI_NO_ARGS};
    job_init((job_opts *)((char *)opts + job_offset));
    return cli_parse(&cmd, argc, argv, opts);
}

int job_finish_section(void *fields, uint64_t given)
{
    job_opts *o = fields;
    if (o->report && o->report_fd >= 0)
        return cli_fail(EXIT_USAGE, "give --report or --report-fd, not both");
    if (o->input && (o->q || o->k || o->v))
        return cli_fail(EXIT_USAGE, "give either --input BUNDLE or -q/-k/-v, not both");
    if (!o->input && !(o->q && o->k && o->v))
        return cli_fail(EXIT_USAGE, "give --input BUNDLE or all of -q, -k and -v");
    if (!o->input && (o->set || cli_given(job_table, given, "names")))
        return cli_fail(EXIT_USAGE, "--set and --names pick members of --input BUNDLE; -q, -k and "
                                    "-v name their tensors already");
    fr_method m = o->attn.opt.method;
    if (job_f32(o) && m != FR_METHOD_AUTO && m != FR_METHOD_EXACT)
        return cli_fail(EXIT_USAGE,
                        "--precision f32 runs exact attention only: --method %s has no "
                        "single-precision path",
                        fr_method_name(m));
    /* single-precision results are written as they are, unless asked otherwise */
    if (job_f32(o) && !cli_given(job_table, given, "dtype")) o->dtype = FR_DTYPE_F4;
    return EXIT_OK;
}
