/* args_legacy.c - the argv scanner of before the option tables, kept only while check.c and
 * convert.c still call it; it reads the same tables as cli_parse, so a value is checked the same
 * way by every command. Delete it when they parse through cli_parse. */
#include "cli.h"

#include <string.h>

fr_limits cli_limits = {CLI_DEFAULT_MAX_ELEMENTS, CLI_DEFAULT_MAX_BYTES};

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

/* Row of table matching argv[a->i] ("--name", "--name=V" or "-k"): parsed into base. */
static int scan(cli_args *a, const cli_opt *table, void *base, uint64_t *given)
{
    int row = 0;
    for (const cli_opt *o = table; o->name || o->key || o->help; o++, row++) {
        if (o->kind == CLI_GROUP) continue;
        char flag[64];
        if (o->name)
            snprintf(flag, sizeof flag, "--%s", o->name);
        else
            snprintf(flag, sizeof flag, "-%c", o->key);
        const char *v = "";
        if (o->arg ? !arg_value(a, flag, &v) : !arg_flag(a, flag)) continue;
        if (v && cli__set_value(o, flag, v, (char *)base + o->field)) a->bad = 1;
        if (!v) a->bad = 1;
        if (given) *given |= (uint64_t)1 << row;
        return 1;
    }
    return 0;
}

int cli_limits_option(cli_args *a)
{
    return scan(a, cli_limits_table, &cli_limits, NULL);
}

int cli_attn_option(cli_args *a, cli_attn *o)
{
    return cli_limits_option(a) || scan(a, cli_attn_table, o, &o->given);
}

const char cli_attn_help[] =
    "Rotation (at most one; default --rope):\n"
    "  --rope                 standard RoPE, W_delta = R_delta\n"
    "    --rope-base B        frequency base (10000)\n"
    "    --rope-pairs P       interleaved (2m, 2m+1) or half (m, m + r/2); interleaved\n"
    "    --rope-scale F       positions are divided by F (1)\n"
    "    --rotary-dim R       only the first R coordinates rotate, R even (d)\n"
    "  --rope-clip C          clipped RoPE, W_delta = R_clip(delta, -C, C) (same options)\n"
    "  -w FILE                explicit W, shape [2n-1, d, d]: a tensor, or a bundle's member\n"
    "                         'w' (-w in.npz)\n"
    "  --no-rope              plain attention, W = identity\n"
    "  --preset NAME          paper, llama, neox or gptj: pair layout, scale and mask of a\n"
    "                         model family (README); explicit options override it\n"
    "Attention:\n"
    "  --scale S              paper (1/d, default), sdpa (1/sqrt(d)), or a number\n"
    "  --causal               keys j <= i only\n"
    "  --no-causal            no causal mask (against a preset's)\n"
    "  --window W             keys |j - i| <= W only\n"
    "Method:\n"
    "  --method M             auto, exact, polyfft, polyfft-literal, polyrope (auto)\n"
    "  --eps E                target max |T_fast - T| (1e-3)\n"
    "  --degree G             force the polynomial degree\n"
    "  --max-degree G         above it the fast methods refuse, auto uses exact (24)\n"
    "Limits (checked before anything is allocated):\n"
    "  --max-elements N       elements per tensor (2^30)\n"
    "  --max-bytes N          bytes per input file, and of all inputs as doubles (12 GiB)\n";
