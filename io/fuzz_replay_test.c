/* fuzz_replay_test.c - every file under testdata/fuzz/NAME/ (seed corpora, and every input a
 * fuzzer ever crashed on) through the fuzz target NAME's entry point, in the normal build and
 * under ASan+UBSan (`make test SAN=1`). The targets abort() on a broken promise (a tensor
 * outside the limits, an error without a message, an unexpected status), and a crash or a
 * sanitizer report fails this program; so a crash once found and fixed stays fixed. */
#define FUZZ_REPLAY
#include "../cmd/args_fuzz.c"
#include "json_fuzz.c"
#include "members_fuzz.c"
#include "npy_fuzz.c"
#include "npz_fuzz.c"
#include "read_fuzz.c"
#include "safetensors_fuzz.c"
#include "stream_fuzz.c"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "test.h"

static const struct {
    const char *name;
    int (*fn)(const unsigned char *, size_t);
} targets[] = {
    {"npy", fuzz_npy},
    {"npz", fuzz_npz},
    {"json", fuzz_json},
    {"read", fuzz_read},
    {"safetensors", fuzz_safetensors},
    {"members", fuzz_members},
    {"stream", fuzz_stream},
    {"args", fuzz_args},
};

static char root[4096];

/* testdata/fuzz from the repository root (where make test runs), else next to this file. */
static void find_root(void)
{
    struct stat sb;
    snprintf(root, sizeof root, "testdata/fuzz");
    if (stat(root, &sb) == 0) return;
    const char *slash = strrchr(__FILE__, '/');
    snprintf(root, sizeof root, "%.*s/../testdata/fuzz", slash ? (int)(slash - __FILE__) : 1,
             slash ? __FILE__ : ".");
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int cur;

static void test_replay(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", root, targets[cur].name);
    DIR *d = opendir(dir);
    T_REQUIRE(d, "no corpus %s", dir);
    int files = 0, accepted = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[4500];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        unsigned char *buf = slurp(path, &len);
        T_CHECK(buf, "cannot read %s", path);
        if (!buf) continue;
        printf("# %s\n", path); /* the last one named is the culprit of a crash */
        fflush(stdout);
        int st = targets[cur].fn(buf, len);
        T_CHECK(st >= 0 && st <= 4, "%s: status %d", path, st);
        files++;
        accepted += st == 0;
        free(buf);
    }
    closedir(d);
    /* The seeds include valid inputs: a target that rejects everything is broken. */
    T_CHECK(files > 0 && accepted > 0, "%s: %d files, %d accepted", dir, files, accepted);
    printf("# %s: %d files, %d accepted\n", dir, files, accepted);
}

int main(void)
{
    (void)t_rand;
    find_root();
    for (cur = 0; cur < (int)(sizeof targets / sizeof targets[0]); cur++) {
        char name[64];
        snprintf(name, sizeof name, "replay_%s", targets[cur].name);
        t_run(name, test_replay);
    }
    return t_done();
}
