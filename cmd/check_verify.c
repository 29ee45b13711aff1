/* check_verify.c - does a dump's stored attention output (and its gradients) agree with exact
 * attention on its own q, k, v? This is how someone verifies their attention kernel on real
 * activations.
 *
 * The reference is the core's exact attention on sampled rows (fr_exact_rows, and
 * fr_exact_backward_rows for dq, dk, dv), one problem at a time: memory holds one head of q, k,
 * v (and dout), never the dump. Heads are read in order, so each member is read once
 * (fr_members_read continues where it stopped). With grouped-query attention, key/value head j
 * serves query heads j g .. j g + g - 1, and its dk, dv are the sums over them. */
#include "check.h"
#include "fastrope_planner.h"
#include "job.h"
#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    fr_members *m;
    int idx;
} src;

static int read_block(src *s, int64_t first, int64_t count, double *out, char *err, size_t errlen)
{
    return fr_members_read(s->m, s->idx, first, count, out, err, errlen);
}

/* Rows rows[0..m) of problem b of a [..., n, cols] member. */
static int read_rows(src *s, int64_t b, int64_t n, int64_t cols, const int64_t *rows, int64_t m,
                     double *out, char *err, size_t errlen)
{
    for (int64_t t = 0; t < m; t++) {
        int st = read_block(s, (b * n + rows[t]) * cols, cols, out + t * cols, err, errlen);
        if (st) return st;
    }
    return EXIT_OK;
}

