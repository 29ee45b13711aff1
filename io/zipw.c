/* zipw.c - writing a zip archive front to back, never seeking, so that a .npz can go straight
 * into a pipe as well as into a file (APPNOTE.TXT: local headers, data, central directory,
 * zip64 records when a size, an offset or the count outgrows its 16- or 32-bit field).
 *
 * A stored member's CRC is computed in a first pass over its bytes (producing them is cheap),
 * so its local header holds the real sizes and CRC, as numpy.savez writes them, and streaming
 * readers can read it. A deflated member's compressed size is only known at its end: its sizes
 * and CRC follow it in a data descriptor (flag bit 3). Dates are 1980-01-01 00:00, as numpy's,
 * so the same tensors give the same bytes. */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_DESCRIPTOR 0x08074b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define DOS_DATE 0x21 /* 1980-01-01 */
#define FLAG_DESCRIPTOR 0x0008
#define FLAG_UTF8 0x0800
#define MAX32 0xffffffffu
#define CHUNK (1 << 16)
/* Deflate expands incompressible data by a few bytes per 16 kB block: below this size the
 * compressed member surely fits 32 bits. */
#define DEFLATE_SAFE_32 0xff000000u

typedef struct {
    unsigned char b[128];
    size_t n;
} hdr;

static void p16(hdr *h, unsigned v)
{
    h->b[h->n++] = (unsigned char)v;
    h->b[h->n++] = (unsigned char)(v >> 8);
}
static void p32(hdr *h, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        h->b[h->n++] = (unsigned char)(v >> (8 * i));
}
static void p64(hdr *h, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        h->b[h->n++] = (unsigned char)(v >> (8 * i));
}

void io_zip_init(io_zip *z, io_w *w, int force_zip64)
{
    memset(z, 0, sizeof *z);
    z->w = w;
    z->force_zip64 = force_zip64;
}

void io_zip_free(io_zip *z)
{
    for (int i = 0; i < z->count; i++)
        free(z->e[i].name);
    free(z->e);
    z->e = NULL;
    z->count = 0;
}

static int utf8_flag(const char *name)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p >= 0x80) return FLAG_UTF8;
    return 0;
}

static int put_hdr(io_zip *z, const hdr *h)
{
    return io_put(z->w, h->b, h->n);
}

static int local_header(io_zip *z, const io_zip_entry *e)
{
    hdr h = {{0}, 0};
    size_t nl = strlen(e->name);
    int dd = e->flags & FLAG_DESCRIPTOR;
    p32(&h, SIG_LOCAL);
    p16(&h, e->zip64 ? 45 : 20);
    p16(&h, (unsigned)e->flags);
    p16(&h, (unsigned)e->method);
    p16(&h, 0);
    p16(&h, DOS_DATE);
    p32(&h, dd ? 0 : e->crc);
    p32(&h, e->zip64 ? MAX32 : dd ? 0 : (uint32_t)e->csize);
    p32(&h, e->zip64 ? MAX32 : dd ? 0 : (uint32_t)e->usize);
    p16(&h, (unsigned)nl);
    p16(&h, e->zip64 ? 20 : 0);
    if (put_hdr(z, &h) || io_put(z->w, e->name, nl)) return -1;
    if (!e->zip64) return 0;
    h.n = 0;
    p16(&h, 1);
    p16(&h, 16);
    p64(&h, dd ? 0 : e->usize);
    p64(&h, dd ? 0 : e->csize);
    return put_hdr(z, &h);
}

static int add_entry(io_zip *z, const char *name, io_zip_entry **out)
{
    io_zip_entry *ne = realloc(z->e, (size_t)(z->count + 1) * sizeof *ne);
    if (!ne) return -1;
    z->e = ne;
    io_zip_entry *e = &z->e[z->count];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) return -1;
    z->count++;
    *out = e;
    return 0;
}

static int stored(io_zip *z, io_zip_entry *e, const io_producer *p, char *err, size_t errlen)
{
    unsigned char *buf = malloc(CHUNK);
    if (!buf) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", z->w->label);
    uLong crc = crc32(0, NULL, 0);
    uint64_t total = 0;
    size_t n;
    p->rewind(p->ctx);
    while ((n = p->next(p->ctx, buf, CHUNK)) > 0) {
        crc = crc32(crc, buf, (uInt)n);
        total += n;
    }
    e->crc = (uint32_t)crc;
    e->usize = e->csize = total;
    e->zip64 = z->force_zip64 || total >= MAX32;
    int bad = local_header(z, e);
    p->rewind(p->ctx);
    while (!bad && (n = p->next(p->ctx, buf, CHUNK)) > 0)
        bad = io_put(z->w, buf, n);
    free(buf);
    return bad ? io_w_error(z->w, err, errlen) : FR_OK;
}

