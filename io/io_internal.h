/* io_internal.h - interfaces between the files of io/ (not installed, not public).
 *
 * Readers pull bytes from an io_src (a file, a memory buffer or a zip member) whose size is
 * known up front, so every declared size can be checked before anything is allocated.
 * Writers push into an io_w, a staged output of an fr_outputs set (io/output.c). */
#ifndef FR_IO_INTERNAL_H
#define FR_IO_INTERNAL_H

#include <signal.h>
#include <stdio.h>
#include <zip.h>

#include "fr_io.h"
#include "internal.h"

#define IO_DEFAULT_MAX_ELEMENTS ((int64_t)1 << 32)
#define IO_DEFAULT_MAX_BYTES ((int64_t)32 << 30)

typedef enum { IO_SRC_MEM, IO_SRC_FILE, IO_SRC_ZIP, IO_SRC_STREAM } io_src_kind;
#define IO_SIZE_UNKNOWN INT64_MAX /* a stream's size: known when it ends */

typedef struct {
    io_src_kind kind;
    const unsigned char *mem; /* IO_SRC_MEM; IO_SRC_STREAM: its first nhead bytes */
    FILE *f;                  /* IO_SRC_FILE, IO_SRC_STREAM */
    zip_file_t *zf;           /* IO_SRC_ZIP */
    int64_t size;             /* bytes the source holds (file size, member's declared size) */
    int64_t pos;
    size_t nhead;
} io_src;

/* Up to n bytes, never past s->size: the count read (short only at the end), or -1 on an I/O
 * or decompression error. */
int64_t io_src_read(io_src *s, void *buf, size_t n);
/* After the data was read: 0 if the source really ends there, 1 if it holds more (a zip
 * member longer than declared, a stream longer than its header says), -1 on an error (a zip
 * member's CRC mismatch). */
int io_src_check_end(io_src *s);

/* An input file or stream, opened with its first bytes read and its format recognised from
 * them (io/source.c). */
typedef struct {
    FILE *f;
    int owned;    /* f is ours to close (not stdin) */
    int regular;  /* a regular file: size known, seekable */
    int64_t size; /* IO_SIZE_UNKNOWN for a stream */
    const char *label;
    unsigned char head[16];
    size_t nhead;
    fr_format fmt; /* FR_FMT_UNKNOWN: none recognised */
} io_input;
/* "-" is stdin. Fails on a missing file, a directory, an empty input. */
int io_input_open(io_input *in, const char *path, char *err, size_t errlen);
void io_input_close(io_input *in);
/* A source over the whole input, from its first byte. */
void io_input_src(io_input *in, io_src *s);
/* All of it in memory (JSON), refusing more than max bytes. */
int io_input_slurp(io_input *in, int64_t max, unsigned char **out, size_t *len, char *err,
                   size_t errlen);
/* A stream copied into an unnamed temporary file in $TMPDIR (a zip needs to seek). */
int io_input_spool(io_input *in, int64_t max, FILE **out, char *err, size_t errlen);
/* Read an opened input into out (zeroed); what fr_read does after opening. */
int io_read_input(io_input *in, const fr_limits *lim, fr_dtype as, fr_bundle *out, char *err,
                  size_t errlen);

fr_format io_sniff(const unsigned char *p, size_t n);
int io_unknown_format(const char *label, const unsigned char *p, size_t n, char *err,
                      size_t errlen);

/* The effective limits (defaults filled in). */
fr_limits io_limits(const fr_limits *lim);

/* t->data (as FR_DTYPE_F8) or t->f32 (FR_DTYPE_F4) for count elements; -1 if out of memory. */
int io_tensor_alloc(fr_tensor *t, int64_t count, fr_dtype as);
/* count decoded values into t from element at, narrowed to float when t holds floats. */
void io_tensor_store(fr_tensor *t, int64_t at, const double *x, int64_t count);
double io_tensor_at(const fr_tensor *t, int64_t i);

/* Read a whole file already in memory (format sniffed from its first bytes) into out, which
 * must be zeroed; on failure out may hold tensors read so far (free it). The memory entry point
 * of fr_read, used by the fuzz targets. */
int io_read_mem(const unsigned char *buf, size_t len, const char *label, const fr_limits *lim,
                fr_bundle *out, char *err, size_t errlen);

/* The core's: one line into err, returning status; overflow-checked a * b (0 on overflow). */
#define io_err fr__err
#define io_mul_ok fr__mul_ok

/* ---- output: the byte sink of the format writers (io/output.c) ---- */
typedef struct {
    sigset_t old; /* the signal mask before SIGPIPE was held */
} io_pipe_guard;
typedef struct {
    FILE *f;
    const char *label;  /* for messages: the path, or "<stdout>" */
    const char *path;   /* the target ("-": stdout) */
    int direct;         /* f is stdout itself */
    int errnum;         /* errno of the first failed write; later writes are skipped */
    int64_t pos;        /* bytes written (zip offsets) */
    io_pipe_guard pipe; /* held while a writer streams into stdout */
} io_w;
/* 0, or -1 after a failed write (recorded in w->errnum). */
int io_put(io_w *w, const void *p, size_t n);
int io_puts(io_w *w, const char *s);
/* "LABEL: write error: REASON" with the recorded errno. */
int io_w_error(const io_w *w, char *err, size_t errlen);
const char *io_label(const char *path); /* "<stdout>" for "-" */
/* Start writing output id of a set (kind: what is written, checked against what was staged);
 * io_outputs_end says whether the writer succeeded. */
