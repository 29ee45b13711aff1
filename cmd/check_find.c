/* check_find.c - what `fastrope check` reads: the sets in its paths (files, directories,
 * stdin), each directory and bundle once, and the files kept open while they are checked.
 *
 * Directories are followed through symbolic links, so a loop of links would be walked forever
 * (or to ELOOP, listing each file once per level): every directory and bundle is identified by
 * its device and inode, and a second visit is skipped. */
#include "check.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static void *xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    return q;
}

static void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size);
    if (!p) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    return p;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    return d;
}

/* ---- open files ----------------------------------------------------------------------------- */

int ck_files_get(ck_files *f, const char *path, fr_members **m, char *err, size_t errlen)
{
    int lru = -1;
    for (int i = 0; i < CK_OPEN_FILES; i++) {
        if (f->slot[i].path && strcmp(f->slot[i].path, path) == 0) {
            f->slot[i].used = ++f->tick;
            *m = f->slot[i].m;
            return EXIT_OK;
        }
        /* stdin is never closed: it cannot be read again */
        if (f->slot[i].path && strcmp(f->slot[i].path, "-") == 0) continue;
        if (lru < 0 || !f->slot[i].path ||
            (f->slot[lru].path && f->slot[i].used < f->slot[lru].used))
            lru = i;
    }
    fr_members_close(f->slot[lru].m);
    free(f->slot[lru].path);
    f->slot[lru].m = NULL;
    f->slot[lru].path = NULL;
    int st = fr_members_open(path, f->limits, m, err, errlen);
    if (st) return st;
    f->slot[lru].m = *m;
    f->slot[lru].path = xstrdup(path);
    f->slot[lru].used = ++f->tick;
    return EXIT_OK;
}

void ck_files_close(ck_files *f)
{
    for (int i = 0; i < CK_OPEN_FILES; i++) {
        fr_members_close(f->slot[i].m);
        free(f->slot[i].path);
        f->slot[i].m = NULL;
        f->slot[i].path = NULL;
    }
}

/* ---- the list of sets ------------------------------------------------------------------------ */

