/* safetensors_test.c - the .safetensors reader (values, dtypes, hostile headers) and the
 * streaming member reader: what fr_members_stream delivers, chunk by chunk, is exactly what
 * fr_read reads, for .safetensors, .npy (C and Fortran order, rows longer than a chunk) and
 * .npz, with chunks made of whole rows when a row fits. */
#include "io_internal.h"
#include "io_testutil.h"
#include "test.h"

#include <string.h>

/* 8-byte length + header + data into a file. */
static const char *st_file(const char *name, const char *header, const void *data, size_t dlen)
{
    size_t hl = strlen(header);
    unsigned char *buf = malloc(8 + hl + dlen + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (dlen) memcpy(buf + 8 + hl, data, dlen);
    const char *p = tu_write(name, buf, 8 + hl + dlen);
    free(buf);
    return p;
}

typedef struct {
    double *x;
    int64_t n, chunks, row, ragged;
} sink;

static int collect(void *ctx, const double *x, int64_t count)
{
    sink *s = ctx;
    memcpy(s->x + s->n, x, (size_t)count * sizeof *x);
    s->n += count;
    s->chunks++;
    s->ragged |= s->row > 0 && count % s->row != 0 && s->n != 0;
    return 0;
}

/* Every member streamed equals fr_read's tensor of the same name, bit for bit. */
static void same_as_read(const char *path, int64_t want_chunks_min)
{
    char err[512];
    fr_bundle b;
    fr_members *m;
    T_REQUIRE(fr_read(path, &b, NULL, err, sizeof err) == 0, "%s", err);
    T_REQUIRE(fr_members_open(path, NULL, &m, err, sizeof err) == 0, "%s", err);
    T_CHECK(fr_members_count(m) == b.count, "%d members vs %d", fr_members_count(m), b.count);
    T_CHECK(fr_members_single(m) == b.single, "single");
    int64_t chunks = 0;
    for (int i = 0; i < fr_members_count(m) && i < b.count; i++) {
        const fr_tensor *t = b.single ? &b.tensors[0] : fr_bundle_get(&b, fr_members_name(m, i));
        T_REQUIRE(t, "member %s", fr_members_name(m, i));
        const fr_tensor *sh = fr_members_shape(m, i);
        T_CHECK(sh->ndim == t->ndim && !memcmp(sh->shape, t->shape, sizeof(int64_t) * t->ndim),
                "shape of %s", fr_members_name(m, i));
        int64_t c = fr_tensor_count(t);
        sink s = {malloc((size_t)(c ? c : 1) * sizeof(double)), 0, 0,
                  t->ndim ? t->shape[t->ndim - 1] : 1, 0};
        T_CHECK(fr_members_stream(m, i, collect, &s, err, sizeof err) == 0, "%s", err);
        T_CHECK(s.n == c && tu_same_bits(s.x, t->data, c), "%s: data differs",
                fr_members_name(m, i));
        if (s.row <= (1 << 16)) T_CHECK(!s.ragged, "%s: a chunk split a row", path);
        chunks += s.chunks;
        free(s.x);
    }
    T_CHECK(chunks >= want_chunks_min, "%s: %lld chunks", path, (long long)chunks);
    fr_members_close(m);
    fr_bundle_free(&b);
}

static void test_values_and_dtypes(void)
{
    /* a: F16 [2,2] = 1, -2, 0.5, 65504; b: BF16 [3] = 1, -3, 2^-10; c: I16 [2] = -7, 300;
     * d: BOOL [2]; e: U64 [1] = 2^40; s: F64 scalar */
    unsigned char data[64];
    uint16_t a[4] = {0x3c00, 0xc000, 0x3800, 0x7bff}, bf[3] = {0x3f80, 0xc040, 0x3a80};
    int16_t c[2] = {-7, 300};
    uint8_t d[2] = {0, 1};
    uint64_t e = (uint64_t)1 << 40;
    double s = -2.25;
    size_t o = 0;
    memcpy(data + o, a, 8), o += 8;
    memcpy(data + o, bf, 6), o += 6;
    memcpy(data + o, c, 4), o += 4;
    memcpy(data + o, d, 2), o += 2;
    memcpy(data + o, &e, 8), o += 8;
    memcpy(data + o, &s, 8), o += 8;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[8,14]},"
                    "\"c\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[14,18]},"
                    "\"d\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[18,20]},"
                    "\"e\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[20,28]},"
                    "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[28,36]}}   ";
    const char *p = st_file("v.safetensors", h, data, o);
    fr_bundle b;
    char err[512];
    T_REQUIRE(fr_read(p, &b, NULL, err, sizeof err) == 0, "%s", err);
    T_CHECK(b.count == 6 && !b.single, "count %d", b.count);
    const double wa[4] = {1, -2, 0.5, 65504}, wb[3] = {1, -3, 1.0 / 1024}, wc[2] = {-7, 300},
                 wd[2] = {0, 1};
    T_CHECK(tu_same_bits(fr_bundle_get(&b, "a")->data, wa, 4), "F16");
    T_CHECK(tu_same_bits(fr_bundle_get(&b, "b")->data, wb, 3), "BF16");
    T_CHECK(tu_same_bits(fr_bundle_get(&b, "c")->data, wc, 2), "I16");
    T_CHECK(tu_same_bits(fr_bundle_get(&b, "d")->data, wd, 2), "BOOL");
    T_CHECK(fr_bundle_get(&b, "e")->data[0] == 1099511627776.0, "U64");
    T_CHECK(fr_bundle_get(&b, "s")->ndim == 0 && fr_bundle_get(&b, "s")->data[0] == -2.25, "F64");
    fr_bundle_free(&b);
    same_as_read(p, 6);
}

