/* read_fuzz.c - libFuzzer target: fr_read's memory path (stdin, pipes): the format sniffed from
 * the first bytes, then whichever reader it picks, with small limits so that the limit checks
 * themselves are exercised. */
#include "fuzz_check.h"

int fuzz_read(const unsigned char *data, size_t size)
{
    char err[512] = "";
    fr_bundle b;
    memset(&b, 0, sizeof b);
    /* The first byte picks the limits: 0 the defaults, else small ones the seeds cross. */
    fr_limits lim = {0, 0};
    if (size > 0 && data[0] & 1) lim.max_elements = 1 + (data[0] >> 1);
    if (size > 0 && data[0] & 2) lim.max_bytes = 64 + 8 * (int64_t)(data[0] >> 2);
    if (size > 0) data++, size--;
    int st = io_read_mem(data, size, "fuzz", &lim, &b, err, sizeof err);
    fuzz_check_bundle(st, err, &b, &lim);
    fr_bundle_free(&b);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_read(data, size);
    return 0;
}
#endif
