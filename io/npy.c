/* npy.c - the .npy format (numpy/lib/format.py): versions 1.0, 2.0, 3.0; float and integer
 * dtypes of any byte order, C or Fortran order, any rank; everything becomes row-major double.
 *
 * The header is a Python dict literal, so it is parsed as one (keys in any order, either quote,
 * trailing commas, "(5,)" and "()") instead of being matched against numpy's exact spelling;
 * anything else is refused, because a misread header means silently wrong numbers. */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>

#define NPY_MAX_HEADER (1 << 20) /* numpy itself refuses headers over 10000 bytes by default */
#define CHUNK (1 << 16)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG 1
#else
#define HOST_BIG 0
#endif

typedef struct {
    char kind; /* 'f', 'i', 'u', 'b' */
    int size;  /* bytes per item */
    int swap;  /* the file's byte order differs from the host's */
    char descr[64];
} npy_dtype;

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted string without escapes (no key or descr we accept needs one). */
static int parse_str(cursor *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap) return 0;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    out[n] = '\0';
    return 1;
}

static int parse_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return 0;
    c->p += n;
    return 1;
}

/* A non-negative Python int (Python 2 wrote "3L"); -1 for a malformed one, -2 if it overflows. */
static int64_t parse_dim(cursor *c)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return -1;
    int64_t v = 0;
    int over = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        int d = *c->p++ - '0';
        if (v > (INT64_MAX - d) / 10)
            over = 1;
        else
            v = v * 10 + d;
    }
    if (c->p < c->end && (*c->p == 'L' || *c->p == 'l')) c->p++;
    return over ? -2 : v;
}

static int parse_descr(const char *s, npy_dtype *dt)
{
    const char *p = s;
    char order = '=';
    if (*p == '<' || *p == '>' || *p == '|' || *p == '=') order = *p++;
    if (!*p || !strchr("fiub", *p)) return 0;
    dt->kind = *p++;
    if (*p < '1' || *p > '9' || p[1] != '\0') return 0;
    dt->size = *p - '0';
    switch (dt->kind) {
    case 'f':
        if (dt->size != 2 && dt->size != 4 && dt->size != 8) return 0;
        break;
    case 'b':
        if (dt->size != 1) return 0;
        break;
    default:
        if (dt->size != 1 && dt->size != 2 && dt->size != 4 && dt->size != 8) return 0;
    }
    /* '|' means "byte order does not apply", which is only true of one-byte items. */
    if (order == '|' && dt->size != 1) return 0;
    int big = order == '>' || (order == '=' && HOST_BIG);
    dt->swap = dt->size > 1 && order != '|' && big != HOST_BIG;
    snprintf(dt->descr, sizeof dt->descr, "%s", s);
    return 1;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t cap)
{
    size_t off = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (off < cap) snprintf(buf + off, cap - off, ndim == 1 ? ",)" : ")");
}

/* The dict literal of the header into dt, fortran, t->ndim, t->shape. */
/* How much of the rest of the header an error message may quote: the header need not be
 * NUL-terminated (io_npy_parse_dict takes a length), so "%.20s" alone could read past it. */
static int shown(const cursor *c, int max)
{
    return c->end - c->p < max ? (int)(c->end - c->p) : max;
}

/* The list literal at c ("[('a', '<f8'), ...]") up to its closing bracket, cut with "..." to
 * fit out: a structured dtype quoted whole instead of a fragment of the header. */
static void bracketed(const cursor *c, char *out, size_t cap)
{
    int depth = 0;
    char q = 0;
    size_t n = 0;
    for (const char *p = c->p; p < c->end; p++) {
        if (n + 4 >= cap) {
            memcpy(out + n, "...", 4);
            return;
        }
        out[n++] = *p;
        if (q) {
            if (*p == q) q = 0;
        } else if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (*p == '[' || *p == '(') {
            depth++;
        } else if ((*p == ']' || *p == ')') && --depth == 0) {
            break;
        }
    }
    out[n] = '\0';
}

