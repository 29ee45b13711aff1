/* attn.c - the attention options every computing command shares (rotation, presets, scale,
 * mask, method) and the resource limits, as option tables, with the checks across them. */
#include "cli.h"
#include "cost.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int parse_scale(const char *flag, const char *value, void *field)
{
    cli_scale_spec *s = field;
    if (strcmp(value, "paper") == 0) {
        s->kind = CLI_SCALE_PAPER;
    } else if (strcmp(value, "sdpa") == 0) {
        s->kind = CLI_SCALE_SDPA;
    } else {
        double x;
        char *end;
        x = strtod(value, &end);
        if (end == value || *end != '\0' || !isfinite(x) || !(x > 0))
            return cli_fail(EXIT_USAGE, "%s: '%s' is not paper, sdpa or a finite number > 0", flag,
                            value);
        s->kind = CLI_SCALE_VALUE;
        s->value = x;
    }
    return EXIT_OK;
}

/* RoPE rotates pairs: an odd rotary dimension is the option's mistake, whatever d is. */
static int parse_rotary_dim(const char *flag, const char *value, void *field)
{
    int64_t r;
    if (parse_int64(flag, value, &r)) return EXIT_USAGE;
    if (r < 2 || r % 2)
        return cli_fail(EXIT_USAGE,
                        "%s: '%s' is not an even number >= 2 (RoPE rotates pairs of coordinates)",
                        flag, value);
    *(int64_t *)field = r;
    return EXIT_OK;
}

static int parse_method(const char *flag, const char *value, void *field)
{
    if (fr_method_parse(value, (fr_method *)field) == 0) return EXIT_OK;
    char names[256];
    size_t off = 0;
    for (int m = 0; m < FR_NMETHODS && off < sizeof names; m++)
        off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", m ? ", " : "",
                                fr_method_name((fr_method)m));
    return cli_fail(EXIT_USAGE, "%s: '%s' is not one of %s", flag, value, names);
}

static const cli_choice pairs[] = {
    {"interleaved", FR_PAIRS_INTERLEAVED}, {"half", FR_PAIRS_HALF}, {NULL, 0}};

static const cli_choice ffts[] = {{"auto", FR_FFT_AUTO},
                                  {"kissfft", FR_FFT_KISSFFT},
                                  {"fftw", FR_FFT_FFTW},
                                  {"fftw-float", FR_FFT_FFTW_FLOAT},
                                  {NULL, 0}};

static const cli_choice presets[] = {{"paper", CLI_PRESET_PAPER},
                                     {"llama", CLI_PRESET_LLAMA},
                                     {"neox", CLI_PRESET_NEOX},
                                     {"gptj", CLI_PRESET_GPTJ},
                                     {NULL, 0}};

const cli_opt cli_attn_table[] = {
    OPT_GROUP("Rotation (at most one; default --rope):"),
    OPT_FLAG("rope", 0, cli_attn, rope, "standard RoPE, W_delta = R_delta"),
    OPT_DOUBLE("rope-base", cli_attn, rot.base, 0, INFINITY, CLI_ABOVE, "B",
               "RoPE frequency base (10000)"),
    OPT_CHOICE("rope-pairs", cli_attn, rot.pairs, pairs, "P",
               "RoPE pairs: interleaved (2m, 2m+1) or half (m, m + r/2) (interleaved)"),
    OPT_DOUBLE("rope-scale", cli_attn, rot.pos_scale, 0, INFINITY, CLI_ABOVE, "F",
               "RoPE positions are divided by F (1)"),
    OPT_CUSTOM("rotary-dim", 0, cli_attn, rot.rotary_dim, parse_rotary_dim, "R",
               "only the first R coordinates rotate, R even (d)"),
    OPT_I64("rope-clip", cli_attn, rot.clip, 0, CLI_BIG, "C",
            "clipped RoPE, W_delta = R_clip(delta, -C, C) (the same RoPE options)"),
    OPT_STRING(NULL, 'w', cli_attn, w_path, "FILE",
               "explicit W, shape [2n-1, d, d] (or with q's leading axes in front): a tensor, or "
               "a bundle's member 'w' (-w in.npz)"),
    OPT_HIDDEN_STRING("w", cli_attn, w_path),
    OPT_FLAG("no-rope", 0, cli_attn, no_rope, "plain attention, W = identity"),
    OPT_CHOICE("preset", cli_attn, preset, presets, "NAME",
               "paper, llama, neox or gptj: the pair layout, scale and mask of a model family (see "
               "the README); explicit options override it"),
    OPT_GROUP("Attention:"),
    OPT_CUSTOM("scale", 0, cli_attn, scale, parse_scale, "S",
               "paper (1/d, default), sdpa (1/sqrt(d)), or a number > 0"),
    OPT_FLAG("causal", 0, cli_attn, causal, "keys j <= i only"),
    OPT_FLAG("no-causal", 0, cli_attn, no_causal, "no causal mask (against a preset's)"),
    OPT_I64("window", cli_attn, window, 0, CLI_BIG, "W", "keys |j - i| <= W only"),
    OPT_GROUP("Method:"),
    OPT_CUSTOM("method", 0, cli_attn, opt.method, parse_method, "M",
               "auto, exact, polyfft, polyfft-literal, polyrope (auto)"),
    OPT_DOUBLE("eps", cli_attn, opt.eps, 0, INFINITY, CLI_ABOVE, "E",
               "target max |T_fast - T| (1e-3)"),
    OPT_INT("degree", cli_attn, opt.degree, 0, 64, "G", "force the polynomial degree"),
    OPT_INT("max-degree", cli_attn, opt.max_degree, 0, 64, "G",
            "above it the fast methods refuse, auto uses exact (24)"),
    OPT_CHOICE("fft", cli_attn, opt.fft, ffts, "F",
               "polyfft's FFTs: kissfft (single precision), fftw (double), fftw-float, or auto: "
               "the fastest that meets eps (auto)"),
    OPT_STRING("cost", 0, cli_attn, cost_path, "FILE",
               "the cost constants auto predicts with: a file of `fastrope calibrate -o FILE` "
               "(default: the cache's, written by `fastrope calibrate`, else built-in)"),
    OPT_END};
