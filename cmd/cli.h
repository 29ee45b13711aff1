/* cli.h - what the command's files share: options described by tables, the attention options
 * every computing command accepts, loading Q/K/V/W with their shapes checked, and errors. */
#ifndef FR_CLI_H
#define FR_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fastrope.h"
#include "fr_io.h"
#include "sets.h"

/* Exit codes, the same for every command (they are fr_status values). */
enum { EXIT_OK = 0, EXIT_INTERNAL = 1, EXIT_USAGE = 2, EXIT_INPUT = 3, EXIT_ACCURACY = 4 };

/* Print "fastrope: <message>" on stderr and return code. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "fastrope: warning: <message>" on stderr. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- options from tables ------------------------------------------------------------------
 *
 * A command describes its options as tables of rows (name, kind, field, range, help line), as
 * git's parse-options does; cli_parse turns them into glibc argp's parser and its --help, so the
 * two cannot disagree. Every value is parsed and checked against its range when it is read,
 * before any file is opened. A usage error prints one line "fastrope: ..." and cli_parse returns
 * EXIT_USAGE. An option given twice with different values is refused.
 *
 * A command's options are one struct; each table (a "section") fills a part of it, at an offset.
 * The shared tables (cli_attn_table, cli_limits_table, and job.h's for run and grad) are included
 * by every command that takes them. A command converts like this (check, for instance):
 *
 *   typedef struct {
 *       cli_attn attn;       // rotation, scale, mask, method: filled by cli_attn_table
 *       fr_limits limits;    // --max-elements, --max-bytes: cli_limits_table
 *       int recursive, format;
 *       cli_strings paths;   // the positional arguments
 *   } check_opts;
 *   static const cli_choice formats[] = {{"table", 0}, {"jsonl", 1}, {"csv", 2}, {NULL, 0}};
 *   static const cli_opt check_table[] = {
 *       OPT_FLAG("recursive", 'r', check_opts, recursive, "descend into subdirectories"),
 *       OPT_CHOICE("format", check_opts, format, formats, "F", "table, jsonl or csv"),
 *       OPT_END};
 *   static const cli_section sections[] = {
 *       {check_table, 0, NULL},
 *       {cli_attn_table, offsetof(check_opts, attn), cli_attn_finish_section},
 *       {cli_limits_table, offsetof(check_opts, limits), NULL},
 *       {NULL}};
 *   static const cli_command cmd = {"check", "PATH...", "What check does.\vAfter the options.",
 *                                   sections, offsetof(check_opts, paths)};
 *   check_opts o = {0};
 *   cli_attn_init(&o.attn);
 *   o.limits = cli_default_limits;
 *   int st = cli_parse(&cmd, argc, argv, &o);   // argv[0] is the command's name
 *   if (st) return st == CLI_HELP ? EXIT_OK : st;
 *   ... cli_scale(&o.attn, d, &tau), o.attn.rot, o.attn.opt, &o.limits for fr_read ...
 *   cli_strings_free(&o.paths);
 *
 * The first table to name an option owns it: a command's own table, listed first, may replace a
 * shared option (bound's --eps takes a list). */

typedef enum {
    CLI_GROUP,  /* no option: a heading in --help ("Rotation:"), the text in help */
    CLI_FLAG,   /* no value: int field = 1 */
    CLI_INT,    /* int field, a whole number in [min, max] */
    CLI_I64,    /* int64_t field, a whole number in [min, max] */
    CLI_DOUBLE, /* double field, a finite number in [min, max] (min excluded with CLI_ABOVE) */
    CLI_STRING, /* const char * field: the value as given (a path; it points into argv) */
    CLI_CHOICE, /* int (or enum) field: the value of the matching name in choices */
    CLI_LIST,   /* cli_values field: "a", "a,b,c" or "start:stop:step", each in [min, max] */
    CLI_CUSTOM, /* parse(flag, value, field): prints its own message, returns an exit code */
} cli_kind;

enum {
    CLI_ABOVE = 1,    /* the range excludes min (a number > min) */
    CLI_WHOLE = 2,    /* CLI_LIST: whole numbers */
    CLI_NO_RANGE = 4, /* CLI_LIST: no start:stop:step */
    CLI_HIDDEN = 8,   /* accepted, not shown in --help */
};

typedef struct {
    const char *name;
    int value;
} cli_choice; /* a table of them ends with {NULL, 0} */

typedef struct {
    double *x;
    int64_t count;
} cli_values;

typedef struct {
    const char **s;
    int count;
} cli_strings;

