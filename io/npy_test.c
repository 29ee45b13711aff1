/* npy_test.c - the .npy reader and writer: header parsing variants, round trips (f8 bit-exact,
 * f4 equal to the float cast), atomic output, and a table of hostile files that must fail with
 * status 3 and a precise message, without a crash or a huge allocation. */
#include "io_internal.h"
#include "io_testutil.h"

#include <math.h>
#include <sys/stat.h>

static void fill(fr_tensor *t, int ndim, const int64_t *shape, unsigned long long seed)
{
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    int64_t n = fr_tensor_count(t);
    t->data = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        t->data[i] = t_rand(&seed) * 1e3;
    /* values a sloppy writer would lose */
    double special[] = {0.1, -0.0, 5e-324, 1.7976931348623157e308, 1.0 / 3, 16777217.0};
    for (int64_t i = 0; i < n && i < 6; i++)
        t->data[i] = special[i];
}

static void test_roundtrip_f8_f4(void)
{
    const int64_t shapes[][4] = {{0}, {7}, {3, 5}, {2, 3, 4}, {0, 3}, {1, 1, 1, 1}};
    const int ndims[] = {0, 1, 2, 3, 2, 4};
    for (int s = 0; s < 6; s++) {
        fr_tensor t;
        fill(&t, ndims[s], shapes[s], 11 + s);
        int64_t n = fr_tensor_count(&t);
        for (int dt = 0; dt < 2; dt++) {
            fr_dtype dtype = dt ? FR_DTYPE_F4 : FR_DTYPE_F8;
            char err[512];
            const char *p = tu_path("rt.npy");
            int st = fr_write_tensor(p, FR_FMT_UNKNOWN, &t, dtype, err, sizeof err);
            T_REQUIRE(st == 0, "write: %s", err);
            fr_bundle b;
            st = fr_read(p, &b, NULL, err, sizeof err);
            T_REQUIRE(st == 0, "read back: %s", err);
            T_CHECK(b.single && b.count == 1 && b.tensors[0].ndim == t.ndim, "ndim %d",
                    b.tensors[0].ndim);
            T_CHECK(memcmp(b.tensors[0].shape, t.shape, (size_t)t.ndim * 8) == 0, "shape");
            int64_t bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++) {
                double want = dtype == FR_DTYPE_F4 ? (double)(float)t.data[i] : t.data[i];
                if (memcmp(&want, &b.tensors[0].data[i], 8) != 0) bad = i;
            }
            T_CHECK(bad < 0, "shape %d dtype f%d: entry %lld differs", s, (int)dtype,
                    (long long)bad);
            fr_bundle_free(&b);
        }
        fr_tensor_free(&t);
    }
}

/* numpy's exact header bytes for a (3, 4) float64 array: the writer must match, so that every
 * numpy version (and strict third-party readers) accepts the file. */
static void test_header_matches_numpy(void)
{
    fr_tensor t = {2, {3, 4}, NULL, NULL};
    unsigned char h[256];
    size_t n = io_npy_header(&t, FR_DTYPE_F8, h, sizeof h);
    const char *want = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }";
    T_REQUIRE(n == 128, "header length %zu", n);
    T_CHECK(memcmp(h, "\x93NUMPY\x01\x00\x76\x00", 10) == 0, "preamble");
    T_CHECK(memcmp(h + 10, want, strlen(want)) == 0, "dict: %.60s", h + 10);
    T_CHECK(h[127] == '\n' && h[126] == ' ', "padding");
    fr_tensor s = {1, {5}, NULL, NULL};
    n = io_npy_header(&s, FR_DTYPE_F4, h, sizeof h);
    T_CHECK(n == 128 && strstr((char *)h + 10, "'descr': '<f4'") &&
                strstr((char *)h + 10, "'shape': (5,), }"),
            "1-D f4 header: %.70s", h + 10);
    fr_tensor z = {0, {0}, NULL, NULL};
    n = io_npy_header(&z, FR_DTYPE_F8, h, sizeof h);
    T_CHECK(n == 128 && strstr((char *)h + 10, "'shape': (), }"), "0-D header: %.70s", h + 10);
}

/* Dicts numpy never writes but Python would read the same: the parser must not depend on
 * numpy's exact spelling. */
