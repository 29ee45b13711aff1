/* args_fuzz.c - libFuzzer target: the option parsing shared by run and grad (inputs, report,
 * rotation, attention, method, limits) on a fuzzed argv, then the checks that follow parsing
 * (conflicts, --scale, the problem's validation) on a tiny problem; nothing heavy runs and no
 * file is opened. The input is the arguments separated by NUL bytes. */
#include "job.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_ARGS 64

int fuzz_args(const unsigned char *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[FUZZ_MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "run";
    for (size_t i = 0; i <= size && argc <= FUZZ_MAX_ARGS; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    argv[argc] = NULL;

    job_opts o;
    job_init(&o);
    fr_limits saved = cli_limits;
    const char *out = NULL;
    cli_args a = {argc, argv, 1, 0, "run"};
    int st = EXIT_OK;
    for (; a.i < argc && !a.bad; a.i++)
        if (!job_option(&a, &o) && !arg_value(&a, "-o", &out)) {
            st = EXIT_USAGE;
            break;
        }
    if (!st && a.bad) st = EXIT_USAGE;
    if (!st) st = job_finish(&o, "run", out ? out : "out.npy");
    if (!st && (cli_limits.max_elements < 1 || cli_limits.max_bytes < 1)) abort();
    /* What run does next, on n = 5 and d = dv = 4, minus the files. */
    fr_problem p = fr_problem_default(5, 4, 4);
    if (!st) st = cli_scale(&o.attn, p.d, &p.tau);
    if (!st && !(p.tau > 0)) abort();
    if (!st && o.attn.rot.kind != FR_ROT_EXPLICIT) {
        char err[512] = "";
        p.rot = o.attn.rot;
        p.causal = o.attn.causal;
        p.window = o.attn.window;
        st = fr_problem_check(&p, err, sizeof err);
        if (st && err[0] == '\0') abort();
    }
    if (st != EXIT_OK && st != EXIT_USAGE && st != EXIT_INPUT) abort();
    cli_limits = saved;
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