const cli_opt cli_limits_table[] = {
    OPT_GROUP("Limits (checked before anything is allocated):"),
    OPT_I64("max-elements", fr_limits, max_elements, 1, CLI_BIG, "N", "elements per tensor (2^30)"),
    OPT_I64("max-bytes", fr_limits, max_bytes, 1, CLI_BIG, "N",
            "bytes per input file, and of all inputs as doubles (12 GiB)"),
    OPT_END};

const fr_limits cli_default_limits = {CLI_DEFAULT_MAX_ELEMENTS, CLI_DEFAULT_MAX_BYTES};

void cli_attn_init(cli_attn *o)
{
    memset(o, 0, sizeof *o);
    fr_problem def = fr_problem_default(1, 2, 1);
    o->rot = def.rot;
    o->scale.kind = CLI_SCALE_PAPER;
    o->window = -1;
    o->opt = fr_options_default();
}

const char *cli_preset_name(int preset)
{
    for (const cli_choice *c = presets; c->name; c++)
        if (c->value == preset) return c->name;
    return NULL;
}

/* What a model family fixes: how its code pairs the coordinates, its score scale, and that it
 * is a causal decoder. Base and rotary dimension vary from model to model of one family
 * (LLaMA 3's base 500000, Pythia's 25% rotary): they stay the options'. */
static void apply_preset(cli_attn *o)
{
    if (o->preset == CLI_PRESET_NONE) return;
    int paper = o->preset == CLI_PRESET_PAPER;
    if (!cli_given(cli_attn_table, o->given, "rope-pairs"))
        o->rot.pairs = o->preset == CLI_PRESET_LLAMA || o->preset == CLI_PRESET_NEOX
                           ? FR_PAIRS_HALF
                           : FR_PAIRS_INTERLEAVED;
    if (!cli_given(cli_attn_table, o->given, "scale"))
        o->scale.kind = paper ? CLI_SCALE_PAPER : CLI_SCALE_SDPA;
    if (!cli_given(cli_attn_table, o->given, "causal") &&
        !cli_given(cli_attn_table, o->given, "no-causal"))
        o->causal = !paper;
}

int cli_attn_finish(cli_attn *o)
{
    static const char *const rope_only[] = {"rope-base", "rope-pairs", "rope-scale", "rotary-dim"};
    int clip = cli_given(cli_attn_table, o->given, "rope-clip");
    if (o->rope + o->no_rope + clip + (o->w_path != NULL) > 1)
        return cli_fail(EXIT_USAGE,
                        "give at most one rotation: --rope, --rope-clip, -w or --no-rope");
    o->rot.kind = o->no_rope  ? FR_ROT_NONE
                  : clip      ? FR_ROT_CLIP
                  : o->w_path ? FR_ROT_EXPLICIT
                              : FR_ROT_ROPE;
    if (o->rot.kind == FR_ROT_NONE || o->rot.kind == FR_ROT_EXPLICIT)
        for (size_t i = 0; i < sizeof rope_only / sizeof rope_only[0]; i++)
            if (cli_given(cli_attn_table, o->given, rope_only[i]))
                return cli_fail(EXIT_USAGE,
                                "--%s sets a parameter of RoPE, but %s has none: give one or "
                                "the other",
                                rope_only[i], o->no_rope ? "--no-rope" : "an explicit W (-w)");
    if (o->causal && o->no_causal)
        return cli_fail(EXIT_USAGE, "--causal and --no-causal contradict each other");
    if (o->opt.method == FR_METHOD_EXACT && cli_given(cli_attn_table, o->given, "degree"))
        return cli_fail(EXIT_USAGE,
                        "--degree sets the polynomial of the fast methods; --method exact has "
                        "none: give one or the other");
    apply_preset(o);
    if (o->no_causal) o->causal = 0;
    return cli_cost_use(o->cost_path, &o->opt);
}

int cli_attn_finish_section(void *fields, uint64_t given)
{
    cli_attn *o = fields;
    o->given = given;
    return cli_attn_finish(o);
}

int cli_scale(const cli_attn *o, int64_t d, double *tau)
{
    switch (o->scale.kind) {
    case CLI_SCALE_SDPA: *tau = 1.0 / sqrt((double)d); break;
    case CLI_SCALE_VALUE: *tau = o->scale.value; break;
    default: *tau = 1.0 / (double)d; break;
    }
    return EXIT_OK;
}
