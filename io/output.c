/* output.c - staged outputs: every output of a command is written to a temporary file first,
 * and the targets are replaced (renamed) only once all of them were written, so a failure
 * anywhere leaves every target as it was.
 *
 * A file's temporary is unnamed while it is written (O_TMPFILE in the target's directory, where
 * rename() is atomic), so a process killed mid-way leaves nothing behind; it is given a name
 * only at commit, just before the rename. Where O_TMPFILE is not available, a named ".NAME.XXXXXX"
 * next to the target stands in. Standard output cannot be taken back, so when a set has other
 * outputs, stdout's bytes are staged in an unnamed file in $TMPDIR and copied out at commit,
 * after every file was written and before any is renamed; a set whose only output is stdout
 * streams straight to it. A device or pipe named as a path (/dev/stderr) is staged the same way
 * and written into at commit, never renamed over. SIGPIPE is held while writing to stdout: a reader
 * that stops early
 * (`| head -c 10`) is an EPIPE error with a message, and the temporaries are removed. */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum { OUT_STAGED, OUT_WRITTEN, OUT_FAILED } out_state;

typedef struct {
    char *path; /* the target; "-" is stdout */
    char *dir;  /* its directory (for the temporary and the link at commit) */
    char *tmp;  /* the temporary's name while it has one */
    FILE *f;    /* the staged bytes (NULL for stdout before its first write) */
    int stream; /* stdout, or an existing device or pipe (/dev/stderr): never renamed over */
    int direct; /* streamed straight to stdout */
    int kind;   /* fr_out_kind */
    out_state state;
} out_t;

struct fr_outputs {
    int count;
    out_t *o;
    int writing; /* a write began: every output is staged by then */
};

static int is_stdout(const char *path)
{
    return strcmp(path, "-") == 0;
}

const char *io_label(const char *path)
{
    return is_stdout(path) ? "<stdout>" : path;
}

/* ---- the byte sink the format writers push into ---- */

int io_put(io_w *w, const void *p, size_t n)
{
    if (w->errnum) return -1;
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->errnum = errno ? errno : EIO;
        return -1;
    }
    w->pos += (int64_t)n;
    return 0;
}

int io_puts(io_w *w, const char *s)
{
    return io_put(w, s, strlen(s));
}

int io_w_error(const io_w *w, char *err, size_t errlen)
{
    return io_err(err, errlen, FR_ENOMEM, "%s: write error: %s", w->label,
                  strerror(w->errnum ? w->errnum : EIO));
}

/* ---- SIGPIPE held around writes to stdout ---- */

static void pipe_hold(io_pipe_guard *g)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &s, &g->old);
}

