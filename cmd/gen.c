/* gen.c - `fastrope gen`: reproducible bounded inputs for the demo, tests and benchmarks. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: fastrope gen --n N --d D [--dv DV] [--B B] [--dist uniform|normal] [--seed S]\n"
    "                    [--batch A,B,...] -o FILE.npz|FILE.json\n"
    "\n"
    "Writes a bundle q [..., n, d], k [..., n, d], v [..., n, dv] whose entries lie in [-B, B]\n"
    "(B = 1 by default): uniform, or normal with standard deviation B/3 clipped to [-B, B].\n"
    "The same seed gives the same bundle on every machine (xoshiro256**, not the C library).\n";

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

int cmd_gen(int argc, char **argv)
{
    int64_t n = -1, d = -1, dv = -1, seed_v = 0;
    double B = 1;
    int normal = 0;
    const char *out = NULL, *batch = NULL, *v;
    cli_args a = {argc, argv, 1, 0, "gen"};
    for (; a.i < argc && !a.bad; a.i++) {
        if (arg_flag(&a, "--help") || arg_flag(&a, "-h")) {
            fputs(usage, stdout);
            return 0;
        } else if (arg_value(&a, "--n", &v)) {
            if (v && parse_int64("--n", v, &n)) return EXIT_USAGE;
        } else if (arg_value(&a, "--d", &v)) {
            if (v && parse_int64("--d", v, &d)) return EXIT_USAGE;
        } else if (arg_value(&a, "--dv", &v)) {
            if (v && parse_int64("--dv", v, &dv)) return EXIT_USAGE;
        } else if (arg_value(&a, "--seed", &v)) {
            if (v && parse_int64("--seed", v, &seed_v)) return EXIT_USAGE;
        } else if (arg_value(&a, "--B", &v)) {
            if (v && parse_double("--B", v, &B)) return EXIT_USAGE;
        } else if (arg_value(&a, "--dist", &v)) {
            if (v && strcmp(v, "normal") == 0)
                normal = 1;
            else if (v && strcmp(v, "uniform") != 0)
                return cli_fail(EXIT_USAGE, "--dist: '%s' is not uniform or normal", v);
        } else if (arg_value(&a, "--batch", &batch) || arg_value(&a, "-o", &out)) {
        } else {
            return cli_fail(EXIT_USAGE, "gen: unknown option '%s' (see fastrope gen --help)",
                            argv[a.i]);
        }
    }
    if (a.bad) return EXIT_USAGE;
    if (n < 1 || d < 1) return cli_fail(EXIT_USAGE, "gen: --n and --d (both >= 1) are required");
    if (dv < 0) dv = d;
    if (dv < 1) return cli_fail(EXIT_USAGE, "gen: --dv must be >= 1");
    if (!(B >= 0)) return cli_fail(EXIT_USAGE, "gen: --B must be >= 0");
    if (!out) return cli_fail(EXIT_USAGE, "gen: -o FILE is required");

    int64_t lead[FR_MAXDIM], nlead = 0, total = 1;
    if (batch) {
        char *s = (char *)batch, *end;
        for (;;) {
            long long x = strtoll(s, &end, 10);
            if (end == s || x < 1 || nlead >= FR_MAXDIM - 2)
                return cli_fail(EXIT_USAGE, "--batch: '%s' is not a list of counts like 4,8",
                                batch);
            lead[nlead++] = x;
            if (*end == '\0') break;
            if (*end != ',')
                return cli_fail(EXIT_USAGE, "--batch: '%s' is not a list of counts like 4,8",
                                batch);
            s = end + 1;
        }
    }
    for (int i = 0; i < nlead; i++)
        if (!mul_ok(&total, lead[i])) return cli_fail(EXIT_USAGE, "gen: shape too large");
    int64_t cq = total, cv = total;
    if (!mul_ok(&cq, n) || !mul_ok(&cq, d) || !mul_ok(&cv, n) || !mul_ok(&cv, dv) ||
        cq > ((int64_t)1 << 34) || cv > ((int64_t)1 << 34))
        return cli_fail(EXIT_USAGE, "gen: shape too large");

    fr_bundle b;
    memset(&b, 0, sizeof b);
    rng r;
    seed(&r, (uint64_t)seed_v);
    const char *names[3] = {"q", "k", "v"};
    int64_t counts[3] = {cq, cq, cv}, last[3] = {d, d, dv};
    char err[512];
    int st = EXIT_OK;
    for (int m = 0; m < 3 && !st; m++) {
        fr_tensor t;
        memset(&t, 0, sizeof t);
        t.ndim = (int)nlead + 2;
        for (int i = 0; i < nlead; i++)
            t.shape[i] = lead[i];
        t.shape[nlead] = n;
        t.shape[nlead + 1] = last[m];
        t.data = malloc((size_t)counts[m] * sizeof(double));
        if (!t.data) {
            st = cli_fail(EXIT_INTERNAL, "gen: out of memory");
            break;
        }
        for (int64_t i = 0; i < counts[m]; i++)
            t.data[i] = sample(&r, normal, B);
        if ((st = fr_bundle_add(&b, names[m], &t, err, sizeof err))) {
            free(t.data);
            cli_fail(st, "%s", err);
        }
    }
    if (!st && (st = fr_write_bundle(out, FR_FMT_UNKNOWN, &b, FR_DTYPE_F8, 0, err, sizeof err)))
        cli_fail(st, "%s", err);
    fr_bundle_free(&b);
    return st;
}
