/* args.c - options from tables: one description per option gives glibc argp's parser and the
 * --help text, and every value is checked against its range as it is read. */
#include "cli.h"

#include <argp.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_fail(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("fastrope: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

void cli_warn(const char *fmt, ...)
{
    va_list ap;
    fputs("fastrope: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- numbers and lists ------------------------------------------------------------------ */

int parse_double(const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(x))
        return cli_fail(EXIT_USAGE, "%s: '%s' is not a finite number", flag, s);
    *out = x;
    return 0;
}

int parse_int64(const char *flag, const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE)
        return cli_fail(EXIT_USAGE, "%s: '%s' is not a whole number", flag, s);
    *out = x;
    return 0;
}

/* "a number > 0", "a whole number in 0..64", "a whole number >= 1": for the messages. */
static void describe_range(char *buf, size_t len, int whole, double min, double max, int flags)
{
    const char *what = whole ? "a whole number" : "a number";
    const char *lo = flags & CLI_ABOVE ? ">" : ">=";
    if (max >= 9e18 || isinf(max))
        snprintf(buf, len, "%s %s %.17g", what, lo, min);
    else if (flags & CLI_ABOVE)
        snprintf(buf, len, "%s > %.17g and <= %.17g", what, min, max);
    else
        snprintf(buf, len, "%s in %.17g..%.17g", what, min, max);
}

static int in_range(double x, double min, double max, int flags)
{
    return (flags & CLI_ABOVE ? x > min : x >= min) && x <= max;
}

static int out_of_range(const char *flag, const char *s, int whole, double min, double max,
                        int flags)
{
    char want[128];
    describe_range(want, sizeof want, whole, min, max, flags);
    return cli_fail(EXIT_USAGE, "%s: '%s' is not %s", flag, s, want);
}

int cli_parse_values(const char *flag, const char *s, double min, double max, int flags,
                     cli_values *out)
{
    out->x = NULL;
    out->count = 0;
    int whole = (flags & CLI_WHOLE) != 0;
    double r[3];
    char *dup = strdup(s), *save = NULL;
    if (!dup) return cli_fail(EXIT_INTERNAL, "out of memory");
    int st = EXIT_OK;
    if (strchr(s, ':') && (flags & CLI_NO_RANGE)) {
        st = cli_fail(EXIT_USAGE, "%s: '%s' is not a list like 4,8 (no ranges here)", flag, s);
    } else if (strchr(s, ':')) {
        int k = 0;
        for (char *tok = strtok_r(dup, ":", &save); tok && !st; tok = strtok_r(NULL, ":", &save))
            st = k < 3 ? parse_double(flag, tok, &r[k++]) : EXIT_USAGE;
        if (!st && (k != 3 || !(r[2] > 0) || r[0] > r[1]))
            st = cli_fail(EXIT_USAGE,
                          "%s: '%s' is not a range start:stop:step with start <= stop and step > 0",
                          flag, s);
        double cnt = st ? 0 : floor((r[1] - r[0]) / r[2] * (1 + 1e-12)) + 1;
        if (!st && cnt > CLI_MAX_VALUES)
            st = cli_fail(EXIT_USAGE, "%s: '%s' has more than %d values", flag, s, CLI_MAX_VALUES);
        if (!st && !(out->x = malloc((size_t)cnt * sizeof(double))))
            st = cli_fail(EXIT_INTERNAL, "out of memory");
        for (int64_t i = 0; !st && i < (int64_t)cnt; i++)
            out->x[out->count++] = r[0] + (double)i * r[2]; /* no accumulated rounding */
    } else {
        int64_t cap = 1;
        for (const char *c = s; *c; c++)
            cap += *c == ',';
        if (cap > CLI_MAX_VALUES)
            st = cli_fail(EXIT_USAGE, "%s: '%s' has more than %d values", flag, s, CLI_MAX_VALUES);
        else if (!(out->x = malloc((size_t)cap * sizeof(double))))
            st = cli_fail(EXIT_INTERNAL, "out of memory");
        /* Every comma separates two values: "4,,8" and "4," are mistakes, not shorter lists. */
        if (!st && (s[0] == ',' || strstr(s, ",,") || (s[0] && s[strlen(s) - 1] == ',')))
            st = cli_fail(EXIT_USAGE, "%s: '%s' has an empty value", flag, s);
        for (char *tok = strtok_r(dup, ",", &save); tok && !st; tok = strtok_r(NULL, ",", &save))
            st = parse_double(flag, tok, &out->x[out->count++]);
        if (!st && out->count == 0) st = cli_fail(EXIT_USAGE, "%s: no value in '%s'", flag, s);
    }
    for (int64_t i = 0; i < out->count && !st; i++) {
        double x = out->x[i];
        if ((whole && x != floor(x)) || !in_range(x, min, max, flags)) {
            char v[64];
            snprintf(v, sizeof v, "%.17g", x);
            st = out_of_range(flag, v, whole, min, max, flags);
        }
    }
    free(dup);
    if (st) cli_values_free(out);
    return st;
}

