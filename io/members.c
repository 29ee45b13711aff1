/* members.c - a file's tensors one at a time, streamed in chunks (fastrope check): memory is a
 * chunk, not a tensor and not a file, whatever the dump's size.
 *
 * .npy and .safetensors are read at their data offsets; .npz members through libzip (stored or
 * deflated; CRC checked at the end of each member); their headers and directory entries are
 * parsed and checked by the formats' own functions, the ones the whole-file readers use.
 * Anything else (JSON, pipes) is read whole (io_read_input) and served from memory. A
 * Fortran-order .npy is read whole (its C order needs all of it). */
#include "io_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ELEMS (1 << 16)

typedef enum { M_NPY, M_NPZ, M_ST, M_MEM } m_kind;

typedef struct {
    char *name;
    fr_tensor shape; /* data NULL */
    io_dtype dt;
    int fortran;
    int64_t off;   /* M_NPY, M_ST: file offset of the data; M_NPZ: npy header length */
    int64_t bytes; /* data bytes */
    int64_t zsize; /* M_NPZ: the member's declared size */
    zip_uint64_t zindex;
    io_src z; /* M_NPZ: fr_members_read's open reader of the member (z.zf NULL: none) */
} member;

struct fr_members {
    m_kind kind;
    char *path;
    int count, single;
    member *m;
    FILE *f;
    int64_t fsize;
    zip_t *za;
    fr_bundle mem;
    fr_limits lim;
};

int fr_members_count(const fr_members *m)
{
    return m->count;
}
int fr_members_single(const fr_members *m)
{
    return m->single;
}
const char *fr_members_name(const fr_members *m, int i)
{
    return m->m[i].name;
}
const fr_tensor *fr_members_shape(const fr_members *m, int i)
{
    return &m->m[i].shape;
}
int64_t fr_members_bytes(const fr_members *m, int i)
{
    return m->m[i].bytes;
}

void fr_members_close(fr_members *m)
{
    if (!m) return;
    for (int i = 0; i < m->count; i++) {
        free(m->m[i].name);
        if (m->m[i].z.zf) zip_fclose(m->m[i].z.zf);
    }
    free(m->m);
    if (m->f) fclose(m->f);
    if (m->za) zip_discard(m->za);
    fr_bundle_free(&m->mem);
    free(m->path);
    free(m);
}

static int add(fr_members *m, const char *name, member **out, char *err, size_t errlen)
{
    member *nm = realloc(m->m, (size_t)(m->count + 1) * sizeof *nm);
    if (!nm) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", m->path);
    m->m = nm;
    memset(&nm[m->count], 0, sizeof *nm);
    if (!(nm[m->count].name = strdup(name)))
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", m->path);
    *out = &nm[m->count++];
    return FR_OK;
}

static int npy_head(io_src *s, const char *label, const fr_limits *lim, member *e, char *err,
                    size_t errlen)
{
    io_npy_info h;
    int st = io_npy_head(s, label, lim, &h, err, errlen);
    if (st) return st;
    e->dt = h.dt;
    e->fortran = h.fortran;
    e->shape = h.shape;
    e->off = h.offset;
    e->bytes = h.bytes;
    return FR_OK;
}

