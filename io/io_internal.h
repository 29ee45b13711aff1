/* io_internal.h - interfaces between the files of io/ (not installed, not public).
 *
 * Readers pull bytes from an io_src (a file, a memory buffer or a zip member) whose size is
 * known up front, so every declared size can be checked before anything is allocated.
 * Writers push into an io_out, which is a temporary file renamed over the target on commit. */
#ifndef FR_IO_INTERNAL_H
#define FR_IO_INTERNAL_H

#include <stdio.h>
#include <zip.h>

#include "fr_io.h"
#include "internal.h"

#define IO_DEFAULT_MAX_ELEMENTS ((int64_t)1 << 32)
#define IO_DEFAULT_MAX_BYTES ((int64_t)32 << 30)

typedef enum { IO_SRC_MEM, IO_SRC_FILE, IO_SRC_ZIP } io_src_kind;

typedef struct {
    io_src_kind kind;
    const unsigned char *mem; /* IO_SRC_MEM */
    FILE *f;                  /* IO_SRC_FILE */
    zip_file_t *zf;           /* IO_SRC_ZIP */
    int64_t size;             /* bytes the source holds (file size, member's declared size) */
    int64_t pos;
} io_src;

/* Up to n bytes, never past s->size: the count read (short only at the end), or -1 on an I/O
 * or decompression error. */
int64_t io_src_read(io_src *s, void *buf, size_t n);
/* After s->size bytes were read: 0 if the source really ends there, 1 if it holds more (a zip
 * member longer than declared), -1 on an error (a zip member's CRC mismatch). */
int io_src_check_end(io_src *s);

/* The effective limits (defaults filled in). */
fr_limits io_limits(const fr_limits *lim);

/* Read a whole file already in memory (format sniffed from its first bytes) into out, which
 * must be zeroed; on failure out may hold tensors read so far (free it). The memory entry point
 * of fr_read, used for stdin and by the fuzz targets. */
int io_read_mem(const unsigned char *buf, size_t len, const char *label, const fr_limits *lim,
                fr_bundle *out, char *err, size_t errlen);

/* The core's: one line into err, returning status; overflow-checked a * b (0 on overflow). */
#define io_err fr__err
#define io_mul_ok fr__mul_ok

/* ---- atomic output ---- */
typedef struct {
    const char *path;
    char *tmp; /* the temporary file; NULL when writing straight to stdout */
    FILE *f;
} io_out;

/* Open a temporary file next to path (mode 0666 & ~umask), or stdout for "-" (want_file: a
 * temporary file in TMPDIR even then, for writers that need a path, i.e. libzip). */
int io_out_open(io_out *o, const char *path, int want_file, char *err, size_t errlen);
/* Flush, fsync, close (unless closed), rename over path (or copy to stdout); on failure the
 * temporary file is removed and the target left as it was. */
int io_out_commit(io_out *o, int closed, char *err, size_t errlen);
void io_out_abort(io_out *o);

/* ---- bulk decoding of raw elements (streaming readers, .safetensors) ---- */
typedef struct {
    char kind; /* 'f' float, 'i' signed, 'u' unsigned, 'b' bool, 'B' bfloat16 */
    int size;  /* bytes per element */
    int swap;  /* stored in the other byte order than the host's */
} io_dtype;
/* big: the data is big-endian. Always FR_OK (kind and size are the caller's to validate). */
int io_dtype_from_descr(char kind, int size, int big, io_dtype *dt);
void io_decode(const unsigned char *raw, int64_t count, const io_dtype *dt, double *out);

/* ---- .npy ---- */
int io_npy_read(io_src *s, const char *label, const fr_limits *lim, fr_tensor *t, char *err,
                size_t errlen);
/* The header (magic, version, length, dict, padding) for t stored as dtype; its length, or 0
 * if cap is too small. */
size_t io_npy_header(const fr_tensor *t, fr_dtype dtype, unsigned char *buf, size_t cap);
/* Encode count values of x as little-endian dtype into out (count * dtype bytes). */
void io_npy_encode(const double *x, int64_t count, fr_dtype dtype, unsigned char *out);
int io_npy_write(FILE *f, const char *label, const fr_tensor *t, fr_dtype dtype, char *err,
                 size_t errlen);

/* ---- .npz ---- */
/* src is consumed (freed by this function in every case). */
int io_npz_read(zip_source_t *src, const char *label, const fr_limits *lim, fr_bundle *out,
                char *err, size_t errlen);
/* Writes the zip file tmppath (which must not be open elsewhere). */
int io_npz_write(const char *tmppath, const char *label, const fr_bundle *b, fr_dtype dtype,
                 int compress, char *err, size_t errlen);

/* The header dict of a .npy (the text after the length field) into dt, fortran and t's shape;
 * for readers that stream the data themselves (io/members.c). */
int io_npy_parse_dict(const char *h, size_t len, const char *label, io_dtype *dt, int *fortran,
                      fr_tensor *t, char *err, size_t errlen);

/* ---- .safetensors: 8-byte little-endian header length, a JSON header, the data ---- */
typedef struct {
    char *name;
    io_dtype dt;
    int ndim;
    int64_t shape[FR_MAXDIM];
    int64_t begin, end; /* byte offsets in the data section */
} io_st_entry;
typedef struct {
    int count;
    io_st_entry *e;     /* in the header's order */
    int64_t data_start; /* 8 + header length: where offsets count from */
} io_st_header;
/* Reads and validates the header from s (at its start): dtypes, shapes against offsets, offsets
 * against the file size and each other. s is left at data_start. */
int io_st_header_read(io_src *s, const char *label, const fr_limits *lim, io_st_header *h,
                      char *err, size_t errlen);
void io_st_header_free(io_st_header *h);
int io_st_read(io_src *s, const char *label, const fr_limits *lim, fr_bundle *out, char *err,
               size_t errlen);

/* ---- JSON ---- */
int io_json_read(const char *text, size_t len, const char *label, const fr_limits *lim,
                 fr_bundle *out, char *err, size_t errlen);
int io_json_write_tensor(FILE *f, const char *label, const fr_tensor *t, char *err, size_t errlen);
int io_json_write_bundle(FILE *f, const char *label, const fr_bundle *b, char *err, size_t errlen);

#endif
