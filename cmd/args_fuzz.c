/* args_fuzz.c - libFuzzer target: the option tables shared by run and grad (inputs, report,
 * rotation, attention, method, limits) through cli_parse on a fuzzed argv, then what follows
 * parsing (the problem's validation) on a tiny problem; nothing heavy runs and no file is
 * opened. The input is the arguments separated by NUL bytes. */
#include "job.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_ARGS 64

typedef struct {
    job_opts job;
    const char *out;
} fuzz_opts;

static const cli_opt out_table[] = {OPT_STRING("output", 'o', fuzz_opts, out, "OUT", "output"),
                                    OPT_END};

static const cli_section sections[] = {
    {out_table, 0, NULL},
    {job_table, offsetof(fuzz_opts, job), job_finish_section},
    {cli_attn_table, offsetof(fuzz_opts, job.attn), cli_attn_finish_section},
    {cli_limits_table, offsetof(fuzz_opts, job.limits), NULL},
    {NULL, 0, NULL}};

static const cli_command command = {"run", "", "", sections, CLI_NO_ARGS};

int fuzz_args(const unsigned char *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[FUZZ_MAX_ARGS + 2];
    int argc = 0;
    static char name[] = "run";
    argv[argc++] = name;
    for (size_t i = 0; i <= size && argc <= FUZZ_MAX_ARGS; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    argv[argc] = NULL;

    fuzz_opts o;
    memset(&o, 0, sizeof o);
    job_init(&o.job);
    int st = cli_parse(&command, argc, argv, &o);
    if (st == CLI_HELP) st = EXIT_OK;
    if (!st && (o.job.limits.max_elements < 1 || o.job.limits.max_bytes < 1)) abort();
    /* What run does next, on n = 5 and d = dv = 4, minus the files. */
    fr_problem p = fr_problem_default(5, 4, 4);
    if (!st) cli_scale(&o.job.attn, p.d, &p.tau);
    if (!st && !(p.tau > 0)) abort();
    if (!st && o.job.attn.rot.kind != FR_ROT_EXPLICIT) {
        char err[512] = "";
        p.rot = o.job.attn.rot;
        p.causal = o.job.attn.causal;
        p.window = o.job.attn.window;
        st = fr_problem_check(&p, err, sizeof err);
        if (st && err[0] == '\0') abort();
    }
    if (st != EXIT_OK && st != EXIT_USAGE && st != EXIT_INPUT) abort();
    free(buf);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_args(data, size);
    return 0;
}
#endif
