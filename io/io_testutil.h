/* io_testutil.h - what the io tests share: a private temporary directory, writing hostile bytes
 * to a file there, and checking that reading it fails with the right status and message. */
#ifndef FR_IO_TESTUTIL_H
#define FR_IO_TESTUTIL_H

#include "fr_io.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char tu_dir[256];

static inline void tu_rmdir(void)
{
    DIR *d = opendir(tu_dir);
    if (d) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", tu_dir, e->d_name);
                if (unlink(p) != 0) { /* a subdirectory made by a test */
                    rmdir(p);
                }
            }
        closedir(d);
    }
    rmdir(tu_dir);
}

static inline void tu_init(void)
{
    (void)t_rand;
    const char *td = getenv("TMPDIR");
    snprintf(tu_dir, sizeof tu_dir, "%s/frio_test.XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(tu_dir)) {
        perror("mkdtemp");
        exit(1);
    }
    atexit(tu_rmdir);
}

static inline const char *tu_path(const char *name)
{
    static char p[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tu_dir, name);
    return p[k];
}

static inline const char *tu_write(const char *name, const void *bytes, size_t n)
{
    const char *p = tu_path(name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n) {
        perror(p);
        exit(1);
    }
    fclose(f);
    return p;
}

/* A .npy with the given dict and data bytes (version 1.0 framing, padded to 64). */
static inline size_t tu_npy(unsigned char *out, const char *dict, const void *data, size_t dlen)
{
    size_t n = strlen(dict), total = (10 + n + 1 + 63) / 64 * 64, hlen = total - 10;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (unsigned char)(hlen & 0xff);
    out[9] = (unsigned char)(hlen >> 8);
    memcpy(out + 10, dict, n);
    memset(out + 10 + n, ' ', hlen - n - 1);
    out[total - 1] = '\n';
    if (dlen) memcpy(out + total, data, dlen);
    return total + dlen;
}

/* Reading path fails with status and a message holding want. */
static inline void tu_expect_fail(const char *what, const char *path, const fr_limits *lim,
                                  int status, const char *want)
{
    fr_bundle b;
    char err[512] = "";
    int st = fr_read(path, &b, lim, err, sizeof err);
    T_CHECK(st == status && strstr(err, want) != NULL,
            "%s: status %d (want %d), message \"%s\" (want \"...%s...\")", what, st, status, err,
            want);
    T_CHECK(b.count == 0 && b.names == NULL && b.tensors == NULL, "%s: bundle not emptied", what);
    fr_bundle_free(&b);
}

static inline int tu_same_bits(const double *a, const double *b, int64_t n)
{
    return n == 0 || memcmp(a, b, (size_t)n * sizeof(double)) == 0;
}

/* How many entries of the test directory (other than . and ..) there are. */
static inline int tu_count_files(void)
{
    DIR *d = opendir(tu_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

#endif