void cli_values_free(cli_values *v)
{
    free(v->x);
    v->x = NULL;
    v->count = 0;
}

void cli_strings_free(cli_strings *s)
{
    free(s->s);
    s->s = NULL;
    s->count = 0;
}

/* ---- output paths ------------------------------------------------------------------------ */

/* The format comes from the extension: a wrong one is refused before any work, not after. */
static int out_path(const char *flag, const char *value, void *field, int bundle)
{
    fr_format f = fr_format_from_path(value);
    int ok = strcmp(value, "-") == 0 || f == FR_FMT_NPZ || f == FR_FMT_JSON ||
             f == FR_FMT_SAFETENSORS || (!bundle && f == FR_FMT_NPY);
    if (!ok)
        return cli_fail(EXIT_USAGE, "%s %s: unknown output format (use %s)", flag, value,
                        bundle ? ".npz, .json or .safetensors"
                               : ".npy, .npz, .json or .safetensors");
    *(const char **)field = value;
    return EXIT_OK;
}

int cli_out_tensor(const char *flag, const char *value, void *field)
{
    return out_path(flag, value, field, 0);
}

int cli_out_bundle(const char *flag, const char *value, void *field)
{
    return out_path(flag, value, field, 1);
}

/* ---- one value into its field ----------------------------------------------------------- */

int cli__set_value(const cli_opt *o, const char *flag, const char *value, void *field)
{
    int64_t i;
    double x;
    switch (o->kind) {
    case CLI_GROUP: return EXIT_OK;
    case CLI_FLAG: *(int *)field = 1; return EXIT_OK;
    case CLI_INT:
    case CLI_I64:
        if (parse_int64(flag, value, &i)) return EXIT_USAGE;
        if (!in_range((double)i, o->min, o->max, o->flags))
            return out_of_range(flag, value, 1, o->min, o->max, o->flags);
        if (o->kind == CLI_INT)
            *(int *)field = (int)i;
        else
            *(int64_t *)field = i;
        return EXIT_OK;
    case CLI_DOUBLE:
        if (parse_double(flag, value, &x)) return EXIT_USAGE;
        if (!in_range(x, o->min, o->max, o->flags))
            return out_of_range(flag, value, 0, o->min, o->max, o->flags);
        *(double *)field = x;
        return EXIT_OK;
    case CLI_STRING:
        if (value[0] == '\0') return cli_fail(EXIT_USAGE, "%s: the value is empty", flag);
        *(const char **)field = value;
        return EXIT_OK;
    case CLI_CHOICE: {
        char names[256];
        size_t off = 0;
        for (const cli_choice *c = o->choices; c->name; c++) {
            if (strcmp(c->name, value) == 0) {
                *(int *)field = c->value;
                return EXIT_OK;
            }
            off += (size_t)snprintf(names + off, off < sizeof names ? sizeof names - off : 0,
                                    "%s%s", off ? ", " : "", c->name);
        }
        return cli_fail(EXIT_USAGE, "%s: '%s' is not one of %s", flag, value, names);
    }
    case CLI_LIST: {
        cli_values *v = field;
        cli_values_free(v);
        return cli_parse_values(flag, value, o->min, o->max, o->flags, v);
    }
    case CLI_CUSTOM: return o->parse(flag, value, field);
    }
    return cli_fail(EXIT_INTERNAL, "%s: option of unknown kind %d", flag, (int)o->kind);
}

