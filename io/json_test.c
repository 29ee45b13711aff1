/* json_test.c - the JSON reader and writer: nested and shape/data tensors, bundles, the
 * tensor-or-bundle decision, bit-exact number round trips, and malformed input. */
#include "io_testutil.h"

#include <math.h>

static int read_text(const char *text, fr_bundle *b, char *err, size_t errlen)
{
    return fr_read(tu_write("in.json", text, strlen(text)), b, NULL, err, errlen);
}

static void test_forms(void)
{
    struct {
        const char *text;
        int single, count, ndim;
        int64_t shape0, shape1;
        double first, last;
    } table[] = {
        {"[[1, 2], [3, 4.5]]", 1, 1, 2, 2, 2, 1, 4.5},
        {" \n\t[1e-3]", 1, 1, 1, 1, -1, 1e-3, 1e-3},
        {"[]", 1, 1, 1, 0, -1, 0, 0},
        {"[[], []]", 1, 1, 2, 2, 0, 0, 0},
        {"{\"shape\": [2, 3], \"data\": [1, 2, 3, 4, 5, -6]}", 1, 1, 2, 2, 3, 1, -6},
        {"{\"data\": [7], \"shape\": []}", 1, 1, 0, -1, -1, 7, 7},
        {"{\"q\": [[1, 2]], \"k\": {\"shape\": [1, 2], \"data\": [3, 4]}, \"t\": 2.5}", 0, 3, 2, 1,
         2, 1, 2},
        /* three keys: a bundle, even though two of them are shape and data */
        {"{\"shape\": [1], \"data\": [2], \"x\": [3]}", 0, 3, 1, 1, -1, 1, 1},
        {"{}", 0, 0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        fr_bundle b;
        char err[512];
        int st = read_text(table[i].text, &b, err, sizeof err);
        T_CHECK(st == 0, "%s: %s", table[i].text, err);
        if (st) continue;
        T_CHECK(b.single == table[i].single && b.count == table[i].count, "%s: single %d count %d",
                table[i].text, b.single, b.count);
        if (b.count) {
            const fr_tensor *t = &b.tensors[0];
            int64_t n = fr_tensor_count(t);
            T_CHECK(t->ndim == table[i].ndim, "%s: ndim %d", table[i].text, t->ndim);
            if (t->ndim > 0) T_CHECK(t->shape[0] == table[i].shape0, "%s: shape0", table[i].text);
            if (t->ndim > 1) T_CHECK(t->shape[1] == table[i].shape1, "%s: shape1", table[i].text);
            if (n)
                T_CHECK(t->data[0] == table[i].first && t->data[n - 1] == table[i].last,
                        "%s: values %g..%g", table[i].text, t->data[0], t->data[n - 1]);
        }
        fr_bundle_free(&b);
    }
}

static void test_hostile(void)
{
    struct {
        const char *text, *want;
    } table[] = {
        {"[[1, 2], [3]]", "ragged nested arrays (length 1 at depth 1, expected 2)"},
        {"[[1, 2], 3]", "ragged or non-numeric"},
        {"[1, [2]]", "ragged nested arrays (an array where entry 1"},
        {"[1, \"2\"]", "entry 1 is not a number"},
        {"[true]", "entry 0 is not a number"},
        {"[null]", "entry 0 is not a number"},
        {"[1e999]", "out of the range of a double"},
        {"[1, 2", "invalid JSON"},
        {"[1] [2]", "text after the JSON value"},
        {"[1, NaN]", "invalid JSON"},
        {"{\"shape\": [2, 2], \"data\": [1, 2, 3]}", "says 4 elements but \"data\" holds 3"},
        {"{\"shape\": [-1], \"data\": []}", "non-negative integers"},
        {"{\"shape\": [1.5], \"data\": [1]}", "non-negative integers"},
        {"{\"shape\": 2, \"data\": [1, 2]}", "\"shape\" is not an array"},
        {"{\"shape\": [2], \"data\": [[1], [2]]}", "entry 0 is not a number"},
        {"{\"shape\": [4294967296, 4294967296, 4], \"data\": []}", "overflows"},
        {"{\"q\": \"abc\"}", "q: not a tensor"},
        {"{\"q\": [1], \"q\": [2]}", "duplicate member 'q'"},
        {"{\"q\": [[1], [2, 3]]}", "h.json:q: ragged"},
        {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
         "more than 32 dimensions"},
        {"  ", "not a .npy, .npz or JSON"},
        {"\"text\"", "not a .npy, .npz or JSON"},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        tu_expect_fail(table[i].text, tu_write("h.json", table[i].text, strlen(table[i].text)),
                       NULL, FR_EINPUT, table[i].want);
    /* 100k-deep nesting: the parser's limit is named (it was "invalid JSON (near byte 1000)") */
    static char deep[200001];
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    tu_expect_fail("100k deep", tu_write("deep.json", deep, 200000), NULL, FR_EINPUT,
                   "invalid JSON: nested deeper than 1000 levels (the JSON parser's limit");
    fr_limits lim = {5, 0};
    tu_expect_fail("over max_elements", tu_write("l.json", "[1,2,3,4,5,6]", 13), &lim, FR_EINPUT,
                   "6 elements, over the limit of 5");
}

/* Writing then reading gives the same bits, for numbers that need all 17 digits, the extremes,
 * subnormals and -0; every shape form (nested, 0-D and empty as shape/data); bundles with
 * names that need escaping. */
static void test_roundtrip(void)
{
    unsigned long long seed = 3;
    double x[24];
    for (int i = 0; i < 24; i++)
        x[i] = t_rand(&seed) * pow(10, (i % 7) * 50 - 150);
    double special[] = {0.1,
                        -0.0,
                        5e-324,
                        1.7976931348623157e308,
                        1.0 / 3,
                        2.2250738585072014e-308,
                        9007199254740993.0,
                        123456789012345678.0};
    memcpy(x, special, sizeof special);
    fr_tensor ts[] = {{3, {2, 3, 4}, x, NULL},
                      {1, {24}, x, NULL},
                      {0, {0}, x, NULL},
                      {2, {0, 5}, x, NULL},
                      {2, {4, 6}, x, NULL}};
    char err[512];
    for (int k = 0; k < 5; k++) {
        const char *p = tu_path("rt.json");
        int st = fr_write_tensor(p, FR_FMT_UNKNOWN, &ts[k], FR_DTYPE_F8, err, sizeof err);
        T_REQUIRE(st == 0, "write %d: %s", k, err);
        fr_bundle b;
        st = fr_read(p, &b, NULL, err, sizeof err);
        T_REQUIRE(st == 0, "read %d: %s", k, err);
        const fr_tensor *t = &b.tensors[0];
        T_CHECK(b.single && t->ndim == ts[k].ndim &&
                    memcmp(t->shape, ts[k].shape, (size_t)t->ndim * 8) == 0 &&
                    tu_same_bits(t->data, x, fr_tensor_count(t)),
                "tensor %d does not round-trip", k);
        fr_bundle_free(&b);
    }
    fr_bundle bun;
    memset(&bun, 0, sizeof bun);
    const char *names[] = {"q", "we\"ird\\name\n", "scalar"};
    for (int m = 0; m < 3; m++) {
        fr_tensor t = ts[m == 2 ? 2 : m];
        double *c = malloc(24 * 8);
        memcpy(c, x, 24 * 8);
        t.data = c;
        T_REQUIRE(fr_bundle_add(&bun, names[m], &t, err, sizeof err) == 0, "%s", err);
    }
    const char *p = tu_path("bundle.json");
    int st = fr_write_bundle(p, FR_FMT_UNKNOWN, &bun, FR_DTYPE_F8, 0, err, sizeof err);
    T_REQUIRE(st == 0, "bundle write: %s", err);
    fr_bundle r;
    st = fr_read(p, &r, NULL, err, sizeof err);
    T_REQUIRE(st == 0, "bundle read: %s", err);
    T_CHECK(!r.single && r.count == 3, "count %d", r.count);
    for (int m = 0; m < 3; m++) {
        const fr_tensor *t = fr_bundle_get(&r, names[m]);
        T_CHECK(t && t->ndim == bun.tensors[m].ndim && tu_same_bits(t->data, x, fr_tensor_count(t)),
                "member %d", m);
    }
    fr_bundle_free(&r);
    fr_bundle_free(&bun);

    /* a bundle of exactly shape and data would read back as one tensor: refused */
    double v[2] = {1, 2};
    fr_bundle sd;
    memset(&sd, 0, sizeof sd);
    for (int m = 0; m < 2; m++) {
        fr_tensor t = {1, {2}, malloc(16), NULL};
        memcpy(t.data, v, 16);
        fr_bundle_add(&sd, m ? "data" : "shape", &t, err, sizeof err);
    }
    st = fr_write_bundle(tu_path("sd.json"), FR_FMT_UNKNOWN, &sd, FR_DTYPE_F8, 0, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "would read back as one tensor"), "%d %s", st, err);
    fr_bundle_free(&sd);
    /* infinities have no JSON spelling */
    double inf[2] = {1, -INFINITY};
    fr_tensor ti = {1, {2}, inf, NULL};
    st = fr_write_tensor(tu_path("inf.json"), FR_FMT_UNKNOWN, &ti, FR_DTYPE_F8, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "entry 1 is infinite"), "%d %s", st, err);
}