static int open_npz(fr_members *m, char *err, size_t errlen)
{
    int zerr = 0;
    m->za = zip_open(m->path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (!m->za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        int st = io_err(err, errlen, FR_EINPUT, "%s: not a valid .npz (zip) file (%s)", m->path,
                        zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return st;
    }
    zip_int64_t n = zip_get_num_entries(m->za, 0);
    if (n > IO_NPZ_MAX_MEMBERS)
        return io_err(err, errlen, FR_EINPUT, "%s: %lld members, over the limit of %d", m->path,
                      (long long)n, IO_NPZ_MAX_MEMBERS);
    int64_t total = 0;
    for (zip_int64_t i = 0; i < n; i++) {
        zip_stat_t zs;
        int st0 = io_npz_stat(m->za, i, m->path, &m->lim, &total, &zs, err, errlen);
        if (st0) return st0;
        size_t nl = strlen(zs.name);
        char label[1024];
        snprintf(label, sizeof label, "%s:%s", m->path, zs.name);
        for (int j = 0; j < m->count; j++)
            if (strlen(m->m[j].name) == nl - 4 && strncmp(m->m[j].name, zs.name, nl - 4) == 0)
                return io_err(err, errlen, FR_EINPUT, "%s: duplicate member '%s'", m->path,
                              zs.name);
        member *e;
        int st = add(m, "", &e, err, errlen);
        if (st) return st;
        e->name[0] = '\0';
        char *nm = strndup(zs.name, nl - 4);
        if (!nm) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", m->path);
        free(e->name);
        e->name = nm;
        e->zindex = (zip_uint64_t)i;
        e->zsize = (int64_t)zs.size;
        zip_file_t *zf = zip_fopen_index(m->za, (zip_uint64_t)i, 0);
        if (!zf)
            return io_err(err, errlen, FR_EINPUT, "%s: cannot open member (%s)", label,
                          zip_strerror(m->za));
        io_src s = {IO_SRC_ZIP, NULL, NULL, zf, e->zsize, 0, 0};
        st = npy_head(&s, label, &m->lim, e, err, errlen);
        zip_fclose(zf);
        if (st) return st;
    }
    return FR_OK;
}

static int open_st(fr_members *m, char *err, size_t errlen)
{
    io_src s = {IO_SRC_FILE, NULL, m->f, NULL, m->fsize, 0, 0};
    io_st_header h;
    int st = io_st_header_read(&s, m->path, &m->lim, &h, err, errlen);
    if (st) return st;
    for (int i = 0; i < h.count && !st; i++) {
        member *e;
        if ((st = add(m, h.e[i].name, &e, err, errlen))) break;
        e->dt = h.e[i].dt;
        e->shape.ndim = h.e[i].ndim;
        memcpy(e->shape.shape, h.e[i].shape, sizeof e->shape.shape);
        e->off = h.data_start + h.e[i].begin;
        e->bytes = h.e[i].end - h.e[i].begin;
    }
    io_st_header_free(&h);
    return st;
}

static int open_mem(fr_members *m, io_input *in, char *err, size_t errlen)
{
    int st = io_read_input(in, &m->lim, FR_DTYPE_F8, &m->mem, err, errlen);
    if (st) return st;
    m->single = m->mem.single;
    for (int i = 0; i < m->mem.count && !st; i++) {
        member *e;
        if ((st = add(m, m->mem.names[i], &e, err, errlen))) break;
        e->shape.ndim = m->mem.tensors[i].ndim;
        memcpy(e->shape.shape, m->mem.tensors[i].shape, sizeof e->shape.shape);
        e->bytes = fr_tensor_count(&m->mem.tensors[i]) * 8;
    }
    return st;
}

int fr_members_open(const char *path, const fr_limits *lim, fr_members **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    fr_members *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", path);
    }
    m->lim = io_limits(lim);
    io_input in;
    int st = io_input_open(&in, path, err, errlen);
    if (st) {
        fr_members_close(m);
        return st;
    }
    m->kind = !in.regular                    ? M_MEM
              : in.fmt == FR_FMT_NPY         ? M_NPY
              : in.fmt == FR_FMT_NPZ         ? M_NPZ
              : in.fmt == FR_FMT_SAFETENSORS ? M_ST
                                             : M_MEM;
    m->fsize = in.size;
    member *e;
    switch (m->kind) {
    case M_NPY: {
        m->single = 1;
        m->f = in.f;
        in.f = NULL;
        if ((st = add(m, "", &e, err, errlen))) break;
        io_src s = {IO_SRC_FILE, NULL, m->f, NULL, m->fsize, 0, 0};
        st = npy_head(&s, path, &m->lim, e, err, errlen);
        break;
    }
    case M_NPZ: st = open_npz(m, err, errlen); break; /* libzip opens by path */
    case M_ST:
        m->f = in.f;
        in.f = NULL;
        st = open_st(m, err, errlen);
        break;
    default: st = open_mem(m, &in, err, errlen);
    }
    io_input_close(&in);
    if (st) {
        fr_members_close(m);
        return st;
    }
    *out = m;
    return FR_OK;
}

/* Whole rows per chunk when a row fits, so that consumers see rows in one piece. */
static int64_t chunk_elems(const fr_tensor *shape)
{
    int64_t last = shape->ndim ? shape->shape[shape->ndim - 1] : 1;
    if (last <= 0 || last > CHUNK_ELEMS) return CHUNK_ELEMS;
    return CHUNK_ELEMS / last * last;
}

static int stream_src(io_src *s, const member *e, const char *label, fr_chunk_fn fn, void *ctx,
                      char *err, size_t errlen)
{
    int64_t per = chunk_elems(&e->shape), total = e->bytes / e->dt.size;
    unsigned char *raw = malloc((size_t)(per * e->dt.size));
    double *x = malloc((size_t)per * sizeof *x);
    int st = raw && x ? FR_OK : io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    for (int64_t done = 0; done < total && !st; done += per) {
        int64_t m = total - done < per ? total - done : per;
        if (io_src_read(s, raw, (size_t)(m * e->dt.size)) != m * e->dt.size) {
            st = io_err(err, errlen, FR_EINPUT, "%s: truncated or unreadable data", label);
            break;
        }
        io_decode(raw, m, &e->dt, x);
        st = fn(ctx, x, m);
    }
    free(raw);
    free(x);
    return st;
}

/* A Fortran-order array: read whole (transposed by the npy reader), served in one piece. */
static int stream_whole(io_src *s, const char *label, const fr_limits *lim, fr_chunk_fn fn,
                        void *ctx, char *err, size_t errlen)
{
    fr_tensor t;
    int st = io_npy_read(s, label, lim, FR_DTYPE_F8, &t, err, errlen);
    if (st) return st;
    st = fn(ctx, t.data, fr_tensor_count(&t));
    fr_tensor_free(&t);
    return st;
}

int fr_members_stream(fr_members *m, int i, fr_chunk_fn fn, void *ctx, char *err, size_t errlen)
{
    member *e = &m->m[i];
    char label[1024];
    if (m->single)
        snprintf(label, sizeof label, "%s", m->path);
    else
        snprintf(label, sizeof label, "%s:%s", m->path, e->name);
    int whole = e->fortran && e->shape.ndim > 1;
    switch (m->kind) {
    case M_MEM: {
        const fr_tensor *t = &m->mem.tensors[i];
        return fn(ctx, t->data, fr_tensor_count(t));
    }
    case M_NPY:
    case M_ST: {
        io_src s = {IO_SRC_FILE, NULL, m->f, NULL, m->fsize, 0, 0};
        if (fseeko(m->f, whole ? 0 : e->off, SEEK_SET) != 0)
            return io_err(err, errlen, FR_EINPUT, "%s: %s", label, strerror(errno));
        if (whole) return stream_whole(&s, label, &m->lim, fn, ctx, err, errlen);
        s.pos = e->off;
        s.size = e->off + e->bytes;
        return stream_src(&s, e, label, fn, ctx, err, errlen);
    }
    default: {
        zip_file_t *zf = zip_fopen_index(m->za, e->zindex, 0);
        if (!zf)
            return io_err(err, errlen, FR_EINPUT, "%s: cannot open member (%s)", label,
                          zip_strerror(m->za));
        io_src s = {IO_SRC_ZIP, NULL, NULL, zf, e->zsize, 0, 0};
        int st;
        if (whole) {
            st = stream_whole(&s, label, &m->lim, fn, ctx, err, errlen);
        } else {
            char skip[4096];
            int64_t left = e->off;
            st = FR_OK;
            while (left > 0 && !st) {
                int64_t c = left < (int64_t)sizeof skip ? left : (int64_t)sizeof skip;
                if (io_src_read(&s, skip, (size_t)c) != c)
                    st = io_err(err, errlen, FR_EINPUT, "%s: truncated member", label);
                left -= c;
            }
            if (!st) st = stream_src(&s, e, label, fn, ctx, err, errlen);
            int end = st ? 0 : io_src_check_end(&s);
            if (end)
                st = io_err(err, errlen, FR_EINPUT, "%s: %s", label,
                            end > 0 ? "member holds more data than its declared size"
                                    : "corrupt data (checksum or decompression error)");
        }
        zip_fclose(zf);
        return st;
    }
    }
}

/* ---- reading a range (fr_members_read) ------------------------------------------------------ */

/* count elements from s into out, decoded, a chunk of raw bytes at a time. */
static int read_decoded(io_src *s, const member *e, const char *label, int64_t count, double *out,
                        char *err, size_t errlen)
{
    int64_t per = count < CHUNK_ELEMS ? count : CHUNK_ELEMS;
    unsigned char *raw = malloc((size_t)(per * e->dt.size));
    int st = raw ? FR_OK : io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    for (int64_t done = 0; done < count && !st; done += per) {
        int64_t c = count - done < per ? count - done : per;
        if (io_src_read(s, raw, (size_t)(c * e->dt.size)) != c * e->dt.size)
            st = io_err(err, errlen, FR_EINPUT, "%s: truncated or unreadable data", label);
        else
            io_decode(raw, c, &e->dt, out + done);
    }
    free(raw);
    return st;
}

static int skip(io_src *s, int64_t bytes, const char *label, char *err, size_t errlen)
{
    char buf[16384];
    while (bytes > 0) {
        int64_t c = bytes < (int64_t)sizeof buf ? bytes : (int64_t)sizeof buf;
        if (io_src_read(s, buf, (size_t)c) != c)
            return io_err(err, errlen, FR_EINPUT, "%s: truncated or corrupt member", label);
        bytes -= c;
    }
    return FR_OK;
}

typedef struct {
    int64_t first, count, at;
    double *out;
} range_ctx;

static int copy_range(void *ctx, const double *x, int64_t count)
{
    range_ctx *r = ctx;
    for (int64_t i = 0; i < count; i++, r->at++)
        if (r->at >= r->first && r->at < r->first + r->count) r->out[r->at - r->first] = x[i];
    return r->at >= r->first + r->count; /* stops the stream once the range is in */
}

/* A deflated member cannot seek: its reader stays open at the end of the last range, and is
 * reopened only to go back. The CRC is checked when a read reaches the member's end. */
static int read_npz(member *e, zip_t *za, const char *label, int64_t first, int64_t count,
                    double *out, char *err, size_t errlen)
{
    int64_t at = e->off + first * e->dt.size;
    int st;
    if (e->z.zf && e->z.pos > at) {
        zip_fclose(e->z.zf);
        e->z.zf = NULL;
    }
    if (!e->z.zf) {
        zip_file_t *zf = zip_fopen_index(za, e->zindex, 0);
        if (!zf)
            return io_err(err, errlen, FR_EINPUT, "%s: cannot open member (%s)", label,
                          zip_strerror(za));
        e->z = (io_src){IO_SRC_ZIP, NULL, NULL, zf, e->zsize, 0, 0};
    }
    if ((st = skip(&e->z, at - e->z.pos, label, err, errlen)) ||
        (st = read_decoded(&e->z, e, label, count, out, err, errlen)))
        return st;
    if (e->z.pos == e->zsize) {
        int end = io_src_check_end(&e->z);
        zip_fclose(e->z.zf);
        e->z.zf = NULL;
        if (end)
            return io_err(err, errlen, FR_EINPUT, "%s: %s", label,
                          end > 0 ? "member holds more data than its declared size"
                                  : "corrupt data (checksum or decompression error)");
    }
    return FR_OK;
}

int fr_members_read(fr_members *m, int i, int64_t first, int64_t count, double *out, char *err,
                    size_t errlen)
{
    member *e = &m->m[i];
    char label[1024];
    if (m->single)
        snprintf(label, sizeof label, "%s", m->path);
    else
        snprintf(label, sizeof label, "%s:%s", m->path, e->name);
    int64_t total = fr_tensor_count(&e->shape);
    if (first < 0 || count < 0 || first > total - count)
        return io_err(err, errlen, FR_EUSAGE, "%s: values %lld..%lld of %lld: out of range", label,
                      (long long)first, (long long)(first + count), (long long)total);
    if (count == 0) return FR_OK;
    if (m->kind == M_MEM) {
        memcpy(out, m->mem.tensors[i].data + first, (size_t)count * sizeof *out);
        return FR_OK;
    }
    if (e->fortran && e->shape.ndim > 1) { /* rare: the whole array, for its C order */
        range_ctx r = {first, count, 0, out};
        int st = fr_members_stream(m, i, copy_range, &r, err, errlen);
        return st == 1 && r.at >= first + count ? FR_OK : st;
    }
    if (m->kind == M_NPZ) return read_npz(e, m->za, label, first, count, out, err, errlen);
    int64_t at = e->off + first * e->dt.size;
    if (fseeko(m->f, at, SEEK_SET) != 0)
        return io_err(err, errlen, FR_EINPUT, "%s: %s", label, strerror(errno));
    io_src s = {IO_SRC_FILE, NULL, m->f, NULL, e->off + e->bytes, at, 0};
    return read_decoded(&s, e, label, count, out, err, errlen);
}
