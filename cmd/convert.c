/* convert.c - `fastrope convert IN OUT`: between .npy, .npz, .json and .safetensors; one member
 * of a bundle out of it (--member), or every member into a directory (OUT ending in '/'); also
 * how the tests exercise the I/O layer end to end. */
#include "cli.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    int f4, compress;
    const char *member;
    fr_limits limits;
    cli_strings paths;
} convert_opts;

static const cli_choice dtypes[] = {{"f8", 0}, {"f4", 1}, {NULL, 0}};

static const cli_opt convert_table[] = {
    OPT_CHOICE("dtype", convert_opts, f4, dtypes, "T",
               "the values written: f8 (float64, the default) or f4 (float32, rounded to "
               "nearest), whatever the input's dtype"),
    OPT_FLAG("compress", 0, convert_opts, compress, "deflate the members of a .npz"),
    OPT_STRING("member", 0, convert_opts, member, "NAME",
               "write only this tensor of the bundle IN, as a single tensor"),
    OPT_END};

static const cli_section sections[] = {{convert_table, 0, NULL},
                                       {cli_limits_table, offsetof(convert_opts, limits), NULL},
                                       {NULL, 0, NULL}};

static const cli_command command = {
    "convert", "IN OUT\nIN DIR/",
    "Converts between .npy, .npz, .json and .safetensors (IN or OUT '-': stdin/stdout). A bundle "
    "(.npz, .safetensors, a JSON object of tensors) converts to a bundle, a single tensor to a "
    "single tensor; --member NAME takes one tensor out of a bundle, and an OUT that ends in '/' "
    "receives every member of the bundle as DIR/NAME.npy. The input format "
    "is recognised from its first bytes, the output format from OUT's extension ('-' writes "
    ".npy, or .npz for a bundle). Values are written as float64 unless --dtype f4. Nothing is "
    "replaced unless every output was written.",
    sections, offsetof(convert_opts, paths)};

/* Only a trailing '/' asks for a split: "-o out.npy" over a directory of that name stays an
 * error, not a surprise directory of files. */
static int is_dir_target(const char *path)
{
    size_t n = strlen(path);
    return n > 0 && path[n - 1] == '/';
}

/* A member name that names a file in the directory and nothing else. */
static int usable_name(const char *name)
{
    return name[0] && name[0] != '.' && !strchr(name, '/') && strlen(name) < 200;
}

/* Every output of the set is staged, written, then committed; any failure leaves the targets
 * as they were. */
static int write_split(const convert_opts *o, const char *in, const char *dir, const fr_bundle *b)
{
    if (b->single)
        return cli_fail(EXIT_USAGE,
                        "%s: %s holds a single tensor; give a file name, not a "
                        "directory",
                        dir, in);
    for (int i = 0; i < b->count; i++)
        if (!usable_name(b->names[i]))
            return cli_fail(EXIT_INPUT, "%s: member '%s' cannot be a file name in %s", in,
                            b->names[i], dir);
    int made = 0;
    if (mkdir(dir, 0777) == 0)
        made = 1;
    else if (errno != EEXIST)
        return cli_fail(EXIT_INTERNAL, "%s: %s", dir, strerror(errno));
    char err[512];
    fr_outputs *set = fr_outputs_new();
    int *ids = malloc((size_t)(b->count ? b->count : 1) * sizeof *ids);
    int st = set && ids ? EXIT_OK : cli_fail(EXIT_INTERNAL, "out of memory");
    size_t dl = strlen(dir);
    for (int i = 0; i < b->count && !st; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s%s%s.npy", dir, dl && dir[dl - 1] == '/' ? "" : "/",
                 b->names[i]);
        if (fr_same_file(path, in))
            st = cli_fail(EXIT_USAGE, "convert: refusing to overwrite the input %s", in);
        else if ((st = fr_outputs_add(set, path, FR_OUT_TENSOR, &ids[i], err, sizeof err)))
            cli_fail(st, "%s", err);
    }
    for (int i = 0; i < b->count && !st; i++)
        if ((st = fr_outputs_write_tensor(set, ids[i], FR_FMT_NPY, &b->tensors[i],
                                          o->f4 ? FR_DTYPE_F4 : FR_DTYPE_F8, err, sizeof err)))
            cli_fail(st, "%s", err);
    if (st) {
        fr_outputs_abort(set);
    } else if ((st = fr_outputs_commit(set, err, sizeof err))) { /* frees the set in any case */
        cli_fail(st, "%s", err);
    }
    free(ids);
    if (st && made) rmdir(dir); /* ours and still empty: gone again */
    return st;
}