int io_outputs_begin(fr_outputs *s, int id, fr_out_kind kind, io_w *w, char *err, size_t errlen);
void io_outputs_end(fr_outputs *s, int id, io_w *w, int ok);
/* fr_outputs_add, with the extension check optional (a caller naming the format). */
int io_outputs_add(fr_outputs *s, const char *path, fr_out_kind kind, int check_format, int *id,
                   char *err, size_t errlen);

/* Bytes produced on demand (a member of a zip): next fills up to cap bytes, 0 at the end;
 * rewind starts over (a stored member is produced twice: its CRC, then its bytes). */
typedef struct {
    size_t (*next)(void *ctx, unsigned char *buf, size_t cap);
    void (*rewind)(void *ctx);
    void *ctx;
} io_producer;

/* ---- zip writing, front to back (io/zipw.c) ---- */
typedef struct {
    char *name;
    uint32_t crc;
    uint64_t usize, csize, offset;
    int method, flags, zip64;
} io_zip_entry;
typedef struct {
    io_w *w;
    int count;
    io_zip_entry *e;
    int force_zip64; /* tests: the zip64 records on small members */
} io_zip;
void io_zip_init(io_zip *z, io_w *w, int force_zip64);
/* size: the member's byte count (decides zip64 for a deflated one before it is written). */
int io_zip_member(io_zip *z, const char *name, int compress, uint64_t size, const io_producer *p,
                  char *err, size_t errlen);
int io_zip_finish(io_zip *z, char *err, size_t errlen); /* the central directory */
void io_zip_free(io_zip *z);

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
/* What a .npy header says, checked: the dtype, the order, the shape (data NULL), where the
 * data starts and its size. */
typedef struct {
    io_dtype dt;
    char descr[64];
    int fortran;
    fr_tensor shape;
    int64_t offset, count, bytes;
} io_npy_info;
/* The one header parser of the whole-file reader and the streaming one (io/members.c). */
int io_npy_head(io_src *s, const char *label, const fr_limits *lim, io_npy_info *info, char *err,
                size_t errlen);
int io_npy_read(io_src *s, const char *label, const fr_limits *lim, fr_dtype as, fr_tensor *t,
                char *err, size_t errlen);
/* The header (magic, version, length, dict, padding) for t stored as dtype; its length, or 0
 * if cap is too small. */
size_t io_npy_header(const fr_tensor *t, fr_dtype dtype, unsigned char *buf, size_t cap);
/* Encode count values of t from element `from` as little-endian dtype into out. */
void io_npy_encode(const fr_tensor *t, int64_t from, int64_t count, fr_dtype dtype,
                   unsigned char *out);
/* A .npy file's bytes produced in pieces (the writer, and .npz members). */
typedef struct {
    const fr_tensor *t;
    fr_dtype dtype;
    unsigned char head[FR_MAXDIM * 22 + 256];
    size_t hlen, hpos;
    int64_t count, next; /* elements, and the next one to encode */
} io_npy_gen;
void io_npy_gen_init(io_npy_gen *g, const fr_tensor *t, fr_dtype dtype);
uint64_t io_npy_gen_size(const io_npy_gen *g);
size_t io_npy_gen_next(void *g, unsigned char *buf, size_t cap); /* io_producer.next */
void io_npy_gen_rewind(void *g);
int io_npy_write(io_w *w, const fr_tensor *t, fr_dtype dtype, char *err, size_t errlen);

/* ---- .npz ---- */
#define IO_NPZ_MAX_MEMBERS 100000
/* src is consumed (freed by this function in every case). */
int io_npz_read(zip_source_t *src, const char *label, const fr_limits *lim, fr_dtype as,
                fr_bundle *out, char *err, size_t errlen);
/* Member i's directory entry, checked before it is opened: a NAME.npy whose declared size fits
 * the limits (*total: the members' sizes so far) and its compressed size. The one check of the
 * whole-file reader and the streaming one. */
int io_npz_stat(zip_t *za, int64_t i, const char *label, const fr_limits *lim, int64_t *total,
                zip_stat_t *out, char *err, size_t errlen);
/* A nameless tensor becomes member "arr_0", as numpy.savez names a positional array. */
int io_npz_write(io_w *w, const fr_bundle *b, fr_dtype dtype, int compress, char *err,
                 size_t errlen);

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
    int64_t data_size;  /* the data section's bytes */
} io_st_header;
/* Reads and validates the header from s (at its start): dtypes, shapes against offsets, offsets
 * against the file size and each other. s is left at data_start. */
int io_st_header_read(io_src *s, const char *label, const fr_limits *lim, io_st_header *h,
                      char *err, size_t errlen);
void io_st_header_free(io_st_header *h);
int io_st_read(io_src *s, const char *label, const fr_limits *lim, fr_dtype as, fr_bundle *out,
               char *err, size_t errlen);
/* F64 or F32, in the bundle's order; a nameless tensor is "arr_0". */
int io_st_write(io_w *w, const fr_bundle *b, fr_dtype dtype, char *err, size_t errlen);

/* ---- JSON ---- */
int io_json_read(const char *text, size_t len, const char *label, const fr_limits *lim, fr_dtype as,
                 fr_bundle *out, char *err, size_t errlen);
/* The shortest digits that strtof reads back to x (io/number.c). */
int io_format_float(char *buf, size_t len, float x);
/* "LABEL: invalid JSON in WHAT (near byte N)" for a text cJSON refused, or that it nests
 * deeper than the parser's limit. */
int io_json_error(const char *text, size_t len, const char *label, const char *what, char *err,
                  size_t errlen);
int io_json_write_tensor(io_w *w, const fr_tensor *t, char *err, size_t errlen);
int io_json_write_bundle(io_w *w, const fr_bundle *b, char *err, size_t errlen);

#endif
