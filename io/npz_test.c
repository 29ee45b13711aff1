/* npz_test.c - the .npz reader and writer: round trips stored and deflated, member naming,
 * reading from memory (stdin), and hostile archives: non-.npy members, broken members, zip
 * bombs (over the limit, or lying about their size), truncation, CRC errors. */
#include "io_internal.h"
#include "io_testutil.h"

typedef struct {
    const char *name;
    const unsigned char *bytes;
    size_t len;
    int deflate;
} member;

/* A zip of the given members, made with libzip (as a third-party writer would). */
static const char *make_zip(const char *fname, const member *m, int count)
{
    const char *p = tu_path(fname);
    unlink(p);
    int ze;
    zip_t *za = zip_open(p, ZIP_CREATE | ZIP_TRUNCATE, &ze);
    if (!za) exit(1);
    for (int i = 0; i < count; i++) {
        zip_source_t *s = zip_source_buffer(za, m[i].bytes, m[i].len, 0);
        zip_int64_t idx = zip_file_add(za, m[i].name, s, 0);
        zip_set_file_compression(za, (zip_uint64_t)idx,
                                 m[i].deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
    }
    if (zip_close(za) != 0) exit(1);
    return p;
}

static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) exit(1);
    fclose(f);
    return b;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Overwrite the uncompressed size of the (only) member in its local and central headers. */
static void patch_size(unsigned char *z, size_t n, uint32_t size)
{
    put32(z + 22, size);
    for (size_t i = 0; i + 4 < n; i++)
        if (memcmp(z + i, "PK\x01\x02", 4) == 0) put32(z + i + 24, size);
}

static void make_bundle(fr_bundle *b)
{
    memset(b, 0, sizeof *b);
    const char *names[] = {"q", "k", "v", "scalar", "a/b"};
    int64_t shapes[][3] = {{4, 3, 2}, {4, 6}, {5}, {0}, {2, 0}};
    int ndims[] = {3, 2, 1, 0, 2};
    unsigned long long seed = 7;
    for (int m = 0; m < 5; m++) {
        fr_tensor t = {ndims[m], {0}, NULL, NULL};
        memcpy(t.shape, shapes[m], sizeof shapes[m]);
        int64_t n = fr_tensor_count(&t);
        t.data = malloc((size_t)(n ? n : 1) * 8);
        for (int64_t i = 0; i < n; i++)
            t.data[i] = t_rand(&seed) / 3;
        if (n) t.data[0] = 5e-324;
        char err[256];
        if (fr_bundle_add(b, names[m], &t, err, sizeof err)) exit(1);
    }
}

static void test_roundtrip(void)
{
    fr_bundle b;
    make_bundle(&b);
    for (int mode = 0; mode < 4; mode++) {
        int compress = mode & 1;
        fr_dtype dt = mode & 2 ? FR_DTYPE_F4 : FR_DTYPE_F8;
        char err[512];
        const char *p = tu_path("rt.npz");
        int st = fr_write_bundle(p, FR_FMT_UNKNOWN, &b, dt, compress, err, sizeof err);
        T_REQUIRE(st == 0, "write: %s", err);
        fr_bundle r;
        st = fr_read(p, &r, NULL, err, sizeof err);
        T_REQUIRE(st == 0, "read back (mode %d): %s", mode, err);
        T_CHECK(!r.single && r.count == b.count, "count %d", r.count);
        for (int m = 0; m < b.count && m < r.count; m++) {
            const fr_tensor *x = &b.tensors[m], *y = fr_bundle_get(&r, b.names[m]);
            T_CHECK(y && y->ndim == x->ndim && memcmp(y->shape, x->shape, (size_t)x->ndim * 8) == 0,
                    "mode %d: member %s missing or reshaped", mode, b.names[m]);
            if (!y) continue;
            int64_t n = fr_tensor_count(x), bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++) {
                double want = dt == FR_DTYPE_F4 ? (double)(float)x->data[i] : x->data[i];
                if (memcmp(&want, &y->data[i], 8)) bad = i;
            }
            T_CHECK(bad < 0, "mode %d: %s[%lld] differs", mode, b.names[m], (long long)bad);
        }
        /* the same bytes from memory (the stdin path) */
        size_t n;
        unsigned char *z = slurp(p, &n);
        if (compress) {
            int deflated = 0;
            for (size_t i = 0; i + 10 < n; i++)
                if (memcmp(z + i, "PK\x01\x02", 4) == 0) deflated |= z[i + 10] == 8;
            T_CHECK(deflated, "compress=1 wrote no deflated member");
        }
        fr_bundle s;
        memset(&s, 0, sizeof s);
        zip_error_t ze;
        zip_error_init(&ze);
        st = io_npz_read(zip_source_buffer_create(z, n, 0, &ze), "mem", NULL, FR_DTYPE_F8, &s, err,
                         sizeof err);
        zip_error_fini(&ze);
        T_CHECK(st == 0 && s.count == r.count, "from memory: %s", err);
        for (int m = 0; m < s.count && m < r.count; m++)
            T_CHECK(
                tu_same_bits(s.tensors[m].data, r.tensors[m].data, fr_tensor_count(&r.tensors[m])),
                "from memory: member %d", m);
        fr_bundle_free(&s);
        free(z);
        fr_bundle_free(&r);
    }
    fr_bundle_free(&b);

    /* A single tensor written as .npz becomes numpy.savez's positional name arr_0; an empty
     * bundle is an empty archive that reads back as an empty bundle. */
    double v[3] = {1, 2, 3};
    fr_tensor t = {1, {3}, v, NULL};
    char err[512];
    int st = fr_write_tensor(tu_path("one.npz"), FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
    fr_bundle r;
    if (!st) st = fr_read(tu_path("one.npz"), &r, NULL, err, sizeof err);
    T_CHECK(st == 0 && r.count == 1 && strcmp(r.names[0], "arr_0") == 0 &&
                tu_same_bits(r.tensors[0].data, v, 3),
            "single tensor as npz: %s", err);
    if (!st) fr_bundle_free(&r);
    fr_bundle e = {0, NULL, NULL, 0};
    st = fr_write_bundle(tu_path("empty.npz"), FR_FMT_UNKNOWN, &e, FR_DTYPE_F8, 0, err, sizeof err);
    if (!st) st = fr_read(tu_path("empty.npz"), &r, NULL, err, sizeof err);
    T_CHECK(st == 0 && r.count == 0 && !r.single, "empty bundle: %s", err);
    if (!st) fr_bundle_free(&r);
}