/* ---- the argp glue ---------------------------------------------------------------------- */

#define MAX_OPTS 128

typedef struct {
    const cli_command *cmd;
    char *opts;
    int count;
    const cli_opt *row[MAX_OPTS];
    int section[MAX_OPTS], index[MAX_OPTS]; /* which section, which row of its table */
    int key[MAX_OPTS];
    const char *value[MAX_OPTS]; /* as first given; NULL: not given */
    uint64_t given[16];          /* per section */
    char name[64];               /* "fastrope run", for --help */
} parse_ctx;

static int is_end(const cli_opt *o)
{
    return !o->name && !o->key && !o->help;
}

static void flag_name(const cli_opt *o, char *buf, size_t len)
{
    if (o->name)
        snprintf(buf, len, "--%s", o->name);
    else
        snprintf(buf, len, "-%c", o->key);
}

/* An option and a value as the user sees them, for the "given twice" message. */
static const char *shown(const char *v)
{
    return v[0] ? v : "(no value)";
}

/* The bytes a scalar option's value takes in its field (0: compare the text instead). */
static size_t value_size(const cli_opt *o)
{
    switch (o->kind) {
    case CLI_FLAG:
    case CLI_INT:
    case CLI_CHOICE: return sizeof(int);
    case CLI_I64: return sizeof(int64_t);
    case CLI_DOUBLE: return sizeof(double);
    default: return 0;
    }
}

static error_t on_key(int key, char *arg, struct argp_state *state)
{
    parse_ctx *c = state->input;
    if (key == 'h') {
        /* argp names the program after argv[0] ("fastrope", for getopt's messages) once the
         * parsers have started; the usage line names the command. */
        state->name = c->name;
        argp_state_help(state, stdout,
                        ARGP_HELP_SHORT_USAGE | ARGP_HELP_PRE_DOC | ARGP_HELP_LONG |
                            ARGP_HELP_POST_DOC);
        return ECANCELED;
    }
    if (key == ARGP_KEY_INIT) {
        state->err_stream = NULL; /* getopt's own one-line messages are enough: no "Try ..." */
        return 0;
    }
    if (key == ARGP_KEY_ARG) {
        if (c->cmd->args == CLI_NO_ARGS) {
            cli_fail(EXIT_USAGE, "%s: unexpected argument '%s' (see fastrope %s --help)",
                     c->cmd->name, arg, c->cmd->name);
            return EINVAL;
        }
        cli_strings *s = (cli_strings *)(c->opts + c->cmd->args);
        const char **ns = realloc(s->s, (size_t)(s->count + 1) * sizeof *ns);
        if (!ns) {
            cli_fail(EXIT_INTERNAL, "out of memory");
            return ENOMEM;
        }
        s->s = ns;
        s->s[s->count++] = arg;
        return 0;
    }
    for (int i = 0; i < c->count; i++) {
        if (c->key[i] != key) continue;
        const cli_opt *o = c->row[i];
        const char *v = arg ? arg : "";
        char flag[64];
        flag_name(o, flag, sizeof flag);
        char *field = c->opts + c->cmd->sections[c->section[i]].offset + o->field;
        size_t size = value_size(o);
        unsigned char before[8];
        if (c->value[i]) memcpy(before, field, size);
        int st = cli__set_value(o, flag, v, field);
        if (st) return st == EXIT_INTERNAL ? ENOMEM : EINVAL;
        /* The same value written two ways (--eps 1e-3 --eps 0.001) is no contradiction. */
        if (c->value[i] &&
            (size ? memcmp(before, field, size) != 0 : strcmp(c->value[i], v) != 0)) {
            cli_fail(EXIT_USAGE, "%s given twice, as %s and as %s: give it once", flag,
                     shown(c->value[i]), shown(v));
            return EINVAL;
        }
        c->value[i] = v;
        c->given[c->section[i]] |= (uint64_t)1 << c->index[i];
        return 0;
    }
    return ARGP_ERR_UNKNOWN;
}