static int parse_header(const char *h, size_t len, const char *label, npy_dtype *dt, int *fortran,
                        fr_tensor *t, char *err, size_t errlen)
{
    cursor c = {h, h + len};
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    char key[32], descr[64];
    if (!eat(&c, '{')) return io_err(err, errlen, FR_EINPUT, "%s: npy header is not a dict", label);
    while (!eat(&c, '}')) {
        if (!parse_str(&c, key, sizeof key) || !eat(&c, ':'))
            return io_err(err, errlen, FR_EINPUT, "%s: malformed npy header near '%.*s'", label,
                          shown(&c, 20), c.p);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            have_descr = 1;
            if (!parse_str(&c, descr, sizeof descr)) {
                skip_ws(&c);
                if (c.p < c.end && *c.p == '[') {
                    char fields[80];
                    bracketed(&c, fields, sizeof fields);
                    return io_err(err, errlen, FR_EINPUT,
                                  "%s: structured dtype %s is not supported (a tensor is one "
                                  "numeric dtype: store each field as its own array)",
                                  label, fields);
                }
                return io_err(err, errlen, FR_EINPUT, "%s: npy header: descr is not a dtype string",
                              label);
            }
            if (!parse_descr(descr, dt))
                return io_err(err, errlen, FR_EINPUT,
                              "%s: unsupported dtype '%s' (supported: f2 f4 f8 i1-i8 u1-u8 b1)",
                              label, descr);
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            have_fortran = 1;
            if (parse_word(&c, "True"))
                *fortran = 1;
            else if (parse_word(&c, "False"))
                *fortran = 0;
            else
                return io_err(err, errlen, FR_EINPUT,
                              "%s: npy header: fortran_order is not True or False", label);
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            have_shape = 1;
            if (!eat(&c, '('))
                return io_err(err, errlen, FR_EINPUT, "%s: npy header: shape is not a tuple",
                              label);
            t->ndim = 0;
            int last_comma = 0;
            while (!eat(&c, ')')) {
                if (t->ndim > 0 && !last_comma)
                    return io_err(err, errlen, FR_EINPUT, "%s: npy header: malformed shape", label);
                int64_t d = parse_dim(&c);
                if (d == -2)
                    return io_err(err, errlen, FR_EINPUT,
                                  "%s: npy header: shape dimension overflows int64", label);
                if (d < 0)
                    return io_err(err, errlen, FR_EINPUT,
                                  "%s: npy header: shape holds something other than "
                                  "non-negative integers",
                                  label);
                if (t->ndim >= FR_MAXDIM)
                    return io_err(err, errlen, FR_EINPUT, "%s: more than %d dimensions", label,
                                  FR_MAXDIM);
                t->shape[t->ndim++] = d;
                last_comma = eat(&c, ',');
            }
            /* Python needs "(5,)" for a 1-tuple; "(5)" is an int, which numpy refuses too. */
            if (t->ndim == 1 && !last_comma)
                return io_err(err, errlen, FR_EINPUT,
                              "%s: npy header: shape is '(n)', not a tuple '(n,)'", label);
        } else {
            return io_err(err, errlen, FR_EINPUT, "%s: npy header: unexpected or repeated key '%s'",
                          label, key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return io_err(err, errlen, FR_EINPUT, "%s: malformed npy header near '%.*s'", label,
                              shown(&c, 20), c.p);
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end)
        return io_err(err, errlen, FR_EINPUT, "%s: npy header: text after the dict", label);
    if (!have_descr || !have_fortran || !have_shape)
        return io_err(err, errlen, FR_EINPUT, "%s: npy header lacks '%s'", label,
                      !have_descr     ? "descr"
                      : !have_fortran ? "fortran_order"
                                      : "shape");
    return FR_OK;
}

/* The magic, version, header length and dict at the start of s; the shape's size checked
 * against s (when its size is known), the limits and overflow. s is left at the data. */
int io_npy_head(io_src *s, const char *label, const fr_limits *lim_in, io_npy_info *info, char *err,
                size_t errlen)
{
    fr_limits lim = io_limits(lim_in);
    memset(info, 0, sizeof *info);
    fr_tensor *t = &info->shape;
    unsigned char pre[12];
    if (s->size < 10 || io_src_read(s, pre, 10) != 10)
        return io_err(err, errlen, FR_EINPUT, "%s: truncated npy file (%lld bytes)", label,
                      (long long)(s->size == IO_SIZE_UNKNOWN ? s->pos : s->size));
    if (memcmp(pre, "\x93NUMPY", 6) != 0)
        return io_err(err, errlen, FR_EINPUT, "%s: not a .npy file (bad magic)", label);
    int major = pre[6];
    int64_t hlen, pre_len = 10;
    if (major == 1) {
        hlen = pre[8] | (pre[9] << 8);
    } else if (major == 2 || major == 3) {
        if (io_src_read(s, pre + 10, 2) != 2)
            return io_err(err, errlen, FR_EINPUT, "%s: truncated npy header", label);
        hlen = (int64_t)pre[8] | ((int64_t)pre[9] << 8) | ((int64_t)pre[10] << 16) |
               ((int64_t)pre[11] << 24);
        pre_len = 12;
    } else {
        return io_err(err, errlen, FR_EINPUT, "%s: unsupported npy version %d.%d", label, major,
                      pre[7]);
    }
    if (hlen > NPY_MAX_HEADER)
        return io_err(err, errlen, FR_EINPUT, "%s: npy header of %lld bytes is too long", label,
                      (long long)hlen);
    if (pre_len + hlen > s->size)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: truncated npy file (header of %lld bytes, file of %lld)", label,
                      (long long)hlen, (long long)s->size);
    char *h = malloc((size_t)hlen + 1);
    if (!h) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    int st = FR_OK;
    if (io_src_read(s, h, (size_t)hlen) != hlen)
        st = io_err(err, errlen, FR_EINPUT, "%s: truncated npy header", label);
    else if (memchr(h, '\0', (size_t)hlen))
        st = io_err(err, errlen, FR_EINPUT, "%s: npy header holds a NUL byte", label);
    npy_dtype dt;
    if (!st) {
        h[hlen] = '\0';
        st = parse_header(h, (size_t)hlen, label, &dt, &info->fortran, t, err, errlen);
    }
    free(h);
    if (st) {
        t->ndim = 0;
        return st;
    }
    info->dt.kind = dt.kind;
    info->dt.size = dt.size;
    info->dt.swap = dt.swap;
    snprintf(info->descr, sizeof info->descr, "%s", dt.descr);

    char shp[FR_MAXDIM * 22 + 8];
    shape_str(t->shape, t->ndim, shp, sizeof shp);
    int64_t count = 1, bytes;
    int zero = 0;
    for (int i = 0; i < t->ndim; i++)
        zero |= t->shape[i] == 0;
    for (int i = 0; i < t->ndim && !zero; i++)
        if (!io_mul_ok(count, t->shape[i], &count))
            return io_err(err, errlen, FR_EINPUT, "%s: header says shape %s: its size overflows",
                          label, shp);
    if (zero) count = 0;
    if (!io_mul_ok(count, dt.size, &bytes))
        return io_err(err, errlen, FR_EINPUT, "%s: header says shape %s of %s: its size overflows",
                      label, shp, dt.descr);
    int64_t have = s->size - pre_len - hlen;
    if (s->size != IO_SIZE_UNKNOWN && bytes != have)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: header says shape %s of %s (%lld bytes) but the file holds %lld bytes "
                      "of data",
                      label, shp, dt.descr, (long long)bytes, (long long)have);
    if (count > lim.max_elements)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: shape %s has %lld elements, over the limit of %lld", label, shp,
                      (long long)count, (long long)lim.max_elements);
    if (bytes > lim.max_bytes)
        return io_err(err, errlen, FR_EINPUT, "%s: %lld bytes of data, over the limit of %lld",
                      label, (long long)bytes, (long long)lim.max_bytes);
    info->offset = pre_len + hlen;
    info->count = count;
    info->bytes = bytes;
    return FR_OK;
}

