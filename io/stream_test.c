/* stream_test.c - inputs that are not regular files (pipes, devices): every format read
 * through a pipe equals the file read; garbage is refused from its first bytes without the
 * rest being read; a stream longer or shorter than its header says is refused; reading as
 * float32 keeps f4 values and rounds f8 ones, with no double copy. */
#include "io_internal.h"
#include "io_testutil.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

/* A child writing bytes (then, if endless, zeros until the pipe breaks) into a pipe; the path
 * of the pipe's read end. *sent receives how many bytes the child got out, at its exit. */
typedef struct {
    pid_t pid;
    int fd, report[2];
    char path[64];
} feeder;

static void feed(feeder *fd, const void *bytes, size_t n, int64_t zeros)
{
    int p[2];
    if (pipe(p) != 0 || pipe(fd->report) != 0) abort();
    fd->pid = fork();
    if (fd->pid == 0) {
        signal(SIGPIPE, SIG_IGN);
        close(p[0]);
        close(fd->report[0]);
        int64_t sent = 0;
        const char *b = bytes;
        while (n > 0) {
            ssize_t w = write(p[1], b, n);
            if (w <= 0) break;
            b += w, n -= (size_t)w, sent += w;
        }
        static char z[1 << 16];
        while (zeros > 0 && n == 0) {
            ssize_t w = write(p[1], z, zeros < (int64_t)sizeof z ? (size_t)zeros : sizeof z);
            if (w <= 0) break;
            zeros -= w, sent += w;
        }
        if (write(fd->report[1], &sent, sizeof sent) != sizeof sent) _exit(1);
        _exit(0);
    }
    close(p[1]);
    close(fd->report[1]);
    fd->fd = p[0];
    snprintf(fd->path, sizeof fd->path, "/proc/self/fd/%d", p[0]);
}

static int64_t finish(feeder *fd)
{
    close(fd->fd);
    int64_t sent = -1;
    if (read(fd->report[0], &sent, sizeof sent) != sizeof sent) sent = -1;
    close(fd->report[0]);
    waitpid(fd->pid, NULL, 0);
    return sent;
}

static unsigned char *load(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *b = malloc(1 << 20);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static void test_formats_through_a_pipe(void)
{
    const char *dir = getenv("FR_TESTDATA") ? getenv("FR_TESTDATA") : "testdata";
    const char *fixtures[] = {"c3d.npy",     "fortran3d_be_f4.npy", "qkv.npz",
                              "bundle.json", "qkv_compressed.npz",  "dtypes.npz"};
    for (size_t k = 0; k < sizeof fixtures / sizeof *fixtures; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, fixtures[k]);
        size_t n;
        unsigned char *bytes = load(path, &n);
        T_REQUIRE(bytes, "cannot read %s", path);
        fr_bundle want, got;
        char err[512];
        T_REQUIRE(fr_read(path, &want, NULL, err, sizeof err) == 0, "%s", err);
        feeder fd;
        feed(&fd, bytes, n, 0);
        int st = fr_read(fd.path, &got, NULL, err, sizeof err);
        finish(&fd);
        T_CHECK(st == 0, "%s through a pipe: %s", fixtures[k], err);
        int same = !st && got.count == want.count && got.single == want.single;
        for (int i = 0; same && i < want.count; i++)
            same = !strcmp(got.names[i], want.names[i]) &&
                   fr_tensor_count(&got.tensors[i]) == fr_tensor_count(&want.tensors[i]) &&
                   tu_same_bits(got.tensors[i].data, want.tensors[i].data,
                                fr_tensor_count(&want.tensors[i]));
        T_CHECK(same, "%s: the pipe read differs from the file read", fixtures[k]);
        fr_bundle_free(&want);
        fr_bundle_free(&got);
        free(bytes);
    }
    /* .safetensors, written here */
    double x[6] = {1, 2, 3, 4, 5, 6.5};
    fr_tensor t = {2, {2, 3}, x, NULL};
    char *names[1] = {"w"};
    fr_bundle b = {1, names, &t, 0};
    char err[512];
    T_REQUIRE(!fr_write_bundle(tu_path("p.safetensors"), FR_FMT_UNKNOWN, &b, FR_DTYPE_F8, 0, err,
                               sizeof err),
              "%s", err);
    size_t n;
    unsigned char *bytes = load(tu_path("p.safetensors"), &n);
    T_REQUIRE(bytes, "cannot read it back");
    feeder fd;
    feed(&fd, bytes, n, 0);
    fr_bundle got;
    int st = fr_read(fd.path, &got, NULL, err, sizeof err);
    finish(&fd);
    T_CHECK(st == 0 && got.count == 1 && tu_same_bits(got.tensors[0].data, x, 6),
            "safetensors through a pipe: %s", err);
    fr_bundle_free(&got);
    /* one byte more than the header says */
    bytes[n] = 0;
    feed(&fd, bytes, n + 1, 0);
    st = fr_read(fd.path, &got, NULL, err, sizeof err);
    finish(&fd);
    T_CHECK(st == FR_EINPUT && strstr(err, "more data than its header says"), "%d %s", st, err);
    free(bytes);
}