/* A write to a closed pipe left a SIGPIPE pending: take it, so unblocking does not kill us. */
static void pipe_release(io_pipe_guard *g)
{
    sigset_t s, pend;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    if (!sigismember(&g->old, SIGPIPE) && sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&s, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- same file ---- */

/* path with its directory resolved (realpath) and its last component kept: what rename()
 * would replace. NULL when the directory does not resolve. */
static char *canonical(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    if (!dir) return NULL;
    char *real = realpath(dir, NULL);
    free(dir);
    if (!real) return NULL;
    size_t n = strlen(real) + strlen(base) + 2;
    char *c = malloc(n);
    if (c) snprintf(c, n, "%s/%s", strcmp(real, "/") ? real : "", base);
    free(real);
    return c;
}

int fr_same_file(const char *a, const char *b)
{
    if (!a || !b) return 0;
    struct stat x, y;
    if (is_stdout(a) || is_stdout(b)) { /* "-" and /dev/stdout, or the file stdout goes to */
        const char *other = is_stdout(a) ? b : a;
        if (is_stdout(other)) return 1;
        return fstat(STDOUT_FILENO, &x) == 0 && stat(other, &y) == 0 && x.st_dev == y.st_dev &&
               x.st_ino == y.st_ino;
    }
    if (strcmp(a, b) == 0) return 1;
    if (stat(a, &x) == 0 && stat(b, &y) == 0) return x.st_dev == y.st_dev && x.st_ino == y.st_ino;
    char *ca = canonical(a), *cb = canonical(b);
    int same = ca && cb && strcmp(ca, cb) == 0;
    free(ca);
    free(cb);
    return same;
}

/* ---- staging ---- */

fr_outputs *fr_outputs_new(void)
{
    return calloc(1, sizeof(fr_outputs));
}

static void mode_for_output(int fd)
{
    /* mkstemp makes 0600; an output file gets the usual 0666 & ~umask. */
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, 0666 & ~um);
}

/* An unnamed file in dir (O_TMPFILE), or a named one (*tmp) where that is not supported. */
static int open_temp(const char *dir, const char *base, char **tmp)
{
    *tmp = NULL;
#ifdef O_TMPFILE
    /* linkat() through /proc/self/fd gives it a name at commit; without /proc it cannot. */
    if (access("/proc/self/fd", X_OK) == 0) {
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
        if (fd >= 0) return fd;
        if (errno == ENOENT || errno == EACCES || errno == ENOTDIR || errno == EROFS) return -1;
    }
#endif
    size_t n = strlen(dir) + strlen(base) + 16;
    char *t = malloc(n);
    if (!t) return -1;
    snprintf(t, n, "%s/.%s.XXXXXX", dir, base);
    int fd = mkstemp(t);
    if (fd < 0) {
        int e = errno;
        free(t);
        errno = e;
        return -1;
    }
    mode_for_output(fd);
    *tmp = t;
    return fd;
}

static int fail_open(const char *path, const char *dir, int status, char *err, size_t errlen)
{
    int e = errno;
    return io_err(err, errlen, status, "%s: cannot create a file in %s: %s", path, dir,
                  strerror(e));
}

static fr_format kind_format(const char *path, int kind)
{
    fr_format fmt = fr_format_from_path(path);
    if (fmt == FR_FMT_UNKNOWN && is_stdout(path))
        fmt = kind == FR_OUT_BUNDLE ? FR_FMT_NPZ : FR_FMT_NPY;
    return fmt;
}

int fr_outputs_add(fr_outputs *s, const char *path, fr_out_kind kind, int *id, char *err,
                   size_t errlen)
{
    return io_outputs_add(s, path, kind, 1, id, err, errlen);
}

int io_outputs_add(fr_outputs *s, const char *path, fr_out_kind kind, int check_format, int *id,
                   char *err, size_t errlen)
{
    if (s->writing)
        return io_err(err, errlen, FR_EUSAGE,
                      "%s: staged after writing began (stage every output first)", path);
    if (check_format && kind != FR_OUT_TEXT && kind_format(path, kind) == FR_FMT_UNKNOWN)
        return io_err(err, errlen, FR_EUSAGE,
                      "%s: unknown output format (use .npy, .npz, .json or .safetensors)", path);
    for (int i = 0; i < s->count; i++)
        if (fr_same_file(s->o[i].path, path))
            return io_err(err, errlen, FR_EUSAGE, "%s and %s name the same file",
                          io_label(s->o[i].path), io_label(path));
    struct stat sb;
    int exists = !is_stdout(path) && stat(path, &sb) == 0;
    if (exists && S_ISDIR(sb.st_mode))
        return io_err(err, errlen, FR_ENOMEM, "%s: is a directory", path);
    out_t *no = realloc(s->o, (size_t)(s->count + 1) * sizeof *no);
    if (!no) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", path);
    s->o = no;
    out_t *o = &s->o[s->count];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    /* A device or a pipe by name (/dev/stderr, <(...)) is written like stdout: renaming over it
     * would replace the device node, not write into it. */
    o->stream = is_stdout(path) || (exists && !S_ISREG(sb.st_mode));
    if (!(o->path = strdup(path))) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", path);
    if (!o->stream) {
        /* The temporary is made now, so a missing or read-only directory fails before any
         * work is done. */
        const char *slash = strrchr(path, '/');
        o->dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
        int fd = o->dir ? open_temp(o->dir, slash ? slash + 1 : path, &o->tmp) : -1;
        int st = FR_OK;
        if (!o->dir)
            st = io_err(err, errlen, FR_ENOMEM, "%s: out of memory", path);
        else if (fd < 0)
            st = fail_open(path, o->dir, FR_ENOMEM, err, errlen);
        else if (!(o->f = fdopen(fd, "w+b"))) {
            st = io_err(err, errlen, FR_ENOMEM, "%s: %s", path, strerror(errno));
            close(fd);
        }
        if (st) {
            if (o->tmp) unlink(o->tmp);
            free(o->tmp);
            free(o->dir);
            free(o->path);
            return st;
        }
    }
    if (id) *id = s->count;
    s->count++;
    return FR_OK;
}

/* The staging file of stdout or a device, unnamed in $TMPDIR, made at its first write; or stdout
 * itself when the set has no other output. */
static int open_stream(fr_outputs *s, out_t *o, char *err, size_t errlen)
{
    if (s->count == 1 && is_stdout(o->path)) {
        o->direct = 1;
        o->f = stdout;
        return FR_OK;
    }
    const char *td = getenv("TMPDIR");
    if (!td || !*td) td = "/tmp";
    int fd = open_temp(td, "fastrope-stdout", &o->tmp);
    if (fd >= 0 && o->tmp) { /* named: unlinked at once, only the descriptor is needed */
        unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
    }
    if (fd < 0) return fail_open(io_label(o->path), td, FR_ENOMEM, err, errlen);
    if (!(o->f = fdopen(fd, "w+b"))) {
        close(fd);
        return io_err(err, errlen, FR_ENOMEM, "%s: %s", io_label(o->path), strerror(errno));
    }
    return FR_OK;
}

int io_outputs_begin(fr_outputs *s, int id, fr_out_kind kind, io_w *w, char *err, size_t errlen)
{
    if (id < 0 || id >= s->count)
        return io_err(err, errlen, FR_EUSAGE, "output %d was not staged", id);
    out_t *o = &s->o[id];
    if (o->state != OUT_STAGED)
        return io_err(err, errlen, FR_EUSAGE, "%s: written twice", io_label(o->path));
    if ((kind == FR_OUT_TEXT) != (o->kind == FR_OUT_TEXT))
        return io_err(err, errlen, FR_EUSAGE, "%s: staged as %s, written as %s", io_label(o->path),
                      o->kind == FR_OUT_TEXT ? "text" : "a tensor",
                      kind == FR_OUT_TEXT ? "text" : "a tensor");
    s->writing = 1;
    o->state = OUT_FAILED; /* until the writer says otherwise */
    if (o->stream && !o->f) {
        int st = open_stream(s, o, err, errlen);
        if (st) return st;
    }
    memset(w, 0, sizeof *w);
    w->f = o->f;
    w->label = io_label(o->path);
    w->path = o->path;
    w->direct = o->direct;
    if (w->direct) pipe_hold(&w->pipe); /* the writer streams into stdout */
    return FR_OK;
}

void io_outputs_end(fr_outputs *s, int id, io_w *w, int ok)
{
    if (w->direct) pipe_release(&w->pipe);
    s->o[id].state = ok ? OUT_WRITTEN : OUT_FAILED;
}

/* ---- commit and abort ---- */

static void discard(out_t *o)
{
    if (o->f && !o->direct) fclose(o->f);
    o->f = NULL;
    if (o->tmp) unlink(o->tmp);
    free(o->tmp);
    free(o->dir);
    free(o->path);
    memset(o, 0, sizeof *o);
}

void fr_outputs_abort(fr_outputs *s)
{
    if (!s) return;
    for (int i = 0; i < s->count; i++)
        discard(&s->o[i]);
    free(s->o);
    free(s);
}

static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The staged bytes into stdout or the device, SIGPIPE held. */
static int copy_out(out_t *o, char *err, size_t errlen)
{
    const char *label = io_label(o->path);
    int fd = fileno(o->f), to = STDOUT_FILENO;
    if (is_stdout(o->path) ? fflush(stdout) != 0 : (to = open(o->path, O_WRONLY | O_CLOEXEC)) < 0)
        return io_err(err, errlen, FR_ENOMEM, "%s: %s", label, strerror(errno));
    char buf[1 << 16];
    io_pipe_guard g;
    pipe_hold(&g);
    int st = lseek(fd, 0, SEEK_SET) == 0
                 ? FR_OK
                 : io_err(err, errlen, FR_ENOMEM, "%s: %s", label, strerror(errno));
    while (!st) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = io_err(err, errlen, FR_ENOMEM, "%s: read error on its staging file: %s", label,
                        strerror(errno));
            break;
        }
        if (r == 0) break;
        if (write_all(to, buf, (size_t)r) != 0)
            st = io_err(err, errlen, FR_ENOMEM, "%s: write error: %s", label, strerror(errno));
    }
    pipe_release(&g);
    if (to != STDOUT_FILENO) close(to);
    return st;
}

