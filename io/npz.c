/* npz.c - what numpy.savez and numpy.savez_compressed write: a zip (stored or deflated,
 * zip64 for big members) of NAME.npy members, read with libzip and written front to back by
 * io/zipw.c (so that a bundle can stream into a pipe).
 *
 * Reading trusts nothing in the zip directory: a member's declared size is checked against the
 * limits and against what its compressed size can possibly expand to before anything is
 * allocated, and the member is never read past its declared size (zip bombs). Writing produces
 * each member from its tensor in pieces, so no serialized copy is held. */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>

/* Deflate cannot expand a byte to more than about 1032 bytes (258-byte matches coded in
 * 2 bits); a member claiming more than this is lying about its size. */
#define DEFLATE_MAX_RATIO 1032

static int zip_fail(char *err, size_t errlen, int status, const char *label, const char *what,
                    zip_error_t *ze)
{
    return io_err(err, errlen, status, "%s: %s (%s)", label, what, zip_error_strerror(ze));
}

int io_npz_stat(zip_t *za, int64_t i, const char *label, const fr_limits *lim, int64_t *total,
                zip_stat_t *out, char *err, size_t errlen)
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
    *out = zs;
    return FR_OK;
}

static int read_member(zip_t *za, zip_int64_t i, const char *label, const fr_limits *lim,
                       fr_dtype as, int64_t *total, fr_bundle *out, char *err, size_t errlen)
{
    zip_stat_t zs;
    int st0 = io_npz_stat(za, i, label, lim, total, &zs, err, errlen);
    if (st0) return st0;
    size_t nl = strlen(zs.name);

    char *mlabel = malloc(strlen(label) + nl + 2);
    if (!mlabel) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    sprintf(mlabel, "%s:%s", label, zs.name);
    int st;
    zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
    if (!zf) {
        st = zip_fail(err, errlen, FR_EINPUT, mlabel, "cannot open member", zip_get_error(za));
    } else {
        io_src s = {IO_SRC_ZIP, NULL, NULL, zf, (int64_t)zs.size, 0, 0};
        fr_tensor t;
        st = io_npy_read(&s, mlabel, lim, as, &t, err, errlen);
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

int io_npz_read(zip_source_t *src, const char *label, const fr_limits *lim, fr_dtype as,
                fr_bundle *out, char *err, size_t errlen)
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
    if (n > IO_NPZ_MAX_MEMBERS)
        st = io_err(err, errlen, FR_EINPUT, "%s: %lld members, over the limit of %d", label,
                    (long long)n, IO_NPZ_MAX_MEMBERS);
    int64_t total = 0;
    for (zip_int64_t i = 0; i < n && !st; i++)
        st = read_member(za, i, label, lim, as, &total, out, err, errlen);
    zip_discard(za); /* frees src too */
    return st;
}

/* ---- writing: each member is produced on demand from its tensor (io/zipw.c) ---- */

int io_npz_write(io_w *w, const fr_bundle *b, fr_dtype dtype, int compress, char *err,
                 size_t errlen)
{
    io_zip z;
    io_zip_init(&z, w, 0);
    int st = FR_OK;
    for (int i = 0; i < b->count && !st; i++) {
        const char *name = b->names[i][0] ? b->names[i] : "arr_0";
        char *mname = malloc(strlen(name) + 5);
        if (!mname) {
            st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory", w->label);
            break;
        }
        sprintf(mname, "%s.npy", name);
        io_npy_gen g;
        io_npy_gen_init(&g, &b->tensors[i], dtype);
        io_producer p = {io_npy_gen_next, io_npy_gen_rewind, &g};
        st = io_zip_member(&z, mname, compress, io_npy_gen_size(&g), &p, err, errlen);
        free(mname);
    }
    if (!st) st = io_zip_finish(&z, err, errlen);
    io_zip_free(&z);
    return st;
}