static void add_note(char *note, size_t notelen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_note(char *note, size_t notelen, const char *fmt, ...)
{
    size_t off = strlen(note);
    if (off + 2 >= notelen) return;
    if (off) off += (size_t)snprintf(note + off, notelen - off, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + off, notelen - off, fmt, ap);
    va_end(ap);
}

/* The roles beside q, k, v that can be compared: found, and of the right shape; why not goes
 * into note. */
static void usable_roles(const ck_set *s, ck_files *f, const set_shape *sh, const fr_tensor *q,
                         const fr_tensor *k, src *role, int *use, char *note, size_t notelen)
{
    char err[1024];
    for (int r = SET_OUT; r < SET_NROLES; r++) {
        use[r] = 0;
        if (!s->member[r]) continue;
        const fr_tensor *t;
        if (ck_locate(f, s->file[r], s->member[r], &role[r].m, &role[r].idx, err, sizeof err)) {
            add_note(note, notelen, "%s not compared: %s", set_role_name[r], err);
            continue;
        }
        t = fr_members_shape(role[r].m, role[r].idx);
        if (set_shape_check(sh, q, k, (set_role)r, t, err, sizeof err)) {
            add_note(note, notelen, "%s not compared: %s", set_role_name[r], err);
            continue;
        }
        use[r] = 1;
    }
    int grads = use[SET_DQ] || use[SET_DK] || use[SET_DV];
    if (grads && !use[SET_DOUT])
        add_note(note, notelen, "gradients not compared: no dout (dL/dout) beside them");
    if (!grads) use[SET_DOUT] = 0;
}

typedef struct {
    double *q, *k, *v, *dout, *ref, *got, *rq, *rk, *rv, *acc_k, *acc_v;
    int64_t *rows;
} buffers;

static void buffers_free(buffers *b)
{
    free(b->q), free(b->k), free(b->v), free(b->dout), free(b->ref), free(b->got);
    free(b->rq), free(b->rk), free(b->rv), free(b->acc_k), free(b->acc_v), free(b->rows);
}

static int buffers_alloc(buffers *b, const set_shape *sh, int64_t m, int grads)
{
    int64_t n = sh->n, d = sh->d, dv = sh->dv, w = d > dv ? d : dv;
    memset(b, 0, sizeof *b);
    b->q = malloc((size_t)(n * d) * sizeof(double));
    b->k = malloc((size_t)(n * d) * sizeof(double));
    b->v = malloc((size_t)(n * dv) * sizeof(double));
    b->ref = malloc((size_t)(m * w) * sizeof(double));
    b->got = malloc((size_t)(m * w) * sizeof(double));
    b->rows = job_sample_rows(n, m);
    int ok = b->q && b->k && b->v && b->ref && b->got && b->rows;
    if (grads) {
        b->dout = malloc((size_t)(n * dv) * sizeof(double));
        b->rq = malloc((size_t)(m * d) * sizeof(double));
        b->rk = malloc((size_t)(m * d) * sizeof(double));
        b->rv = malloc((size_t)(m * dv) * sizeof(double));
        b->acc_k = malloc((size_t)(m * d) * sizeof(double));
        b->acc_v = malloc((size_t)(m * dv) * sizeof(double));
        ok = ok && b->dout && b->rq && b->rk && b->rv && b->acc_k && b->acc_v;
    }
    return ok ? EXIT_OK : EXIT_INTERNAL;
}

int ck_verify(const ck_ctx *c, const ck_set *s, ck_files *f, const fr_problem *p,
              const set_shape *sh, fr_diff *q_cmp, fr_diff *kv_cmp, char *note, size_t notelen,
              char *err, size_t errlen)
{
    src role[SET_NROLES];
    int use[SET_NROLES];
    fr_tensor qs, ks;
    int st;
    memset(role, 0, sizeof role);
    for (int r = SET_Q; r <= SET_V; r++)
        if ((st = ck_locate(f, s->file[r], s->member[r], &role[r].m, &role[r].idx, err, errlen)))
            return st;
    qs = *fr_members_shape(role[SET_Q].m, role[SET_Q].idx);
    ks = *fr_members_shape(role[SET_K].m, role[SET_K].idx);
    usable_roles(s, f, sh, &qs, &ks, role, use, note, notelen);
    int grads = use[SET_DOUT];
    int64_t n = sh->n, d = sh->d, dv = sh->dv, g = sh->group;
    int64_t want = c->check_rows == -2 ? n : c->check_rows, m = want < n ? want : n;
    if ((!use[SET_OUT] && !grads) || m == 0) return EXIT_OK;

    buffers b;
    if (buffers_alloc(&b, sh, m, grads)) {
        buffers_free(&b);
        return snprintf(err, errlen, "out of memory for one head (n = %lld)", (long long)n),
               EXIT_INTERNAL;
    }
    st = EXIT_OK;
    for (int64_t j = 0; j < sh->kv_batch && !st; j++) {
        if ((st = read_block(&role[SET_K], j * n * d, n * d, b.k, err, errlen)) ||
            (st = read_block(&role[SET_V], j * n * dv, n * dv, b.v, err, errlen)))
            break;
        if (grads) {
            memset(b.acc_k, 0, (size_t)(m * d) * sizeof(double));
            memset(b.acc_v, 0, (size_t)(m * dv) * sizeof(double));
        }
        for (int64_t h = j * g; h < (j + 1) * g && !st; h++) {
            if ((st = read_block(&role[SET_Q], h * n * d, n * d, b.q, err, errlen))) break;
            if (use[SET_OUT]) {
                if ((st = fr_exact_rows_progress(p, b.q, b.k, b.v, b.rows, m, b.ref,
                                                 cli_progress_fn, NULL, err, errlen)) ||
                    (st = read_rows(&role[SET_OUT], h, n, dv, b.rows, m, b.got, err, errlen)))
                    break;
                fr_diff_add(&q_cmp[2 * h], b.got, b.ref, m * dv);
            }
            if (!grads) continue;
            if ((st = read_block(&role[SET_DOUT], h * n * dv, n * dv, b.dout, err, errlen))) break;
            int64_t bad = fr_find_nonfinite(b.dout, n * dv);
            if (bad >= 0) {
                add_note(note, notelen,
                         "gradients not compared: dout holds a NaN or Inf at flat index %lld",
                         (long long)(h * n * dv + bad));
                for (int64_t x = 0; x < sh->batch; x++)
                    q_cmp[2 * x + 1] = (fr_diff){0};
                for (int64_t x = 0; x < sh->kv_batch; x++)
                    kv_cmp[2 * x] = kv_cmp[2 * x + 1] = (fr_diff){0};
                grads = 0;
                continue;
            }
            if ((st = fr_exact_backward_rows_progress(p, b.q, b.k, b.v, b.dout, NULL, b.rows, m,
                                                      b.rq, b.rk, b.rv, cli_progress_fn, NULL, err,
                                                      errlen)))
                break;
            if (use[SET_DQ]) {
                if ((st = read_rows(&role[SET_DQ], h, n, d, b.rows, m, b.got, err, errlen))) break;
                fr_diff_add(&q_cmp[2 * h + 1], b.got, b.rq, m * d);
            }
            for (int64_t i = 0; i < m * d; i++)
                b.acc_k[i] += b.rk[i];
            for (int64_t i = 0; i < m * dv; i++)
                b.acc_v[i] += b.rv[i];
        }
        if (st || !grads) continue;
        if (use[SET_DK]) {
            if ((st = read_rows(&role[SET_DK], j, n, d, b.rows, m, b.got, err, errlen))) break;
            fr_diff_add(&kv_cmp[2 * j], b.got, b.acc_k, m * d);
        }
        if (use[SET_DV]) {
            if ((st = read_rows(&role[SET_DV], j, n, dv, b.rows, m, b.got, err, errlen))) break;
            fr_diff_add(&kv_cmp[2 * j + 1], b.got, b.acc_v, m * dv);
        }
    }
    buffers_free(&b);
    return st;
}
