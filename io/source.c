/* source.c - where the readers' bytes come from: a file, a memory buffer, a zip member, or a
 * stream (a pipe, /dev/stdin, a device) whose size is unknown until it ends.
 *
 * An input's format is recognised from its first bytes before anything else is read, so a
 * stream of garbage fails at once with a few bytes in memory (1 GB of zeros on stdin used to be
 * buffered whole before the error). A recognised stream is then read front to back: .npy and
 * .safetensors straight into their tensors, JSON into memory and .npz (which needs random
 * access) into an unnamed file in $TMPDIR, each within the limits. */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
        case IO_SRC_STREAM:
            if (s->pos < (int64_t)s->nhead) { /* the first bytes, read when sniffing */
                r = (int64_t)s->nhead - s->pos;
                if (r > (int64_t)(n - got)) r = (int64_t)(n - got);
                memcpy((char *)buf + got, s->mem + s->pos, (size_t)r);
                break;
            }
            /* fall through */
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
    char c;
    if (s->kind == IO_SRC_STREAM) { /* its size was unknown: it must end where the data does */
        if (fread(&c, 1, 1, s->f) == 1) return 1;
        return ferror(s->f) ? -1 : 0;
    }
    if (s->kind != IO_SRC_ZIP) return 0;
    /* One byte past the declared size: a zip bomb lying about its size is stopped here, and at
     * the end of the stream libzip verifies the CRC. */
    zip_int64_t r = zip_fread(s->zf, &c, 1);
    return r < 0 ? -1 : r > 0;
}

fr_format io_sniff(const unsigned char *p, size_t n)
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

int io_unknown_format(const char *label, const unsigned char *p, size_t n, char *err, size_t errlen)
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

/* ---- inputs ---- */

int io_input_open(io_input *in, const char *path, char *err, size_t errlen)
{
    memset(in, 0, sizeof *in);
    in->label = path;
    if (strcmp(path, "-") == 0) {
        in->label = "<stdin>";
        in->f = stdin;
    } else {
        if (!(in->f = fopen(path, "rb")))
            return io_err(err, errlen, FR_EINPUT, "%s: %s", path, strerror(errno));
        in->owned = 1;
    }
    struct stat sb;
    if (fstat(fileno(in->f), &sb) != 0) {
        int st = io_err(err, errlen, FR_EINPUT, "%s: %s", in->label, strerror(errno));
        io_input_close(in);
        return st;
    }
    if (S_ISDIR(sb.st_mode)) {
        int st = io_err(err, errlen, FR_EINPUT, "%s: is a directory, not a file", in->label);
        io_input_close(in);
        return st;
    }
    /* A regular file's size is known, so the readers check declared sizes against it and
     * libzip seeks in it; anything else (a pipe, /dev/stdin, <(...), a device) is a stream. */
    /* A regular file given as stdin part-read already (`(head -c 8; fastrope ...) < f`) is read
     * on from where it stands, as a stream. */
    in->regular = S_ISREG(sb.st_mode) && ftello(in->f) == 0;
    in->size = in->regular ? (int64_t)sb.st_size : IO_SIZE_UNKNOWN;
    while (in->nhead < sizeof in->head) {
        size_t r = fread(in->head + in->nhead, 1, sizeof in->head - in->nhead, in->f);
        if (r == 0) break;
        in->nhead += r;
    }
    if (ferror(in->f) || (in->regular && fseek(in->f, 0, SEEK_SET) != 0)) {
        int st = io_err(err, errlen, FR_ENOMEM, "%s: read error: %s", in->label, strerror(errno));
        io_input_close(in);
        return st;
    }
    if (in->nhead == 0) {
        int st = io_err(err, errlen, FR_EINPUT, "%s: %s", in->label,
                        in->regular ? "empty file" : "empty input");
        io_input_close(in);
        return st;
    }
    in->fmt = io_sniff(in->head, in->nhead);
    return FR_OK;
}

