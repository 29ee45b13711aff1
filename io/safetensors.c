/* safetensors.c - the .safetensors format (huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
 * "__metadata__": {...}}, then the data, every tensor little-endian and C order.
 *
 * The header comes from whoever wrote the file, so everything in it is checked before any
 * allocation that depends on it: the length against the file, each tensor's byte count against
 * its shape and dtype, the offsets against the data size and each other (like the reference
 * implementation: no overlap, no hole, nothing after the last tensor). */
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER (100 << 20) /* the reference implementation's limit */
#define ST_MAX_TENSORS 1000000
#define CHUNK (1 << 16)

static int st_dtype(const char *s, io_dtype *dt)
{
    static const struct {
        const char *name;
        char kind;
        int size;
    } types[] = {{"F16", 'f', 2}, {"BF16", 'B', 2}, {"F32", 'f', 4}, {"F64", 'f', 8},
                 {"I8", 'i', 1},  {"I16", 'i', 2},  {"I32", 'i', 4}, {"I64", 'i', 8},
                 {"U8", 'u', 1},  {"U16", 'u', 2},  {"U32", 'u', 4}, {"U64", 'u', 8},
                 {"BOOL", 'b', 1}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(s, types[i].name) == 0)
            return io_dtype_from_descr(types[i].kind, types[i].size, 0, dt), 1;
    return 0;
}

/* A JSON number that is a whole number in 0..2^53 (exact in a double). */
static int whole(const cJSON *x, int64_t *out)
{
    if (!cJSON_IsNumber(x)) return 0;
    double v = x->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != (double)(int64_t)v) return 0;
    *out = (int64_t)v;
    return 1;
}

static int entry(const cJSON *item, const char *label, const fr_limits *lim, int64_t data_size,
                 io_st_entry *e, char *err, size_t errlen)
{
    const char *nm = item->string;
    if (!cJSON_IsObject(item))
        return io_err(err, errlen, FR_EINPUT, "%s: safetensors header: '%s' is not an object",
                      label, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype"),
                *sh = cJSON_GetObjectItemCaseSensitive(item, "shape"),
                *of = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: safetensors header: tensor '%s' lacks a string 'dtype', an array "
                      "'shape' or an array 'data_offsets'",
                      label, nm);
    if (!st_dtype(dt->valuestring, &e->dt))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s': unsupported dtype '%.40s' (supported: F16 BF16 F32 F64 "
                      "I8-I64 U8-U64 BOOL)",
                      label, nm, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > FR_MAXDIM)
        return io_err(err, errlen, FR_EINPUT, "%s: tensor '%s': more than %d dimensions", label, nm,
                      FR_MAXDIM);
    e->ndim = 0;
    int64_t count = 1, bytes;
    int over = 0, inexact = 0, zero = 0;
    char shp[FR_MAXDIM * 24 + 4] = "[";
    for (const cJSON *d = sh->child; d; d = d->next) {
        double v = cJSON_IsNumber(d) ? d->valuedouble : -1;
        if (!(v >= 0 && v == floor(v) && v < 1e300))
            return io_err(err, errlen, FR_EINPUT,
                          "%s: tensor '%s': shape holds something other than whole numbers", label,
                          nm);
        size_t k = strlen(shp);
        snprintf(shp + k, sizeof shp - k, "%s%.0f", k > 1 ? ", " : "", v);
        /* From 2^53 on a JSON number is not read exactly, and no file holds that many bytes. */
        int64_t dim = v < 9007199254740992.0 ? (int64_t)v : INT64_MAX;
        inexact |= dim == INT64_MAX;
        zero |= v == 0;
        e->shape[e->ndim++] = dim;
        if (!io_mul_ok(count, dim, &count)) over = 1;
    }
    strcat(shp, "]");
    if (zero) count = 0, over = 0;
    if (inexact && zero)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s': shape %s has a dimension too large to be read exactly "
                      "(over 2^53)",
                      label, nm, shp);
    if (over || inexact || !io_mul_ok(count, e->dt.size, &bytes))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s': shape %s overflows (its element count or byte size "
                      "exceeds 2^63)",
                      label, nm, shp);
    int64_t b, en;
    if (cJSON_GetArraySize(of) != 2 || !whole(of->child, &b) || !whole(of->child->next, &en) ||
        b > en)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s': data_offsets is not [begin, end] with 0 <= begin <= end",
                      label, nm);
    if (data_size != IO_SIZE_UNKNOWN && en > data_size)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s': data_offsets [%lld, %lld] run past the data section of "
                      "%lld bytes (truncated file?)",
                      label, nm, (long long)b, (long long)en, (long long)data_size);
    if (en - b != bytes)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s': shape and dtype %s make %lld bytes but data_offsets "
                      "[%lld, %lld] hold %lld",
                      label, nm, dt->valuestring, (long long)bytes, (long long)b, (long long)en,
                      (long long)(en - b));
    if (count > lim->max_elements)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: tensor '%s' has %lld elements, over the limit of %lld", label, nm,
                      (long long)count, (long long)lim->max_elements);
    e->begin = b;
    e->end = en;
    e->name = strdup(nm);
    return e->name ? FR_OK : io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
}

