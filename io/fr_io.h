/* fr_io.h - tensors in and out of files: .npy, .npz, .json, .safetensors (stdin/stdout as "-").
 *
 * Usage:
 *   fr_bundle b = {0};
 *   if (fr_read("in.npz", &b, NULL, err, sizeof err)) { fprintf(stderr, "fastrope: %s\n", err); }
 *   const fr_tensor *q = fr_bundle_get(&b, "q");          // a .npy gives one tensor named ""
 *   fr_write_tensor("out.npy", FR_FMT_UNKNOWN, q, FR_DTYPE_F8, err, sizeof err);  // atomic
 *   fr_bundle_free(&b);
 *
 * Every reader converts to double (or float, fr_read_as), row-major. The format of an input is
 * recognised from its first bytes (\x93NUMPY, PK\x03\x04, '{' or '[', a safetensors length), so
 * "-" works for every format; the format of an output comes from its extension (.npy, .npz,
 * .json, .safetensors; "-" writes .npy, or .npz for a bundle).
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
    float *f32;               /* instead of data when read as FR_DTYPE_F4 (fr_read_as), owned */
} fr_tensor;

typedef struct {
    int count;
    char **names;       /* owned; a single-tensor file gives one tensor named "" */
    fr_tensor *tensors; /* owned */
    int single;         /* the file held one tensor (.npy, a JSON tensor), not a bundle */
} fr_bundle;

/* FR_FMT_SAFETENSORS: a bundle, recognised by content (8-byte length, '{'). */
typedef enum { FR_FMT_UNKNOWN, FR_FMT_NPY, FR_FMT_NPZ, FR_FMT_JSON, FR_FMT_SAFETENSORS } fr_format;
typedef enum { FR_DTYPE_F8 = 8, FR_DTYPE_F4 = 4 } fr_dtype;

typedef struct {
    int64_t max_elements; /* per tensor; 0: the default (2^32) */
    int64_t max_bytes;    /* per file, decompressed; 0: the default (32 GiB) */
} fr_limits;

int64_t fr_tensor_count(const fr_tensor *t); /* prod(shape), 1 for a scalar */
void fr_tensor_free(fr_tensor *t);

/* Read a file ("-": stdin) of any supported format into a bundle. lim may be NULL. A pipe, a
 * device or stdin is recognised from its first bytes (garbage fails there) and then read front
 * to back within the limits (.npz is spooled to an unnamed file in $TMPDIR, JSON to memory). */
int fr_read(const char *path, fr_bundle *out, const fr_limits *lim, char *err, size_t errlen);
/* The same with the tensors' element type chosen: FR_DTYPE_F8 fills data (fr_read), and
 * FR_DTYPE_F4 fills f32 instead, data NULL: f4 stored values kept as they are, f8 ones rounded
 * to nearest, so no double copy is ever held (for single-precision runs). Every writer takes a
 * tensor of either kind. */
int fr_read_as(const char *path, fr_bundle *out, const fr_limits *lim, fr_dtype as, char *err,
               size_t errlen);

/* The tensor named name (exact match), or NULL. */
fr_tensor *fr_bundle_get(const fr_bundle *b, const char *name);
/* Append a tensor (ownership of t->data or t->f32 moves to the bundle). */
int fr_bundle_add(fr_bundle *b, const char *name, fr_tensor *t, char *err, size_t errlen);
void fr_bundle_free(fr_bundle *b);

fr_format fr_format_from_path(const char *path); /* by extension; FR_FMT_UNKNOWN otherwise */

/* Streaming access to a file's tensors one at a time (fastrope check): .npy, .npz and
 * .safetensors are read straight from the file, a member at a time, in chunks, so memory stays
 * at a chunk whatever the file's size; other inputs (JSON, pipes, "-") are read whole first.
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
/* count values of member i from flat index first on (C order), decoded into out: one head of a
 * [heads, n, d] tensor, or one row. Reads that go forward through a member continue where the
 * last one ended (a deflated .npz member is not decompressed again from its start), so reading
 * a tensor head by head, or sampled rows in order, reads it once, even when several members
 * are read in turns; going back re-reads from the member's start. */
int fr_members_read(fr_members *m, int i, int64_t first, int64_t count, double *out, char *err,
                    size_t errlen);
void fr_members_close(fr_members *m);

