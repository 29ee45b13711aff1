/* text.c - text outputs (the JSON reports), written atomically like the tensors. */
#include "io_internal.h"

#include <stdio.h>

int fr_write_text(const char *path, const char *text, char *err, size_t errlen)
{
    io_out o;
    int st = io_out_open(&o, path, 0, err, errlen);
    if (st) return st;
    if (fputs(text, o.f) < 0 || fputc('\n', o.f) == EOF) {
        io_out_abort(&o);
        return io_err(err, errlen, FR_ENOMEM, "%s: write error", path);
    }
    return io_out_commit(&o, 0, err, errlen);
}