/* The note on short and long options sharing their arguments is noise for this command. */
static char *help_filter(int key, const char *text, void *input)
{
    (void)input;
    /* argp's filters return char *, text unchanged when they keep it (argp frees only what
     * differs from text). */
    return key == ARGP_KEY_HELP_DUP_ARGS_NOTE ? NULL : (char *)(uintptr_t)text;
}

static int taken(const parse_ctx *c, const cli_opt *o)
{
    for (int i = 0; i < c->count; i++) {
        const cli_opt *p = c->row[i];
        if ((o->name && p->name && strcmp(o->name, p->name) == 0) || (o->key && o->key == p->key))
            return 1;
    }
    return 0;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, void *opts)
{
    parse_ctx *c = calloc(1, sizeof *c);
    struct argp_option *ao = calloc(MAX_OPTS + 2, sizeof *ao);
    char **av = malloc((size_t)(argc + 1) * sizeof *av);
    if (!c || !ao || !av) {
        free(c);
        free(ao);
        free(av);
        return cli_fail(EXIT_INTERNAL, "out of memory");
    }
    c->cmd = cmd;
    c->opts = opts;
    snprintf(c->name, sizeof c->name, "fastrope %s", cmd->name);
    int nao = 0, nsec = 0;
    for (const cli_section *s = cmd->sections; s->table; s++, nsec++) {
        if (nsec >= 16) abort(); /* a programming error: more sections than given[] holds */
        int row = 0;
        for (const cli_opt *o = s->table; !is_end(o); o++, row++) {
            if (row >= 64 || c->count >= MAX_OPTS) abort(); /* likewise: the bits of given */
            if (o->kind == CLI_GROUP) {
                ao[nao++] = (struct argp_option){NULL, 0, NULL, 0, o->help, 0};
                continue;
            }
            if (taken(c, o)) continue;
            int key = o->key ? o->key : 256 + c->count;
            c->row[c->count] = o;
            c->section[c->count] = nsec;
            c->index[c->count] = row;
            c->key[c->count++] = key;
            ao[nao++] = (struct argp_option){
                o->name, key, o->arg, o->flags & CLI_HIDDEN ? OPTION_HIDDEN : 0, o->help, 0};
        }
    }
    ao[nao++] = (struct argp_option){"help", 'h', NULL, 0, "this text", -1};
    /* getopt prefixes its messages (unknown option, missing value) with argv[0]. */
    static char program[] = "fastrope";
    av[0] = program;
    for (int i = 1; i < argc; i++)
        av[i] = argv[i];
    av[argc] = NULL;
    struct argp ap = {ao, on_key, cmd->synopsis, cmd->doc, NULL, help_filter, NULL};
    error_t e = argp_parse(&ap, argc, av, ARGP_NO_EXIT | ARGP_NO_HELP | ARGP_IN_ORDER, NULL, c);
    int st = e == 0           ? EXIT_OK
             : e == ECANCELED ? CLI_HELP
             : e == ENOMEM    ? EXIT_INTERNAL
                              : EXIT_USAGE;
    nsec = 0;
    for (const cli_section *s = cmd->sections; s->table && st == EXIT_OK; s++, nsec++)
        if (s->finish) st = s->finish((char *)opts + s->offset, c->given[nsec]);
    free(c);
    free(ao);
    free(av);
    return st;
}

int cli_given(const cli_opt *table, uint64_t given, const char *name)
{
    int row = 0;
    for (const cli_opt *o = table; !is_end(o); o++, row++) {
        int match = (o->name && strcmp(o->name, name) == 0) ||
                    (!o->name && name[0] == o->key && name[1] == '\0');
        if (match) return (given >> row) & 1;
    }
    return 0;
}