int io_npy_read(io_src *s, const char *label, const fr_limits *lim, fr_dtype as, fr_tensor *t,
                char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    io_npy_info h;
    int st = io_npy_head(s, label, lim, &h, err, errlen);
    if (st) return st;
    *t = h.shape;
    int64_t count = h.count;
    char shp[FR_MAXDIM * 22 + 8];
    shape_str(t->shape, t->ndim, shp, sizeof shp);
    if ((uint64_t)count > SIZE_MAX / sizeof(double))
        return io_err(err, errlen, FR_EINPUT, "%s: shape %s does not fit in memory", label, shp);
    int64_t per = CHUNK / h.dt.size;
    unsigned char *buf = malloc(CHUNK);
    double *x = malloc((size_t)per * sizeof *x);
    if (io_tensor_alloc(t, count, as) || !buf || !x) {
        free(buf);
        free(x);
        fr_tensor_free(t);
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory for shape %s", label, shp);
    }
    /* Fortran order is transposed while streaming: an odometer over the Fortran index (first
     * axis fastest) tracks the element's C offset, so no second copy of the data is needed. */
    int64_t idx[FR_MAXDIM] = {0}, cstride[FR_MAXDIM], off = 0;
    int64_t acc = 1;
    /* Only a non-empty tensor needs them, and only then is their product known not to overflow
     * (an empty one may have other axes of any size: (0, 4, 4e18)). */
    for (int i = t->ndim - 1; i >= 0 && count > 0; i--) {
        cstride[i] = acc;
        acc *= t->shape[i];
    }
    int transpose = h.fortran && t->ndim > 1;
    for (int64_t done = 0; done < count && !st; done += per) {
        int64_t m = count - done < per ? count - done : per;
        if (io_src_read(s, buf, (size_t)(m * h.dt.size)) != m * h.dt.size) {
            st = io_err(err, errlen, FR_EINPUT, "%s: truncated or unreadable npy data", label);
            break;
        }
        io_decode(buf, m, &h.dt, x);
        if (!transpose) {
            io_tensor_store(t, done, x, m);
            continue;
        }
        for (int64_t j = 0; j < m; j++) {
            io_tensor_store(t, off, x + j, 1);
            for (int a = 0; a < t->ndim; a++) {
                off += cstride[a];
                if (++idx[a] < t->shape[a]) break;
                off -= cstride[a] * t->shape[a];
                idx[a] = 0;
            }
        }
    }
    free(buf);
    free(x);
    int end = st ? 0 : io_src_check_end(s);
    if (end)
        st = io_err(err, errlen, FR_EINPUT, "%s: %s", label,
                    end < 0                    ? "corrupt data (checksum or decompression error)"
                    : s->kind == IO_SRC_STREAM ? "the stream holds more data than its header says"
                                               : "member holds more data than its declared size");
    if (st) fr_tensor_free(t);
    return st;
}