static int by_begin(const void *a, const void *b)
{
    const io_st_entry *x = *(io_st_entry *const *)a, *y = *(io_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(io_st_entry *const *)a)->name, (*(io_st_entry *const *)b)->name);
}

/* Offsets tile the data section exactly; names are unique (cJSON keeps duplicate keys). A
 * stream's data section is as long as the tiles (it must end there). */
static int layout(io_st_header *h, const char *label, int64_t data_size, char *err, size_t errlen)
{
    io_st_entry **s = malloc((size_t)(h->count ? h->count : 1) * sizeof *s);
    if (!s) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    for (int i = 0; i < h->count; i++)
        s[i] = &h->e[i];
    int st = FR_OK;
    qsort(s, (size_t)h->count, sizeof *s, by_name);
    for (int i = 1; i < h->count && !st; i++)
        if (strcmp(s[i]->name, s[i - 1]->name) == 0)
            st = io_err(err, errlen, FR_EINPUT, "%s: safetensors header: duplicate tensor '%s'",
                        label, s[i]->name);
    qsort(s, (size_t)h->count, sizeof *s, by_begin);
    int64_t at = 0;
    for (int i = 0; i < h->count && !st; i++) {
        if (s[i]->begin < at)
            st = io_err(err, errlen, FR_EINPUT,
                        "%s: tensors '%s' and '%s' overlap (data_offsets [%lld, %lld] and "
                        "[%lld, %lld])",
                        label, s[i - 1]->name, s[i]->name, (long long)s[i - 1]->begin,
                        (long long)s[i - 1]->end, (long long)s[i]->begin, (long long)s[i]->end);
        else if (s[i]->begin > at)
            st = io_err(err, errlen, FR_EINPUT,
                        "%s: a gap of %lld unindexed bytes before tensor '%s' (corrupt header?)",
                        label, (long long)(s[i]->begin - at), s[i]->name);
        at = s[i]->end;
    }
    if (data_size == IO_SIZE_UNKNOWN) data_size = at;
    h->data_size = data_size;
    if (!st && at != data_size)
        st = io_err(err, errlen, FR_EINPUT,
                    "%s: %lld bytes after the last tensor (the header indexes %lld of %lld)", label,
                    (long long)(data_size - at), (long long)at, (long long)data_size);
    free(s);
    return st;
}

void io_st_header_free(io_st_header *h)
{
    for (int i = 0; i < h->count; i++)
        free(h->e[i].name);
    free(h->e);
    memset(h, 0, sizeof *h);
}

static int parse(const char *text, int64_t len, const char *label, const fr_limits *lim,
                 int64_t data_size, io_st_header *h, char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)len, &end, 0);
    if (!root) return io_json_error(text, (size_t)len, label, "safetensors header", err, errlen);
    int st = FR_OK;
    for (const char *p = end; p < text + len && !st; p++) /* writers pad with spaces */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0')
            st = io_err(err, errlen, FR_EINPUT, "%s: safetensors header: text after the JSON",
                        label);
    if (!st && !cJSON_IsObject(root))
        st = io_err(err, errlen, FR_EINPUT, "%s: safetensors header is not a JSON object", label);
    int n = st ? 0 : cJSON_GetArraySize(root);
    if (!st && n > ST_MAX_TENSORS)
        st = io_err(err, errlen, FR_EINPUT, "%s: %d tensors, over the limit of %d", label, n,
                    ST_MAX_TENSORS);
    if (!st && !(h->e = calloc((size_t)(n ? n : 1), sizeof *h->e)))
        st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    for (const cJSON *it = st ? NULL : root->child; it && !st; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        st = entry(it, label, lim, data_size, &h->e[h->count], err, errlen);
        if (!st) h->count++;
    }
    cJSON_Delete(root);
    if (!st) st = layout(h, label, data_size, err, errlen);
    return st;
}

