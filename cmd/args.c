/* args.c - scanning the command line, and the attention options shared by every command. */
#include "cli.h"

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

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int arg_flag(cli_args *a, const char *name)
{
    return strcmp(a->argv[a->i], name) == 0;
}

int arg_value(cli_args *a, const char *name, const char **val)
{
    const char *s = a->argv[a->i];
    size_t len = strlen(name);
    if (strncmp(s, name, len) != 0) return 0;
    if (s[len] == '=' && name[1] == '-') { /* --name=value; short options take no '=' */
        *val = s + len + 1;
        return 1;
    }
    if (s[len] != '\0') return 0;
    if (a->i + 1 >= a->argc) {
        cli_fail(EXIT_USAGE, "%s: %s needs a value (see fastrope %s --help)", a->cmd, name, a->cmd);
        a->bad = 1;
        *val = NULL;
        return 1;
    }
    *val = a->argv[++a->i];
    return 1;
}

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
        return cli_fail(EXIT_USAGE, "%s: '%s' is not an integer", flag, s);
    *out = x;
    return 0;
}

const char cli_attn_help[] =
    "Rotation (at most one; default --rope):\n"
    "  --rope                 standard RoPE, W_delta = R_delta\n"
    "    --rope-base B        frequency base (10000)\n"
    "    --rope-pairs P       interleaved (2m, 2m+1) or half (m, m + r/2); interleaved\n"
    "    --rope-scale F       positions are divided by F (1)\n"
    "    --rotary-dim R       only the first R coordinates rotate (d)\n"
    "  --rope-clip C          clipped RoPE, W_delta = R_clip(delta, -C, C) (same options)\n"
    "  -w FILE                explicit W, shape [2n-1, d, d]: a tensor, or a bundle's member\n"
    "                         'w' (-w in.npz)\n"
    "  --no-rope              plain attention, W = identity\n"
    "Attention:\n"
    "  --scale S              paper (1/d, default), sdpa (1/sqrt(d)), or a number\n"
    "  --causal               keys j <= i only\n"
    "  --window W             keys |j - i| <= W only\n"
    "Method:\n"
    "  --method M             auto, exact, polyfft, polyfft-literal, polyrope (auto)\n"
    "  --eps E                target max |T_fast - T| (1e-3)\n"
    "  --degree G             force the polynomial degree\n"
    "  --max-degree G         above it the fast methods refuse, auto uses exact (24)\n"
    "Limits (checked before anything is allocated):\n"
    "  --max-elements N       elements per tensor (2^30)\n"
    "  --max-bytes N          bytes per input file, and of all inputs as doubles (12 GiB)\n";

void cli_attn_init(cli_attn *o)
{
    memset(o, 0, sizeof *o);
    fr_problem def = fr_problem_default(1, 2, 1);
    o->rot = def.rot;
    o->scale = "paper";
    o->window = -1;
    o->opt = fr_options_default();
}

static int set_rot(cli_attn *o, fr_rot_kind kind)
{
    o->rot.kind = kind;
    o->rot_options++;
    return 1;
}

/* A number for flag that must be > min (or >= min when !strict); on failure a->bad is set and
 * *out is left alone. v == NULL means arg_value already reported a missing value. */
static void opt_double(cli_args *a, const char *flag, const char *v, double min, int strict,
                       double *out)
{
    double x;
    if (!v) return;
    if (parse_double(flag, v, &x)) {
        a->bad = 1;
    } else if (strict ? !(x > min) : !(x >= min)) {
        cli_fail(EXIT_USAGE, "%s must be %s %g, got %s", flag, strict ? ">" : ">=", min, v);
        a->bad = 1;
    } else {
        *out = x;
    }
}

static void opt_int(cli_args *a, const char *flag, const char *v, int64_t min, int64_t max,
                    int64_t *out)
{
    int64_t x;
    if (!v) return;
    if (parse_int64(flag, v, &x)) {
        a->bad = 1;
    } else if (x < min || x > max) {
        cli_fail(EXIT_USAGE, "%s must be in %lld..%lld, got %s", flag, (long long)min,
                 (long long)max, v);
        a->bad = 1;
    } else {
        *out = x;
    }
}

