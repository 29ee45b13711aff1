/* convert.c - `fastrope convert IN OUT`: between .npy, .npz and .json; also how the tests
 * exercise the I/O layer end to end. */
#include "job.h"

#include <string.h>

static const char usage[] =
    "usage: fastrope convert IN OUT [--dtype f4|f8] [--compress] [--max-elements N]\n"
    "                        [--max-bytes N]\n"
    "\n"
    "Converts between .npy, .npz and .json (IN or OUT '-': stdin/stdout). A bundle (.npz, JSON\n"
    "object of tensors) converts to a bundle, a single tensor to a single tensor. The input\n"
    "format is recognised from its first bytes, the output format from OUT's extension ('-'\n"
    "writes .npy, or .npz for a bundle). --compress deflates .npz members. --max-elements\n"
    "(2^30 per tensor) and --max-bytes (12 GiB per file) bound what is read.\n";

int cmd_convert(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL}, *v;
    int npaths = 0, compress = 0;
    fr_dtype dtype = FR_DTYPE_F8;
    cli_args a = {argc, argv, 1, 0, "convert"};
    for (; a.i < argc && !a.bad; a.i++) {
        if (arg_flag(&a, "--help") || arg_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (cli_limits_option(&a)) {
        } else if (arg_flag(&a, "--compress")) {
            compress = 1;
        } else if (arg_value(&a, "--dtype", &v)) {
            if (v && strcmp(v, "f4") == 0)
                dtype = FR_DTYPE_F4;
            else if (v && strcmp(v, "f8") != 0)
                return cli_fail(EXIT_USAGE, "--dtype: '%s' is not f4 or f8", v);
        } else if (argv[a.i][0] == '-' && argv[a.i][1] != '\0') {
            return cli_fail(EXIT_USAGE, "convert: unknown option '%s'", argv[a.i]);
        } else if (npaths < 2) {
            paths[npaths++] = argv[a.i];
        } else {
            return cli_fail(EXIT_USAGE, "convert: takes exactly two paths, IN and OUT");
        }
    }
    if (a.bad) return EXIT_USAGE;
    if (npaths != 2) return cli_fail(EXIT_USAGE, "convert: takes exactly two paths, IN and OUT");
    /* The same file by another name (./q.npy, a link) too: writing would destroy the input. */
    if (strcmp(paths[0], "-") &&
        (strcmp(paths[0], paths[1]) == 0 || job_same_file(paths[0], paths[1])))
        return cli_fail(EXIT_USAGE, "convert: refusing to overwrite the input %s", paths[0]);

    char err[512];
    fr_bundle b;
    memset(&b, 0, sizeof b);
    int st = fr_read(paths[0], &b, &cli_limits, err, sizeof err);
    if (st) {
        fr_bundle_free(&b);
        return cli_fail(st, "%s%s", err,
                        strstr(err, "over the limit") ? " (raise it with --max-elements or "
                                                        "--max-bytes)"
                                                      : "");
    }
    fr_format fmt = fr_format_from_path(paths[1]);
    if (b.single && (fmt == FR_FMT_NPZ || fmt == FR_FMT_SAFETENSORS))
        st = cli_fail(EXIT_USAGE, "%s: a single tensor converts to .npy or .json, not a bundle",
                      paths[1]);
    else if (!b.single && fmt == FR_FMT_NPY)
        st = cli_fail(EXIT_USAGE,
                      "%s: %s holds a bundle of %d tensors; write .npz, .json or "
                      ".safetensors",
                      paths[1], paths[0], b.count);
    else if (fmt == FR_FMT_UNKNOWN && strcmp(paths[1], "-") != 0)
        st =
            cli_fail(EXIT_USAGE,
                     "%s: unknown output format (use .npy, .npz, .json or .safetensors)", paths[1]);
    else if ((st = b.single ? fr_write_tensor(paths[1], fmt, &b.tensors[0], dtype, err, sizeof err)
                            : fr_write_bundle(paths[1], fmt, &b, dtype, compress, err, sizeof err)))
        cli_fail(st, "%s", err);
    fr_bundle_free(&b);
    return st;
}
