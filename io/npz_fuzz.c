/* npz_fuzz.c - libFuzzer target: the .npz reader (zip directory, members, each member's .npy)
 * on arbitrary bytes given to libzip as a memory source. */
#include "fuzz_check.h"

int fuzz_npz(const unsigned char *data, size_t size)
{
    char err[512] = "";
    fr_bundle b;
    memset(&b, 0, sizeof b);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(data, size, 0, &ze);
    zip_error_fini(&ze);
    if (!src) abort();
    int st = io_npz_read(src, "fuzz.npz", NULL, FR_DTYPE_F8, &b, err, sizeof err);
    fuzz_check_bundle(st, err, &b, NULL);
    fr_bundle_free(&b);
    return st;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fuzz_npz(data, size);
    return 0;
}
#endif
