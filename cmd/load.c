/* load.c - reading Q, K, V (and W) and checking that their shapes make one problem.
 *
 * Every message names the file (and member) and both shapes, because a shape mismatch is
 * almost always two files from different runs, and the user needs to see which. */
#include "cli.h"
#include "sets.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_shape_str(const fr_tensor *t, char *buf, size_t len)
{
    size_t off = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && off < len; i++)
        off +=
            (size_t)snprintf(buf + off, len - off, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (off < len) snprintf(buf + off, len - off, "]");
}

/* The first NaN or Inf of t (read as double or as float), or -1. */
static int64_t find_nonfinite(const fr_tensor *t)
{
    int64_t count = fr_tensor_count(t);
    if (!t->f32) return fr_find_nonfinite(t->data, count);
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(t->f32[i])) return i;
    return -1;
}

int cli_check_finite(const fr_tensor *t, const char *label)
{
    int64_t bad = find_nonfinite(t);
    if (bad < 0) return EXIT_OK;
    /* The multi-index is what the user can look up in numpy. */
    char idx[256];
    size_t off = 0;
    int64_t rest = bad;
    int64_t sub[FR_MAXDIM];
    for (int i = t->ndim - 1; i >= 0; i--) {
        sub[i] = t->shape[i] ? rest % t->shape[i] : 0;
        rest = t->shape[i] ? rest / t->shape[i] : 0;
    }
    off += (size_t)snprintf(idx, sizeof idx, "[");
    for (int i = 0; i < t->ndim && off < sizeof idx; i++)
        off += (size_t)snprintf(idx + off, sizeof idx - off, "%s%lld", i ? ", " : "",
                                (long long)sub[i]);
    if (off < sizeof idx) snprintf(idx + off, sizeof idx - off, "]");
    double x = t->f32 ? (double)t->f32[bad] : t->data[bad];
    return cli_fail(EXIT_INPUT, "%s: %s at index %s (NaN and Inf are not allowed)", label,
                    isnan(x) ? "NaN" : (x > 0 ? "+Inf" : "-Inf"), idx);
}

/* Read path into the next slot of in->files, within in->limits: per tensor and per file by the
 * readers (before they allocate), and all inputs of the run together here. as: the tensors'
 * element type in memory (float for a single-precision run: never a double copy). */
static int read_file(cli_inputs *in, const char *path, fr_dtype as, fr_bundle **out)
{
    char err[512];
    fr_bundle *b = &in->files[in->nfiles];
    memset(b, 0, sizeof *b);
    int st = fr_read_as(path, b, &in->limits, as, err, sizeof err);
    if (st)
        return cli_fail(st, "%s%s", err,
                        strstr(err, "over the limit") ? " (raise it with --max-elements or "
                                                        "--max-bytes)"
                                                      : "");
    in->nfiles++;
    *out = b;
    for (int i = 0; i < b->count; i++) {
        int64_t c = fr_tensor_count(&b->tensors[i]);
        in->bytes += c > INT64_MAX / 8 - in->bytes ? INT64_MAX / 2 : c * 8;
    }
    if (in->bytes > in->limits.max_bytes)
        return cli_fail(EXIT_INPUT,
                        "%s: the inputs read so far take %lld bytes as doubles, over the limit of "
                        "%lld bytes per run (raise it with --max-bytes)",
                        path, (long long)in->bytes, (long long)in->limits.max_bytes);
    return EXIT_OK;
}

/* The tensor for `role` in a file: the file's only tensor, or its member named role. */
static int pick(const fr_bundle *b, const char *path, const char *role, fr_tensor **t, char *label,
                size_t labellen)
{
    if (b->single) {
        *t = &b->tensors[0];
        snprintf(label, labellen, "%s", path);
        return EXIT_OK;
    }
    *t = fr_bundle_get(b, role);
    snprintf(label, labellen, "%s:%s", path, role);
    if (*t) return EXIT_OK;
    char names[256] = "";
    size_t off = 0;
    for (int i = 0; i < b->count && off < sizeof names; i++)
        off +=
            (size_t)snprintf(names + off, sizeof names - off, "%s%s", i ? ", " : "", b->names[i]);
    return cli_fail(EXIT_INPUT, "%s: no member '%s' (members: %s)", path, role,
                    b->count ? names : "none");
}