/* 1 GB of zeros: refused after its first bytes; the writer is cut off long before the end
 * (it used to be buffered whole, 1 GB of memory, before the error). */
static void test_garbage_refused_at_once(void)
{
    feeder fd;
    feed(&fd, NULL, 0, (int64_t)1 << 30);
    fr_bundle b;
    char err[512];
    int st = fr_read(fd.path, &b, NULL, err, sizeof err);
    int64_t sent = finish(&fd);
    T_CHECK(st == FR_EINPUT && strstr(err, "not a .npy"), "%d %s", st, err);
    T_CHECK(sent >= 0 && sent < (16 << 20), "the reader took %lld bytes before refusing",
            (long long)sent);
    fr_bundle_free(&b);

    /* a valid .npy header, then endless zeros: refused once the data is read */
    unsigned char head[256];
    size_t n = tu_npy(head, "{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }", NULL, 0);
    feed(&fd, head, n, (int64_t)1 << 30);
    st = fr_read(fd.path, &b, NULL, err, sizeof err);
    sent = finish(&fd);
    T_CHECK(st == FR_EINPUT && strstr(err, "more data than its header says"), "%d %s", st, err);
    T_CHECK(sent >= 0 && sent < (16 << 20), "%lld bytes taken", (long long)sent);
    fr_bundle_free(&b);

    /* short: the header says 10 values, the stream ends after 2 */
    double two[2] = {1, 2};
    unsigned char buf[300];
    n = tu_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }", two, 16);
    feed(&fd, buf, n, 0);
    st = fr_read(fd.path, &b, NULL, err, sizeof err);
    finish(&fd);
    T_CHECK(st == FR_EINPUT && strstr(err, "truncated"), "%d %s", st, err);
    fr_bundle_free(&b);

    /* over the byte limit: a JSON stream */
    static char big[4096];
    memset(big, ' ', sizeof big);
    big[0] = '[';
    fr_limits lim = {0, 1000};
    feed(&fd, big, sizeof big, 0);
    st = fr_read(fd.path, &b, &lim, err, sizeof err);
    finish(&fd);
    T_CHECK(st == FR_EINPUT && strstr(err, "larger than the limit of 1000"), "%d %s", st, err);
    fr_bundle_free(&b);
}

/* fr_read_as(F4): f4 stored values exactly, f8 ones rounded to nearest, data NULL; the
 * writers take the float tensor. */
static void test_read_as_f32(void)
{
    const char *dir = getenv("FR_TESTDATA") ? getenv("FR_TESTDATA") : "testdata";
    const char *fixtures[] = {"c3d.npy", "fortran3d_be_f4.npy", "qkv.npz", "bundle.json",
                              "dtypes.npz"};
    for (size_t k = 0; k < sizeof fixtures / sizeof *fixtures; k++) {
        char path[600], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, fixtures[k]);
        fr_bundle d, f;
        T_REQUIRE(fr_read(path, &d, NULL, err, sizeof err) == 0, "%s", err);
        T_REQUIRE(fr_read_as(path, &f, NULL, FR_DTYPE_F4, err, sizeof err) == 0, "%s", err);
        int ok = d.count == f.count;
        for (int i = 0; ok && i < d.count; i++) {
            int64_t c = fr_tensor_count(&d.tensors[i]);
            ok = f.tensors[i].data == NULL && f.tensors[i].f32 != NULL;
            for (int64_t j = 0; ok && j < c; j++)
                ok = f.tensors[i].f32[j] == (float)d.tensors[i].data[j];
        }
        T_CHECK(ok, "%s: f32 read differs from the double read rounded", fixtures[k]);
        /* written from floats: f4 keeps them, f8 widens them exactly */
        if (ok && f.count) {
            fr_tensor *t = &f.tensors[0];
            int64_t c = fr_tensor_count(t);
            for (int dt = 0; dt < 2; dt++) {
                const char *ext[] = {"a.npy", "a.json", "a.safetensors"};
                for (int e = 0; e < 3; e++) {
                    const char *p = tu_path(ext[e]);
                    fr_dtype w = dt ? FR_DTYPE_F4 : FR_DTYPE_F8;
                    int st = fr_write_tensor(p, FR_FMT_UNKNOWN, t, w, err, sizeof err);
                    fr_bundle r;
                    if (!st) st = fr_read(p, &r, NULL, err, sizeof err);
                    T_CHECK(st == 0, "%s %s: %s", fixtures[k], ext[e], err);
                    if (st) continue;
                    int same = fr_tensor_count(&r.tensors[0]) == c;
                    for (int64_t j = 0; same && j < c; j++)
                        same = r.tensors[0].data[j] == (double)t->f32[j] ||
                               (e == 1 && (float)r.tensors[0].data[j] == t->f32[j]);
                    T_CHECK(same, "%s: floats written to %s as f%d differ", fixtures[k], ext[e],
                            (int)w);
                    fr_bundle_free(&r);
                }
            }
        }
        fr_bundle_free(&d);
        fr_bundle_free(&f);
    }
}

int main(void)
{
    tu_init();
    signal(SIGPIPE, SIG_IGN);
    T_RUN(test_formats_through_a_pipe);
    T_RUN(test_garbage_refused_at_once);
    T_RUN(test_read_as_f32);
    return t_done();
}