static void test_streams_equal_reads(void)
{
    unsigned long long seed = 7;
    /* .npy f4 [3, 70000]: rows longer than a chunk */
    int64_t cnt = 3 * 70000;
    float *f = malloc((size_t)cnt * 4);
    for (int64_t i = 0; i < cnt; i++)
        f[i] = (float)t_rand(&seed);
    unsigned char *buf = malloc((size_t)cnt * 4 + 256);
    size_t len = tu_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 70000), }", f,
                        (size_t)cnt * 4);
    same_as_read(tu_write("long.npy", buf, len), 4);
    /* Fortran order, big-endian f8 */
    double g[6] = {1, 2, 3, 4, 5, 6};
    unsigned char be[48];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 8; j++)
            be[i * 8 + j] = ((unsigned char *)&g[i])[7 - j];
    len = tu_npy(buf, "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }", be, 48);
    same_as_read(tu_write("fort.npy", buf, len), 1);
    /* .npz, stored and deflated, with many rows of d = 48 (chunks of whole rows) */
    fr_tensor t = {2, {3000, 48}, malloc(3000 * 48 * sizeof(double)), NULL};
    for (int64_t i = 0; i < 3000 * 48; i++)
        t.data[i] = t_rand(&seed);
    char *names[2] = {"layers.0.q", "x"};
    fr_tensor ts[2] = {t, {1, {5}, g, NULL}};
    fr_bundle b = {2, names, ts, 0};
    char err[512];
    for (int z = 0; z < 2; z++) {
        const char *p = tu_path(z ? "z.npz" : "s.npz");
        T_REQUIRE(fr_write_bundle(p, FR_FMT_NPZ, &b, FR_DTYPE_F4, z, err, sizeof err) == 0, "%s",
                  err);
        same_as_read(p, 4);
    }
    free(t.data);
    free(f);
    free(buf);
}

static void expect_bad(const char *name, const char *header, size_t dlen, const char *msg)
{
    unsigned char zeros[64] = {0};
    const char *p = st_file(name, header, zeros, dlen);
    fr_bundle b;
    fr_members *m;
    char err[512] = "";
    T_CHECK(fr_read(p, &b, NULL, err, sizeof err) == FR_EINPUT && strstr(err, msg), "%s: %s", name,
            err);
    err[0] = '\0';
    T_CHECK(fr_members_open(p, NULL, &m, err, sizeof err) == FR_EINPUT && strstr(err, msg),
            "%s (members): %s", name, err);
}