static void test_hostile(void)
{
    unsigned char good[256], bad[256];
    double d[4] = {1, 2, 3, 4};
    size_t ng = tu_npy(good, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", d, 32);
    size_t nb = tu_npy(bad, "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", d, 32);
    unsigned char junk[200];
    memset(junk, 'x', sizeof junk);

    member m1[] = {{"q.npy", good, ng, 0}, {"notes.txt", junk, 10, 0}};
    tu_expect_fail("non-npy member", make_zip("a.npz", m1, 2), NULL, FR_EINPUT,
                   "member 'notes.txt' is not a .npy");
    member m2[] = {{"q.npy", junk, sizeof junk, 1}};
    tu_expect_fail("garbage member", make_zip("b.npz", m2, 1), NULL, FR_EINPUT,
                   "b.npz:q.npy: not a .npy file (bad magic)");
    member m3[] = {{"k.npy", good, ng, 1}, {"q.npy", bad, nb, 1}};
    tu_expect_fail("member shape vs size", make_zip("c.npz", m3, 2), NULL, FR_EINPUT,
                   "c.npz:q.npy: header says shape (5,) of <f8 (40 bytes) but the file holds 32");

    /* a zip bomb that tells the truth: refused from its declared size, before inflating */
    size_t big = (size_t)4 << 20;
    unsigned char *zeros = calloc(1, big + 128);
    size_t nz =
        tu_npy(zeros, "{'descr': '<f8', 'fortran_order': False, 'shape': (524288,), }", NULL, 0);
    member m4[] = {{"q.npy", zeros, nz + big, 1}};
    const char *bomb = make_zip("bomb.npz", m4, 1);
    fr_limits lim = {0, 1 << 20};
    tu_expect_fail("bomb over max_bytes", bomb, &lim, FR_EINPUT,
                   "declares 4194432 bytes uncompressed, over the limit of 1048576");
    /* ... and one that lies: declares a small member, inflates to megabytes; reading stops at
     * the declared size */
    size_t n;
    unsigned char *z = slurp(bomb, &n);
    tu_npy(zeros, "{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }", NULL, 0);
    free(z);
    member m5[] = {{"q.npy", zeros, nz + big, 1}};
    z = slurp(make_zip("liar.npz", m5, 1), &n);
    patch_size(z, n, 128 + 80);
    tu_expect_fail("bomb lying about its size", tu_write("liar.npz", z, n), NULL, FR_EINPUT,
                   "more data than its declared size");
    patch_size(z, n, 0x7fffffff);
    tu_expect_fail("impossible ratio", tu_write("liar2.npz", z, n), NULL, FR_EINPUT,
                   "impossible for deflate");
    free(z);
    free(zeros);

    /* damage */
    member m6[] = {{"q.npy", good, ng, 0}};
    z = slurp(make_zip("crc.npz", m6, 1), &n);
    tu_expect_fail("truncated zip", tu_write("cut.npz", z, n / 2), NULL, FR_EINPUT,
                   "not a valid .npz");
    size_t at = 0;
    for (size_t i = 0; i + 8 <= n; i++)
        if (memcmp(z + i, &d[2], 8) == 0) at = i;
    T_REQUIRE(at, "data not found in the stored zip");
    z[at] ^= 1;
    tu_expect_fail("CRC error", tu_write("crc.npz", z, n), NULL, FR_EINPUT, "corrupt");
    free(z);
    tu_expect_fail("zip magic then junk", tu_write("j.npz", "PK\x03\x04junkjunkjunk", 16), NULL,
                   FR_EINPUT, "not a valid .npz");
}

int main(void)
{
    tu_init();
    T_RUN(test_roundtrip);
    T_RUN(test_hostile);
    return t_done();
}