static void test_header_variants(void)
{
    const double v[6] = {1, 2, 3, 4, 5, 6};
    const char *dicts[] = {
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
        "{\"shape\": (2,3), \"fortran_order\": False, \"descr\": \"<f8\"}",
        "{ 'fortran_order' : False ,'descr':'=f8','shape':( 2 , 3 , ) , }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L)}",
    };
    for (int i = 0; i < 4; i++) {
        unsigned char buf[512];
        size_t n = tu_npy(buf, dicts[i], v, sizeof v);
        const char *p = tu_write("variant.npy", buf, n);
        fr_bundle b;
        char err[512];
        int st = fr_read(p, &b, NULL, err, sizeof err);
        T_CHECK(st == 0, "variant %d: %s", i, err);
        if (!st)
            T_CHECK(b.tensors[0].ndim == 2 && b.tensors[0].shape[0] == 2 &&
                        b.tensors[0].shape[1] == 3 && tu_same_bits(b.tensors[0].data, v, 6),
                    "variant %d: wrong tensor", i);
        fr_bundle_free(&b);
    }
    /* Fortran order: the file holds columns; the reader returns rows. */
    unsigned char buf[512];
    const double cols[6] = {1, 4, 2, 5, 3, 6};
    size_t n = tu_npy(buf, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", cols,
                      sizeof cols);
    fr_bundle b;
    char err[512];
    int st = fr_read(tu_write("f.npy", buf, n), &b, NULL, err, sizeof err);
    T_CHECK(st == 0 && tu_same_bits(b.tensors[0].data, v, 6), "fortran order: %s", err);
    fr_bundle_free(&b);
}

static void test_hostile(void)
{
    unsigned char buf[4096];
    double d[128] = {0};
    size_t n;
    struct {
        const char *what, *dict;
        size_t dlen;
        const char *want;
    } table[] = {
        {"shape vs file size",
         "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 8), }", 1024,
         "header says shape (4294967296, 8) of <f8 (274877906944 bytes) but the file holds 1024 "
         "bytes of data"},
        {"one byte short", "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 23,
         "(24 bytes) but the file holds 23"},
        {"one byte long", "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 25,
         "(24 bytes) but the file holds 25"},
        {"dimension overflows int64",
         "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999, 1), }", 8,
         "overflows int64"},
        {"product overflows int64",
         "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }", 8,
         "size overflows"},
        {"bytes overflow int64",
         "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }", 8,
         "size overflows"},
        {"complex dtype", "{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", 16,
         "unsupported dtype '<c16'"},
        {"object dtype", "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", 8,
         "unsupported dtype '|O'"},
        {"multibyte without order", "{'descr': '|f8', 'fortran_order': False, 'shape': (1,), }", 8,
         "unsupported dtype '|f8'"},
        {"structured dtype",
         "{'descr': [('a', '<f8'), ('b', [('c', '<i4')])], 'fortran_order': False, 'shape': (1,), "
         "}",
         8, "structured dtype [('a', '<f8'), ('b', [('c', '<i4')])] is not supported"},
        {"missing key", "{'descr': '<f8', 'shape': (1,), }", 8, "lacks 'fortran_order'"},
        {"extra key", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", 8,
         "unexpected or repeated key 'x'"},
        {"repeated key", "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}",
         8, "repeated key 'descr'"},
        {"(n) is not a tuple", "{'descr': '<f8', 'fortran_order': False, 'shape': (1), }", 8,
         "not a tuple"},
        {"negative dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", 8,
         "non-negative integers"},
        {"float dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (1.5,), }", 8,
         "malformed shape"},
        {"fortran_order 1", "{'descr': '<f8', 'fortran_order': 1, 'shape': (1,), }", 8,
         "True or False"},
        {"not a dict", "['<f8', False, (1,)]", 8, "not a dict"},
        {"text after dict", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } x", 8,
         "text after the dict"},
        {"unterminated dict", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,)", 8,
         "malformed npy header"},
        {"33 dimensions",
         "{'descr': '<f8', 'fortran_order': False, 'shape': "
         "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1), }",
         8, "more than 32 dimensions"},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        n = tu_npy(buf, table[i].dict, d, table[i].dlen);
        tu_expect_fail(table[i].what, tu_write("h.npy", buf, n), NULL, FR_EINPUT, table[i].want);
    }

    /* framing */
    tu_expect_fail("empty file", tu_write("e.npy", "", 0), NULL, FR_EINPUT, "empty file");
    tu_expect_fail("bad magic", tu_write("m.npy", "hello world, not numpy", 22), NULL, FR_EINPUT,
                   "not a .npy, .npz or JSON file");
    tu_expect_fail("magic only", tu_write("t.npy", "\x93NUMPY\x01", 7), NULL, FR_EINPUT,
                   "truncated npy file");
    n = tu_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", d, 8);
    tu_expect_fail("header cut", tu_write("t.npy", buf, 40), NULL, FR_EINPUT, "truncated npy");
    buf[6] = 4;
    tu_expect_fail("version 4", tu_write("v.npy", buf, n), NULL, FR_EINPUT,
                   "unsupported npy version 4.0");
    buf[6] = 2; /* version 2: a 4-byte header length, here 2^31 */
    buf[8] = 0, buf[9] = 0, buf[10] = 0, buf[11] = 0x80;
    tu_expect_fail("huge header", tu_write("v.npy", buf, n), NULL, FR_EINPUT, "too long");
    n = tu_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", d, 8);
    buf[20] = '\0';
    tu_expect_fail("NUL in header", tu_write("z.npy", buf, n), NULL, FR_EINPUT, "NUL");

    /* limits: refused before allocation */
    n = tu_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (11,), }", d, 88);
    fr_limits lim = {10, 0};
    tu_expect_fail("over max_elements", tu_write("l.npy", buf, n), &lim, FR_EINPUT,
                   "11 elements, over the limit of 10");
    lim = (fr_limits){0, 80};
    tu_expect_fail("over max_bytes", tu_write("l.npy", buf, n), &lim, FR_EINPUT,
                   "88 bytes of data, over the limit of 80");
    /* a device or pipe of garbage is refused from its first bytes, not buffered first */
    tu_expect_fail("endless zeros", "/dev/zero", NULL, FR_EINPUT,
                   "not a .npy, .npz or JSON file, nor .safetensors (it starts with "
                   "\"\\x00\\x00");

    /* the file system */
    tu_expect_fail("missing file", tu_path("no-such.npy"), NULL, FR_EINPUT,
                   "No such file or directory");
    tu_expect_fail("directory", tu_dir, NULL, FR_EINPUT, "is a directory");
}