void io_input_close(io_input *in)
{
    if (in->f && in->owned) fclose(in->f);
    in->f = NULL;
}

void io_input_src(io_input *in, io_src *s)
{
    memset(s, 0, sizeof *s);
    s->f = in->f;
    s->size = in->size;
    if (!in->regular) {
        s->kind = IO_SRC_STREAM;
        s->mem = in->head;
        s->nhead = in->nhead;
    } else {
        s->kind = IO_SRC_FILE;
    }
}

static int too_large(const io_input *in, int64_t max, char *err, size_t errlen)
{
    return io_err(err, errlen, FR_EINPUT, "%s: input larger than the limit of %lld bytes",
                  in->label, (long long)max);
}

int io_input_slurp(io_input *in, int64_t max, unsigned char **out, size_t *len, char *err,
                   size_t errlen)
{
    if (in->regular) {
        if (in->size > max)
            return io_err(err, errlen, FR_EINPUT, "%s: %lld bytes, over the limit of %lld",
                          in->label, (long long)in->size, (long long)max);
        if ((uint64_t)in->size >= SIZE_MAX)
            return io_err(err, errlen, FR_ENOMEM, "%s: too large for memory", in->label);
    }
    io_src s;
    io_input_src(in, &s);
    size_t cap = in->regular ? (size_t)in->size + 1 : 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", in->label);
    for (;;) {
        if (n == cap) {
            if ((int64_t)n > max) {
                free(buf);
                return too_large(in, max, err, errlen);
            }
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", in->label);
            }
            buf = nb;
            cap *= 2;
        }
        int64_t r = io_src_read(&s, buf + n, cap - n);
        if (r < 0) {
            free(buf);
            return io_err(err, errlen, FR_ENOMEM, "%s: read error: %s", in->label, strerror(errno));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if ((int64_t)n > max) {
        free(buf);
        return too_large(in, max, err, errlen);
    }
    *out = buf;
    *len = n;
    return FR_OK;
}

int io_input_spool(io_input *in, int64_t max, FILE **out, char *err, size_t errlen)
{
    const char *td = getenv("TMPDIR");
    if (!td || !*td) td = "/tmp";
    int fd = -1;
#ifdef O_TMPFILE
    fd = open(td, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (fd < 0) { /* named for an instant only */
        char name[4200];
        snprintf(name, sizeof name, "%.4000s/fastrope-stdin.XXXXXX", td);
        if ((fd = mkstemp(name)) >= 0) unlink(name);
    }
    FILE *f = fd >= 0 ? fdopen(fd, "w+b") : NULL;
    if (!f) {
        int st = io_err(err, errlen, FR_ENOMEM, "%s: cannot create a file in %s: %s", in->label, td,
                        strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    io_src s;
    io_input_src(in, &s);
    unsigned char *buf = malloc(1 << 16);
    int64_t total = 0, r = 0;
    int st = buf ? FR_OK : io_err(err, errlen, FR_ENOMEM, "%s: out of memory", in->label);
    while (!st && (r = io_src_read(&s, buf, 1 << 16)) > 0) {
        total += r;
        if (total > max)
            st = too_large(in, max, err, errlen);
        else if (fwrite(buf, 1, (size_t)r, f) != (size_t)r)
            st = io_err(err, errlen, FR_ENOMEM, "%s: spooling into %s: %s", in->label, td,
                        strerror(errno));
    }
    if (!st && r < 0)
        st = io_err(err, errlen, FR_ENOMEM, "%s: read error: %s", in->label, strerror(errno));
    free(buf);
    if (!st && (fflush(f) != 0 || fseek(f, 0, SEEK_SET) != 0))
        st = io_err(err, errlen, FR_ENOMEM, "%s: spooling into %s: %s", in->label, td,
                    strerror(errno));
    if (st) {
        fclose(f);
        return st;
    }
    *out = f;
    return FR_OK;
}
