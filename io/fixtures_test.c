/* fixtures_test.c - every file numpy wrote into testdata/ (scripts/make_fixtures.py) reads back
 * with the shape and the exact float64 values numpy itself gives (testdata/expected.json,
 * parsed here with cJSON directly, not with the reader under test). Run from the repository
 * root, or set FR_TESTDATA. */
#include "fr_io.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <string.h>

static char dir[512] = "testdata";

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

/* Same value, bit for bit (NaN never appears in the fixtures). */
static int same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static void test_fixtures(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    char *text = slurp(path);
    T_REQUIRE(text, "cannot read %s (run from the repository root)", path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    T_REQUIRE(cJSON_IsObject(root), "expected.json does not parse");
    int checked = 0;
    for (cJSON *e = root->child; e; e = e->next) {
        char file[256], member[256] = "";
        const char *colon = strchr(e->string, ':');
        snprintf(file, sizeof file, "%.*s", colon ? (int)(colon - e->string) : 255, e->string);
        if (colon) snprintf(member, sizeof member, "%s", colon + 1);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        fr_bundle b;
        char err[512];
        int st = fr_read(path, &b, NULL, err, sizeof err);
        T_CHECK(st == FR_OK, "%s: status %d: %s", e->string, st, err);
        if (st) continue;
        T_CHECK(b.single == !colon, "%s: single is %d", e->string, b.single);
        const fr_tensor *t = fr_bundle_get(&b, member);
        T_CHECK(t, "%s: no member '%s'", e->string, member);
        const cJSON *shape = cJSON_GetObjectItem(e, "shape"),
                    *data = cJSON_GetObjectItem(e, "data");
        if (t) {
            int nd = cJSON_GetArraySize(shape), ok = t->ndim == nd;
            for (int i = 0; ok && i < nd; i++)
                ok = t->shape[i] == (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
            T_CHECK(ok, "%s: shape differs (ndim %d vs %d)", e->string, t->ndim, nd);
            int64_t n = fr_tensor_count(t), bad = -1;
            T_CHECK(ok && n == cJSON_GetArraySize(data), "%s: %lld values", e->string,
                    (long long)n);
            int64_t i = 0;
            for (const cJSON *x = data->child; ok && x && i < n; x = x->next, i++)
                if (!same(t->data[i], x->valuedouble) && bad < 0) bad = i;
            T_CHECK(bad < 0, "%s: value %lld is %.17g, numpy says %.17g", e->string, (long long)bad,
                    bad >= 0 ? t->data[bad] : 0,
                    bad >= 0 ? cJSON_GetArrayItem(data, (int)bad)->valuedouble : 0);
            checked++;
        }
        fr_bundle_free(&b);
    }
    cJSON_Delete(root);
    T_CHECK(checked >= 40, "only %d fixtures checked", checked);
}

/* Each fixture piped through the in-memory path gives the same as the file path: the stdin
 * reader is the file reader on a buffer, so a pipe must not change a single bit. */
static void test_fixtures_via_pipe(void)
{
    const char *files[] = {"c3d.npy",    "fortran3d_be_f4.npy", "qkv.npz",   "qkv_compressed.npz",
                           "dtypes.npz", "bundle.json",         "scalar.npy"};
    for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
        char path[1024], cmd[1100], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        snprintf(cmd, sizeof cmd, "/bin/cat %s", path);
        fr_bundle a, b;
        int sa = fr_read(path, &a, NULL, err, sizeof err);
        T_CHECK(sa == 0, "%s", err);
        /* A FIFO path takes the streaming (non-regular file) route. */
        FILE *p = popen(cmd, "r");
        T_REQUIRE(p, "popen");
        char dev[64];
        snprintf(dev, sizeof dev, "/dev/fd/%d", fileno(p));
        int sb = fr_read(dev, &b, NULL, err, sizeof err);
        pclose(p);
        T_CHECK(sb == 0, "%s via a pipe: %s", files[k], err);
        if (!sa && !sb) {
            T_CHECK(a.count == b.count && a.single == b.single, "%s: bundles differ", files[k]);
            for (int i = 0; i < a.count && i < b.count; i++) {
                int64_t n = fr_tensor_count(&a.tensors[i]);
                T_CHECK(strcmp(a.names[i], b.names[i]) == 0 &&
                            n == fr_tensor_count(&b.tensors[i]) &&
                            memcmp(a.tensors[i].data, b.tensors[i].data, (size_t)n * 8) == 0,
                        "%s: member %d differs", files[k], i);
            }
        }
        fr_bundle_free(&a);
        fr_bundle_free(&b);
    }
}

int main(void)
{
    (void)t_rand;
    const char *d = getenv("FR_TESTDATA");
    if (d) snprintf(dir, sizeof dir, "%s", d);
    T_RUN(test_fixtures);
    T_RUN(test_fixtures_via_pipe);
    return t_done();
}
