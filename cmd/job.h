/* job.h - run and grad as two configurations of one job (job.c): load, problem, outputs staged,
 * bounds, plan, compute, the sampled check, the last checks, write, report, commit. A command
 * keeps only what differs: its results, its computation and check, its report's error part. */
#ifndef FR_JOB_H
#define FR_JOB_H

#include <cJSON.h>

#include "cli.h"

/* ---- the options run and grad share (job_opts.c) --------------------------------------------- */

typedef struct {
    const char *input, *q, *k, *v, *report;
    fr_dtype dtype;
    int quiet;
    int64_t check_rows; /* -1: default, -2: all */
    int64_t report_fd;  /* -1: none */
    const char *set;    /* --set NAME: which set of the --input bundle */
    set_words words;    /* --names ROLE=WORD,...: what plays q, k, v */
    fr_limits limits;
    cli_attn attn;
} job_opts;

/* The inputs, report and check options of run and grad; a command lists beside it the
 * attention options (cli_attn_table at member attn) and the limits (cli_limits_table at
 * member limits). */
extern const cli_opt job_table[];
int job_finish_section(void *fields, uint64_t given);
void job_init(job_opts *o);
/* cli_parse for a command whose options are its own table (fields at the start of opts) and a
 * job_opts at job_offset with the shared tables; doc gets the exit codes after it. */
int job_parse(const char *name, const char *synopsis, const char *doc, const cli_opt *table,
              size_t job_offset, int argc, char **argv, void *opts);

/* The job runs in single precision: its inputs and results are float (fr_tensor.f32). */
static inline int job_f32(const job_opts *o)
{
    return o->attn.opt.precision == FR_F32;
}

/* ---- the job --------------------------------------------------------------------------------- */

#define JOB_MAX_RESULTS 8

/* A tensor the command computes: written to its own file, and/or as a member of the bundle. */
typedef struct {
    const char *name;      /* "out", "dq", ...: the bundle's member, and the messages' word */
    const char *file;      /* its own output file, or NULL */
    int in_bundle;         /* a member of the bundle output too */
    const fr_tensor *like; /* its shape: like's, with the last axis last (> 0) */
    int64_t last;
    double *data; /* job_run allocates it (zeroed) once the shape is known; the command fills it */
    float *f32;   /* instead of data in a single-precision job (--precision f32) */
    int id;       /* its staged output */
} job_result;

/* What one batch entry's plan and check came to, for the report's entries. */
typedef struct {
    double B, R;
    int degree;
    fr_method method;
    fr_diff diff; /* the command's check of this entry (count 0: not checked) */
} job_entry;

typedef struct job {
    const char *cmd; /* "run", "grad" */
    job_opts *o;
    job_result res[JOB_MAX_RESULTS];
    int nres;
    const char *bundle;       /* the bundle output (grad -o), or NULL */
    const char *also_read[2]; /* inputs beside the job's (grad's dout or target), or NULL */
    cli_inputs in;
    fr_problem p;
    fr_bounds *bounds, pooled; /* each entry's, and all of them pooled */
    fr_plan_info info;         /* the worst entry's plan */
    job_entry *entries;        /* batch of them */
    fr_exec_info *exec;        /* batch of them: what each execution certified */
    int refused_degree;        /* on a refusal: the degree eps needs (the core's estimate) */
    int64_t *rows, nrows;      /* the rows checked in each problem (rows NULL: all n), or none */
    fr_diff *per;              /* room for the check's comparisons: batch x FR_NGRADS */
    double t0, compute_s, check_s;
    fr_outputs *outs;
    int bundle_id, report_id;
} job;

/* The certificate of the run into the report's error object e: poly_bound, rounding_bound,
 * a_priori_bound (the worst over the entries a fast method ran) and rows_recomputed (all). */
void job_report_certificate(const job *j, cJSON *e);

typedef struct {
    const char *name, *synopsis, *doc; /* the command and its --help */
    const cli_opt *table;              /* its own options, over its state */
    size_t size;                       /* of its state, which job_main allocates zeroed */
    size_t job_offset;                 /* where its job_opts lies in its state */
    /* After parsing: the checks across the command's own options, and its results
     * (job_add_result). An exit code, having printed the error. */
    int (*setup)(job *j, void *cmd);
    /* After the inputs are loaded and the problem made: more inputs (grad's upstream) and the
     * results' shapes (job_result_shape). An exit code, having printed the error. */
    int (*prepare)(job *j, void *cmd);
    /* The whole batch with plan into the results. An fr_status, with err. */
    int (*compute)(job *j, void *cmd, const fr_plan *plan, char *err, size_t errlen);
    /* The results against the exact computation on j->rows of every problem (j->per is room
     * for the core's per-entry comparisons); each entry's comparison into j->entries[b].diff. An
     * fr_status, with err. */
    int (*check)(job *j, void *cmd, char *err, size_t errlen);
    /* After the check, before anything is written: an exit code (run's --strict); may be NULL. */
    int (*verdict)(job *j, void *cmd);
    /* The report's error section (and the command's other keys); j->info.method is what ran. */
    void (*report)(job *j, void *cmd, cJSON *r);
    /* The summary line's words on the error ("max abs error 3e-6 on 4096 rows"). */
    void (*summary)(job *j, void *cmd, char *buf, size_t len);
} job_spec;

/* Result name, written to file (or NULL) and as a member of the bundle when in_bundle. Its
 * index in j->res. */
int job_add_result(job *j, const char *name, const char *file, int in_bundle);
void job_result_shape(job *j, int r, const fr_tensor *like, int64_t last);
/* How many rows to check for n and --check-rows (-1: all up to 4096, else 256; -2: all), and
 * which: m evenly spaced ones (malloc'd), the first and the last among them. */
int64_t job_check_count(int64_t n, int64_t want);
int64_t *job_sample_rows(int64_t n, int64_t m);
/* A progress bar on stderr, when it is a terminal and t0 is 1.5 s ago. */
void job_progress(int64_t done, int64_t total, double t0);
/* The command: setup, then everything in order; its exit code. */
int job_main(const job_spec *spec, int argc, char **argv);

/* ---- single precision (job_f32.c) ----------------------------------------------------------- */

/* Key/value group h of a single-precision job in double, for the exact reference: its g query
 * problems and their key/value problem (batch g, kv_batch 1, their W), with up (the upstream,
 * g problems like T; NULL when none) widened likewise. */
typedef struct {
    fr_problem p;
    double *q, *k, *v, *up;
} job_group;
int job_group_widen(const job *j, const fr_tensor *up, int64_t h, job_group *g, char *err,
                    size_t errlen);
void job_group_free(job_group *g);
/* count floats widened (malloc'd), or NULL when out of memory. */
double *job_widen(const float *x, int64_t count);

/* run and grad, as main dispatches them. */
extern const job_spec run_spec, grad_spec;

#endif