typedef struct cli_opt {
    const char *name; /* long name without "--"; NULL for a short-only option */
    int key;          /* short letter ('o' for -o), or 0 */
    cli_kind kind;
    size_t field;              /* offsetof(the section's struct, member) */
    double min, max;           /* the range of CLI_INT, CLI_I64, CLI_DOUBLE, CLI_LIST values */
    const char *arg;           /* the value's name in --help ("N", "FILE"); NULL: takes no value */
    const char *help;          /* the --help line(s) */
    int flags;                 /* CLI_ABOVE, CLI_WHOLE, ... */
    const cli_choice *choices; /* CLI_CHOICE */
    int (*parse)(const char *flag, const char *value, void *field); /* CLI_CUSTOM */
} cli_opt;                                                          /* a table ends with OPT_END */

/* Table rows, one macro per kind (the fields of the options struct type named by member). */
#define CLI_ROW(name, key, kind, type, member, min, max, arg, help, flags, choices, parse)         \
    {                                                                                              \
        (name), (key), (kind), offsetof(type, member), (min), (max), (arg), (help), (flags),       \
            (choices), (parse)                                                                     \
    }
#define OPT_GROUP(text)                                                                            \
    {                                                                                              \
        NULL, 0, CLI_GROUP, 0, 0, 0, NULL, (text), 0, NULL, NULL                                   \
    }
#define OPT_END                                                                                    \
    {                                                                                              \
        NULL, 0, CLI_GROUP, 0, 0, 0, NULL, NULL, 0, NULL, NULL                                     \
    }
#define OPT_FLAG(name, key, type, member, help)                                                    \
    CLI_ROW(name, key, CLI_FLAG, type, member, 0, 0, NULL, help, 0, NULL, NULL)
#define OPT_INT(name, type, member, min, max, arg, help)                                           \
    CLI_ROW(name, 0, CLI_INT, type, member, min, max, arg, help, 0, NULL, NULL)
#define OPT_I64(name, type, member, min, max, arg, help)                                           \
    CLI_ROW(name, 0, CLI_I64, type, member, min, max, arg, help, 0, NULL, NULL)
#define OPT_DOUBLE(name, type, member, min, max, flags, arg, help)                                 \
    CLI_ROW(name, 0, CLI_DOUBLE, type, member, min, max, arg, help, flags, NULL, NULL)
#define OPT_STRING(name, key, type, member, arg, help)                                             \
    CLI_ROW(name, key, CLI_STRING, type, member, 0, 0, arg, help, 0, NULL, NULL)
#define OPT_CHOICE(name, type, member, choices, arg, help)                                         \
    CLI_ROW(name, 0, CLI_CHOICE, type, member, 0, 0, arg, help, 0, choices, NULL)
#define OPT_LIST(name, type, member, min, max, flags, arg, help)                                   \
    CLI_ROW(name, 0, CLI_LIST, type, member, min, max, arg, help, flags, NULL, NULL)
#define OPT_CUSTOM(name, key, type, member, parse, arg, help)                                      \
    CLI_ROW(name, key, CLI_CUSTOM, type, member, 0, 0, arg, help, 0, NULL, parse)
#define OPT_HIDDEN_STRING(name, type, member)                                                      \
    CLI_ROW(name, 0, CLI_STRING, type, member, 0, 0, "X", NULL, CLI_HIDDEN, NULL, NULL)
#define CLI_BIG 9.2e18 /* no upper limit, for an int64_t */

typedef struct {
    const cli_opt *table; /* NULL ends a command's list of sections */
    size_t offset;        /* where the table's struct lies in the command's options */
    /* After parsing, checks across the section's options (NULL: none). given: bit i is set when
     * row i of the table was on the command line. An exit code, having printed the error. */
    int (*finish)(void *fields, uint64_t given);
} cli_section;

#define CLI_NO_ARGS ((size_t)-1)

typedef struct {
    const char *name;     /* "run": --help says "fastrope run" */
    const char *synopsis; /* after "Usage: fastrope run [OPTION...]"; lines split by '\n' */
    const char *doc;      /* before the options; after a '\v', the text after them */
    const cli_section *sections;
    size_t args; /* offsetof a cli_strings for the positional arguments, or CLI_NO_ARGS */
} cli_command;

#define CLI_HELP (-1) /* cli_parse printed --help: the command exits 0 */

/* Parse argv (argv[0] the command's name) into opts, then run the sections' finish checks.
 * EXIT_OK, CLI_HELP, or EXIT_USAGE having printed the error. */
int cli_parse(const cli_command *cmd, int argc, char **argv, void *opts);
/* Whether the option `name` (long name, or the short letter as a one-letter string) of table
 * was given, from a finish's given bits. */
int cli_given(const cli_opt *table, uint64_t given, const char *name);
/* "a", "a,b,c" or "start:stop:step" (inclusive, at most CLI_MAX_VALUES values) for flag, each
 * value in [min, max] (min excluded with CLI_ABOVE), whole with CLI_WHOLE. An exit code. */
