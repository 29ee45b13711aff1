/* fuzz_test.c - every fixture with random bytes flipped, random truncations and random splices
 * must read either successfully or with status 3 and a message naming the file: never a crash,
 * a sanitizer report, a hang, status 1 (which would mean a huge allocation was attempted) or an
 * empty message. Deterministic (fixed seed); small enough for ASan. */
#include "io_testutil.h"

static const char *fixtures[] = {"c3d.npy",     "fortran3d_be_f4.npy", "v3_u2.npy",
                                 "qkv.npz",     "qkv_compressed.npz",  "dtypes.npz",
                                 "bundle.json", "shape_data.json",     "nested.json"};

static unsigned char *load(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *b = malloc(1 << 16);
    *n = fread(b, 1, 1 << 16, f);
    fclose(f);
    return b;
}

static void test_mutations(void)
{
    const char *dir = getenv("FR_TESTDATA") ? getenv("FR_TESTDATA") : "testdata";
    unsigned long long seed = 12345;
    int ok = 0, refused = 0;
    for (size_t k = 0; k < sizeof fixtures / sizeof *fixtures; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, fixtures[k]);
        size_t n;
        unsigned char *orig = load(path, &n);
        T_REQUIRE(orig, "cannot read %s (run from the repository root)", path);
        unsigned char *m = malloc(n);
        for (int trial = 0; trial < 150; trial++) {
            memcpy(m, orig, n);
            size_t len = n;
            int kind = trial % 3;
            if (kind == 0) { /* flip a few bytes, mostly in the headers where sizes live */
                int flips = 1 + (int)((t_rand(&seed) + 1) * 2);
                for (int f = 0; f < flips; f++) {
                    size_t lim = trial % 2 ? n : (n < 160 ? n : 160);
                    size_t at = (size_t)((t_rand(&seed) + 1) / 2 * (double)lim) % n;
                    m[at] = (unsigned char)((t_rand(&seed) + 1) * 128);
                }
            } else if (kind == 1) { /* truncate */
                len = (size_t)((t_rand(&seed) + 1) / 2 * (double)n) % n;
            } else { /* a byte that encodes a big size: 0xff runs */
                size_t at = (size_t)((t_rand(&seed) + 1) / 2 * (double)n) % n;
                for (size_t j = at; j < at + 4 && j < n; j++)
                    m[j] = 0xff;
            }
            const char *p = tu_write("fuzz.bin", m, len);
            fr_bundle b;
            char err[512] = "";
            int st = fr_read(p, &b, NULL, err, sizeof err);
            T_CHECK(st == 0 || (st == FR_EINPUT && strstr(err, p) == err),
                    "%s trial %d: status %d, message \"%s\"", fixtures[k], trial, st, err);
            if (st == 0)
                ok++;
            else
                refused++;
            fr_bundle_free(&b);
        }
        free(m);
        free(orig);
    }
    /* both outcomes occur, or the mutations are not reaching the parsers */
    printf("# %d read, %d refused\n", ok, refused);
    T_CHECK(ok > 50 && refused > 300, "%d read, %d refused", ok, refused);
}

int main(void)
{
    tu_init();
    T_RUN(test_mutations);
    return t_done();
}