static int leading_equal(const fr_tensor *a, const fr_tensor *b, int lead)
{
    for (int i = 0; i < lead; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* q, k and v make one batch of problems: the same leading axes, or k and v with H/g heads
 * where q has H (grouped-query attention); the rules are check's (sets.c). */
static int check_shapes(cli_inputs *in)
{
    char err[1024], sq[256], sv[256];
    cli_shape_str(in->q, sq, sizeof sq);
    cli_shape_str(in->v, sv, sizeof sv);
    /* An empty tensor's other axes may be huge: their product is not formed. */
    if (in->q->ndim >= 2 &&
        (fr_tensor_count(in->q) == 0 || fr_tensor_count(in->k) == 0 || fr_tensor_count(in->v) == 0))
        return cli_fail(EXIT_INPUT, "%s: empty problem: q has shape %s and v has shape %s",
                        in->qlabel, sq, sv);
    set_shape sh;
    if (set_shape_of(in->q, in->k, in->v, &sh, err, sizeof err)) {
        const char *label = err[0] == 'k' ? in->klabel : err[0] == 'v' ? in->vlabel : in->qlabel;
        return cli_fail(EXIT_INPUT, "%s: %s", label, err);
    }
    in->batch = sh.batch;
    in->kv_batch = sh.kv_batch;
    in->n = sh.n;
    in->d = sh.d;
    in->dv = sh.dv;
    if (!in->w) return EXIT_OK;

    /* W: [2n-1, d, d] shared by the batch, or with q's leading axes in front. */
    char sw[256];
    cli_shape_str(in->w, sw, sizeof sw);
    const fr_tensor *w = in->w;
    int lead = in->q->ndim - 2, wl = w->ndim - 3;
    int ok = wl >= 0 && w->shape[wl] == 2 * in->n - 1 && w->shape[wl + 1] == in->d &&
             w->shape[wl + 2] == in->d;
    if (ok && wl == 0)
        in->w_batch = 1;
    else if (ok && wl == lead && leading_equal(w, in->q, lead))
        in->w_batch = in->batch;
    else
        return cli_fail(EXIT_INPUT,
                        "%s: W has shape %s but q (%s) has shape %s: W needs [2n-1, d, d] = "
                        "[%lld, %lld, %lld] (optionally with q's leading axes in front)",
                        in->wlabel, sw, in->qlabel, sq, (long long)(2 * in->n - 1),
                        (long long)in->d, (long long)in->d);
    return EXIT_OK;
}

/* "a, b, c" of up to len bytes: what the message offers to choose from. */
static void list_names(char *buf, size_t len, const char *const *names, int count)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < count && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s'%s'", i ? ", " : "", names[i]);
}

/* The set of bundle b to compute: --set NAME, or the only one there is, by check's rules. */
static int pick_set(cli_inputs *in, const fr_bundle *b, const char *path, const char *want,
                    const set_words *words)
{
    set_list l;
    if (sets_find((const char *const *)b->names, b->count, words, &l))
        return cli_fail(EXIT_INTERNAL, "out of memory");
    char names[512];
    const char *found[64];
    int nfound = 0, usable = 0, pick = -1;
    for (int i = 0; i < l.count; i++) {
        if (nfound < 64) found[nfound++] = l.set[i].name;
        if (!l.set[i].error) usable++, pick = pick < 0 ? i : pick;
    }
    list_names(names, sizeof names, found, nfound);
    int st = EXIT_OK;
    if (want) {
        pick = sets_pick(&l, want);
        if (pick < 0)
            st = cli_fail(EXIT_INPUT, "%s: no set '%s' (its sets: %s)", path, want,
                          l.count ? names : "none");
    } else if (l.count == 0) {
        const char *const *all = (const char *const *)b->names;
        list_names(names, sizeof names, all, b->count);
        st = cli_fail(EXIT_INPUT,
                      "%s: no member is q, k or v by name (members: %s); name them with --names "
                      "q=A,k=B,v=C",
                      path, b->count ? names : "none");
    } else if (usable > 1 || (usable == 0 && l.count > 1)) {
        st = cli_fail(EXIT_INPUT, "%s: holds %d sets (%s): pick one with --set NAME", path, l.count,
                      names);
    } else if (pick < 0) {
        pick = 0;
    }
    if (!st && l.set[pick].error)
        st = cli_fail(EXIT_INPUT, "%s: %s%s%s%s", path, l.set[pick].name[0] ? "set '" : "",
                      l.set[pick].name, l.set[pick].name[0] ? "': " : "", l.set[pick].error);
    fr_tensor **slots[3] = {&in->q, &in->k, &in->v};
    char *labels[3] = {in->qlabel, in->klabel, in->vlabel};
    for (int r = 0; r < 3 && !st; r++) {
        int m = l.set[pick].member[r];
        *slots[r] = &b->tensors[m];
        snprintf(labels[r], sizeof in->qlabel, "%s:%s", path, b->names[m]);
    }
    sets_free(&l);
    return st;
}

int cli_load(cli_inputs *in, const fr_limits *lim, fr_dtype as, const char *bundle, const char *qp,
             const char *kp, const char *vp, const char *wp, const char *set,
             const set_words *words)
{
    memset(in, 0, sizeof *in);
    in->limits = *lim;
    in->as = as;
    int st;
    fr_bundle *b;
    if (bundle) {
        if ((st = read_file(in, bundle, as, &b))) return st;
        if (b->single)
            return cli_fail(EXIT_INPUT,
                            "%s: holds a single tensor; --input needs a bundle with members "
                            "q, k and v (or use -q, -k, -v)",
                            bundle);
        if ((st = pick_set(in, b, bundle, set, words))) return st;
    } else {
        const char *paths[3] = {qp, kp, vp};
        const char *roles[3] = {"q", "k", "v"};
        fr_tensor **slots[3] = {&in->q, &in->k, &in->v};
        char *labels[3] = {in->qlabel, in->klabel, in->vlabel};
        for (int i = 0; i < 3; i++) {
            if ((st = read_file(in, paths[i], as, &b))) return st;
            if ((st = pick(b, paths[i], roles[i], slots[i], labels[i], sizeof in->qlabel)))
                return st;
        }
    }
    /* A W inside the input bundle is used only when asked for (-w BUNDLE): the rotation flags
     * decide, but saying nothing about a W the user may have meant would be a silent surprise. */
    if (bundle && !wp && fr_bundle_get(&in->files[0], "w"))
        fprintf(stderr, "fastrope: note: %s has a member 'w', not used; -w %s uses it\n", bundle,
                bundle);
    if (wp) {
        /* W stays double in both precisions (the rotation is set up in double) */
        if ((st = read_file(in, wp, FR_DTYPE_F8, &b))) return st;
        if ((st = pick(b, wp, "w", &in->w, in->wlabel, sizeof in->wlabel))) return st;
    }
    if ((st = check_shapes(in))) return st;
    if ((st = cli_check_finite(in->q, in->qlabel)) || (st = cli_check_finite(in->k, in->klabel)) ||
        (st = cli_check_finite(in->v, in->vlabel)))
        return st;
    if (in->w && (st = cli_check_finite(in->w, in->wlabel))) return st;
    return EXIT_OK;
}

int cli_load_output_like(cli_inputs *in, const char *path, const char *role, fr_tensor **t,
                         char *label, size_t labellen)
{
    fr_bundle *b;
    int st = read_file(in, path, in->as, &b);
    if (st || (st = pick(b, path, role, t, label, labellen))) return st;
    /* The shape of the output T: q's leading axes, then [n, dv]. */
    int ok = (*t)->ndim == in->q->ndim && leading_equal(*t, in->q, in->q->ndim - 1) &&
             (*t)->shape[(*t)->ndim - 1] == in->dv;
    if (!ok) {
        char s1[256], s2[256];
        fr_tensor want = *in->q;
        want.shape[want.ndim - 1] = in->dv;
        cli_shape_str(*t, s1, sizeof s1);
        cli_shape_str(&want, s2, sizeof s2);
        return cli_fail(EXIT_INPUT,
                        "%s: %s has shape %s but the output has shape %s (q's leading axes and n, "
                        "v's dv)",
                        label, role, s1, s2);
    }
    return cli_check_finite(*t, label);
}

void cli_inputs_free(cli_inputs *in)
{
    for (int i = 0; i < in->nfiles; i++)
        fr_bundle_free(&in->files[i]);
    in->nfiles = 0;
}