/* Flush and sync a written file (or flush stdout). */
static int finish(out_t *o, char *err, size_t errlen)
{
    const char *label = io_label(o->path);
    if (o->direct) {
        io_pipe_guard g;
        pipe_hold(&g);
        int bad = fflush(stdout) != 0 || ferror(stdout);
        int e = errno;
        pipe_release(&g);
        return bad ? io_err(err, errlen, FR_ENOMEM, "%s: write error: %s", label, strerror(e))
                   : FR_OK;
    }
    if (fflush(o->f) != 0 || ferror(o->f) || (!o->stream && fsync(fileno(o->f)) != 0))
        return io_err(err, errlen, FR_ENOMEM, "%s: write error: %s", label, strerror(errno));
    return FR_OK;
}

/* Give an unnamed temporary a name next to its target (the rename needs one). */
static int name_temp(out_t *o, char *err, size_t errlen)
{
    if (o->tmp) return FR_OK;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fileno(o->f));
    const char *slash = strrchr(o->path, '/');
    const char *base = slash ? slash + 1 : o->path;
    size_t n = strlen(o->dir) + strlen(base) + 32;
    char *t = malloc(n);
    if (!t) return io_err(err, errlen, FR_ENOMEM, "%s: out of memory", o->path);
    unsigned long r = (unsigned long)getpid() * 2654435761u ^ (unsigned long)time(NULL);
    for (int tries = 0; tries < 100; tries++) {
        r = r * 6364136223846793005u + 1442695040888963407u;
        snprintf(t, n, "%s/.%s.%06lx", o->dir, base, (r >> 40) & 0xffffff);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, t, AT_SYMLINK_FOLLOW) == 0) {
            o->tmp = t;
            return FR_OK;
        }
        if (errno != EEXIST) break;
    }
    int e = errno;
    free(t);
    return io_err(err, errlen, FR_ENOMEM, "%s: cannot create a file in %s: %s", o->path, o->dir,
                  strerror(e));
}

