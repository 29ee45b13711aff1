/* gen.c - `fastrope gen`: reproducible bounded inputs for the demo, tests and benchmarks. */
#include "cli.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t n, d, dv, seed;
    double B;
    int normal;
    cli_values batch;
    const char *out;
} gen_opts;

static const cli_choice dists[] = {{"uniform", 0}, {"normal", 1}, {NULL, 0}};

static const cli_opt gen_table[] = {
    OPT_I64("n", gen_opts, n, 1, CLI_BIG, "N", "tokens (required)"),
    OPT_I64("d", gen_opts, d, 1, CLI_BIG, "D", "head dimension of q and k (required)"),
    OPT_I64("dv", gen_opts, dv, 1, CLI_BIG, "DV", "head dimension of v (d)"),
    OPT_DOUBLE("B", gen_opts, B, 0, INFINITY, 0, "B", "entries lie in [-B, B] (1)"),
    OPT_CHOICE("dist", gen_opts, normal, dists, "D",
               "uniform (default), or normal with standard deviation B/3 clipped to [-B, B]"),
    OPT_I64("seed", gen_opts, seed, -CLI_BIG, CLI_BIG, "S", "the random stream (0)"),
    OPT_LIST("batch", gen_opts, batch, 1, 1e12, CLI_WHOLE | CLI_NO_RANGE, "A,B,...",
             "leading axes: q is [A, B, ..., n, d] (none)"),
    OPT_CUSTOM("output", 'o', gen_opts, out, cli_out_bundle, "FILE",
               "the bundle: .npz, .json or .safetensors ('-': .npz to stdout) (required)"),
    OPT_END};

static const cli_section sections[] = {{gen_table, 0, NULL}, {NULL, 0, NULL}};

static const cli_command command = {
    "gen", "--n N --d D -o FILE",
    "Writes a bundle of q [..., n, d], k [..., n, d], v [..., n, dv] whose entries lie in "
    "[-B, B]. The same seed gives the same bundle on every machine (xoshiro256**, not the C "
    "library).",
    sections, CLI_NO_ARGS};

/* xoshiro256**, seeded by splitmix64: portable and reproducible, unlike rand(). */
typedef struct {
    uint64_t s[4];
} rng;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next(rng *r)
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

static void seed(rng *r, uint64_t x)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        r->s[i] = z ^ (z >> 31);
    }
}

/* *acc *= x unless that overflows int64. */
static int mul_ok(int64_t *acc, int64_t x)
{
    if (x < 0 || (x && *acc > INT64_MAX / x)) return 0;
    *acc *= x;
    return 1;
}

static double uniform01(rng *r)
{
    return (double)(next(r) >> 11) * 0x1.0p-53;
}

static double sample(rng *r, int normal, double B)
{
    if (!normal) return B * (2 * uniform01(r) - 1);
    /* Box-Muller; one value per call keeps the stream simple. */
    double u = uniform01(r), w = uniform01(r);
    double z = sqrt(-2 * log(u > 0 ? u : 0x1.0p-53)) * cos(2 * M_PI * w) * B / 3;
    return z > B ? B : (z < -B ? -B : z);
}

/* The bundle: q, k, v drawn in that order from one stream. An exit code. */
static int generate(const gen_opts *o)
{
    int64_t lead[FR_MAXDIM], nlead = o->batch.count, total = 1;
    int64_t dv = o->dv > 0 ? o->dv : o->d;
    for (int i = 0; i < nlead; i++) {
        lead[i] = (int64_t)o->batch.x[i];
        if (!mul_ok(&total, lead[i])) return cli_fail(EXIT_USAGE, "gen: shape too large");
    }
    int64_t cq = total, cv = total;
    if (!mul_ok(&cq, o->n) || !mul_ok(&cq, o->d) || !mul_ok(&cv, o->n) || !mul_ok(&cv, dv) ||
        cq > ((int64_t)1 << 34) || cv > ((int64_t)1 << 34))
        return cli_fail(EXIT_USAGE, "gen: shape too large");

    fr_bundle b;
    memset(&b, 0, sizeof b);
    rng r;
    seed(&r, (uint64_t)o->seed);
    const char *names[3] = {"q", "k", "v"};
    int64_t counts[3] = {cq, cq, cv}, last[3] = {o->d, o->d, dv};
    char err[512];
    int st = EXIT_OK;
    for (int m = 0; m < 3 && !st; m++) {
        fr_tensor t;
        memset(&t, 0, sizeof t);
        t.ndim = (int)nlead + 2;
        for (int i = 0; i < nlead; i++)
            t.shape[i] = lead[i];
        t.shape[nlead] = o->n;
        t.shape[nlead + 1] = last[m];
        t.data = malloc((size_t)counts[m] * sizeof(double));
        if (!t.data) {
            st = cli_fail(EXIT_INTERNAL, "gen: out of memory");
            break;
        }
        for (int64_t i = 0; i < counts[m]; i++)
            t.data[i] = sample(&r, o->normal, o->B);
        if ((st = fr_bundle_add(&b, names[m], &t, err, sizeof err))) {
            free(t.data);
            cli_fail(st, "%s", err);
        }
    }
    if (!st && (st = fr_write_bundle(o->out, FR_FMT_UNKNOWN, &b, FR_DTYPE_F8, 0, err, sizeof err)))
        cli_fail(st, "%s", err);
    fr_bundle_free(&b);
    return st;
}

int cmd_gen(int argc, char **argv)
{
    gen_opts o;
    memset(&o, 0, sizeof o);
    o.dv = -1;
    o.B = 1;
    int st = cli_parse(&command, argc, argv, &o);
    if (!st && (!o.n || !o.d)) st = cli_fail(EXIT_USAGE, "gen: --n and --d are required");
    if (!st && !o.out) st = cli_fail(EXIT_USAGE, "gen: -o FILE is required");
    if (!st && o.batch.count > FR_MAXDIM - 2)
        st = cli_fail(EXIT_USAGE, "gen: --batch has more than %d axes", FR_MAXDIM - 2);
    if (st) {
        cli_values_free(&o.batch);
        return st == CLI_HELP ? EXIT_OK : st;
    }
    st = generate(&o);
    cli_values_free(&o.batch);
    return st;
}
