/* wisdom.c - FFTW's wisdom kept between runs in this machine's cache directory
 * (cli_cache_dir()/fftw-wisdom), so that FFTW_MEASURE's timing of each transform size is paid
 * once per machine and not once per run (it takes seconds at large sizes: core/fft_fftw.c).
 * The directory also holds `fastrope calibrate`'s cost constants: both describe this machine.
 *
 * The core does no I/O: it hands wisdom over as text (fr_fft_wisdom_import/export); this file
 * reads and writes it. It is a cache: a missing, unreadable or corrupt file is ignored (the
 * plans are measured again and the file rewritten), a failure to write it is silent, and it is
 * replaced by renaming a complete temporary file, so that concurrent runs never read half of
 * one. */
#include "wisdom.h"

#include "fastrope.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Wisdom is a few KB per size: anything larger is not ours. */
#define WISDOM_MAX_BYTES ((long)16 << 20)

int cli_cache_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, len, "%s/fastrope", xdg);
    else if (home && home[0])
        n = snprintf(buf, len, "%s/.cache/fastrope", home);
    else
        return 0;
    return n > 0 && (size_t)n < len;
}

static int wisdom_path(char *buf, size_t len)
{
    char dir[4096];
    if (!cli_cache_dir(dir, sizeof dir)) return 0;
    int n = snprintf(buf, len, "%s/fftw-wisdom", dir);
    return n > 0 && (size_t)n < len;
}

/* The whole file as a string, or NULL. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size >= 0 && size <= WISDOM_MAX_BYTES && fseek(f, 0, SEEK_SET) == 0 &&
        (s = malloc((size_t)size + 1))) {
        if (fread(s, 1, (size_t)size, f) != (size_t)size) {
            free(s);
            s = NULL;
        } else {
            s[size] = '\0';
        }
    }
    fclose(f);
    return s;
}

void cli_wisdom_load(cli_wisdom *w)
{
    char path[4200];
    w->loaded = NULL;
    if (!wisdom_path(path, sizeof path)) return;
    w->loaded = read_text(path);
    /* A file that is not all wisdom is forgotten, so that the save replaces it. */
    if (w->loaded && fr_fft_wisdom_import(w->loaded) != FR_OK) {
        free(w->loaded);
        w->loaded = NULL;
    }
}

/* mkdir -p of the cache directory (two levels at most above it may be missing). */
static int make_dirs(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return 0;
    for (char *s = tmp + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return 0;
            *s = '/';
        }
    return mkdir(tmp, 0700) == 0 || errno == EEXIST;
}

/* Whether every line of a is a line of b. Why lines: FFTW prints one entry per line, in the
 * order of its hash table, which an import does not preserve; the same wisdom comes back out
 * shuffled, and rewriting the file for that would make every run a writer. */
static int lines_within(const char *a, const char *b)
{
    size_t lb = strlen(b);
    while (*a) {
        const char *e = strchr(a, '\n');
        size_t len = e ? (size_t)(e - a) : strlen(a);
        int found = 0;
        for (const char *s = b; !found && s + len <= b + lb; s++) {
            s = memmem(s, (size_t)(b + lb - s), a, len);
            if (!s) break;
            found = (s == b || s[-1] == '\n') && (s[len] == '\n' || s[len] == '\0');
        }
        if (!found) return 0;
        a += len + (e != NULL);
    }
    return 1;
}

void cli_wisdom_save(cli_wisdom *w)
{
    char dir[4096], path[4200], tmp[4200];
    char *now = fr_fft_wisdom_export();
    int changed = now && (!w->loaded || !lines_within(now, w->loaded));
    if (changed && cli_cache_dir(dir, sizeof dir) && wisdom_path(path, sizeof path) &&
        make_dirs(dir) && snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) < (int)sizeof tmp) {
        int fd = mkstemp(tmp);
        if (fd >= 0) {
            size_t len = strlen(now), off = 0;
            while (off < len) {
                ssize_t k = write(fd, now + off, len - off);
                if (k <= 0 && errno != EINTR) break;
                off += k > 0 ? (size_t)k : 0;
            }
            int ok = close(fd) == 0 && off == len;
            if (!ok || rename(tmp, path) != 0) unlink(tmp);
        }
    }
    free(now);
    free(w->loaded);
    w->loaded = NULL;
}