int fr_outputs_commit(fr_outputs *s, char *err, size_t errlen)
{
    int st = FR_OK;
    for (int i = 0; i < s->count && !st; i++)
        if (s->o[i].state == OUT_FAILED)
            st = io_err(err, errlen, FR_ENOMEM, "%s: its writing failed; nothing committed",
                        io_label(s->o[i].path));
    /* Everything that can fail comes before the first rename: writing and syncing the files,
     * then stdout (which cannot be taken back), then naming the temporaries. */
    for (int i = 0; i < s->count && !st; i++)
        if (s->o[i].state == OUT_WRITTEN) st = finish(&s->o[i], err, errlen);
    for (int i = 0; i < s->count && !st; i++)
        if (s->o[i].state == OUT_WRITTEN && s->o[i].stream && !s->o[i].direct)
            st = copy_out(&s->o[i], err, errlen);
    for (int i = 0; i < s->count && !st; i++)
        if (s->o[i].state == OUT_WRITTEN && !s->o[i].stream) st = name_temp(&s->o[i], err, errlen);
    for (int i = 0; i < s->count && !st; i++) {
        out_t *o = &s->o[i];
        if (o->state != OUT_WRITTEN || o->stream) continue;
        if (rename(o->tmp, o->path) != 0)
            st = io_err(err, errlen, FR_ENOMEM, "%s: %s", o->path, strerror(errno));
        else {
            free(o->tmp);
            o->tmp = NULL;
        }
    }
    fr_outputs_abort(s); /* what is left: unwritten outputs' temporaries, or all on failure */
    return st;
}