/* fr_format_double: every finite double reads back exactly, in the fewest digits that do
 * (a linear search from 1 digit is the reference); the old writer started at 15 digits and
 * printed 5e-324 as 4.94065645841247e-324. */
static void test_shortest_digits(void)
{
    static const struct {
        double x;
        const char *want;
    } fixed[] = {{0.1, "0.1"},        {5e-324, "5e-324"},  {1e23, "1e+23"},
                 {-0.0, "-0.0"},      {0.0, "0"},          {1.0, "1"},
                 {NAN, "null"},       {-INFINITY, "null"}, {1.0 / 3, "0.3333333333333333"},
                 {2.5e-7, "2.5e-07"}, {123456.0, "123456"}};
    char buf[FR_DOUBLE_BUF];
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        int n = fr_format_double(buf, sizeof buf, fixed[i].x);
        T_CHECK(strcmp(buf, fixed[i].want) == 0 && n == (int)strlen(buf), "%.17g: \"%s\" (want %s)",
                fixed[i].x, buf, fixed[i].want);
    }
    unsigned long long seed = 99;
    int bad = 0, longer = 0;
    for (int i = 0; i < 30000; i++) {
        uint64_t bits;
        double x;
        if (i % 2) { /* any bit pattern: subnormals, huge exponents */
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            bits = seed;
            memcpy(&x, &bits, 8);
            if (!isfinite(x)) continue;
        } else { /* values computations make */
            x = t_rand(&seed) * pow(10, (i % 40) - 20);
        }
        fr_format_double(buf, sizeof buf, x);
        if (strtod(buf, NULL) != x || (x == 0 && signbit(x) != signbit(strtod(buf, NULL)))) bad++;
        char ref[40];
        int p = 1;
        for (; p < 17; p++) {
            snprintf(ref, sizeof ref, "%.*g", p, x);
            if (strtod(ref, NULL) == x) break;
        }
        snprintf(ref, sizeof ref, "%.*g", p, x);
        if (x != 0 && strcmp(ref, buf) != 0) longer++;
    }
    T_CHECK(bad == 0, "%d doubles did not read back", bad);
    T_CHECK(longer == 0, "%d doubles not in their shortest form", longer);
    T_CHECK(fr_format_double(buf, 4, 0.125) == 5 && strcmp(buf, "0.1") == 0,
            "truncation as snprintf: %s", buf);
}

int main(void)
{
    tu_init();
    T_RUN(test_forms);
    T_RUN(test_hostile);
    T_RUN(test_roundtrip);
    T_RUN(test_shortest_digits);
    return t_done();
}