static void test_hostile_headers(void)
{
    expect_bad("range.st", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,80]}}", 8,
               "run past");
    expect_bad("overlap.st",
               "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap");
    expect_bad("gap.st", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
               "gap");
    expect_bad("dtype.st", "{\"x\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
               "unsupported dtype");
    expect_bad("size.st", "{\"x\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               "make 16 bytes");
    expect_bad("json.st", "{\"x\": [", 0, "not valid JSON");
    expect_bad("dup.st",
               "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
               2, "duplicate");
    expect_bad("huge.st",
               "{\"x\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,8]}}",
               8, "overflows");
    /* 2^62 x 2^62 is whole numbers: its size overflows (it used to be "something other than
     * whole numbers") */
    expect_bad("2^62.st",
               "{\"x\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,4611686018427387904],"
               "\"data_offsets\":[0,8]}}",
               8, "shape [4611686018427387904, 4611686018427387904] overflows");
    expect_bad("half.st", "{\"x\":{\"dtype\":\"F64\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
               "other than whole numbers");
    expect_bad("zero_huge.st",
               "{\"x\":{\"dtype\":\"F64\",\"shape\":[0,9007199254740993],\"data_offsets\":[0,0]}}",
               0, "too large to be read exactly");
    char deep[5000] = "{\"x\":";
    for (int i = 0; i < 1200; i++)
        strcat(deep, "[");
    expect_bad("deep.st", deep, 0, "nested deeper than 1000 levels");
    unsigned char lie[17] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    fr_bundle b;
    char err[512];
    const char *p = tu_write("lie.st", lie, 10);
    T_CHECK(fr_read(p, &b, NULL, err, sizeof err) == FR_EINPUT && strstr(err, "larger than"), "%s",
            err);
}

/* Written .safetensors read back: F64 bit for bit, F32 as the float cast; the header is what
 * the reference implementation expects (8-aligned data, offsets in order). */
static void test_write_roundtrip(void)
{
    double x[12], y[1] = {-2.5};
    for (int i = 0; i < 12; i++)
        x[i] = (i - 5) / 3.0;
    fr_tensor ts[3];
    memset(ts, 0, sizeof ts);
    ts[0].ndim = 2, ts[0].shape[0] = 3, ts[0].shape[1] = 4, ts[0].data = x;
    ts[1].ndim = 0, ts[1].data = y;
    ts[2].ndim = 2, ts[2].shape[0] = 0, ts[2].shape[1] = 5, ts[2].data = y;
    char *names[3] = {"q\"uote", "s", "empty"};
    fr_bundle b = {3, names, ts, 0};
    for (int dt = 0; dt < 2; dt++) {
        fr_dtype dtype = dt ? FR_DTYPE_F4 : FR_DTYPE_F8;
        const char *p = tu_path("w.safetensors");
        char err[512];
        int st = fr_write_bundle(p, FR_FMT_UNKNOWN, &b, dtype, 0, err, sizeof err);
        T_REQUIRE(st == 0, "write: %s", err);
        unsigned char head[8];
        FILE *f = fopen(p, "rb");
        T_REQUIRE(f && fread(head, 1, 8, f) == 8, "read");
        fclose(f);
        T_CHECK(head[0] % 8 == 0 && head[1] == 0 && head[2] == 0, "header length %d unaligned",
                head[0]);
        fr_bundle r;
        st = fr_read(p, &r, NULL, err, sizeof err);
        T_REQUIRE(st == 0, "read back: %s", err);
        T_CHECK(r.count == 3 && !strcmp(r.names[0], "q\"uote") && r.tensors[0].ndim == 2 &&
                    r.tensors[0].shape[1] == 4 && r.tensors[1].ndim == 0 &&
                    r.tensors[2].shape[1] == 5 && fr_tensor_count(&r.tensors[2]) == 0,
                "names or shapes");
        for (int i = 0; i < 12 && r.count == 3; i++) {
            double want = dt ? (double)(float)x[i] : x[i];
            T_CHECK(memcmp(&want, &r.tensors[0].data[i], 8) == 0, "f%d entry %d", (int)dtype, i);
        }
        fr_bundle_free(&r);
    }
    char *bad[1] = {"__metadata__"};
    fr_bundle m = {1, bad, ts, 0};
    char err[512];
    int st = fr_write_bundle(tu_path("m.safetensors"), FR_FMT_UNKNOWN, &m, FR_DTYPE_F8, 0, err,
                             sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "reserved"), "__metadata__: %d %s", st, err);
}

int main(void)
{
    tu_init();
    T_RUN(test_values_and_dtypes);
    T_RUN(test_streams_equal_reads);
    T_RUN(test_hostile_headers);
    T_RUN(test_write_roundtrip);
    return t_done();
}
