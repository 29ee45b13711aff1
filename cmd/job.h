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
    fr_limits limits;
    cli_attn attn;
} job_opts;

/* The inputs, report and check options of run and grad; a command lists beside it the
 * attention options (cli_attn_table at member attn) and the limits (cli_limits_table at
 * member limits). */
extern const cli_opt job_table[];
int job_finish_section(void *fields, uint64_t given);
void job_init(job_opts *o);
int job_same_file(const char *a, const char *b);
/* Before any work: no two outputs name one file (nouts of outs, NULL entries skipped; '-' is
 * stdout, and the report may go there too through --report-fd 1), and no output is an input
 * (inputs: the job's and extra ones): a typo there destroys data. An exit code. */
int job_check_paths(const job_opts *o, const char *cmd, const char *const *outs, int nouts,
                    const char *const *extra_inputs, int nextra);
/* The problem from the options and the loaded inputs, checked. An exit code. */
int job_problem(const job_opts *o, const cli_inputs *in, fr_problem *p);
/* Each batch entry's bounds (*entries, malloc'd, batch of them) and their pool (for the
 * report). An exit code. */
int job_bounds(const fr_problem *p, const cli_inputs *in, fr_bounds **entries, fr_bounds *pooled);
/* How many rows to check for n and --check-rows; which rows. */
int64_t job_check_count(int64_t n, int64_t want);
int64_t *job_sample_rows(int64_t n, int64_t m);
void job_progress(int64_t done, int64_t total, double t0);
/* job_progress as the core's progress callback; user points at the start time t0. */
int job_progress_fn(void *user, const char *phase, double fraction);
/* To --report FILE (atomically) or --report-fd N; nothing when neither. An exit code. */
int job_write_report(const job_opts *o, cJSON *r);

#endif