size_t io_npy_header(const fr_tensor *t, fr_dtype dtype, unsigned char *buf, size_t cap)
{
    char dict[FR_MAXDIM * 22 + 128], shp[FR_MAXDIM * 22 + 8];
    shape_str(t->shape, t->ndim, shp, sizeof shp);
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     dtype == FR_DTYPE_F4 ? "<f4" : "<f8", shp);
    /* Version 1.0 unless the dict outgrows its 16-bit length field; total padded to 64 bytes as
     * numpy does, so the data is aligned for memory mapping. */
    size_t pre = (size_t)n + 1 + 10 > 65535 ? 12 : 10;
    size_t total = (pre + (size_t)n + 1 + 63) / 64 * 64;
    if (total > cap) return 0;
    size_t hlen = total - pre;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = pre == 10 ? 1 : 2;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, dict, (size_t)n);
    memset(buf + pre + n, ' ', hlen - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}

void io_npy_encode(const fr_tensor *t, int64_t from, int64_t count, fr_dtype dtype,
                   unsigned char *out)
{
    for (int64_t i = 0; i < count; i++) {
        unsigned char b[8];
        if (dtype == FR_DTYPE_F4) {
            /* round to nearest even: numpy's astype(float32) */
            float f = t->f32 ? t->f32[from + i] : (float)t->data[from + i];
            memcpy(b, &f, 4);
        } else {
            double d = t->f32 ? (double)t->f32[from + i] : t->data[from + i];
            memcpy(b, &d, 8);
        }
        unsigned char *o = out + i * (int64_t)dtype;
        if (HOST_BIG)
            for (int j = 0; j < (int)dtype; j++)
                o[j] = b[dtype - 1 - j];
        else
            memcpy(o, b, (size_t)dtype);
    }
}

void io_npy_gen_init(io_npy_gen *g, const fr_tensor *t, fr_dtype dtype)
{
    g->t = t;
    g->dtype = dtype;
    g->hlen = io_npy_header(t, dtype, g->head, sizeof g->head);
    g->count = fr_tensor_count(t);
    g->hpos = 0;
    g->next = 0;
}

uint64_t io_npy_gen_size(const io_npy_gen *g)
{
    return g->hlen + (uint64_t)g->count * (uint64_t)g->dtype;
}

void io_npy_gen_rewind(void *ctx)
{
    io_npy_gen *g = ctx;
    g->hpos = 0;
    g->next = 0;
}

/* The header, then whole elements (cap is at least 64 bytes, so one always fits). */
size_t io_npy_gen_next(void *ctx, unsigned char *buf, size_t cap)
{
    io_npy_gen *g = ctx;
    size_t n = 0;
    if (g->hpos < g->hlen) {
        n = g->hlen - g->hpos < cap ? g->hlen - g->hpos : cap;
        memcpy(buf, g->head + g->hpos, n);
        g->hpos += n;
    }
    int64_t k = (int64_t)((cap - n) / (size_t)g->dtype);
    if (k > g->count - g->next) k = g->count - g->next;
    if (k > 0) {
        io_npy_encode(g->t, g->next, k, g->dtype, buf + n);
        g->next += k;
        n += (size_t)(k * g->dtype);
    }
    return n;
}

int io_npy_write(io_w *w, const fr_tensor *t, fr_dtype dtype, char *err, size_t errlen)
{
    io_npy_gen g;
    io_npy_gen_init(&g, t, dtype);
    if (!g.hlen) return io_err(err, errlen, FR_ENOMEM, "%s: npy header too long", w->label);
    unsigned char *buf = malloc(CHUNK);
    if (!buf) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", w->label);
    size_t n;
    int bad = 0;
    while (!bad && (n = io_npy_gen_next(&g, buf, CHUNK)) > 0)
        bad = io_put(w, buf, n);
    free(buf);
    return bad ? io_w_error(w, err, errlen) : FR_OK;
}
