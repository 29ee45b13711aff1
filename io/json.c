/* json.c - tensors as JSON: nested arrays ([[1, 2], [3, 4]]) or {"shape": [...], "data": [flat,
 * row-major]}; a bundle is an object of named tensors. Parsing uses cJSON (strtod: correctly
 * rounded); writing prints each double in the fewest digits that read back to the same bits. */
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* cJSON refuses nesting deeper than CJSON_NESTING_LIMIT with the same error as a syntax error:
 * the depth at the error tells them apart ("[[[[...": a tensor has at most 32 axes anyway). */
int io_json_error(const char *text, size_t len, const char *label, const char *what, char *err,
                  size_t errlen)
{
    const char *ep = cJSON_GetErrorPtr();
    size_t at = ep && ep >= text && ep <= text + len ? (size_t)(ep - text) : len;
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < at; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            depth++;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    char bad[96];
    snprintf(bad, sizeof bad, "%.60s%s", what ? what : "invalid JSON",
             what ? " is not valid JSON" : "");
    if (depth >= CJSON_NESTING_LIMIT)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: %s: nested deeper than %d levels (the JSON parser's limit; a tensor "
                      "has at most %d axes)",
                      label, bad, CJSON_NESTING_LIMIT, FR_MAXDIM);
    if (what)
        return io_err(err, errlen, FR_EINPUT, "%s: %s (near byte %zu of %zu)", label, bad, at, len);
    return io_err(err, errlen, FR_EINPUT, "%s: invalid JSON (near byte %zu)", label, at);
}

/* An object with exactly the keys shape and data is one tensor, anything else a bundle. */
static int is_tensor_object(const cJSON *o)
{
    const cJSON *a = o->child;
    if (!a || !a->next || a->next->next) return 0;
    const char *x = a->string, *y = a->next->string;
    return (strcmp(x, "shape") == 0 && strcmp(y, "data") == 0) ||
           (strcmp(x, "data") == 0 && strcmp(y, "shape") == 0);
}

static int alloc_data(fr_tensor *t, const char *label, const fr_limits *lim, fr_dtype as, char *err,
                      size_t errlen)
{
    fr_limits l = io_limits(lim);
    int64_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        if (!io_mul_ok(count, t->shape[i], &count))
            return io_err(err, errlen, FR_EINPUT, "%s: shape overflows", label);
    if (count > l.max_elements)
        return io_err(err, errlen, FR_EINPUT, "%s: %lld elements, over the limit of %lld", label,
                      (long long)count, (long long)l.max_elements);
    if (io_tensor_alloc(t, count, as))
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
    return FR_OK;
}

static int number(const cJSON *v, fr_tensor *t, const char *label, int64_t pos, char *err,
                  size_t errlen)
{
    if (!cJSON_IsNumber(v))
        return io_err(err, errlen, FR_EINPUT, "%s: entry %lld is not a number", label,
                      (long long)pos);
    if (!isfinite(v->valuedouble))
        return io_err(err, errlen, FR_EINPUT, "%s: entry %lld is out of the range of a double",
                      label, (long long)pos);
    io_tensor_store(t, pos, &v->valuedouble, 1);
    return FR_OK;
}

static int fill(const cJSON *v, int depth, fr_tensor *t, int64_t *pos, const char *label, char *err,
                size_t errlen)
{
    if (depth == t->ndim) {
        if (cJSON_IsArray(v))
            return io_err(err, errlen, FR_EINPUT,
                          "%s: ragged nested arrays (an array where entry %lld should be a number)",
                          label, (long long)*pos);
        int st = number(v, t, label, *pos, err, errlen);
        (*pos)++;
        return st;
    }
    if (!cJSON_IsArray(v))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: ragged or non-numeric nested arrays (%s at depth %d where an array of "
                      "%lld was expected)",
                      label, cJSON_IsNumber(v) ? "a number" : "a non-number", depth,
                      (long long)t->shape[depth]);
    int64_t n = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        if (n == t->shape[depth]) break;
        int st = fill(c, depth + 1, t, pos, label, err, errlen);
        if (st) return st;
        n++;
    }
    int64_t real = 0;
    for (const cJSON *c = v->child; c; c = c->next)
        real++;
    if (real != t->shape[depth])
        return io_err(err, errlen, FR_EINPUT,
                      "%s: ragged nested arrays (length %lld at depth %d, expected %lld)", label,
                      (long long)real, depth, (long long)t->shape[depth]);
    return FR_OK;
}

