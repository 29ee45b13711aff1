/* fr_io.h - tensors in and out of files: .npy, .npz, .json (stdin/stdout as "-"); .safetensors
 * is read.
 *
 * Usage:
 *   fr_bundle b = {0};
 *   if (fr_read("in.npz", &b, NULL, err, sizeof err)) { fprintf(stderr, "fastrope: %s\n", err); }
 *   const fr_tensor *q = fr_bundle_get(&b, "q");          // a .npy gives one tensor named ""
 *   fr_write_tensor("out.npy", q, FR_DTYPE_F8, err, sizeof err);   // atomic; "-" is stdout
 *   fr_bundle_free(&b);
 *
 * Every reader converts to double, row-major. The format of an input is recognised from its
 * first bytes (\x93NUMPY, PK\x03\x04, '{' or '['), so "-" works for every format; the format of
 * an output comes from its extension (.npy, .npz, .json; "-" writes .npy, or .npz for a bundle).
 * Errors: one line "PATH: what is wrong" in err, and an fr_status (3 bad input, 1 I/O or memory).
 * Sizes are checked against the file and the limits before anything is allocated.
 */
#ifndef FR_IO_H
#define FR_IO_H

#include <stddef.h>
#include <stdint.h>

#include "fastrope.h"

#define FR_MAXDIM 32

typedef struct {
    int ndim;                 /* 0 (a scalar) .. FR_MAXDIM */
    int64_t shape[FR_MAXDIM]; /* C order */
    double *data;             /* prod(shape) doubles, owned */
} fr_tensor;

typedef struct {
    int count;
    char **names;       /* owned; a single-tensor file gives one tensor named "" */
    fr_tensor *tensors; /* owned */
    int single;         /* the file held one tensor (.npy, a JSON tensor), not a bundle */
} fr_bundle;

/* FR_FMT_SAFETENSORS is read only (a bundle; recognised by content: 8-byte length, '{'). */
typedef enum { FR_FMT_UNKNOWN, FR_FMT_NPY, FR_FMT_NPZ, FR_FMT_JSON, FR_FMT_SAFETENSORS } fr_format;
typedef enum { FR_DTYPE_F8 = 8, FR_DTYPE_F4 = 4 } fr_dtype;

typedef struct {
    int64_t max_elements; /* per tensor; 0: the default (2^32) */
    int64_t max_bytes;    /* per file, decompressed; 0: the default (32 GiB) */
} fr_limits;

int64_t fr_tensor_count(const fr_tensor *t); /* prod(shape), 1 for a scalar */
void fr_tensor_free(fr_tensor *t);

/* Read a file ("-": stdin) of any supported format into a bundle. lim may be NULL. */
int fr_read(const char *path, fr_bundle *out, const fr_limits *lim, char *err, size_t errlen);

/* The tensor named name (exact match), or NULL. */
fr_tensor *fr_bundle_get(const fr_bundle *b, const char *name);
/* Append a tensor (ownership of t->data moves to the bundle). */
int fr_bundle_add(fr_bundle *b, const char *name, fr_tensor *t, char *err, size_t errlen);
void fr_bundle_free(fr_bundle *b);

fr_format fr_format_from_path(const char *path); /* by extension; FR_FMT_UNKNOWN otherwise */

/* Streaming access to a file's tensors one at a time (fastrope check): .npy, .npz and
 * .safetensors are read straight from the file, a member at a time, in chunks, so memory stays
 * at a chunk whatever the file's size; other inputs (JSON, pipes) are read whole first.
 *   fr_members *m; fr_members_open("dump.npz", NULL, &m, err, sizeof err);
 *   for (i = 0; i < fr_members_count(m); i++) fr_members_stream(m, i, fn, ctx, err, sizeof err);
 *   fr_members_close(m);
 * fn receives the member's values in C order, in pieces of whole rows (of the last axis) when a
 * row fits in a chunk; a non-zero return stops the stream and is returned. */
typedef struct fr_members fr_members;
typedef int (*fr_chunk_fn)(void *ctx, const double *x, int64_t count);
int fr_members_open(const char *path, const fr_limits *lim, fr_members **out, char *err,
                    size_t errlen);
int fr_members_count(const fr_members *m);
int fr_members_single(const fr_members *m); /* one tensor (.npy, a JSON tensor), named "" */
const char *fr_members_name(const fr_members *m, int i);
/* The member's ndim and shape (data is NULL). */
const fr_tensor *fr_members_shape(const fr_members *m, int i);
int64_t fr_members_bytes(const fr_members *m, int i); /* its data as stored (throughput) */
int fr_members_stream(fr_members *m, int i, fr_chunk_fn fn, void *ctx, char *err, size_t errlen);
void fr_members_close(fr_members *m);

/* Writers are atomic: a temporary file in the target's directory, renamed on success, removed
 * on failure; "-" writes to stdout. fmt FR_FMT_UNKNOWN means: from the path's extension. */
int fr_write_tensor(const char *path, fr_format fmt, const fr_tensor *t, fr_dtype dtype, char *err,
                    size_t errlen);
int fr_write_bundle(const char *path, fr_format fmt, const fr_bundle *b, fr_dtype dtype,
                    int compress, char *err, size_t errlen);

/* Text (a JSON report) to path, atomically like the tensors; "-" writes to stdout. */
int fr_write_text(const char *path, const char *text, char *err, size_t errlen);

#endif
