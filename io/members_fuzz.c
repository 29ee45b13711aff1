/* members_fuzz.c - libFuzzer target: fr_members, the streaming reader of `fastrope check`
 * (.npy, .npz, .safetensors read from the file a chunk at a time), on arbitrary bytes put in a
 * memfd so that it is a regular file with a path, as the reader expects. Every member is
 * streamed; the chunks must add up to the member's shape. */
#include "fuzz_check.h"

#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    int64_t seen;
} fuzz_members_ctx;

static int fuzz_members_chunk(void *ctx, const double *x, int64_t count)
{
    volatile double sink = 0;
    for (int64_t i = 0; i < count; i++)
        sink += x[i];
    (void)sink;
    ((fuzz_members_ctx *)ctx)->seen += count;
    return 0;
}

int fuzz_members(const unsigned char *data, size_t size)
{
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    char path[64], err[512] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    fr_members *m = NULL;
    int st = fr_members_open(path, NULL, &m, err, sizeof err);
    if (!st) {
        for (int i = 0; i < fr_members_count(m) && !st; i++) {
            const fr_tensor *t = fr_members_shape(m, i);
            if (!fr_members_name(m, i) || !t) abort();
            fuzz_members_ctx c = {0};
            st = fr_members_stream(m, i, fuzz_members_chunk, &c, err, sizeof err);
            if (!st && c.seen != fr_tensor_count(t)) abort();
        }
        fr_members_close(m);
    }
    if (st) fuzz_check_tensor(st, err, NULL, NULL);
    close(fd);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_members(data, size);
    return 0;
}
#endif