int cli_limits_option(cli_args *a)
{
    const char *v;
    if (arg_value(a, "--max-elements", &v)) {
        opt_int(a, "--max-elements", v, 1, INT64_MAX, &cli_limits.max_elements);
        return 1;
    }
    if (arg_value(a, "--max-bytes", &v)) {
        opt_int(a, "--max-bytes", v, 1, INT64_MAX, &cli_limits.max_bytes);
        return 1;
    }
    return 0;
}

int cli_attn_option(cli_args *a, cli_attn *o)
{
    const char *v;
    int64_t k;
    if (cli_limits_option(a)) return 1;
    if (arg_flag(a, "--rope")) return set_rot(o, FR_ROT_ROPE);
    if (arg_flag(a, "--no-rope")) return set_rot(o, FR_ROT_NONE);
    if (arg_flag(a, "--causal")) return o->causal = 1;
    if (arg_value(a, "--rope-clip", &v)) {
        set_rot(o, FR_ROT_CLIP);
        opt_int(a, "--rope-clip", v, 0, INT64_MAX, &o->rot.clip);
        return 1;
    }
    if (arg_value(a, "-w", &v) || arg_value(a, "--w", &v)) {
        set_rot(o, FR_ROT_EXPLICIT);
        o->w_path = v;
        return 1;
    }
    if (arg_value(a, "--rope-base", &v)) {
        opt_double(a, "--rope-base", v, 0, 1, &o->rot.base);
        return 1;
    }
    if (arg_value(a, "--rope-scale", &v)) {
        opt_double(a, "--rope-scale", v, 0, 1, &o->rot.pos_scale);
        return 1;
    }
    if (arg_value(a, "--rotary-dim", &v)) {
        opt_int(a, "--rotary-dim", v, 1, INT64_MAX, &o->rot.rotary_dim);
        return 1;
    }
    if (arg_value(a, "--rope-pairs", &v)) {
        if (!v) return 1;
        if (strcmp(v, "interleaved") == 0) {
            o->rot.pairs = FR_PAIRS_INTERLEAVED;
        } else if (strcmp(v, "half") == 0) {
            o->rot.pairs = FR_PAIRS_HALF;
        } else {
            cli_fail(EXIT_USAGE, "--rope-pairs: '%s' is not interleaved or half", v);
            a->bad = 1;
        }
        return 1;
    }
    if (arg_value(a, "--scale", &v)) {
        if (v) o->scale = v;
        return 1;
    }
    if (arg_value(a, "--window", &v)) {
        opt_int(a, "--window", v, 0, INT64_MAX, &o->window);
        return 1;
    }
    if (arg_value(a, "--method", &v)) {
        if (v && fr_method_parse(v, &o->opt.method)) {
            cli_fail(EXIT_USAGE,
                     "--method: '%s' is not one of auto, exact, polyfft, polyfft-literal, "
                     "polyrope",
                     v);
            a->bad = 1;
        }
        return 1;
    }
    if (arg_value(a, "--eps", &v)) {
        opt_double(a, "--eps", v, 0, 1, &o->opt.eps);
        return 1;
    }
    if (arg_value(a, "--degree", &v)) {
        k = o->opt.degree;
        opt_int(a, "--degree", v, 0, 64, &k);
        o->opt.degree = (int)k;
        return 1;
    }
    if (arg_value(a, "--max-degree", &v)) {
        k = o->opt.max_degree;
        opt_int(a, "--max-degree", v, 0, 64, &k);
        o->opt.max_degree = (int)k;
        return 1;
    }
    return 0;
}

int cli_attn_finish(cli_attn *o)
{
    if (o->rot_options > 1)
        return cli_fail(EXIT_USAGE,
                        "give at most one rotation: --rope, --rope-clip, -w or --no-rope");
    if (o->rot_options == 0) o->rot.kind = FR_ROT_ROPE;
    return EXIT_OK;
}

int cli_scale(const cli_attn *o, int64_t d, double *tau)
{
    if (strcmp(o->scale, "paper") == 0)
        *tau = 1.0 / (double)d;
    else if (strcmp(o->scale, "sdpa") == 0)
        *tau = 1.0 / sqrt((double)d);
    else {
        if (parse_double("--scale", o->scale, tau)) return EXIT_USAGE;
        if (!(*tau > 0))
            return cli_fail(EXIT_USAGE, "--scale must be paper, sdpa or a positive number");
    }
    return EXIT_OK;
}
