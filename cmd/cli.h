/* cli.h - what the command's files share: argument scanning, the attention options every
 * command accepts, loading Q/K/V/W with their shapes checked, and error reporting. */
#ifndef FR_CLI_H
#define FR_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "fastrope.h"
#include "fr_io.h"

/* Exit codes, the same for every command (they are fr_status values). */
enum { EXIT_OK = 0, EXIT_INTERNAL = 1, EXIT_USAGE = 2, EXIT_INPUT = 3, EXIT_ACCURACY = 4 };

/* Print "fastrope: <message>" on stderr and return code. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- scanning argv ---------------------------------------------------------------------- */

typedef struct {
    int argc;
    char **argv;
    int i;   /* index of the argument being looked at */
    int bad; /* a usage error was printed */
    const char *cmd;
} cli_args;

/* argv[i] is the flag `name` (no value). */
int arg_flag(cli_args *a, const char *name);
/* argv[i] is `name VALUE` or `name=VALUE`: sets *val and consumes the value. A missing value
 * prints a usage error and sets a->bad. */
int arg_value(cli_args *a, const char *name, const char **val);
/* Whole-string numbers; print a usage error naming the flag on failure. */
int parse_double(const char *flag, const char *s, double *out);
int parse_int64(const char *flag, const char *s, int64_t *out);

/* ---- options shared by run, grad, check and bound --------------------------------------- */

typedef struct {
    fr_rotation rot;    /* kind and RoPE parameters (w is filled by cli_load) */
    int rot_options;    /* how many of --rope, --rope-clip, -w, --no-rope were given */
    const char *w_path; /* -w FILE */
    const char *scale;  /* paper | sdpa | NUMBER */
    int causal;
    int64_t window;
    fr_options opt;
} cli_attn;

void cli_attn_init(cli_attn *o);
/* Consumes one attention option at a->i if it is one (returns 1), else returns 0. */
int cli_attn_option(cli_args *a, cli_attn *o);
/* After scanning: mutually exclusive rotations. Returns an exit code. */
int cli_attn_finish(cli_attn *o);
/* tau for head dimension d from --scale; an exit code. */
int cli_scale(const cli_attn *o, int64_t d, double *tau);
/* Resource limits for every tensor read (--max-elements, --max-bytes; see load.c). */
#define CLI_DEFAULT_MAX_ELEMENTS ((int64_t)1 << 30) /* per tensor: 8 GiB as doubles */
#define CLI_DEFAULT_MAX_BYTES ((int64_t)12 << 30)   /* per input file and per run */
extern fr_limits cli_limits;
/* Consumes --max-elements N or --max-bytes N at a->i (returns 1), else returns 0. */
int cli_limits_option(cli_args *a);
/* The usage text of the shared options, for --help. */
extern const char cli_attn_help[];

/* ---- loading inputs ---------------------------------------------------------------------- */

typedef struct {
    fr_bundle files[5]; /* what was read (q/k/v may share one bundle), and dout/target */
    int nfiles;
    fr_tensor *q, *k, *v, *w;
    int64_t batch, n, d, dv;
    int64_t w_batch; /* 1: W shared; batch: one W per batch entry; 0: no W */
    int64_t bytes;   /* of every tensor read, as doubles (the per-run limit) */
    char qlabel[512], klabel[512], vlabel[512], wlabel[512];
} cli_inputs;

/* Read --input BUNDLE (or -q/-k/-v files) and the W file, check shapes and finiteness.
 * Returns an exit code, having printed the error. */
int cli_load(cli_inputs *in, const char *bundle, const char *qp, const char *kp, const char *vp,
             const char *wp);
/* One more tensor with the output's shape (dout or target for grad): the file's only tensor or
 * its member named role. An exit code, having printed the error. */
int cli_load_output_like(cli_inputs *in, const char *path, const char *role, fr_tensor **t,
                         char *label, size_t labellen);
void cli_inputs_free(cli_inputs *in);

/* Check a tensor for NaN/Inf; print "PATH: NaN at index [i, j]" and return EXIT_INPUT. */
int cli_check_finite(const fr_tensor *t, const char *label);

/* "[2, 3, 4]" */
void cli_shape_str(const fr_tensor *t, char *buf, size_t len);

/* ---- commands ---------------------------------------------------------------------------- */

int cmd_run(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_gen(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_bound(int argc, char **argv);
int cmd_check(int argc, char **argv);

/* Seconds on a monotonic clock. */
double cli_now(void);

#endif