static int from_nested(const cJSON *v, size_t len, fr_tensor *t, const char *label,
                       const fr_limits *lim, fr_dtype as, char *err, size_t errlen)
{
    for (const cJSON *c = v; cJSON_IsArray(c); c = c->child) {
        if (t->ndim == FR_MAXDIM)
            return io_err(err, errlen, FR_EINPUT, "%s: more than %d dimensions", label, FR_MAXDIM);
        int64_t n = 0;
        for (const cJSON *e = c->child; e; e = e->next)
            n++;
        t->shape[t->ndim++] = n;
        if (n == 0) break;
    }
    /* The shape comes from the first element at each depth only: [[[0 x 1600], 0, ...], 0,
     * ...] would claim 1600^3 elements from 10 kB. Every element takes two bytes of text (a
     * digit and a separator), so more than (len + 1) / 2 is ragged, found before allocating. */
    int64_t count = 1;
    for (int i = 0; i < t->ndim && count <= (int64_t)(len / 2 + 1); i++)
        count =
            t->shape[i] > 0 && count > INT64_MAX / t->shape[i] ? INT64_MAX : count * t->shape[i];
    if (count > (int64_t)(len / 2 + 1))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: ragged nested arrays (their first entries claim at least %lld "
                      "elements, more than %zu bytes of text can hold)",
                      label, (long long)count, len);
    int st = alloc_data(t, label, lim, as, err, errlen);
    int64_t pos = 0;
    if (!st) st = fill(v, 0, t, &pos, label, err, errlen);
    return st;
}

static int from_shape_data(const cJSON *o, fr_tensor *t, const char *label, const fr_limits *lim,
                           fr_dtype as, char *err, size_t errlen)
{
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    if (!cJSON_IsArray(shape))
        return io_err(err, errlen, FR_EINPUT, "%s: \"shape\" is not an array", label);
    if (!cJSON_IsArray(data))
        return io_err(err, errlen, FR_EINPUT, "%s: \"data\" is not an array", label);
    for (const cJSON *c = shape->child; c; c = c->next) {
        if (t->ndim == FR_MAXDIM)
            return io_err(err, errlen, FR_EINPUT, "%s: more than %d dimensions", label, FR_MAXDIM);
        double x = cJSON_IsNumber(c) ? c->valuedouble : -1;
        if (!(x >= 0 && x == floor(x) && x < 1e300))
            return io_err(err, errlen, FR_EINPUT,
                          "%s: \"shape\" holds something other than non-negative integers", label);
        /* From 2^53 on a JSON number is not read exactly; no text holds that many numbers. */
        if (x >= 9007199254740992.0)
            return io_err(err, errlen, FR_EINPUT,
                          "%s: \"shape\" dimension %.0f is too large (the shape overflows)", label,
                          x);
        t->shape[t->ndim++] = (int64_t)x;
    }
    int64_t count = 1, n = 0;
    for (int i = 0; i < t->ndim; i++)
        if (!io_mul_ok(count, t->shape[i], &count))
            return io_err(err, errlen, FR_EINPUT, "%s: \"shape\" overflows", label);
    for (const cJSON *c = data->child; c; c = c->next)
        n++;
    if (n != count)
        return io_err(err, errlen, FR_EINPUT,
                      "%s: \"shape\" says %lld elements but \"data\" holds %lld", label,
                      (long long)count, (long long)n);
    int st = alloc_data(t, label, lim, as, err, errlen);
    int64_t pos = 0;
    for (const cJSON *c = data->child; c && !st; c = c->next, pos++)
        st = number(c, t, label, pos, err, errlen);
    return st;
}

/* len: the length of the whole text, which bounds how many numbers it can hold. */
static int to_tensor(const cJSON *v, size_t len, fr_tensor *t, const char *label,
                     const fr_limits *lim, fr_dtype as, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    int st;
    if (cJSON_IsArray(v)) {
        st = from_nested(v, len, t, label, lim, as, err, errlen);
    } else if (cJSON_IsObject(v) && is_tensor_object(v)) {
        st = from_shape_data(v, t, label, lim, as, err, errlen);
    } else if (cJSON_IsNumber(v)) { /* a scalar member of a bundle */
        st = alloc_data(t, label, lim, as, err, errlen);
        if (!st) st = number(v, t, label, 0, err, errlen);
    } else {
        st = io_err(err, errlen, FR_EINPUT,
                    "%s: not a tensor (expected nested arrays or {\"shape\", \"data\"})", label);
    }
    if (st) fr_tensor_free(t);
    return st;
}