static int deflated(io_zip *z, io_zip_entry *e, const io_producer *p, uint64_t size, char *err,
                    size_t errlen)
{
    e->flags |= FLAG_DESCRIPTOR;
    e->zip64 = z->force_zip64 || size >= DEFLATE_SAFE_32;
    if (local_header(z, e)) return io_w_error(z->w, err, errlen);
    unsigned char *in = malloc(CHUNK), *out = malloc(CHUNK);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (!in || !out ||
        deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(in);
        free(out);
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", z->w->label);
    }
    uLong crc = crc32(0, NULL, 0);
    int bad = 0, flush = Z_NO_FLUSH;
    p->rewind(p->ctx);
    while (!bad && flush != Z_FINISH) {
        size_t n = p->next(p->ctx, in, CHUNK);
        crc = crc32(crc, in, (uInt)n);
        e->usize += n;
        flush = n == 0 ? Z_FINISH : Z_NO_FLUSH;
        zs.next_in = in;
        zs.avail_in = (uInt)n;
        do {
            zs.next_out = out;
            zs.avail_out = CHUNK;
            deflate(&zs, flush);
            size_t have = CHUNK - zs.avail_out;
            e->csize += have;
            bad = io_put(z->w, out, have);
        } while (!bad && zs.avail_out == 0);
    }
    deflateEnd(&zs);
    free(in);
    free(out);
    if (bad) return io_w_error(z->w, err, errlen);
    e->crc = (uint32_t)crc;
    hdr h = {{0}, 0};
    p32(&h, SIG_DESCRIPTOR);
    p32(&h, e->crc);
    if (e->zip64) {
        p64(&h, e->csize);
        p64(&h, e->usize);
    } else {
        p32(&h, (uint32_t)e->csize);
        p32(&h, (uint32_t)e->usize);
    }
    return put_hdr(z, &h) ? io_w_error(z->w, err, errlen) : FR_OK;
}

int io_zip_member(io_zip *z, const char *name, int compress, uint64_t size, const io_producer *p,
                  char *err, size_t errlen)
{
    io_zip_entry *e;
    if (add_entry(z, name, &e))
        return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", z->w->label);
    e->offset = (uint64_t)z->w->pos;
    e->method = compress ? 8 : 0;
    e->flags = utf8_flag(name);
    return compress ? deflated(z, e, p, size, err, errlen) : stored(z, e, p, err, errlen);
}

static int central(io_zip *z, const io_zip_entry *e)
{
    hdr h = {{0}, 0}, x = {{0}, 0};
    int big_u = e->zip64 || e->usize >= MAX32, big_c = e->zip64 || e->csize >= MAX32,
        big_o = z->force_zip64 || e->offset >= MAX32;
    if (big_u || big_c || big_o) {
        p16(&x, 1);
        p16(&x, (unsigned)(8 * (big_u + big_c + big_o)));
        if (big_u) p64(&x, e->usize);
        if (big_c) p64(&x, e->csize);
        if (big_o) p64(&x, e->offset);
    }
    size_t nl = strlen(e->name);
    p32(&h, SIG_CENTRAL);
    p16(&h, 3 << 8 | 45); /* made by: Unix, zip 4.5 */
    p16(&h, e->zip64 ? 45 : 20);
    p16(&h, (unsigned)e->flags);
    p16(&h, (unsigned)e->method);
    p16(&h, 0);
    p16(&h, DOS_DATE);
    p32(&h, e->crc);
    p32(&h, big_c ? MAX32 : (uint32_t)e->csize);
    p32(&h, big_u ? MAX32 : (uint32_t)e->usize);
    p16(&h, (unsigned)nl);
    p16(&h, (unsigned)x.n);
    p16(&h, 0);              /* comment */
    p16(&h, 0);              /* disk */
    p16(&h, 0);              /* internal attributes */
    p32(&h, 0100644u << 16); /* a regular file, rw-r--r-- */
    p32(&h, big_o ? MAX32 : (uint32_t)e->offset);
    return put_hdr(z, &h) || io_put(z->w, e->name, nl) || put_hdr(z, &x);
}

int io_zip_finish(io_zip *z, char *err, size_t errlen)
{
    uint64_t cd_start = (uint64_t)z->w->pos;
    for (int i = 0; i < z->count; i++)
        if (central(z, &z->e[i])) return io_w_error(z->w, err, errlen);
    uint64_t cd_size = (uint64_t)z->w->pos - cd_start, end64 = (uint64_t)z->w->pos;
    int need64 = z->force_zip64 || z->count >= 0xffff || cd_size >= MAX32 || cd_start >= MAX32;
    hdr h = {{0}, 0};
    if (need64) {
        p32(&h, SIG_END64);
        p64(&h, 44);
        p16(&h, 3 << 8 | 45);
        p16(&h, 45);
        p32(&h, 0);
        p32(&h, 0);
        p64(&h, (uint64_t)z->count);
        p64(&h, (uint64_t)z->count);
        p64(&h, cd_size);
        p64(&h, cd_start);
        p32(&h, SIG_LOCATOR64);
        p32(&h, 0);
        p64(&h, end64);
        p32(&h, 1);
    }
    p32(&h, SIG_END);
    p16(&h, 0);
    p16(&h, 0);
    p16(&h, need64 ? 0xffff : (unsigned)z->count);
    p16(&h, need64 ? 0xffff : (unsigned)z->count);
    p32(&h, need64 ? MAX32 : (uint32_t)cd_size);
    p32(&h, need64 ? MAX32 : (uint32_t)cd_start);
    p16(&h, 0);
    return put_hdr(z, &h) ? io_w_error(z->w, err, errlen) : FR_OK;
}
