/* npz.c - what numpy.savez and numpy.savez_compressed write: a zip (stored or deflated,
 * zip64 for big members) of NAME.npy members, read and written with libzip.
 *
 * Reading trusts nothing in the zip directory: a member's declared size is checked against the
 * limits and against what its compressed size can possibly expand to before anything is
 * allocated, and the member is never read past its declared size (zip bombs). Writing streams
 * each member from the tensor through a libzip callback, so no serialized copy is held. */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MEMBERS 100000
/* Deflate cannot expand a byte to more than about 1032 bytes (258-byte matches coded in
 * 2 bits); a member claiming more than this is lying about its size. */
#define DEFLATE_MAX_RATIO 1032

static int zip_fail(char *err, size_t errlen, int status, const char *label, const char *what,
                    zip_error_t *ze)
{
    return io_err(err, errlen, status, "%s: %s (%s)", label, what, zip_error_strerror(ze));
}

static int read_member(zip_t *za, zip_int64_t i, const char *label, const fr_limits *lim,
                       int64_t *total, fr_bundle *out, char *err, size_t errlen)
{
    fr_limits l = io_limits(lim);
    zip_stat_t zs;
    if (zip_stat_index(za, (zip_uint64_t)i, 0, &zs) != 0)
        return zip_fail(err, errlen, FR_EINPUT, label, "unreadable zip entry", zip_get_error(za));
    if (!(zs.valid & ZIP_STAT_NAME) || !(zs.valid & ZIP_STAT_SIZE))
        return io_err(err, errlen, FR_EINPUT, "%s: zip entry %lld lacks a name or size", label,
                      (long long)i);
    size_t nl = strlen(zs.name);
    if (nl < 4 || strcmp(zs.name + nl - 4, ".npy") != 0)
        return io_err(err, errlen, FR_EINPUT, "%s: member '%s' is not a .npy", label, zs.name);
    if (zs.size > (zip_uint64_t)(l.max_bytes - *total))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: member '%s' declares %llu bytes uncompressed, over the limit of %lld "
                      "bytes per file",
                      label, zs.name, (unsigned long long)zs.size, (long long)l.max_bytes);
    if ((zs.valid & ZIP_STAT_COMP_METHOD) && (zs.valid & ZIP_STAT_COMP_SIZE)) {
        if (zs.comp_method == ZIP_CM_STORE && zs.comp_size != zs.size)
            return io_err(err, errlen, FR_EINPUT,
                          "%s: stored member '%s' declares %llu bytes but holds %llu", label,
                          zs.name, (unsigned long long)zs.size, (unsigned long long)zs.comp_size);
        if (zs.comp_method == ZIP_CM_DEFLATE && zs.size / DEFLATE_MAX_RATIO > zs.comp_size + 1)
            return io_err(err, errlen, FR_EINPUT,
                          "%s: member '%s' declares %llu bytes from %llu compressed: impossible "
                          "for deflate (a zip bomb?)",
                          label, zs.name, (unsigned long long)zs.size,
                          (unsigned long long)zs.comp_size);
    }
    *total += (int64_t)zs.size;

    char *mlabel = malloc(strlen(label) + nl + 2);
    if (!mlabel) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    sprintf(mlabel, "%s:%s", label, zs.name);
    int st;
    zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
    if (!zf) {
        st = zip_fail(err, errlen, FR_EINPUT, mlabel, "cannot open member", zip_get_error(za));
    } else {
        io_src s = {IO_SRC_ZIP, NULL, NULL, zf, (int64_t)zs.size, 0};
        fr_tensor t;
        st = io_npy_read(&s, mlabel, lim, &t, err, errlen);
        if (st && s.pos < s.size && zip_file_get_error(zf)->zip_err != ZIP_ER_OK)
            st = zip_fail(err, errlen, FR_EINPUT, mlabel, "corrupt member", zip_file_get_error(zf));
        zip_fclose(zf);
        if (!st) {
            char *name = strdup(zs.name);
            if (!name) {
                fr_tensor_free(&t);
                st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
            } else {
                name[nl - 4] = '\0';
                st = fr_bundle_add(out, name, &t, err, errlen);
                if (st) {
                    io_err(err, errlen, st, "%s: duplicate member '%s'", label, zs.name);
                    fr_tensor_free(&t);
                }
                free(name);
            }
        }
    }
    free(mlabel);
    return st;
}

int io_npz_read(zip_source_t *src, const char *label, const fr_limits *lim, fr_bundle *out,
                char *err, size_t errlen)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_t *za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!za) {
        int st = zip_fail(err, errlen, FR_EINPUT, label, "not a valid .npz (zip) file", &ze);
        zip_error_fini(&ze);
        zip_source_free(src);
        return st;
    }
    zip_error_fini(&ze);
    int st = FR_OK;
    zip_int64_t n = zip_get_num_entries(za, 0);
    if (n > MAX_MEMBERS)
        st = io_err(err, errlen, FR_EINPUT, "%s: %lld members, over the limit of %d", label,
                    (long long)n, MAX_MEMBERS);
    int64_t total = 0;
    for (zip_int64_t i = 0; i < n && !st; i++)
        st = read_member(za, i, label, lim, &total, out, err, errlen);
    zip_discard(za); /* frees src too */
    return st;
}

/* ---- writing: each member is produced on demand from its tensor ---- */

typedef struct {
    const fr_tensor *t;
    fr_dtype dtype;
    unsigned char head[FR_MAXDIM * 22 + 256];
    int64_t hlen, total, pos, count;
    zip_error_t error;
} member_src;