static int write_one(const convert_opts *o, const char *in, const char *out, fr_bundle *b)
{
    fr_dtype dtype = o->f4 ? FR_DTYPE_F4 : FR_DTYPE_F8;
    fr_format fmt = fr_format_from_path(out);
    const fr_tensor *t = b->single ? &b->tensors[0] : NULL;
    if (o->member) {
        if (b->single)
            return cli_fail(EXIT_USAGE, "--member %s: %s holds a single tensor, not a bundle",
                            o->member, in);
        if (!(t = fr_bundle_get(b, o->member))) {
            char names[300] = "";
            for (int i = 0; i < b->count && strlen(names) < 200; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                         b->names[i]);
            return cli_fail(EXIT_USAGE, "--member %s: %s has no such tensor (it has: %s)",
                            o->member, in, b->count ? names : "none");
        }
    }
    if (t && (fmt == FR_FMT_NPZ || fmt == FR_FMT_SAFETENSORS))
        return cli_fail(EXIT_USAGE,
                        "%s: a single tensor converts to .npy or .json, not to a bundle", out);
    if (!t && fmt == FR_FMT_NPY)
        return cli_fail(EXIT_USAGE,
                        "%s: %s holds a bundle of %d tensors; write .npz, .json or "
                        ".safetensors, one of them (--member NAME) or all into a directory "
                        "(OUT/)",
                        out, in, b->count);
    if (fmt == FR_FMT_UNKNOWN && strcmp(out, "-") != 0)
        return cli_fail(EXIT_USAGE,
                        "%s: unknown output format (use .npy, .npz, .json or .safetensors)", out);
    char err[512];
    int st = t ? fr_write_tensor(out, fmt, t, dtype, err, sizeof err)
               : fr_write_bundle(out, fmt, b, dtype, o->compress, err, sizeof err);
    return st ? cli_fail(st, "%s", err) : EXIT_OK;
}

int cmd_convert(int argc, char **argv)
{
    convert_opts o;
    memset(&o, 0, sizeof o);
    o.limits = cli_default_limits;
    int st = cli_parse(&command, argc, argv, &o);
    if (!st && o.paths.count != 2)
        st = cli_fail(EXIT_USAGE, "convert: takes exactly two paths, IN and OUT");
    if (st) {
        cli_strings_free(&o.paths);
        return st == CLI_HELP ? EXIT_OK : st;
    }
    const char *in = o.paths.s[0], *out = o.paths.s[1];
    int split = strcmp(out, "-") != 0 && is_dir_target(out);
    /* The same file by another name (./q.npy, a link) too: writing would destroy the input. */
    if (strcmp(in, "-") != 0 && !split && fr_same_file(in, out))
        st = cli_fail(EXIT_USAGE, "convert: refusing to overwrite the input %s", in);
    if (!st && split && o.member)
        st = cli_fail(EXIT_USAGE, "convert: --member writes one file, not a directory");
    fr_bundle b;
    memset(&b, 0, sizeof b);
    char err[512];
    if (!st && (st = fr_read(in, &b, &o.limits, err, sizeof err)))
        cli_fail(st, "%s%s", err,
                 strstr(err, "over the limit") ? " (raise it with --max-elements or --max-bytes)"
                                               : "");
    if (!st) st = split ? write_split(&o, in, out, &b) : write_one(&o, in, out, &b);
    fr_bundle_free(&b);
    cli_strings_free(&o.paths);
    return st;
}
