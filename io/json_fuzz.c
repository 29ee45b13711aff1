/* json_fuzz.c - libFuzzer target: JSON tensors and bundles (nested arrays, {"shape", "data"},
 * objects of tensors) on arbitrary bytes, which need not be NUL-terminated. */
#include "fuzz_check.h"

int fuzz_json(const unsigned char *data, size_t size)
{
    char err[512] = "";
    fr_bundle b;
    memset(&b, 0, sizeof b);
    int st =
        io_json_read((const char *)data, size, "fuzz.json", NULL, FR_DTYPE_F8, &b, err, sizeof err);
    fuzz_check_bundle(st, err, &b, NULL);
    fr_bundle_free(&b);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_json(data, size);
    return 0;
}
#endif
