/* stream_fuzz.c - libFuzzer target: fr_read on a pipe, the path of stdin and of <(...): the
 * format recognised from the first bytes, then .npy and .safetensors read front to back with
 * their size unknown, .npz spooled, JSON buffered. The bytes are put in a pipe (up to its
 * capacity) whose writing end is closed, so the reader sees a stream that ends. */
#include "fuzz_check.h"

#include <fcntl.h>
#include <unistd.h>

int fuzz_stream(const unsigned char *data, size_t size)
{
    int p[2];
    if (pipe(p) != 0) abort();
    /* A pipe holds 64 kB by default; larger inputs are cut there (a truncated stream). */
    if (size > 65536) size = 65536;
    if (size && write(p[1], data, size) != (ssize_t)size) abort();
    close(p[1]);
    char path[64], err[512] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
    fr_bundle b;
    fr_limits lim = {1 << 20, 1 << 24};
    int st = fr_read(path, &b, &lim, err, sizeof err);
    fuzz_check_bundle(st, err, &b, &lim);
    fr_bundle_free(&b);
    close(p[0]);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_stream(data, size);
    return 0;
}
#endif