/* A failed write leaves an existing target as it was and no temporary file behind. */
static void test_atomic_write(void)
{
    const char *p = tu_path("keep.json");
    tu_write("keep.json", "[1]", 3);
    int before = tu_count_files();
    double bad[2] = {1, NAN};
    fr_tensor t = {1, {2}, bad, NULL};
    char err[512];
    int st = fr_write_tensor(p, FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "entry 1 is NaN"), "NaN to JSON: %d %s", st, err);
    FILE *f = fopen(p, "rb");
    char got[8] = "";
    T_REQUIRE(f, "target vanished");
    size_t k = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    T_CHECK(k == 3 && memcmp(got, "[1]", 3) == 0, "target changed: %s", got);
    T_CHECK(tu_count_files() == before, "temporary file left behind");

    st = fr_write_tensor(tu_path("no-such-dir/x.npy"), FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err,
                         sizeof err);
    T_CHECK(st == FR_ENOMEM && strstr(err, "no-such-dir/x.npy"), "missing dir: %d %s", st, err);
    st = fr_write_tensor(tu_path("x.txt"), FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
    T_CHECK(st == FR_EUSAGE && strstr(err, "unknown output format"), "x.txt: %d %s", st, err);

    /* the new file gets ordinary permissions, not mkstemp's 0600 */
    mode_t um = umask(022);
    double ok[2] = {1, 2};
    t.data = ok;
    st = fr_write_tensor(tu_path("perm.npy"), FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
    struct stat sb;
    T_CHECK(st == 0 && stat(tu_path("perm.npy"), &sb) == 0 && (sb.st_mode & 0777) == 0644,
            "mode %o", (unsigned)(sb.st_mode & 0777));
    umask(um);
    /* a directory in the target's place is refused and stays */
    mkdir(tu_path("adir.npy"), 0755);
    st = fr_write_tensor(tu_path("adir.npy"), FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
    T_CHECK(st != 0 && stat(tu_path("adir.npy"), &sb) == 0 && S_ISDIR(sb.st_mode),
            "directory target: %d %s", st, err);
}

int main(void)
{
    tu_init();
    T_RUN(test_roundtrip_f8_f4);
    T_RUN(test_header_matches_numpy);
    T_RUN(test_header_variants);
    T_RUN(test_hostile);
    T_RUN(test_atomic_write);
    return t_done();
}
