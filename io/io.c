/* io.c - the dispatcher: a path or stdin to the reader of its format (recognised from its first
 * bytes), a tensor or bundle to the writer of the output's format. The formats below it use
 * the base (io/tensor.c, io/source.c, io/output.c) and never call back into this file. */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>

static int single(fr_bundle *out, fr_tensor *t, char *err, size_t errlen)
{
    int st = fr_bundle_add(out, "", t, err, errlen);
    if (st) fr_tensor_free(t);
    out->single = 1;
    return st;
}

static int read_npz_src(zip_source_t *src, zip_error_t *ze, const char *label, const fr_limits *lim,
                        fr_dtype as, fr_bundle *out, char *err, size_t errlen)
{
    if (!src) {
        int st = io_err(err, errlen, FR_ENOMEM, "%s: %s", label, zip_error_strerror(ze));
        zip_error_fini(ze);
        return st;
    }
    zip_error_fini(ze);
    return io_npz_read(src, label, lim, as, out, err, errlen);
}

/* Everything is in memory (the fuzz targets). */
int io_read_mem(const unsigned char *buf, size_t len, const char *label, const fr_limits *lim,
                fr_bundle *out, char *err, size_t errlen)
{
    if (len == 0) return io_err(err, errlen, FR_EINPUT, "%s: empty input", label);
    io_src s = {IO_SRC_MEM, buf, NULL, NULL, (int64_t)len, 0, 0};
    switch (io_sniff(buf, len)) {
    case FR_FMT_NPY: {
        fr_tensor t;
        int st = io_npy_read(&s, label, lim, FR_DTYPE_F8, &t, err, errlen);
        return st ? st : single(out, &t, err, errlen);
    }
    case FR_FMT_NPZ: {
        zip_error_t ze;
        zip_error_init(&ze);
        zip_source_t *src = zip_source_buffer_create(buf, len, 0, &ze);
        return read_npz_src(src, &ze, label, lim, FR_DTYPE_F8, out, err, errlen);
    }
    case FR_FMT_JSON:
        return io_json_read((const char *)buf, len, label, lim, FR_DTYPE_F8, out, err, errlen);
    case FR_FMT_SAFETENSORS: return io_st_read(&s, label, lim, FR_DTYPE_F8, out, err, errlen);
    default: return io_unknown_format(label, buf, len, err, errlen);
    }
}

/* The format was recognised from the first bytes: a file or a stream is read front to back
 * by its reader, except a zip (random access: libzip seeks in a file, a stream is spooled
 * first) and JSON (parsed in memory). */
int io_read_input(io_input *in, const fr_limits *lim, fr_dtype as, fr_bundle *out, char *err,
                  size_t errlen)
{
    fr_limits l = io_limits(lim);
    io_src s;
    io_input_src(in, &s);
    switch (in->fmt) {
    case FR_FMT_NPY: {
        fr_tensor t;
        int st = io_npy_read(&s, in->label, lim, as, &t, err, errlen);
        return st ? st : single(out, &t, err, errlen);
    }
    case FR_FMT_SAFETENSORS: return io_st_read(&s, in->label, lim, as, out, err, errlen);
    case FR_FMT_NPZ: {
        FILE *f = in->f;
        if (!in->regular) {
            int st = io_input_spool(in, l.max_bytes, &f, err, errlen);
            if (st) return st;
        }
        zip_error_t ze;
        zip_error_init(&ze);
        zip_source_t *src = zip_source_filep_create(f, 0, -1, &ze);
        if (src && f == in->f) in->f = NULL; /* the source closes it */
        if (!src && f != in->f) fclose(f);
        return read_npz_src(src, &ze, in->label, lim, as, out, err, errlen);
    }
    case FR_FMT_JSON: {
        unsigned char *text;
        size_t len;
        int st = io_input_slurp(in, l.max_bytes, &text, &len, err, errlen);
        if (st) return st;
        st = io_json_read((const char *)text, len, in->label, lim, as, out, err, errlen);
        free(text);
        return st;
    }
    default: return io_unknown_format(in->label, in->head, in->nhead, err, errlen);
    }
}

int fr_read_as(const char *path, fr_bundle *out, const fr_limits *lim, fr_dtype as, char *err,
               size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (as != FR_DTYPE_F8 && as != FR_DTYPE_F4)
        return io_err(err, errlen, FR_EUSAGE, "%s: cannot read as dtype %d", path, (int)as);
    io_input in;
    int st = io_input_open(&in, path, err, errlen);
    if (st) return st;
    st = io_read_input(&in, lim, as, out, err, errlen);
    io_input_close(&in);
    if (st) fr_bundle_free(out);
    return st;
}

int fr_read(const char *path, fr_bundle *out, const fr_limits *lim, char *err, size_t errlen)
{
    return fr_read_as(path, out, lim, FR_DTYPE_F8, err, errlen);
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
