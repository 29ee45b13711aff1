/* tensor.c - what every format reads into and writes from: tensors (double, or float when read
 * as f32), bundles of named tensors, the limits on what is read, and output formats by name. */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

fr_limits io_limits(const fr_limits *lim)
{
    fr_limits l = {0, 0};
    if (lim) l = *lim;
    if (l.max_elements <= 0) l.max_elements = IO_DEFAULT_MAX_ELEMENTS;
    if (l.max_bytes <= 0) l.max_bytes = IO_DEFAULT_MAX_BYTES;
    return l;
}

int64_t fr_tensor_count(const fr_tensor *t)
{
    /* An empty tensor's other axes may be of any size ((0, 4e18, 4e18) is a valid .npy): their
     * product must not be formed. */
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) return 0;
    int64_t c = 1;
    for (int i = 0; i < t->ndim; i++)
        c *= t->shape[i];
    return c;
}

void fr_tensor_free(fr_tensor *t)
{
    if (!t) return;
    free(t->data);
    free(t->f32);
    t->data = NULL;
    t->f32 = NULL;
}

int io_tensor_alloc(fr_tensor *t, int64_t count, fr_dtype as)
{
    size_t n = count > 0 ? (size_t)count : 1;
    if (as == FR_DTYPE_F4)
        t->f32 = (uint64_t)count > SIZE_MAX / sizeof(float) ? NULL : malloc(n * sizeof(float));
    else
        t->data = (uint64_t)count > SIZE_MAX / sizeof(double) ? NULL : malloc(n * sizeof(double));
    return t->data || t->f32 ? 0 : -1;
}

void io_tensor_store(fr_tensor *t, int64_t at, const double *x, int64_t count)
{
    if (t->f32)
        for (int64_t i = 0; i < count; i++)
            t->f32[at + i] = (float)x[i]; /* round to nearest even, as numpy's astype */
    else
        memcpy(t->data + at, x, (size_t)count * sizeof *x);
}

double io_tensor_at(const fr_tensor *t, int64_t i)
{
    return t->f32 ? (double)t->f32[i] : t->data[i];
}

fr_tensor *fr_bundle_get(const fr_bundle *b, const char *name)
{
    for (int i = 0; i < b->count; i++)
        if (strcmp(b->names[i], name) == 0) return &b->tensors[i];
    return NULL;
}

int fr_bundle_add(fr_bundle *b, const char *name, fr_tensor *t, char *err, size_t errlen)
{
    if (fr_bundle_get(b, name))
        return io_err(err, errlen, FR_EINPUT, "duplicate tensor name '%s'", name);
    char **names = realloc(b->names, (size_t)(b->count + 1) * sizeof *names);
    if (!names) return io_err(err, errlen, FR_ENOMEM, "out of memory");
    b->names = names;
    fr_tensor *ts = realloc(b->tensors, (size_t)(b->count + 1) * sizeof *ts);
    if (!ts) return io_err(err, errlen, FR_ENOMEM, "out of memory");
    b->tensors = ts;
    char *nm = strdup(name);
    if (!nm) return io_err(err, errlen, FR_ENOMEM, "out of memory");
    b->names[b->count] = nm;
    b->tensors[b->count] = *t;
    b->count++;
    t->data = NULL;
    t->f32 = NULL;
    return FR_OK;
}

void fr_bundle_free(fr_bundle *b)
{
    if (!b) return;
    for (int i = 0; i < b->count; i++) {
        free(b->names[i]);
        fr_tensor_free(&b->tensors[i]);
    }
    free(b->names);
    free(b->tensors);
    memset(b, 0, sizeof *b);
}

fr_format fr_format_from_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return FR_FMT_UNKNOWN;
    if (strcasecmp(dot, ".npy") == 0) return FR_FMT_NPY;
    if (strcasecmp(dot, ".npz") == 0) return FR_FMT_NPZ;
    if (strcasecmp(dot, ".json") == 0) return FR_FMT_JSON;
    if (strcasecmp(dot, ".safetensors") == 0) return FR_FMT_SAFETENSORS;
    return FR_FMT_UNKNOWN;
}
