/* check.c - `fastrope check`: are dumped activations in the bounded-entry regime, and what
 * would the fast methods gain on them? Reads any number of files and directories, finds the
 * q/k/v sets by member and file names, streams each tensor once (memory: a chunk plus a few
 * numbers per leading index), and prints one row per set (or per leading index).
 *
 * The score bound R comes from the same reductions and arithmetic as run's (core/stats.c), so
 * the two agree to the bit on the same data; degree and predicted times come from
 * fr_plan_estimate, as in `fastrope bound`. */
#include "job.h"
#include "report.h"
#include "sets.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: fastrope check PATH... [--recursive] [--eps E] [rotation and scale options]\n"
    "                      [--per-head] [--format table|jsonl|csv] [--shard K/N] [--quiet]\n"
    "\n"
    "For dumped activations: the entry bounds B_q, B_k, B_v, B / sqrt(ln n), the score bound R\n"
    "(the same as `fastrope run` reports on the same data), the polynomial degree needed for\n"
    "--eps, the predicted time of each method (cost model, for all leading indices of the set)\n"
    "and a verdict: fast (predicted speed-up of the best fast method over exact >= 2),\n"
    "marginal (between 1 and 2) or exact-only (no speed-up, or no degree within --max-degree).\n"
    "\n"
    "What is checked:\n"
    "  a bundle (.npz, .json, .safetensors): its members are grouped into q/k/v sets by name\n"
    "    (case-insensitive query_states, q_proj, query, xq or q, likewise for k and v, alone or\n"
    "    after '.', '_' or '/': model.layers.3.self_attn.query_states is q of the set\n"
    "    model.layers.3.self_attn); members beside a set that are not q, k or v (out, grad_q,\n"
    "    dq, attn_weights, ...) are not sets of their own\n"
    "  a directory: its .npy (and single-tensor .json) files are grouped the same way by file\n"
    "    name (q.npy k.npy v.npy, or layer3_q.npy ...); its bundles are checked one by one;\n"
    "    subdirectories only with --recursive\n"
    "  a tensor file given as PATH, or a bundle or directory without any q/k/v name: each\n"
    "    tensor alone (entry bound only, verdict entries-only)\n"
    "Leading axes (layers, heads, batch) are the batch: one row per set naming the worst index\n"
    "(the largest row-norm product), or one row per index with --per-head.\n"
    "\n"
    "  --names ROLE=NAME,...  other names for the roles q, k, v, out, dout, dq, dk, dv:\n"
    "                         --names q=wq,k=wk,v=wv finds layers.0.wq, layers.0.wk, ...\n"
    "  --recursive            descend into subdirectories\n"
    "  --per-head             one row per leading index\n"
    "  --format F             table (default), jsonl (one JSON object per line) or csv; the\n"
    "                         summary line goes to stdout for table, to stderr otherwise\n"
    "  --shard K/N            only the sets whose index in the sorted list (by path, then set\n"
    "                         name) is K-1 modulo N, K in 1..N: the N shards partition the list\n"
    "  --quiet                no summary line and no progress bar\n"
    "%s"
    "\n"
    "An unreadable or malformed input (or an incomplete or ambiguous set) gets its own row with\n"
    "an error, also on stderr; the rest is checked, and the exit code is then 3.\n";

/* ---- discovery ---------------------------------------------------------------------------- */

typedef enum { SET_QKV, SET_TENSOR, SET_ERROR } set_kind;

typedef struct {
    set_kind kind;
    char *path;             /* the bundle file or directory the set lives in */
    char *prefix;           /* the set's name (sets.h), or the tensor's name */
    char *file[SET_NROLES]; /* where each role is (SET_TENSOR: file[0]); NULL: absent */
    char *member[SET_NROLES];
    char *error;
    char *note; /* what was left out, for the row */
} ck_set;

typedef struct {
    ck_set *s;
    int64_t count, cap;
} set_list_ck;

typedef struct {
    const char *name; /* what the role is recognised in: member name or file stem */
    const char *file, *member;
} named;

static set_words words; /* --names */

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        cli_fail(EXIT_INTERNAL, "out of memory");
        exit(EXIT_INTERNAL);
    }
    return d;
}

