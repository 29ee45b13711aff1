/* stub.c - placeholder until the readers and writers land; delete when they do. */
#include "fr_io.h"

#include <stdio.h>

int64_t fr_tensor_count(const fr_tensor *t) { return 0; }
void fr_tensor_free(fr_tensor *t) {}
int fr_read(const char *path, fr_bundle *out, const fr_limits *lim, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: reading is not implemented", path);
    return FR_ENOMEM;
}
fr_tensor *fr_bundle_get(const fr_bundle *b, const char *name) { return NULL; }
int fr_bundle_add(fr_bundle *b, const char *name, fr_tensor *t, char *err, size_t errlen)
{
    return FR_ENOMEM;
}
void fr_bundle_free(fr_bundle *b) {}
fr_format fr_format_from_path(const char *path) { return FR_FMT_UNKNOWN; }
int fr_write_tensor(const char *path, fr_format fmt, const fr_tensor *t, fr_dtype dtype,
                    char *err, size_t errlen)
{
    return FR_ENOMEM;
}
int fr_write_bundle(const char *path, fr_format fmt, const fr_bundle *b, fr_dtype dtype,
                    int compress, char *err, size_t errlen)
{
    return FR_ENOMEM;
}