static ck_set *push(ck_sets *l, ck_kind kind, const char *path, const char *name)
{
    if (l->count == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->s = xrealloc(l->s, (size_t)l->cap * sizeof *l->s);
    }
    ck_set *s = &l->s[l->count++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->path = xstrdup(path);
    s->name = xstrdup(name);
    return s;
}

static void push_error(ck_sets *l, const char *path, const char *name, const char *msg)
{
    push(l, CK_ERROR, path, name)->error = xstrdup(msg);
}

void ck_sets_free(ck_sets *l)
{
    for (int64_t i = 0; i < l->count; i++) {
        ck_set *s = &l->s[i];
        free(s->path), free(s->name), free(s->error), free(s->note);
        for (int r = 0; r < SET_NROLES; r++)
            free(s->file[r]), free(s->member[r]);
    }
    free(l->s);
    free(l->first_skipped_dir);
    memset(l, 0, sizeof *l);
}

typedef struct {
    const char *name; /* what the role is recognised in: member name or file stem */
    const char *file, *member;
} named;

typedef struct {
    dev_t dev;
    ino_t ino;
    int used;
} seen_slot;

typedef struct {
    ck_sets *l;
    ck_files *f;
    const set_words *w;
    int recursive;
    seen_slot *seen; /* directories and bundles visited */
    int64_t nseen, capseen;
    int stdin_done;
} finder;

/* Sets among the names (sets.h), or, when none plays q, k or v, one tensor row each. path is
 * where the rows say they are: the bundle, or the directory of the files. */
static void group(finder *fd, const char *path, const named *nm, int count)
{
    const char **names = xcalloc((size_t)count, sizeof *names);
    set_list found;
    for (int i = 0; i < count; i++)
        names[i] = nm[i].name;
    if (sets_find(names, count, fd->w, &found)) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    for (int i = 0; i < count && !found.any; i++) {
        ck_set *s = push(fd->l, CK_TENSOR, nm[i].file, nm[i].member);
        s->file[0] = xstrdup(nm[i].file);
        s->member[0] = xstrdup(nm[i].member);
    }
    for (int i = 0; i < found.count; i++) {
        const set_found *sf = &found.set[i];
        if (sf->error) {
            push_error(fd->l, path, sf->name, sf->error);
            continue;
        }
        ck_set *s = push(fd->l, CK_QKV, path, sf->name);
        if (sf->note) s->note = xstrdup(sf->note);
        for (int r = 0; r < SET_NROLES; r++) {
            if (sf->member[r] < 0) continue;
            s->file[r] = xstrdup(nm[sf->member[r]].file);
            s->member[r] = xstrdup(nm[sf->member[r]].member);
        }
    }
    sets_free(&found);
    free(names);
}

static size_t slot_of(dev_t dev, ino_t ino, size_t cap)
{
    uint64_t h = ((uint64_t)dev * 0x9e3779b97f4a7c15u) ^ ((uint64_t)ino * 0xc2b2ae3d27d4eb4fu);
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

/* 1 when (dev, ino) was visited before; else remembers it. A hash set: trees of many thousands
 * of files are walked in time proportional to their size. */
static int seen_before(finder *fd, const struct stat *sb)
{
    if (2 * (fd->nseen + 1) > fd->capseen) {
        size_t cap = fd->capseen ? 2 * (size_t)fd->capseen : 64;
        seen_slot *ns = calloc(cap, sizeof *ns);
        if (!ns) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
        for (int64_t i = 0; i < fd->capseen; i++) {
            if (!fd->seen[i].used) continue;
            size_t j = slot_of(fd->seen[i].dev, fd->seen[i].ino, cap);
            while (ns[j].used)
                j = (j + 1) & (cap - 1);
            ns[j] = fd->seen[i];
        }
        free(fd->seen);
        fd->seen = ns;
        fd->capseen = (int64_t)cap;
    }
    size_t cap = (size_t)fd->capseen, j = slot_of(sb->st_dev, sb->st_ino, cap);
    for (; fd->seen[j].used; j = (j + 1) & (cap - 1))
        if (fd->seen[j].dev == sb->st_dev && fd->seen[j].ino == sb->st_ino) return 1;
    fd->seen[j] = (seen_slot){sb->st_dev, sb->st_ino, 1};
    fd->nseen++;
    return 0;
}

/* A file named on the command line, or a bundle found in a directory. Returns 1 if it is a
 * single tensor (then, in a directory, the caller groups it with its neighbours). */
static int scan_file(finder *fd, const char *path, int in_dir)
{
    char err[1024];
    fr_members *m;
    int st = ck_files_get(fd->f, path, &m, err, sizeof err);
    if (st) {
        push_error(fd->l, path, "", err);
        return 0;
    }
    int single = fr_members_single(m);
    if (single && !in_dir) {
        ck_set *s = push(fd->l, CK_TENSOR, path, "");
        s->file[0] = xstrdup(path);
        s->member[0] = xstrdup("");
    } else if (!single) {
        int c = fr_members_count(m);
        named *nm = xcalloc((size_t)c, sizeof *nm);
        for (int i = 0; i < c; i++)
            nm[i] = (named){fr_members_name(m, i), path, fr_members_name(m, i)};
        if (c == 0)
            push_error(fd->l, path, "", "no tensor in this bundle");
        else
            group(fd, path, nm, c);
        free(nm);
    }
    return single;
}

static int ends_with(const char *s, const char *ext)
{
    size_t n = strlen(s), e = strlen(ext);
    return n > e && strcasecmp(s + n - e, ext) == 0;
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of dir (but ., .., hidden files and our own temporaries), sorted; NULL-safe. */
static char **list_dir(const char *dir, int *count)
{
    DIR *dp = opendir(dir);
    *count = -1;
    if (!dp) return NULL;
    char **ents = NULL;
    int ne = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (de->d_name[0] == '.') continue;
        if (ne == cap) {
            cap = cap ? 2 * cap : 64;
            ents = xrealloc(ents, (size_t)cap * sizeof *ents);
        }
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        ents[ne] = xcalloc(len, 1);
        snprintf(ents[ne], len, "%s%s%s", dir, ends_with(dir, "/") ? "" : "/", de->d_name);
        ne++;
    }
    closedir(dp);
    if (ne > 1) qsort(ents, (size_t)ne, sizeof *ents, by_str);
    *count = ne;
    return ents;
}

static void scan_dir(finder *fd, const char *dir)
{
    int ne;
    char **ents = list_dir(dir, &ne);
    if (ne < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: cannot open the directory", dir);
        push_error(fd->l, dir, "", msg);
        return;
    }
    named *nm = xcalloc((size_t)ne, sizeof *nm);
    int nn = 0;
    for (int i = 0; i < ne; i++) {
        struct stat sb;
        if (stat(ents[i], &sb) != 0) continue; /* a dangling link */
        if (S_ISDIR(sb.st_mode)) {
            if (fd->recursive) {
                if (!seen_before(fd, &sb)) scan_dir(fd, ents[i]);
            } else if (fd->l->skipped_dirs++ == 0) {
                fd->l->first_skipped_dir = xstrdup(dir);
            }
            continue;
        }
        int single = 0;
        if (ends_with(ents[i], ".npy"))
            single = 1;
        else if (ends_with(ents[i], ".npz") || ends_with(ents[i], ".safetensors") ||
                 ends_with(ents[i], ".json"))
            single = !seen_before(fd, &sb) && scan_file(fd, ents[i], 1);
        if (!single) continue;
        const char *base = strrchr(ents[i], '/') + 1;
        const char *dot = strrchr(base, '.');
        char *stem = strndup(base, (size_t)(dot ? dot - base : (ptrdiff_t)strlen(base)));
        if (!stem) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
        nm[nn++] = (named){stem, ents[i], ""};
    }
    group(fd, dir, nm, nn);
    for (int i = 0; i < nn; i++)
        free((char *)nm[i].name);
    free(nm);
    for (int i = 0; i < ne; i++)
        free(ents[i]);
    free(ents);
}

static int by_set(const void *a, const void *b)
{
    const ck_set *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    return c ? c : strcmp(x->name, y->name);
}

void ck_find(ck_sets *l, ck_files *f, const char *const *paths, int npaths, int recursive,
             const set_words *w)
{
    finder fd = {.l = l, .f = f, .w = w, .recursive = recursive};
    memset(l, 0, sizeof *l);
    for (int i = 0; i < npaths; i++) {
        struct stat sb;
        if (strcmp(paths[i], "-") == 0) {
            if (!fd.stdin_done) scan_file(&fd, paths[i], 0);
            fd.stdin_done = 1;
        } else if (stat(paths[i], &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            /* a regular file once; anything else (a pipe, a missing path) as it comes */
            if (!(stat(paths[i], &sb) == 0 && S_ISREG(sb.st_mode) && seen_before(&fd, &sb)))
                scan_file(&fd, paths[i], 0);
        } else if (!seen_before(&fd, &sb)) {
            scan_dir(&fd, paths[i]);
        }
    }
    free(fd.seen);
    if (l->count > 1) qsort(l->s, (size_t)l->count, sizeof *l->s, by_set);
}

int ck_locate(ck_files *f, const char *file, const char *member, fr_members **m, int *idx,
              char *err, size_t errlen)
{
    int st = ck_files_get(f, file, m, err, errlen);
    if (st) return st;
    *idx = 0;
    if (fr_members_single(*m)) return EXIT_OK;
    for (int i = 0; i < fr_members_count(*m); i++)
        if (strcmp(fr_members_name(*m, i), member) == 0) return *idx = i, EXIT_OK;
    return snprintf(err, errlen, "%s: no member '%s'", file, member), EXIT_INPUT;
}