int io_json_read(const char *text, size_t len, const char *label, const fr_limits *lim, fr_dtype as,
                 fr_bundle *out, char *err, size_t errlen)
{
    fr_limits l = io_limits(lim);
    if ((int64_t)len > l.max_bytes)
        return io_err(err, errlen, FR_EINPUT, "%s: %zu bytes, over the limit of %lld", label, len,
                      (long long)l.max_bytes);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) return io_json_error(text, len, label, NULL, err, errlen);
    while (end && end < text + len &&
           (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t' || *end == '\0'))
        end++;
    int st = FR_OK;
    if (end && end < text + len) {
        st = io_err(err, errlen, FR_EINPUT, "%s: text after the JSON value (byte %ld)", label,
                    (long)(end - text));
    } else if (cJSON_IsArray(root) || (cJSON_IsObject(root) && is_tensor_object(root))) {
        fr_tensor t;
        st = to_tensor(root, len, &t, label, lim, as, err, errlen);
        if (!st && (st = fr_bundle_add(out, "", &t, err, errlen))) fr_tensor_free(&t);
        out->single = 1;
    } else if (cJSON_IsObject(root)) {
        size_t cap = strlen(label) + 512;
        char *mlabel = malloc(cap);
        if (!mlabel) st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory", label);
        for (const cJSON *c = root->child; c && !st; c = c->next) {
            snprintf(mlabel, cap, "%s:%.500s", label, c->string);
            fr_tensor t;
            st = to_tensor(c, len, &t, mlabel, lim, as, err, errlen);
            if (!st && (st = fr_bundle_add(out, c->string, &t, err, errlen))) {
                io_err(err, errlen, st, "%s: duplicate member '%.500s'", label, c->string);
                fr_tensor_free(&t);
            }
        }
        free(mlabel);
    } else {
        st = io_err(err, errlen, FR_EINPUT, "%s: JSON is neither a tensor nor a bundle", label);
    }
    cJSON_Delete(root);
    return st;
}

/* ---- writing ---- */

/* A float tensor's entries in the fewest digits that read back to the same float. */
static void put_num(io_w *w, const fr_tensor *t, int64_t i)
{
    char buf[FR_DOUBLE_BUF];
    int n = t->f32 ? io_format_float(buf, sizeof buf, t->f32[i])
                   : fr_format_double(buf, sizeof buf, t->data[i]);
    io_put(w, buf, (size_t)n);
}

static void put_str(io_w *w, const char *s)
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
    io_puts(w, "\"");
}

static void indent_to(io_w *w, int n)
{
    static const char spaces[] = "                                ";
    for (; n > 0; n -= 32)
        io_put(w, spaces, (size_t)(n < 32 ? n : 32));
}

static void put_nested(io_w *w, const fr_tensor *t, int depth, int64_t *pos, int indent)
{
    io_puts(w, "[");
    for (int64_t i = 0; i < t->shape[depth] && !w->errnum; i++) {
        if (i) {
            if (depth == t->ndim - 1) {
                io_puts(w, ", ");
            } else {
                io_puts(w, ",\n");
                indent_to(w, indent + depth + 1);
            }
        }
        if (depth == t->ndim - 1)
            put_num(w, t, (*pos)++);
        else
            put_nested(w, t, depth + 1, pos, indent);
    }
    io_puts(w, "]");
}

static int put_tensor(io_w *w, const fr_tensor *t, int indent, char *err, size_t errlen)
{
    int64_t count = fr_tensor_count(t);
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(io_tensor_at(t, i)))
            return io_err(err, errlen, FR_EINPUT,
                          "%s: entry %lld is %s, which JSON cannot represent", w->label,
                          (long long)i, isnan(io_tensor_at(t, i)) ? "NaN" : "infinite");
    int nested = t->ndim > 0;
    for (int i = 0; i < t->ndim; i++)
        nested &= t->shape[i] > 0;
    if (nested) { /* (nested arrays lose the shape of scalars and of empty axes) */
        int64_t pos = 0;
        put_nested(w, t, 0, &pos, indent);
        return FR_OK;
    }
    io_puts(w, "{\"shape\": [");
    for (int i = 0; i < t->ndim; i++) {
        char d[32];
        snprintf(d, sizeof d, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        io_puts(w, d);
    }
    io_puts(w, "], \"data\": [");
    for (int64_t i = 0; i < count && !w->errnum; i++) {
        if (i) io_puts(w, ", ");
        put_num(w, t, i);
    }
    io_puts(w, "]}");
    return FR_OK;
}

int io_json_write_tensor(io_w *w, const fr_tensor *t, char *err, size_t errlen)
{
    int st = put_tensor(w, t, 0, err, errlen);
    if (!st) io_puts(w, "\n");
    return st ? st : w->errnum ? io_w_error(w, err, errlen) : FR_OK;
}

int io_json_write_bundle(io_w *w, const fr_bundle *b, char *err, size_t errlen)
{
    if (b->count == 2 && ((strcmp(b->names[0], "shape") == 0 && strcmp(b->names[1], "data") == 0) ||
                          (strcmp(b->names[0], "data") == 0 && strcmp(b->names[1], "shape") == 0)))
        return io_err(err, errlen, FR_EINPUT,
                      "%s: a bundle of exactly 'shape' and 'data' would read back as one tensor; "
                      "use .npz",
                      w->label);
    io_puts(w, "{");
    for (int i = 0; i < b->count; i++) {
        io_puts(w, i ? ",\n " : "");
        put_str(w, b->names[i]);
        io_puts(w, ": ");
        int indent = 3 + (int)strlen(b->names[i]) + 2;
        int st = put_tensor(w, &b->tensors[i], indent, err, errlen);
        if (st) return st;
    }
    io_puts(w, "}\n");
    return w->errnum ? io_w_error(w, err, errlen) : FR_OK;
}
