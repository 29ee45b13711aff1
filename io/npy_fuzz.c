/* npy_fuzz.c - libFuzzer target: the .npy reader (header and body) on arbitrary bytes.
 *
 * Built by `make fuzz` (clang, ASan+UBSan); io/fuzz_replay_test.c includes this file with
 * FUZZ_REPLAY defined to replay testdata/fuzz/npy/ in the normal test suite. */
#include "fuzz_check.h"

int fuzz_npy(const unsigned char *data, size_t size)
{
    io_src s = {IO_SRC_MEM, data, NULL, NULL, (int64_t)size, 0, 0};
    fr_tensor t;
    char err[512] = "";
    /* The default limits: the reader must refuse a lying header by the size of the input, not
     * by a limit the fuzzer happens to set. */
    int st = io_npy_read(&s, "fuzz.npy", NULL, FR_DTYPE_F8, &t, err, sizeof err);
    fuzz_check_tensor(st, err, &t, NULL);
    if (!st) fr_tensor_free(&t);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_npy(data, size);
    return 0;
}
#endif
