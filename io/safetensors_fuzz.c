/* safetensors_fuzz.c - libFuzzer target: the .safetensors reader (8-byte header length, JSON
 * header of dtypes, shapes and offsets, then the data) on arbitrary bytes from memory. */
#include "fuzz_check.h"

int fuzz_safetensors(const unsigned char *data, size_t size)
{
    io_src s = {IO_SRC_MEM, data, NULL, NULL, (int64_t)size, 0, 0};
    char err[512] = "";
    fr_bundle b;
    memset(&b, 0, sizeof b);
    int st = io_st_read(&s, "fuzz.safetensors", NULL, FR_DTYPE_F8, &b, err, sizeof err);
    fuzz_check_bundle(st, err, &b, NULL);
    fr_bundle_free(&b);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_safetensors(data, size);
    return 0;
}
#endif