int io_st_header_read(io_src *s, const char *label, const fr_limits *lim_in, io_st_header *h,
                      char *err, size_t errlen)
{
    fr_limits lim = io_limits(lim_in);
    memset(h, 0, sizeof *h);
    unsigned char pre[8];
    if (s->size < 8 || io_src_read(s, pre, 8) != 8)
        return io_err(err, errlen, FR_EINPUT, "%s: truncated safetensors file (%lld bytes)", label,
                      (long long)s->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | pre[i];
    if (s->size != IO_SIZE_UNKNOWN && n > (uint64_t)(s->size - 8))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: safetensors header length %llu is larger than the file (%lld bytes)",
                      label, (unsigned long long)n, (long long)s->size);
    if (n > ST_MAX_HEADER)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: safetensors header of %llu bytes, over the limit of %d", label,
                      (unsigned long long)n, ST_MAX_HEADER);
    int64_t data_size = s->size == IO_SIZE_UNKNOWN ? IO_SIZE_UNKNOWN : s->size - 8 - (int64_t)n;
    if (data_size != IO_SIZE_UNKNOWN && data_size > lim.max_bytes)
        return io_err(err, errlen, FR_EINPUT, "%s: %lld bytes of data, over the limit of %lld",
                      label, (long long)data_size, (long long)lim.max_bytes);
    char *text = malloc(n ? (size_t)n : 1);
    if (!text) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    int st;
    if (io_src_read(s, text, (size_t)n) != (int64_t)n)
        st = io_err(err, errlen, FR_EINPUT, "%s: truncated safetensors header", label);
    else
        st = parse(text, (int64_t)n, label, &lim, data_size, h, err, errlen);
    free(text);
    if (!st && h->data_size > lim.max_bytes) /* a stream's, known from its header */
        st = io_err(err, errlen, FR_EINPUT, "%s: %lld bytes of data, over the limit of %lld", label,
                    (long long)h->data_size, (long long)lim.max_bytes);
    h->data_start = 8 + (int64_t)n;
    if (st) io_st_header_free(h);
    return st;
}

int io_st_read(io_src *s, const char *label, const fr_limits *lim, fr_dtype as, fr_bundle *out,
               char *err, size_t errlen)
{
    io_st_header h;
    int base = out->count;
    int st = io_st_header_read(s, label, lim, &h, err, errlen);
    if (st) return st;
    /* Tensors are added in the header's order; the data is read in offset order, which the
     * layout check made contiguous, so the source is read front to back once. */
    io_st_entry **ord = malloc((size_t)(h.count ? h.count : 1) * sizeof *ord);
    unsigned char *buf = malloc(CHUNK);
    double *x = malloc(CHUNK * sizeof *x);
    if (!ord || !buf || !x) st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    for (int i = 0; i < h.count && !st; i++) {
        fr_tensor t;
        memset(&t, 0, sizeof t);
        t.ndim = h.e[i].ndim;
        memcpy(t.shape, h.e[i].shape, sizeof t.shape);
        int64_t count = h.e[i].dt.size ? (h.e[i].end - h.e[i].begin) / h.e[i].dt.size : 0;
        if (io_tensor_alloc(&t, count, as)) {
            st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory for tensor '%s'", label,
                        h.e[i].name);
            break;
        }
        st = fr_bundle_add(out, h.e[i].name, &t, err, errlen);
        if (st) fr_tensor_free(&t);
        ord[i] = &h.e[i];
    }
    if (!st) qsort(ord, (size_t)h.count, sizeof *ord, by_begin);
    for (int i = 0; i < h.count && !st; i++) {
        const io_st_entry *e = ord[i];
        fr_tensor *dst = &out->tensors[base + (int)(e - h.e)];
        int64_t per = CHUNK / e->dt.size, total = (e->end - e->begin) / e->dt.size;
        for (int64_t done = 0; done < total && !st; done += per) {
            int64_t m = total - done < per ? total - done : per;
            if (io_src_read(s, buf, (size_t)(m * e->dt.size)) != m * e->dt.size) {
                st = io_err(err, errlen, FR_EINPUT, "%s: truncated or unreadable data of '%s'",
                            label, e->name);
            } else {
                io_decode(buf, m, &e->dt, x);
                io_tensor_store(dst, done, x, m);
            }
        }
    }
    if (!st && io_src_check_end(s))
        st = io_err(err, errlen, FR_EINPUT, "%s: the stream holds more data than its header says",
                    label);
    free(ord);
    free(buf);
    free(x);
    io_st_header_free(&h);
    return st;
}

