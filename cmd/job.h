/* job.h - what `run` and `grad` share (see job.c). */
#ifndef FR_JOB_H
#define FR_JOB_H

#include <cJSON.h>

#include "cli.h"

typedef struct {
    const char *input, *q, *k, *v, *report;
    fr_dtype dtype;
    int quiet;
    int64_t check_rows; /* -1: default, -2: all */
    int64_t report_fd;  /* -1: none */
    cli_attn attn;
} job_opts;

extern const char job_help[];

void job_init(job_opts *o);
/* Consumes one input/report/attention option at a->i (returns 1), else 0. */
int job_option(cli_args *a, job_opts *o);
/* After scanning: conflicting destinations, rotation count. An exit code. */
int job_finish(job_opts *o, const char *cmd, const char *out);
int job_same_file(const char *a, const char *b);
/* Refuse when an output path is one of the inputs: a typo there destroys data. */
int job_refuse_overwrite(const job_opts *o, const char *cmd, const char *const *outs, int nouts);
/* The problem from the options and the loaded inputs, checked. An exit code. */
int job_problem(const job_opts *o, const cli_inputs *in, fr_problem *p);
/* W of batch entry b (shared W: the same for every b), or NULL. */
const double *job_w(const cli_inputs *in, const fr_problem *p, int64_t b);
/* Bounds over the whole batch. An exit code. */
int job_bounds(const fr_problem *p, const cli_inputs *in, fr_bounds *out);
/* How many rows to check for n and --check-rows; which rows. */
int64_t job_check_count(int64_t n, int64_t want);
int64_t *job_sample_rows(int64_t n, int64_t m);
void job_progress(int64_t done, int64_t total, double t0);
/* To --report FILE (atomically) or --report-fd N; nothing when neither. An exit code. */
int job_write_report(const job_opts *o, cJSON *r);

#endif