#define CLI_MAX_VALUES 100000
int cli_parse_values(const char *flag, const char *s, double min, double max, int flags,
                     cli_values *out);
void cli_values_free(cli_values *v);
void cli_strings_free(cli_strings *s);
/* CLI_CUSTOM parsers of output paths (a const char * field): the extension must name a format
 * written: .npy, .npz, .json or .safetensors for a tensor, the same but .npy for a bundle ('-':
 * stdout). */
int cli_out_tensor(const char *flag, const char *value, void *field);
int cli_out_bundle(const char *flag, const char *value, void *field);
/* Whole-string numbers; print a usage error naming the flag on failure. */
int parse_double(const char *flag, const char *s, double *out);
int parse_int64(const char *flag, const char *s, int64_t *out);

/* ---- options shared by run, grad, check and bound (attn.c) -------------------------------- */

enum { CLI_SCALE_PAPER, CLI_SCALE_SDPA, CLI_SCALE_VALUE };
enum { CLI_PRESET_NONE, CLI_PRESET_PAPER, CLI_PRESET_LLAMA, CLI_PRESET_NEOX, CLI_PRESET_GPTJ };

typedef struct {
    int kind;     /* CLI_SCALE_* */
    double value; /* CLI_SCALE_VALUE's number */
} cli_scale_spec;

typedef struct {
    fr_rotation rot;    /* kind set by cli_attn_finish from the flags; w is filled from w_path */
    const char *w_path; /* -w FILE */
    int rope, no_rope;  /* the flags as given (rot.kind is what counts) */
    cli_scale_spec scale;
    int causal, no_causal;
    int64_t window;
    int preset;            /* CLI_PRESET_*: fills what was not given explicitly */
    fr_options opt;        /* opt.cost: the cost constants (cmd/cost.h), set by cli_attn_finish */
    const char *cost_path; /* --cost FILE */
    uint64_t given;        /* rows of cli_attn_table given on the command line */
} cli_attn;

extern const cli_opt cli_attn_table[];
void cli_attn_init(cli_attn *o);
/* The rotation kind from its flags (at most one), the preset applied under explicit flags, and
 * contradictions refused (a RoPE parameter with --no-rope or -w). An exit code. */
int cli_attn_finish(cli_attn *o);
int cli_attn_finish_section(void *fields, uint64_t given); /* for a cli_section */
/* tau for head dimension d. An exit code (always EXIT_OK: --scale is checked when parsed). */
int cli_scale(const cli_attn *o, int64_t d, double *tau);
/* The preset's name, or NULL for none. */
const char *cli_preset_name(int preset);

/* Resource limits for every tensor read (--max-elements, --max-bytes; see load.c). */
#define CLI_DEFAULT_MAX_ELEMENTS ((int64_t)1 << 30) /* per tensor: 8 GiB as doubles */
#define CLI_DEFAULT_MAX_BYTES ((int64_t)12 << 30)   /* per input file and per run */
extern const fr_limits cli_default_limits;
extern const cli_opt cli_limits_table[]; /* over an fr_limits */

/* ---- loading inputs ---------------------------------------------------------------------- */

typedef struct {
    fr_bundle files[5]; /* what was read (q/k/v may share one bundle), and dout/target */
    int nfiles;
    fr_limits limits;
    fr_tensor *q, *k, *v, *w;
    int64_t batch, n, d, dv;
    int64_t kv_batch; /* problems of k and v: batch, or batch / g (grouped-query attention) */
    int64_t w_batch;  /* 1: W shared; batch: one W per batch entry; 0: no W */
    int64_t bytes;    /* of every tensor read, as doubles (the per-run limit) */
    fr_dtype as;      /* q, k, v and the outputs' companions in memory: data, or f32 (float) */
    char qlabel[512], klabel[512], vlabel[512], wlabel[512];
} cli_inputs;

/* Read --input BUNDLE (its set named set, or its only one, by words: sets.h) or -q/-k/-v
 * files, and the W file, within lim; check shapes (grouped-query k and v too) and finiteness.
 * as FR_DTYPE_F4 reads q, k, v (and later cli_load_output_like's tensor) as float, into f32;
 * W is read as double always. Returns an exit code, having printed the error. */
int cli_load(cli_inputs *in, const fr_limits *lim, fr_dtype as, const char *bundle, const char *qp,
             const char *kp, const char *vp, const char *wp, const char *set,
             const set_words *words);
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

int cmd_convert(int argc, char **argv);
int cmd_gen(int argc, char **argv);
int cmd_bound(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_calibrate(int argc, char **argv); /* cmd/calibrate.c */

/* Seconds on a monotonic clock. */
double cli_now(void);

/* One value into the field of table row o (what cli_parse does per option). An exit code. */
int cli__set_value(const cli_opt *o, const char *flag, const char *value, void *field);

#endif