static ck_set *push(set_list_ck *l, set_kind kind, const char *path, const char *prefix)
{
    if (l->count == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        ck_set *ns = realloc(l->s, (size_t)l->cap * sizeof *ns);
        if (!ns) {
            cli_fail(EXIT_INTERNAL, "out of memory");
            exit(EXIT_INTERNAL);
        }
        l->s = ns;
    }
    ck_set *s = &l->s[l->count++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->path = xstrdup(path);
    s->prefix = xstrdup(prefix);
    return s;
}

static void push_error(set_list_ck *l, const char *path, const char *prefix, const char *msg)
{
    push(l, SET_ERROR, path, prefix)->error = xstrdup(msg);
}

/* Sets among the names (sets.h), or, when none plays q, k or v, one tensor row each. path is
 * where the rows say they are: the bundle, or the directory of the files. */
static void group(set_list_ck *l, const char *path, const named *nm, int count)
{
    const char **names = malloc((size_t)(count ? count : 1) * sizeof *names);
    set_list found;
    if (!names) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    for (int i = 0; i < count; i++)
        names[i] = nm[i].name;
    if (sets_find(names, count, &words, &found)) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    for (int i = 0; i < count && !found.any; i++) {
        ck_set *s = push(l, SET_TENSOR, nm[i].file, nm[i].member);
        s->file[0] = xstrdup(nm[i].file);
        s->member[0] = xstrdup(nm[i].member);
    }
    for (int i = 0; i < found.count; i++) {
        const set_found *f = &found.set[i];
        if (f->error) {
            push_error(l, path, f->name, f->error);
            continue;
        }
        ck_set *s = push(l, SET_QKV, path, f->name);
        if (f->note) s->note = xstrdup(f->note);
        for (int r = 0; r < SET_NROLES; r++) {
            if (f->member[r] < 0) continue;
            s->file[r] = xstrdup(nm[f->member[r]].file);
            s->member[r] = xstrdup(nm[f->member[r]].member);
        }
    }
    sets_free(&found);
    free(names);
}

/* A bundle's member names (headers only: no tensor data is read here). */
static void scan_bundle(set_list_ck *l, const char *path, const fr_members *m)
{
    int c = fr_members_count(m);
    named *nm = calloc((size_t)(c ? c : 1), sizeof *nm);
    if (!nm) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    for (int i = 0; i < c; i++) {
        nm[i].name = fr_members_name(m, i);
        nm[i].file = path;
        nm[i].member = fr_members_name(m, i);
    }
    if (c == 0)
        push_error(l, path, "", "no tensor in this bundle");
    else
        group(l, path, nm, c);
    free(nm);
}

/* A file named on the command line, or a bundle found in a directory. Returns 1 if it is a
 * single tensor (then, in a directory, the caller groups it with its neighbours). */
static int scan_file(set_list_ck *l, const char *path, int in_dir)
{
    char err[1024];
    fr_members *m;
    int st = fr_members_open(path, &cli_limits, &m, err, sizeof err);
    if (st) {
        push_error(l, path, "", err);
        return 0;
    }
    int single = fr_members_single(m);
    if (single && !in_dir) {
        ck_set *s = push(l, SET_TENSOR, path, "");
        s->file[0] = xstrdup(path);
        s->member[0] = xstrdup("");
    } else if (!single) {
        scan_bundle(l, path, m);
    }
    fr_members_close(m);
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

static void scan_dir(set_list_ck *l, const char *dir, int recursive)
{
    DIR *dp = opendir(dir);
    if (!dp) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: cannot open the directory", dir);
        push_error(l, dir, "", msg);
        return;
    }
    char **ents = NULL;
    int ne = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (de->d_name[0] == '.') continue; /* ., .., hidden files and our own temporaries */
        if (ne == cap) {
            cap = cap ? 2 * cap : 64;
            char **ne2 = realloc(ents, (size_t)cap * sizeof *ne2);
            if (!ne2) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
            ents = ne2;
        }
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        ents[ne] = malloc(len);
        if (!ents[ne]) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
        snprintf(ents[ne], len, "%s%s%s", dir, ends_with(dir, "/") ? "" : "/", de->d_name);
        ne++;
    }
    closedir(dp);
    if (ne > 1) qsort(ents, (size_t)ne, sizeof *ents, by_str); /* ents may be NULL */
    named *nm = calloc((size_t)(ne ? ne : 1), sizeof *nm);
    int nn = 0;
    if (!nm) exit(cli_fail(EXIT_INTERNAL, "out of memory"));
    for (int i = 0; i < ne; i++) {
        struct stat sb;
        if (stat(ents[i], &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (recursive) scan_dir(l, ents[i], 1);
            continue;
        }
        int single = 0;
        if (ends_with(ents[i], ".npy"))
            single = 1;
        else if (ends_with(ents[i], ".npz") || ends_with(ents[i], ".safetensors") ||
                 ends_with(ents[i], ".json"))
            single = scan_file(l, ents[i], 1);
        if (!single) continue;
        const char *base = strrchr(ents[i], '/') + 1;
        const char *dot = strrchr(base, '.');
        nm[nn].name = strndup(base, (size_t)(dot ? dot - base : (ptrdiff_t)strlen(base)));
        nm[nn].file = ents[i];
        nm[nn].member = "";
        nn++;
    }
    group(l, dir, nm, nn);
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
    return c ? c : strcmp(x->prefix, y->prefix);
}

/* ---- streaming reductions --------------------------------------------------------------- */

typedef struct {
    int64_t heads, n, cols;
    double *col_max;       /* heads x cols */
    double *row_sq;        /* heads */
    double *part;          /* one row being assembled when a chunk ends inside it */
    int64_t part_len, row; /* rows done (over all heads) */
    int64_t bad;           /* flat index of the first NaN/Inf, or -1 */
    int64_t seen;
} reducer;

static int reducer_init(reducer *r, int64_t heads, int64_t n, int64_t cols)
{
    memset(r, 0, sizeof *r);
    r->heads = heads, r->n = n, r->cols = cols, r->bad = -1;
    r->col_max = calloc((size_t)(heads * cols), sizeof *r->col_max);
    r->row_sq = calloc((size_t)heads, sizeof *r->row_sq);
    r->part = malloc((size_t)cols * sizeof *r->part);
    return r->col_max && r->row_sq && r->part ? 0 : -1;
}

static void reducer_free(reducer *r)
{
    free(r->col_max);
    free(r->row_sq);
    free(r->part);
}

/* Whole rows starting at row r->row, split where the leading index changes. */
static void rows_in(reducer *r, const double *x, int64_t rows)
{
    while (rows > 0) {
        int64_t h = r->row / r->n, in_head = r->n - r->row % r->n;
        int64_t c = rows < in_head ? rows : in_head;
        if (h >= r->heads) return; /* more data than the shape: the reader prevents it */
        fr_stats_rows(x, c, r->cols, r->col_max + h * r->cols, &r->row_sq[h]);
        x += c * r->cols;
        rows -= c;
        r->row += c;
    }
}

static int reduce_chunk(void *ctx, const double *x, int64_t count)
{
    reducer *r = ctx;
    if (r->bad < 0) {
        int64_t b = fr_find_nonfinite(x, count);
        if (b >= 0) r->bad = r->seen + b;
    }
    r->seen += count;
    while (count > 0) {
        if (r->part_len > 0 || count < r->cols) {
            int64_t c = r->cols - r->part_len < count ? r->cols - r->part_len : count;
            memcpy(r->part + r->part_len, x, (size_t)c * sizeof *x);
            r->part_len += c;
            x += c;
            count -= c;
            if (r->part_len == r->cols) {
                rows_in(r, r->part, 1);
                r->part_len = 0;
            }
            continue;
        }
        int64_t rows = count / r->cols;
        rows_in(r, x, rows);
        x += rows * r->cols;
        count -= rows * r->cols;
    }
    return 0;
}

/* ---- checking one set ------------------------------------------------------------------- */

typedef struct {
    const char *path, *set;
    int64_t head, worst; /* -1: none */
    set_kind kind;
    int64_t n, d, dv;
    double B_q, B_k, B_v, B, B_sl, R;
    const char *R_from;
    int degree;
    double t[FR_NMETHODS];
    double speedup;
    const char *verdict;
    const char *error;
    const char *note;
} ck_row;

typedef struct {
    const char *format;
    int per_head, quiet;
    cli_attn attn;
    int64_t rows, errors, by_verdict[4], bytes;
} ck_ctx;

static const char *verdicts[4] = {"fast", "marginal", "exact-only", "entries-only"};

static void csv_str(const char *s)
{
    if (!s) return;
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void csv_num(double x, const char *fmt)
{
    putchar(',');
    if (isfinite(x)) printf(fmt, x);
}

/* Numbers to the last bit (%.17g): cJSON's own printing may drop the last digit, and a
 * machine reading the bounds should get exactly what was computed. */
static void jnum(cJSON *o, const char *key, double x)
{
    char buf[40];
    if (!isfinite(x)) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    snprintf(buf, sizeof buf, "%.17g", x);
    cJSON_AddRawToObject(o, key, buf);
}

static void emit(ck_ctx *c, const ck_row *r)
{
    int qkv = r->kind == SET_QKV, ok = !r->error;
    c->rows++;
    if (r->error) {
        c->errors++;
        fprintf(stderr, "fastrope: check: %s%s%s: %s\n", r->path, *r->set ? ":" : "", r->set,
                r->error);
    } else {
        for (int v = 0; v < 4; v++)
            if (strcmp(r->verdict, verdicts[v]) == 0) c->by_verdict[v]++;
    }
    if (r->note && r->head <= 0)
        fprintf(stderr, "fastrope: check: %s%s%s: note: %s\n", r->path, *r->set ? ":" : "", r->set,
                r->note);
    if (strcmp(c->format, "jsonl") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", r->path);
        cJSON_AddStringToObject(o, "set", r->set);
        if (r->head >= 0) cJSON_AddNumberToObject(o, "head", (double)r->head);
        if (r->worst >= 0) cJSON_AddNumberToObject(o, "worst_head", (double)r->worst);
        if (ok) {
            cJSON_AddNumberToObject(o, "n", (double)r->n);
            cJSON_AddNumberToObject(o, "d", (double)r->d);
            if (qkv)
                cJSON_AddNumberToObject(o, "dv", (double)r->dv);
            else
                cJSON_AddNullToObject(o, "dv");
        }
        if (ok && qkv) {
            jnum(o, "B_q", r->B_q);
            jnum(o, "B_k", r->B_k);
            jnum(o, "B_v", r->B_v);
        }
        if (ok) {
            jnum(o, "B", r->B);
            jnum(o, "B_over_sqrt_ln_n", r->B_sl);
        }
        if (ok && qkv) {
            jnum(o, "R", r->R);
            cJSON_AddStringToObject(o, "R_from", r->R_from);
            if (r->degree >= 0)
                cJSON_AddNumberToObject(o, "degree", r->degree);
            else
                cJSON_AddNullToObject(o, "degree");
            cJSON *t = cJSON_AddObjectToObject(o, "predicted_s");
            for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
                jnum(t, fr_method_name((fr_method)m), r->t[m] >= 0 ? r->t[m] : NAN);
            jnum(o, "speedup", r->speedup);
        }
        if (ok)
            cJSON_AddStringToObject(o, "verdict", r->verdict);
        else
            cJSON_AddStringToObject(o, "error", r->error);
        if (r->note) cJSON_AddStringToObject(o, "note", r->note);
        char *s = cJSON_PrintUnformatted(o);
        if (s) puts(s);
        free(s);
        cJSON_Delete(o);
    } else if (strcmp(c->format, "csv") == 0) {
        csv_str(r->path);
        putchar(',');
        csv_str(r->set);
        putchar(',');
        if (r->head >= 0) printf("%lld", (long long)r->head);
        putchar(',');
        if (r->worst >= 0) printf("%lld", (long long)r->worst);
        if (ok)
            printf(",%lld,%lld,", (long long)r->n, (long long)r->d);
        else
            printf(",,,");
        if (ok && qkv) printf("%lld", (long long)r->dv);
        double nan = NAN;
        csv_num(ok && qkv ? r->B_q : nan, "%.17g");
        csv_num(ok && qkv ? r->B_k : nan, "%.17g");
        csv_num(ok && qkv ? r->B_v : nan, "%.17g");
        csv_num(ok ? r->B : nan, "%.17g");
        csv_num(ok ? r->B_sl : nan, "%.17g");
        csv_num(ok && qkv ? r->R : nan, "%.17g");
        csv_num(ok && qkv && r->degree >= 0 ? r->degree : nan, "%.0f");
        for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
            csv_num(ok && qkv && r->t[m] >= 0 ? r->t[m] : nan, "%.6g");
        csv_num(ok && qkv ? r->speedup : nan, "%.4g");
        putchar(',');
        if (ok) fputs(r->verdict, stdout);
        putchar(',');
        csv_str(r->error);
        putchar(',');
        csv_str(r->note);
        putchar('\n');
    } else {
        char where[4096];
        snprintf(where, sizeof where, "%s%s%s", r->path, *r->set ? ":" : "", r->set);
        if (r->head >= 0)
            snprintf(where + strlen(where), sizeof where - strlen(where), " [%lld]",
                     (long long)r->head);
        else if (r->worst >= 0)
            snprintf(where + strlen(where), sizeof where - strlen(where), " (worst [%lld])",
                     (long long)r->worst);
        if (!ok) {
            printf("%-12s %s: %s\n", "error", where, r->error);
            return;
        }
        char b[3][16], R[16], deg[8], t[FR_NMETHODS][16], sp[16], dv[16];
        const double bb[3] = {r->B_q, r->B_k, r->B_v};
        for (int i = 0; i < 3; i++)
            snprintf(b[i], sizeof b[i], qkv ? "%.4g" : "-", bb[i]);
        snprintf(R, sizeof R, qkv ? "%.4g" : "-", r->R);
        snprintf(dv, sizeof dv, qkv ? "%lld" : "-", (long long)r->dv);
        snprintf(deg, sizeof deg, qkv && r->degree >= 0 ? "%d" : "-", r->degree);
        for (int m = 0; m < FR_NMETHODS; m++)
            snprintf(t[m], sizeof t[m], qkv && r->t[m] >= 0 ? "%.3g" : "-", r->t[m]);
        snprintf(sp, sizeof sp, qkv && isfinite(r->speedup) ? "%.2f" : "-", r->speedup);
        printf("%-12s %8lld %5lld %5s %9s %9s %9s %8.3g %9s %4s %9s %9s %9s %7s  %s\n", r->verdict,
               (long long)r->n, (long long)r->d, dv, b[0], b[1], b[2], r->B_sl, R, deg,
               t[FR_METHOD_EXACT], t[FR_METHOD_POLYFFT], t[FR_METHOD_POLYROPE], sp, where);
    }
}

static void header(const ck_ctx *c)
{
    if (strcmp(c->format, "csv") == 0) {
        printf("path,set,head,worst_head,n,d,dv,B_q,B_k,B_v,B,B_over_sqrt_ln_n,R,degree");
        for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
            printf(",predicted_s_%s", fr_method_name((fr_method)m));
        printf(",speedup,verdict,error,note\n");
    } else if (strcmp(c->format, "table") == 0) {
        printf("%-12s %8s %5s %5s %9s %9s %9s %8s %9s %4s %9s %9s %9s %7s  %s\n", "verdict", "n",
               "d", "dv", "B_q", "B_k", "B_v", "B/sqrtln", "R", "deg", "t_exact", "t_polyfft",
               "t_polyrope", "speedup", "set");
    }
}

/* Degree, predicted times (times `heads`) and verdict of a row whose bounds are known. */
static int estimate(ck_ctx *c, const fr_problem *p, const fr_bounds *b, int64_t heads, ck_row *r,
                    char *err, size_t errlen)
{
    fr_plan_info info;
    int st = fr_plan_estimate(p, b, &c->attn.opt, &info, err, errlen);
    if (st) return st;
    r->B_q = b->B_q, r->B_k = b->B_k, r->B_v = b->B_v, r->B = b->B;
    r->B_sl = b->B_over_sqrt_ln_n, r->R = b->R, r->R_from = b->R_from;
    r->degree = info.degree;
    double best = INFINITY;
    for (int m = 0; m < FR_NMETHODS; m++) {
        r->t[m] = info.predicted_s[m] >= 0 ? info.predicted_s[m] * (double)heads : -1;
        if (m != FR_METHOD_EXACT && m != FR_METHOD_AUTO && r->t[m] >= 0 && r->t[m] < best)
            best = r->t[m];
    }
    r->speedup = info.degree >= 0 && isfinite(best) && r->t[FR_METHOD_EXACT] >= 0
                     ? r->t[FR_METHOD_EXACT] / best
                     : NAN;
    r->verdict = !isfinite(r->speedup) || r->speedup <= 1 ? "exact-only"
                 : r->speedup >= 2                        ? "fast"
                                                          : "marginal";
    return FR_OK;
}

/* Shape [..., n, cols] as (heads, n, cols); a 1-D tensor is one row, a scalar one element. */
static void split_shape(const fr_tensor *t, int64_t *heads, int64_t *n, int64_t *cols)
{
    *cols = t->ndim >= 1 ? t->shape[t->ndim - 1] : 1;
    *n = t->ndim >= 2 ? t->shape[t->ndim - 2] : 1;
    *heads = 1;
    for (int i = 0; i < t->ndim - 2; i++)
        *heads *= t->shape[i];
}

typedef struct {
    fr_members *m;
    char *file;
} open_file;

static int member_index(const fr_members *m, const char *name)
{
    if (fr_members_single(m)) return 0;
    for (int i = 0; i < fr_members_count(m); i++)
        if (strcmp(fr_members_name(m, i), name) == 0) return i;
    return -1;
}

/* Open (or reuse) the file of one role; the member's index and shape. */
static int locate(open_file *of, const char *file, const char *member, int *idx,
                  const fr_tensor **shape, char *err, size_t errlen)
{
    if (!of->file || strcmp(of->file, file) != 0) {
        fr_members_close(of->m);
        free(of->file);
        of->m = NULL;
        of->file = NULL;
        int st = fr_members_open(file, &cli_limits, &of->m, err, errlen);
        if (st) return st;
        of->file = xstrdup(file);
    }
    *idx = member_index(of->m, member);
    if (*idx < 0) return snprintf(err, errlen, "%s: no member '%s'", file, member), EXIT_INPUT;
    *shape = fr_members_shape(of->m, *idx);
    return EXIT_OK;
}

static int stream_into(ck_ctx *c, open_file *of, int idx, reducer *r, const char *what, char *err,
                       size_t errlen)
{
    int st = fr_members_stream(of->m, idx, reduce_chunk, r, err, errlen);
    if (st) return st;
    c->bytes += fr_members_bytes(of->m, idx);
    if (r->bad >= 0)
        return snprintf(err, errlen, "%s holds a NaN or Inf at flat index %lld", what,
                        (long long)r->bad),
               EXIT_INPUT;
    return EXIT_OK;
}

static void max_cols(const reducer *r, int64_t h0, int64_t h1, double *out, double *row_sq)
{
    memset(out, 0, (size_t)r->cols * sizeof *out);
    *row_sq = 0;
    for (int64_t h = h0; h < h1; h++) {
        const double *cm = r->col_max + h * r->cols;
        for (int64_t a = 0; a < r->cols; a++)
            out[a] = cm[a] > out[a] ? cm[a] : out[a];
        *row_sq = r->row_sq[h] > *row_sq ? r->row_sq[h] : *row_sq;
    }
}

static double max_of(const double *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static void shape_msg(char *err, size_t errlen, const char *what, const fr_tensor *q,
                      const fr_tensor *t)
{
    char sq[256], st[256];
    cli_shape_str(q, sq, sizeof sq);
    cli_shape_str(t, st, sizeof st);
    snprintf(err, errlen,
             "%s has shape %s but q has shape %s (need q, k [..., n, d] and v "
             "[..., n, dv] with the same leading axes)",
             what, st, sq);
}

static int check_qkv(ck_ctx *c, const ck_set *s, open_file *of, char *err, size_t errlen)
{
    const fr_tensor *sh[3], *tmp;
    fr_tensor shapes[3]; /* copies: a directory set's files are opened one after the other */
    int idx[3], st;
    int64_t heads, n, d, dv, hk, nk, dk, hv, nv;
    reducer red[3];
    memset(red, 0, sizeof red);
    for (int r = 0; r < 3; r++) {
        if ((st = locate(of, s->file[r], s->member[r], &idx[r], &tmp, err, errlen))) return st;
        shapes[r] = *tmp;
        sh[r] = &shapes[r];
    }
    /* Shapes first, from the headers: a mismatch costs no data read. */
    split_shape(sh[0], &heads, &n, &d);
    split_shape(sh[1], &hk, &nk, &dk);
    split_shape(sh[2], &hv, &nv, &dv);
    if (sh[0]->ndim < 2)
        return snprintf(err, errlen, "q needs shape [..., n, d], got %d dimensions", sh[0]->ndim),
               EXIT_INPUT;
    int same_k = sh[1]->ndim == sh[0]->ndim, same_v = sh[2]->ndim == sh[0]->ndim;
    for (int i = 0; i < sh[0]->ndim; i++) {
        same_k &= sh[1]->shape[i] == sh[0]->shape[i];
        if (i < sh[0]->ndim - 1) same_v &= sh[2]->shape[i] == sh[0]->shape[i];
    }
    if (!same_k) return shape_msg(err, errlen, "k", sh[0], sh[1]), EXIT_INPUT;
    if (!same_v) return shape_msg(err, errlen, "v", sh[0], sh[2]), EXIT_INPUT;
    if (heads == 0 || n == 0 || d == 0 || dv == 0)
        return snprintf(err, errlen, "empty tensors"), EXIT_INPUT;
    fr_problem p = fr_problem_default(n, d, dv);
    p.rot = c->attn.rot;
    p.causal = c->attn.causal;
    p.window = c->attn.window;
    if ((st = cli_scale(&c->attn, d, &p.tau))) return st;
    if ((p.rot.kind == FR_ROT_ROPE || p.rot.kind == FR_ROT_CLIP) &&
        (p.rot.rotary_dim ? p.rot.rotary_dim : d) % 2)
        return snprintf(err, errlen,
                        "RoPE rotates pairs of coordinates but d = %lld is odd (use "
                        "--rotary-dim or --no-rope)",
                        (long long)d),
               EXIT_INPUT;
    if ((st = fr_problem_check(&p, err, errlen))) return st;

    static const char *what[3] = {"q", "k", "v"};
    const int64_t cols[3] = {d, d, dv};
    for (int r = 0; r < 3 && !st; r++) {
        if (reducer_init(&red[r], heads, n, cols[r])) st = EXIT_INTERNAL;
        if (!st && (st = locate(of, s->file[r], s->member[r], &idx[r], &tmp, err, errlen))) break;
        if (!st) st = stream_into(c, of, idx[r], &red[r], what[r], err, errlen);
    }
    double *mq = malloc((size_t)d * sizeof *mq), *mk = malloc((size_t)d * sizeof *mk),
           *mv = malloc((size_t)dv * sizeof *mv);
    if (!st && (!mq || !mk || !mv)) st = EXIT_INTERNAL, snprintf(err, errlen, "out of memory");
    /* The set's row pools every leading index, as run does for a batch; the worst index is the
     * one with the largest product of row norms (the rope-norm bound's ingredient). */
    int64_t worst = 0;
    double wq = -1;
    for (int64_t h = 0; h < heads && !st; h++)
        if (red[0].row_sq[h] * red[1].row_sq[h] > wq)
            wq = red[0].row_sq[h] * red[1].row_sq[h], worst = h;
    int64_t nrows = c->per_head ? heads : 1;
    for (int64_t h = 0; h < nrows && !st; h++) {
        int64_t h0 = c->per_head ? h : 0, h1 = c->per_head ? h + 1 : heads;
        /* Each head's bounds, pooled as run pools its batch entries' for the report. */
        fr_bounds b;
        for (int64_t hh = h0; hh < h1 && !st; hh++) {
            double qs, ks, vs;
            fr_bounds bh;
            max_cols(&red[0], hh, hh + 1, mq, &qs);
            max_cols(&red[1], hh, hh + 1, mk, &ks);
            max_cols(&red[2], hh, hh + 1, mv, &vs);
            st = fr_bounds_from_stats(&p, qs, ks, mq, mk, max_of(mv, dv), &bh, err, errlen);
            if (hh == h0)
                b = bh;
            else
                fr_bounds_pool((fr_bounds[]){b, bh}, 2, &b);
        }
        if (st) break;
        ck_row row = {.path = s->path,
                      .set = s->prefix,
                      .note = s->note,
                      .head = c->per_head ? h : -1,
                      .worst = !c->per_head && heads > 1 ? worst : -1,
                      .kind = SET_QKV,
                      .n = n,
                      .d = d,
                      .dv = dv};
        if ((st = estimate(c, &p, &b, h1 - h0, &row, err, errlen))) break;
        emit(c, &row);
    }
    free(mq);
    free(mk);
    free(mv);
    for (int r = 0; r < 3; r++)
        reducer_free(&red[r]);
    return st;
}

static int check_tensor(ck_ctx *c, const ck_set *s, open_file *of, char *err, size_t errlen)
{
    const fr_tensor *sh;
    int idx, st;
    if ((st = locate(of, s->file[0], s->member[0], &idx, &sh, err, errlen))) return st;
    int64_t heads, n, cols;
    split_shape(sh, &heads, &n, &cols);
    if (fr_tensor_count(sh) == 0) return snprintf(err, errlen, "empty tensor"), EXIT_INPUT;
    reducer r;
    if (reducer_init(&r, heads, n, cols)) return snprintf(err, errlen, "out of memory"), 1;
    st = stream_into(c, of, idx, &r, "the tensor", err, errlen);
    int64_t nrows = c->per_head ? heads : 1;
    for (int64_t h = 0; h < nrows && !st; h++) {
        int64_t h0 = c->per_head ? h : 0, h1 = c->per_head ? h + 1 : heads;
        ck_row row = {.path = s->path,
                      .set = s->prefix,
                      .head = c->per_head ? h : -1,
                      .worst = -1,
                      .kind = SET_TENSOR,
                      .n = n,
                      .d = cols};
        row.B = max_of(r.col_max + h0 * cols, (h1 - h0) * cols);
        row.B_sl = n > 1 ? row.B / sqrt(log((double)n)) : INFINITY;
        row.verdict = "entries-only";
        row.speedup = NAN;
        emit(c, &row);
    }
    reducer_free(&r);
    return st;
}

static void check_set(ck_ctx *c, const ck_set *s, open_file *of)
{
    char err[2048] = "";
    int64_t before = c->rows;
    int st = s->kind == SET_ERROR ? EXIT_INPUT
             : s->kind == SET_QKV ? check_qkv(c, s, of, err, sizeof err)
                                  : check_tensor(c, s, of, err, sizeof err);
    if (st && c->rows == before) {
        ck_row row = {.path = s->path, .set = s->prefix, .head = -1, .worst = -1, .kind = s->kind};
        row.error = s->kind == SET_ERROR ? s->error : err;
        emit(c, &row);
    }
}

static int parse_shard(const char *v, int64_t *k, int64_t *n)
{
    char *end;
    long long a = strtoll(v, &end, 10);
    if (end == v || *end != '/') return 1;
    const char *p = end + 1;
    long long b = strtoll(p, &end, 10);
    if (end == p || *end || b < 1 || a < 1 || a > b) return 1;
    *k = a, *n = b;
    return 0;
}

int cmd_check(int argc, char **argv)
{
    ck_ctx c;
    memset(&c, 0, sizeof c);
    c.format = "table";
    cli_attn_init(&c.attn);
    set_words_default(&words);
    int recursive = 0;
    int64_t shard_k = 1, shard_n = 1;
    const char *v;
    char **paths = calloc((size_t)argc, sizeof *paths);
    int npaths = 0;
    if (!paths) return cli_fail(EXIT_INTERNAL, "out of memory");
    cli_args a = {argc, argv, 1, 0, "check"};
    for (; a.i < argc && !a.bad; a.i++) {
        if (arg_flag(&a, "--help") || arg_flag(&a, "-h")) {
            printf(usage, cli_attn_help);
            free(paths);
            return 0;
        } else if (arg_flag(&a, "--recursive") || arg_flag(&a, "-r")) {
            recursive = 1;
        } else if (arg_flag(&a, "--per-head")) {
            c.per_head = 1;
        } else if (arg_flag(&a, "--quiet")) {
            c.quiet = 1;
        } else if (arg_value(&a, "--names", &v)) {
            char err[512];
            if (v && set_words_parse(&words, v, err, sizeof err))
                a.bad = 1, cli_fail(EXIT_USAGE, "check: %s", err);
        } else if (arg_value(&a, "--format", &v)) {
            if (v && strcmp(v, "table") && strcmp(v, "jsonl") && strcmp(v, "csv"))
                a.bad = 1, cli_fail(EXIT_USAGE, "--format: '%s' is not table, jsonl or csv", v);
            else if (v)
                c.format = v;
        } else if (arg_value(&a, "--shard", &v)) {
            if (v && parse_shard(v, &shard_k, &shard_n))
                a.bad = 1, cli_fail(EXIT_USAGE, "--shard: '%s' is not K/N with 1 <= K <= N", v);
        } else if (cli_attn_option(&a, &c.attn)) {
        } else if (argv[a.i][0] == '-' && argv[a.i][1] != '\0') {
            free(paths);
            return cli_fail(EXIT_USAGE, "check: unknown option '%s' (see fastrope check --help)",
                            argv[a.i]);
        } else {
            paths[npaths++] = argv[a.i];
        }
    }
    if (a.bad) {
        free(paths);
        return EXIT_USAGE;
    }
    int st = cli_attn_finish(&c.attn);
    if (!st && c.attn.rot.kind == FR_ROT_EXPLICIT)
        st = cli_fail(EXIT_USAGE, "check: -w (an explicit W) is not supported; check with "
                                  "--rope, --rope-clip or --no-rope");
    if (!st && npaths == 0)
        st = cli_fail(EXIT_USAGE, "check: give at least one PATH (see fastrope check --help)");
    if (st) {
        free(paths);
        return st;
    }

    double t0 = cli_now();
    set_list_ck l = {0};
    for (int i = 0; i < npaths; i++) {
        struct stat sb;
        if (strcmp(paths[i], "-") != 0 && stat(paths[i], &sb) == 0 && S_ISDIR(sb.st_mode))
            scan_dir(&l, paths[i], recursive);
        else
            scan_file(&l, paths[i], 0);
    }
    if (l.count > 1) qsort(l.s, (size_t)l.count, sizeof *l.s, by_set);
    int64_t mine = 0;
    for (int64_t i = 0; i < l.count; i++)
        mine += i % shard_n == shard_k - 1;
    header(&c);
    open_file of = {0};
    int64_t done = 0;
    for (int64_t i = 0; i < l.count; i++) {
        if (i % shard_n != shard_k - 1) continue;
        check_set(&c, &l.s[i], &of);
        fflush(stdout);
        if (!c.quiet) job_progress(++done, mine, t0);
    }
    fr_members_close(of.m);
    free(of.file);
    double dt = cli_now() - t0;
    if (!c.quiet) {
        FILE *out = strcmp(c.format, "table") == 0 ? stdout : stderr;
        fprintf(out,
                "check: %lld sets%s, %lld rows: %lld fast, %lld marginal, %lld exact-only, %lld "
                "entries-only, %lld errors; %.1f MB read in %.2f s (%.0f MB/s)\n",
                (long long)mine, l.count == 0 ? " (nothing to check)" : "", (long long)c.rows,
                (long long)c.by_verdict[0], (long long)c.by_verdict[1], (long long)c.by_verdict[2],
                (long long)c.by_verdict[3], (long long)c.errors, (double)c.bytes / 1e6, dt,
                dt > 0 ? (double)c.bytes / 1e6 / dt : 0.0);
    }
    for (int64_t i = 0; i < l.count; i++) {
        ck_set *s = &l.s[i];
        free(s->path), free(s->prefix), free(s->error), free(s->note);
        for (int r = 0; r < SET_NROLES; r++)
            free(s->file[r]), free(s->member[r]);
    }
    free(l.s);
    free(paths);
    return c.errors ? EXIT_INPUT : EXIT_OK;
}