/* ---- writing ----
 * A command's outputs are staged as one set and committed together: nothing is replaced
 * unless everything was written.
 *
 *   fr_outputs *o = fr_outputs_new();
 *   int out, rep;
 *   if (fr_outputs_add(o, "out.npy", FR_OUT_TENSOR, &out, err, sizeof err) ||    // exit 2 for
 *       fr_outputs_add(o, "r.json", FR_OUT_TEXT, &rep, err, sizeof err)) {       // FR_EUSAGE
 *       fr_outputs_abort(o); ...                 // before any work: missing dir, same file twice
 *   }
 *   ... compute ...
 *   st = fr_outputs_write_tensor(o, out, FR_FMT_UNKNOWN, &t, FR_DTYPE_F8, err, sizeof err);
 *   if (!st) st = fr_outputs_write_text(o, rep, report_text, err, sizeof err);
 *   if (!st) st = fr_outputs_commit(o, err, sizeof err);   // frees o, even on failure
 *   else fr_outputs_abort(o);                               // frees o, targets untouched
 *
 * - Stage every output before writing any (fr_outputs_add after the first write is refused).
 * - fr_outputs_add refuses (FR_EUSAGE) a path that names the same file as one already staged
 *   and a tensor path of unknown extension; it creates the temporary file at once (in the
 *   target's directory, unnamed where the system allows, so a killed process leaves nothing),
 *   so a missing or read-only directory, or a directory in the target's place, fails there
 *   (FR_ENOMEM, the I/O status).
 * - "-" is stdout. In a set of several outputs its bytes are staged in an unnamed file in
 *   $TMPDIR and copied out at commit, after every file was written and before any rename; a set
 *   whose only output is stdout streams straight into it. A reader that stops early is an
 *   EPIPE error (SIGPIPE is held while io writes to stdout), every temporary removed.
 * - An output staged but never written is dropped at commit, its target untouched (e.g. on a
 *   refusal only the report is written).
 * - Commit: flush and fsync every file, copy stdout's bytes, then rename each temporary over
 *   its target. Only a rename failing after another succeeded (which needs the directory to
 *   change under us) can leave the set half committed.
 * - The format of a tensor output comes from its extension (.npy, .npz, .json, .safetensors;
 *   "-" writes .npy, or .npz for a bundle); fmt overrides it unless FR_FMT_UNKNOWN. */
typedef struct fr_outputs fr_outputs;
typedef enum { FR_OUT_TENSOR, FR_OUT_BUNDLE, FR_OUT_TEXT } fr_out_kind;

fr_outputs *fr_outputs_new(void); /* NULL: out of memory */
/* id (may be NULL) receives the output's handle for the writes below. */
int fr_outputs_add(fr_outputs *o, const char *path, fr_out_kind kind, int *id, char *err,
                   size_t errlen);
int fr_outputs_write_tensor(fr_outputs *o, int id, fr_format fmt, const fr_tensor *t,
                            fr_dtype dtype, char *err, size_t errlen);
int fr_outputs_write_bundle(fr_outputs *o, int id, fr_format fmt, const fr_bundle *b,
                            fr_dtype dtype, int compress, char *err, size_t errlen);
/* text and a final newline (the JSON reports). */
int fr_outputs_write_text(fr_outputs *o, int id, const char *text, char *err, size_t errlen);
/* Both free o, whatever commit returns: after a commit that failed (everything already
 * removed), do not abort o as well. */
int fr_outputs_commit(fr_outputs *o, char *err, size_t errlen);
void fr_outputs_abort(fr_outputs *o); /* NULL is fine */

/* 1 when a and b name the same file: both "-" (stdout), "-" and what stdout is (/dev/stdout,
 * the file it is redirected to), the same existing file (device and inode, whatever the links),
 * or the same new name in the same directory (resolved). For
 * refusing "-o X --report X" and an output over an input before any work. */
int fr_same_file(const char *a, const char *b);

/* Single-shot writers: a set of one output, committed. */
int fr_write_tensor(const char *path, fr_format fmt, const fr_tensor *t, fr_dtype dtype, char *err,
                    size_t errlen);
int fr_write_bundle(const char *path, fr_format fmt, const fr_bundle *b, fr_dtype dtype,
                    int compress, char *err, size_t errlen);
int fr_write_text(const char *path, const char *text, char *err, size_t errlen);

/* x as the shortest decimal that strtod reads back to the same double ("0.1", "5e-324",
 * "-0.0"), "null" for NaN and infinities (JSON has none: check isfinite first if that
 * matters). Returns the length, as snprintf does; FR_DOUBLE_BUF bytes always suffice. */
#define FR_DOUBLE_BUF 32
int fr_format_double(char *buf, size_t len, double x);

#endif
