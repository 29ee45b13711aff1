/* io.c - what the formats share: tensors and bundles, the byte sources, reading a path or
 * stdin with the format recognised from its first bytes, and atomic output files. */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

fr_limits io_limits(const fr_limits *lim)
{
    fr_limits l = {0, 0};
    if (lim) l = *lim;
    if (l.max_elements <= 0) l.max_elements = IO_DEFAULT_MAX_ELEMENTS;
    if (l.max_bytes <= 0) l.max_bytes = IO_DEFAULT_MAX_BYTES;
    return l;
}

int64_t io_src_read(io_src *s, void *buf, size_t n)
{
    if ((int64_t)n > s->size - s->pos) n = (size_t)(s->size - s->pos);
    size_t got = 0;
    while (got < n) {
        int64_t r;
        switch (s->kind) {
        case IO_SRC_MEM:
            memcpy((char *)buf + got, s->mem + s->pos, n - got);
            r = (int64_t)(n - got);
            break;
        case IO_SRC_FILE:
            r = (int64_t)fread((char *)buf + got, 1, n - got, s->f);
            if (r == 0 && ferror(s->f)) return -1;
            break;
        default:
            r = zip_fread(s->zf, (char *)buf + got, n - got);
            if (r < 0) return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
        s->pos += r;
    }
    return (int64_t)got;
}

int io_src_check_end(io_src *s)
{
    if (s->kind != IO_SRC_ZIP) return 0;
    /* One byte past the declared size: a zip bomb lying about its size is stopped here, and at
     * the end of the stream libzip verifies the CRC. */
    char c;
    zip_int64_t r = zip_fread(s->zf, &c, 1);
    return r < 0 ? -1 : r > 0;
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
    t->data = NULL;
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

/* ---- reading ---------------------------------------------------------------------------- */

static fr_format sniff(const unsigned char *p, size_t n)
{
    if (n >= 6 && memcmp(p, "\x93NUMPY", 6) == 0) return FR_FMT_NPY;
    if (n >= 4 && memcmp(p, "PK\x03\x04", 4) == 0) return FR_FMT_NPZ;
    /* An empty zip (numpy.savez with no arrays) is only its end-of-central-directory record. */
    if (n >= 4 && memcmp(p, "PK\x05\x06", 4) == 0) return FR_FMT_NPZ;
    /* .safetensors: a little-endian 64-bit header length, then the JSON header. A JSON text
     * cannot hold the NUL bytes of a length under 4 GiB, so this comes before JSON. */
    if (n >= 9 && p[8] == '{' && !p[4] && !p[5] && !p[6] && !p[7]) return FR_FMT_SAFETENSORS;
    size_t i = 0;
    if (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) i = 3; /* a UTF-8 byte order mark */
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    if (i < n && (p[i] == '{' || p[i] == '[')) return FR_FMT_JSON;
    return FR_FMT_UNKNOWN;
}

static int unknown_format(const char *label, const unsigned char *p, size_t n, char *err,
                          size_t errlen)
{
    char shown[40];
    size_t k = 0;
    for (size_t i = 0; i < n && i < 8 && k + 5 < sizeof shown; i++)
        k += (size_t)snprintf(shown + k, sizeof shown - k,
                              p[i] >= 32 && p[i] < 127 ? "%c" : "\\x%02x", p[i]);
    return io_err(err, errlen, FR_EINPUT,
                  "%s: not a .npy, .npz or JSON file, nor .safetensors (it starts with \"%s\")",
                  label, shown);
}

/* All of f into a growing buffer, refusing more than max bytes (stdin, pipes). */
static int slurp(FILE *f, const char *label, int64_t max, unsigned char **out, size_t *len,
                 char *err, size_t errlen)
{
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    for (;;) {
        if (n == cap) {
            if ((int64_t)cap > max) {
                free(buf);
                return io_err(err, errlen, FR_EINPUT,
                              "%s: input larger than the limit of %lld bytes", label,
                              (long long)max);
            }
            size_t ncap = cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return io_err(err, errlen, FR_ENOMEM, "%s: read error: %s", label, strerror(errno));
    }
    if ((int64_t)n > max) {
        free(buf);
        return io_err(err, errlen, FR_EINPUT, "%s: input larger than the limit of %lld bytes",
                      label, (long long)max);
    }
    *out = buf;
    *len = n;
    return FR_OK;
}

static int single(fr_bundle *out, fr_tensor *t, char *err, size_t errlen)
{
    int st = fr_bundle_add(out, "", t, err, errlen);
    if (st) fr_tensor_free(t);
    out->single = 1;
    return st;
}

static int read_npz_src(zip_source_t *src, zip_error_t *ze, const char *label, const fr_limits *lim,
                        fr_bundle *out, char *err, size_t errlen)
{
    if (!src) {
        int st = io_err(err, errlen, FR_ENOMEM, "%s: %s", label, zip_error_strerror(ze));
        zip_error_fini(ze);
        return st;
    }
    zip_error_fini(ze);
    return io_npz_read(src, label, lim, out, err, errlen);
}

/* Everything is in memory (stdin, a pipe; the fuzz targets). */
int io_read_mem(const unsigned char *buf, size_t len, const char *label, const fr_limits *lim,
                fr_bundle *out, char *err, size_t errlen)
{
    if (len == 0) return io_err(err, errlen, FR_EINPUT, "%s: empty input", label);
    switch (sniff(buf, len)) {
    case FR_FMT_NPY: {
        io_src s = {IO_SRC_MEM, buf, NULL, NULL, (int64_t)len, 0};
        fr_tensor t;
        int st = io_npy_read(&s, label, lim, &t, err, errlen);
        return st ? st : single(out, &t, err, errlen);
    }
    case FR_FMT_NPZ: {
        zip_error_t ze;
        zip_error_init(&ze);
        zip_source_t *src = zip_source_buffer_create(buf, len, 0, &ze);
        return read_npz_src(src, &ze, label, lim, out, err, errlen);
    }
    case FR_FMT_JSON: return io_json_read((const char *)buf, len, label, lim, out, err, errlen);
    case FR_FMT_SAFETENSORS: {
        io_src s = {IO_SRC_MEM, buf, NULL, NULL, (int64_t)len, 0};
        return io_st_read(&s, label, lim, out, err, errlen);
    }
    default: return unknown_format(label, buf, len, err, errlen);
    }
}

static int read_stream(FILE *f, const char *label, const fr_limits *lim, fr_bundle *out, char *err,
                       size_t errlen)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    int st = slurp(f, label, io_limits(lim).max_bytes, &buf, &len, err, errlen);
    if (st) return st;
    st = io_read_mem(buf, len, label, lim, out, err, errlen);
    free(buf);
    return st;
}

/* A regular file: its size is known, so the npy reader streams it and libzip seeks in it. */
static int read_regular(FILE **fp, int64_t size, const char *label, const fr_limits *lim,
                        fr_bundle *out, char *err, size_t errlen)
{
    FILE *f = *fp;
    if (size == 0) return io_err(err, errlen, FR_EINPUT, "%s: empty file", label);
    unsigned char head[16];
    size_t n = fread(head, 1, sizeof head, f);
    if (ferror(f) || fseek(f, 0, SEEK_SET) != 0)
        return io_err(err, errlen, FR_ENOMEM, "%s: read error: %s", label, strerror(errno));
    fr_limits l = io_limits(lim);
    switch (sniff(head, n)) {
    case FR_FMT_NPY: {
        io_src s = {IO_SRC_FILE, NULL, f, NULL, size, 0};
        fr_tensor t;
        int st = io_npy_read(&s, label, lim, &t, err, errlen);
        return st ? st : single(out, &t, err, errlen);
    }
    case FR_FMT_NPZ: {
        zip_error_t ze;
        zip_error_init(&ze);
        zip_source_t *src = zip_source_filep_create(f, 0, -1, &ze);
        if (src) *fp = NULL; /* the source closes it */
        return read_npz_src(src, &ze, label, lim, out, err, errlen);
    }
    case FR_FMT_SAFETENSORS: {
        io_src s = {IO_SRC_FILE, NULL, f, NULL, size, 0};
        return io_st_read(&s, label, lim, out, err, errlen);
    }
    case FR_FMT_JSON: {
        if (size > l.max_bytes)
            return io_err(err, errlen, FR_EINPUT, "%s: %lld bytes, over the limit of %lld", label,
                          (long long)size, (long long)l.max_bytes);
        if ((uint64_t)size >= SIZE_MAX)
            return io_err(err, errlen, FR_ENOMEM, "%s: too large for memory", label);
        char *text = malloc((size_t)size);
        if (!text) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
        size_t got = fread(text, 1, (size_t)size, f);
        int st = got != (size_t)size
                     ? io_err(err, errlen, FR_ENOMEM, "%s: read error", label)
                     : io_json_read(text, (size_t)size, label, lim, out, err, errlen);
        free(text);
        return st;
    }
    default: return unknown_format(label, head, n, err, errlen);
    }
}

int fr_read(const char *path, fr_bundle *out, const fr_limits *lim, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int st;
    if (strcmp(path, "-") == 0) {
        st = read_stream(stdin, "<stdin>", lim, out, err, errlen);
    } else {
        FILE *f = fopen(path, "rb");
        if (!f) return io_err(err, errlen, FR_EINPUT, "%s: %s", path, strerror(errno));
        struct stat sb;
        if (fstat(fileno(f), &sb) != 0) {
            st = io_err(err, errlen, FR_EINPUT, "%s: %s", path, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            st = io_err(err, errlen, FR_EINPUT, "%s: is a directory, not a file", path);
        } else if (S_ISREG(sb.st_mode)) {
            st = read_regular(&f, (int64_t)sb.st_size, path, lim, out, err, errlen);
        } else {
            st = read_stream(f, path, lim, out, err, errlen); /* a pipe, /dev/stdin, <(...) */
        }
        if (f) fclose(f);
    }
    if (st) fr_bundle_free(out);
    return st;
}

/* ---- writing: a format's writer into a staged output ---------------------------------- */

static fr_format out_format(const char *path, fr_format fmt, int bundle)
{
    if (fmt != FR_FMT_UNKNOWN) return fmt;
    fmt = fr_format_from_path(path);
    if (fmt == FR_FMT_UNKNOWN && strcmp(path, "-") == 0) fmt = bundle ? FR_FMT_NPZ : FR_FMT_NPY;
    return fmt;
}

static int check_dtype(const char *label, fr_dtype dtype, char *err, size_t errlen)
{
    if (dtype == FR_DTYPE_F4 || dtype == FR_DTYPE_F8) return FR_OK;
    return io_err(err, errlen, FR_EUSAGE, "%s: unsupported output dtype %d", label, (int)dtype);
}

static int unknown_output(const char *label, char *err, size_t errlen)
{
    return io_err(err, errlen, FR_EUSAGE,
                  "%s: unknown output format (use .npy, .npz, .json or .safetensors)", label);
}

static int write_tensor(io_w *w, fr_format fmt, const fr_tensor *t, fr_dtype dtype, char *err,
                        size_t errlen)
{
    int st = check_dtype(w->label, dtype, err, errlen);
    if (st) return st;
    switch ((fmt = out_format(w->path, fmt, 0))) {
    case FR_FMT_NPY: return io_npy_write(w, t, dtype, err, errlen);
    case FR_FMT_JSON: return io_json_write_tensor(w, t, err, errlen);
    case FR_FMT_NPZ:
    case FR_FMT_SAFETENSORS: { /* one member, named as numpy.savez names a positional array */
        char *names[1] = {""};
        fr_bundle b = {1, names, (fr_tensor *)t, 0};
        return fmt == FR_FMT_NPZ ? io_npz_write(w, &b, dtype, 0, err, errlen)
                                 : io_st_write(w, &b, dtype, err, errlen);
    }
    default: return unknown_output(w->label, err, errlen);
    }
}

static int write_bundle(io_w *w, fr_format fmt, const fr_bundle *b, fr_dtype dtype, int compress,
                        char *err, size_t errlen)
{
    int st = check_dtype(w->label, dtype, err, errlen);
    if (st) return st;
    fmt = out_format(w->path, fmt, !b->single);
    if (fmt == FR_FMT_NPY || (fmt == FR_FMT_JSON && b->single) ||
        (b->single && b->count == 1 && !b->names[0][0])) {
        if (b->count != 1)
            return io_err(err, errlen, FR_EUSAGE,
                          "%s: a bundle of %d tensors cannot be written as one tensor", w->label,
                          b->count);
        return write_tensor(w, fmt, &b->tensors[0], dtype, err, errlen);
    }
    switch (fmt) {
    case FR_FMT_NPZ: return io_npz_write(w, b, dtype, compress, err, errlen);
    case FR_FMT_JSON: return io_json_write_bundle(w, b, err, errlen);
    case FR_FMT_SAFETENSORS: return io_st_write(w, b, dtype, err, errlen);
    default: return unknown_output(w->label, err, errlen);
    }
}

int fr_outputs_write_tensor(fr_outputs *o, int id, fr_format fmt, const fr_tensor *t,
                            fr_dtype dtype, char *err, size_t errlen)
{
    io_w w;
    int st = io_outputs_begin(o, id, FR_OUT_TENSOR, &w, err, errlen);
    if (st) return st;
    st = write_tensor(&w, fmt, t, dtype, err, errlen);
    io_outputs_end(o, id, &w, st == FR_OK);
    return st;
}

int fr_outputs_write_bundle(fr_outputs *o, int id, fr_format fmt, const fr_bundle *b,
                            fr_dtype dtype, int compress, char *err, size_t errlen)
{
    io_w w;
    int st = io_outputs_begin(o, id, FR_OUT_BUNDLE, &w, err, errlen);
    if (st) return st;
    st = write_bundle(&w, fmt, b, dtype, compress, err, errlen);
    io_outputs_end(o, id, &w, st == FR_OK);
    return st;
}

int fr_outputs_write_text(fr_outputs *o, int id, const char *text, char *err, size_t errlen)
{
    io_w w;
    int st = io_outputs_begin(o, id, FR_OUT_TEXT, &w, err, errlen);
    if (st) return st;
    io_puts(&w, text);
    io_puts(&w, "\n");
    st = w.errnum ? io_w_error(&w, err, errlen) : FR_OK;
    io_outputs_end(o, id, &w, st == FR_OK);
    return st;
}

/* ---- single-shot writers: a set of one ---- */

static int one(const char *path, fr_out_kind kind, fr_format fmt, fr_outputs **o, int *id,
               char *err, size_t errlen)
{
    if (!(*o = fr_outputs_new())) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", path);
    /* An explicit format needs no extension. */
    int st = io_outputs_add(*o, path, kind, fmt == FR_FMT_UNKNOWN, id, err, errlen);
    if (st) fr_outputs_abort(*o);
    return st;
}

static int done(fr_outputs *o, int st, char *err, size_t errlen)
{
    if (st) {
        fr_outputs_abort(o);
        return st;
    }
    return fr_outputs_commit(o, err, errlen);
}

int fr_write_tensor(const char *path, fr_format fmt, const fr_tensor *t, fr_dtype dtype, char *err,
                    size_t errlen)
{
    fr_outputs *o;
    int id, st;
    if ((st = one(path, FR_OUT_TENSOR, fmt, &o, &id, err, errlen))) return st;
    return done(o, fr_outputs_write_tensor(o, id, fmt, t, dtype, err, errlen), err, errlen);
}

int fr_write_bundle(const char *path, fr_format fmt, const fr_bundle *b, fr_dtype dtype,
                    int compress, char *err, size_t errlen)
{
    fr_outputs *o;
    int id, st;
    if ((st = one(path, FR_OUT_BUNDLE, fmt, &o, &id, err, errlen))) return st;
    return done(o, fr_outputs_write_bundle(o, id, fmt, b, dtype, compress, err, errlen), err,
                errlen);
}

int fr_write_text(const char *path, const char *text, char *err, size_t errlen)
{
    fr_outputs *o;
    int id, st;
    if ((st = one(path, FR_OUT_TEXT, FR_FMT_UNKNOWN, &o, &id, err, errlen))) return st;
    return done(o, fr_outputs_write_text(o, id, text, err, errlen), err, errlen);
}