static zip_int64_t member_read(member_src *m, unsigned char *o, zip_uint64_t len)
{
    zip_uint64_t n = 0;
    int64_t isz = m->dtype;
    while (n < len && m->pos < m->total) {
        if (m->pos < m->hlen) {
            int64_t c = m->hlen - m->pos;
            if ((zip_uint64_t)c > len - n) c = (int64_t)(len - n);
            memcpy(o + n, m->head + m->pos, (size_t)c);
            n += (zip_uint64_t)c;
            m->pos += c;
            continue;
        }
        int64_t dp = m->pos - m->hlen, e = dp / isz, off = dp % isz;
        if (off == 0 && len - n >= (zip_uint64_t)isz) {
            int64_t k = (int64_t)((len - n) / (zip_uint64_t)isz);
            if (k > m->count - e) k = m->count - e;
            io_npy_encode(m->t->data + e, k, m->dtype, o + n);
            n += (zip_uint64_t)(k * isz);
            m->pos += k * isz;
        } else { /* libzip asked for a piece of an element */
            unsigned char tmp[8];
            io_npy_encode(m->t->data + e, 1, m->dtype, tmp);
            int64_t c = isz - off;
            if ((zip_uint64_t)c > len - n) c = (int64_t)(len - n);
            memcpy(o + n, tmp + off, (size_t)c);
            n += (zip_uint64_t)c;
            m->pos += c;
        }
    }
    return (zip_int64_t)n;
}

static zip_int64_t member_cb(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd)
{
    member_src *m = ud;
    switch (cmd) {
    case ZIP_SOURCE_OPEN: m->pos = 0; return 0;
    case ZIP_SOURCE_READ: return member_read(m, data, len);
    case ZIP_SOURCE_CLOSE: return 0;
    case ZIP_SOURCE_STAT: {
        if (len < sizeof(zip_stat_t)) {
            zip_error_set(&m->error, ZIP_ER_INVAL, 0);
            return -1;
        }
        zip_stat_t *st = data;
        zip_stat_init(st);
        st->size = (zip_uint64_t)m->total;
        st->valid |= ZIP_STAT_SIZE;
        return sizeof(zip_stat_t);
    }
    case ZIP_SOURCE_ERROR: return zip_error_to_data(&m->error, data, len);
    case ZIP_SOURCE_FREE:
        zip_error_fini(&m->error);
        free(m);
        return 0;
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE,
                                              ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE,
                                              -1);
    default: zip_error_set(&m->error, ZIP_ER_OPNOTSUPP, 0); return -1;
    }
}

static int add_member(zip_t *za, const char *label, const char *name, const fr_tensor *t,
                      fr_dtype dtype, int compress, char *err, size_t errlen)
{
    member_src *m = calloc(1, sizeof *m);
    char *mname = malloc(strlen(name) + 8);
    if (!m || !mname) {
        free(m);
        free(mname);
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    }
    sprintf(mname, "%s.npy", *name ? name : "arr_0");
    m->t = t;
    m->dtype = dtype;
    m->count = fr_tensor_count(t);
    m->hlen = (int64_t)io_npy_header(t, dtype, m->head, sizeof m->head);
    m->total = m->hlen + m->count * (int64_t)dtype;
    zip_error_init(&m->error);
    zip_source_t *src = zip_source_function(za, member_cb, m);
    if (!src) {
        zip_error_fini(&m->error);
        free(m);
        free(mname);
        return zip_fail(err, errlen, FR_ENOMEM, label, "cannot create a zip member",
                        zip_get_error(za));
    }
    zip_int64_t idx = zip_file_add(za, mname, src, ZIP_FL_ENC_UTF_8);
    free(mname);
    if (idx < 0) {
        zip_source_free(src);
        return zip_fail(err, errlen, FR_ENOMEM, label, "cannot add a zip member",
                        zip_get_error(za));
    }
    if (zip_set_file_compression(za, (zip_uint64_t)idx, compress ? ZIP_CM_DEFLATE : ZIP_CM_STORE,
                                 0) != 0)
        return zip_fail(err, errlen, FR_ENOMEM, label, "cannot set compression", zip_get_error(za));
    return FR_OK;
}

int io_npz_write(const char *tmppath, const char *label, const fr_bundle *b, fr_dtype dtype,
                 int compress, char *err, size_t errlen)
{
    if (b->count == 0) { /* libzip deletes an empty archive; numpy writes just the end record */
        static const unsigned char eocd[22] = {'P', 'K', 5, 6};
        FILE *f = fopen(tmppath, "wb");
        int bad = !f || fwrite(eocd, 1, sizeof eocd, f) != sizeof eocd;
        if (f) bad |= fclose(f) != 0;
        return bad ? io_err(err, errlen, FR_ENOMEM, "%s: write error", label) : FR_OK;
    }
    int zerr = 0;
    zip_t *za = zip_open(tmppath, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        int st = zip_fail(err, errlen, FR_ENOMEM, label, "cannot create the zip file", &ze);
        zip_error_fini(&ze);
        return st;
    }
    int st = FR_OK;
    for (int i = 0; i < b->count && !st; i++)
        st = add_member(za, label, b->names[i], &b->tensors[i], dtype, compress, err, errlen);
    if (st) {
        zip_discard(za);
        return st;
    }
    if (zip_close(za) != 0) {
        st =
            zip_fail(err, errlen, FR_ENOMEM, label, "cannot write the zip file", zip_get_error(za));
        zip_discard(za);
    }
    return st;
}