/* ---- writing: the header (offsets follow from the shapes), then each tensor's bytes ---- */

static int put_escaped(io_w *w, const char *s)
{
    io_puts(w, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\')
            snprintf(e, sizeof e, "\\%c", *p);
        else if (*p < 0x20)
            snprintf(e, sizeof e, "\\u%04x", *p);
        else
            e[0] = (char)*p, e[1] = '\0';
        io_puts(w, e);
    }
    return io_puts(w, "\"");
}

/* The header's JSON into a memory stream (its length goes first in the file). */
static char *st_header_text(const fr_bundle *b, fr_dtype dtype, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (!f) return NULL;
    io_w w = {f, "", "", 0, 0, 0, {{{0}}}};
    io_puts(&w, "{");
    int64_t at = 0;
    for (int i = 0; i < b->count; i++) {
        const fr_tensor *t = &b->tensors[i];
        io_puts(&w, i ? ", " : "");
        put_escaped(&w, b->names[i][0] ? b->names[i] : "arr_0");
        io_puts(&w, dtype == FR_DTYPE_F4 ? ": {\"dtype\": \"F32\", \"shape\": ["
                                         : ": {\"dtype\": \"F64\", \"shape\": [");
        char num[64];
        for (int k = 0; k < t->ndim; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
            io_puts(&w, num);
        }
        int64_t bytes = fr_tensor_count(t) * (int64_t)dtype;
        snprintf(num, sizeof num, "], \"data_offsets\": [%lld, %lld]}", (long long)at,
                 (long long)(at + bytes));
        io_puts(&w, num);
        at += bytes;
    }
    io_puts(&w, "}");
    /* The data starts 8-aligned, as the reference writer pads the header with spaces. */
    while ((8 + w.pos) % 8)
        io_puts(&w, " ");
    if (fclose(f) != 0 || w.errnum) {
        free(text);
        return NULL;
    }
    return text;
}

int io_st_write(io_w *w, const fr_bundle *b, fr_dtype dtype, char *err, size_t errlen)
{
    for (int i = 0; i < b->count; i++)
        if (strcmp(b->names[i], "__metadata__") == 0)
            return io_err(err, errlen, FR_EINPUT,
                          "%s: a tensor named '__metadata__' cannot be stored in .safetensors "
                          "(the name is reserved)",
                          w->label);
    size_t hl;
    char *h = st_header_text(b, dtype, &hl);
    if (!h) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", w->label);
    unsigned char pre[8];
    for (int i = 0; i < 8; i++)
        pre[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    io_put(w, pre, 8);
    io_put(w, h, hl);
    free(h);
    unsigned char *buf = malloc(CHUNK);
    if (!buf) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", w->label);
    int64_t per = CHUNK / (int64_t)dtype;
    for (int i = 0; i < b->count && !w->errnum; i++) {
        int64_t count = fr_tensor_count(&b->tensors[i]);
        for (int64_t at = 0; at < count && !w->errnum; at += per) {
            int64_t m = count - at < per ? count - at : per;
            io_npy_encode(&b->tensors[i], at, m, dtype, buf);
            io_put(w, buf, (size_t)(m * (int64_t)dtype));
        }
    }
    free(buf);
    return w->errnum ? io_w_error(w, err, errlen) : FR_OK;
}
