/* fuzz_check.h - what every reader promises whatever its input, checked by the fuzz targets
 * (io/ *_fuzz.c, cmd/ *_fuzz.c) and by their replay in the test suite: an error status with a
 * message, or tensors within the limits whose every element can be read. A broken promise is
 * abort(), which the fuzzer reports as a crash.
 *
 * Each target defines fuzz_NAME(data, size) and, unless FUZZ_REPLAY is defined,
 * LLVMFuzzerTestOneInput calling it; io/fuzz_replay_test.c includes every target with
 * FUZZ_REPLAY and feeds it testdata/fuzz/NAME/ *. */
#ifndef FR_FUZZ_CHECK_H
#define FR_FUZZ_CHECK_H

#include <stdlib.h>
#include <string.h>

#include "io_internal.h"

static inline int fuzz_check_tensor(int st, const char *err, const fr_tensor *t,
                                    const fr_limits *lim)
{
    if (st) {
        if ((st != FR_EINPUT && st != FR_ENOMEM) || err[0] == '\0') abort();
        return st;
    }
    fr_limits l = io_limits(lim);
    if (t->ndim < 0 || t->ndim > FR_MAXDIM) abort();
    int64_t count = 1;
    int empty = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) abort();
        empty |= t->shape[i] == 0;
    }
    /* An empty tensor's other axes may be of any size; a non-empty one's product must fit. */
    for (int i = 0; i < t->ndim && !empty; i++)
        if (!io_mul_ok(count, t->shape[i], &count)) abort();
    if (empty) count = 0;
    if (fr_tensor_count(t) != count) abort();
    if (count > l.max_elements || (count > 0 && !t->data)) abort();
    volatile double sink = 0;
    for (int64_t i = 0; i < count; i++)
        sink += t->data[i]; /* under ASan: the whole buffer exists */
    (void)sink;
    return st;
}

static inline int fuzz_check_bundle(int st, const char *err, const fr_bundle *b,
                                    const fr_limits *lim)
{
    if (st) return fuzz_check_tensor(st, err, NULL, lim);
    if (b->count < 0 || (b->single && b->count != 1)) abort();
    for (int i = 0; i < b->count; i++) {
        if (!b->names[i]) abort();
        for (int j = 0; j < i; j++)
            if (strcmp(b->names[i], b->names[j]) == 0) abort(); /* names are unique */
        fuzz_check_tensor(0, err, &b->tensors[i], lim);
    }
    return st;
}

#endif
