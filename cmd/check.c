/* check.c - `fastrope check`: are dumped activations in the bounded-entry regime, what would
 * the fast methods gain on them, and (when the dump holds them) do its stored attention
 * outputs and gradients agree with exact attention? Reads any number of files and directories,
 * finds the q/k/v sets by member and file names (sets.h), streams each tensor once for the
 * bounds (memory: a chunk plus a few numbers per head), and prints one row per set or per head.
 *
 * Each head (leading index) gets its own bounds, degree and predicted times, as run plans a
 * batch entry by entry; R comes from the same reductions and arithmetic as run's (core/stats.c),
 * so the two agree to the bit on the same head; degree and times come from fr_plan_estimate, as
 * in `fastrope bound`. */
#include "check.h"
#include "fastrope_planner.h"
#include "job.h"
#include "progress.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

static int64_t count_of(const fr_tensor *t)
{
    return fr_tensor_count(t);
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

static int stream_into(ck_ctx *c, ck_files *f, const ck_set *s, int role, reducer *r, char *err,
                       size_t errlen)
{
    fr_members *m;
    int idx, st;
    if ((st = ck_locate(f, s->file[role], s->member[role], &m, &idx, err, errlen)) ||
        (st = fr_members_stream(m, idx, reduce_chunk, r, err, errlen)))
        return st;
    c->bytes += fr_members_bytes(m, idx);
    if (r->bad >= 0)
        return snprintf(err, errlen, "%s holds a NaN or Inf at flat index %lld",
                        s->kind == CK_QKV ? set_role_name[role] : "the tensor", (long long)r->bad),
               EXIT_INPUT;
    return EXIT_OK;
}

static double max_of(const double *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static int make_problem(const ck_ctx *c, const set_shape *sh, fr_problem *p, char *err,
                        size_t errlen)
{
    *p = fr_problem_default(sh->n, sh->d, sh->dv);
    p->rot = c->attn.rot;
    p->causal = c->attn.causal;
    p->window = c->attn.window;
    cli_scale(&c->attn, sh->d, &p->tau); /* the spelling was checked with the options */
    if ((p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP) &&
        (p->rot.rotary_dim ? p->rot.rotary_dim : sh->d) % 2)
        return snprintf(err, errlen,
                        "RoPE rotates pairs of coordinates but d = %lld is odd (use "
                        "--rotary-dim or --no-rope)",
                        (long long)sh->d),
               EXIT_INPUT;
    return fr_problem_check(p, err, errlen);
}

/* The fastest applicable method's predicted time (exact included): what a plan of its own
 * gives this head. */
static double best_time(const double *t)
{
    double best = INFINITY;
    for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
        if (t[m] >= 0 && t[m] < best) best = t[m];
    return best;
}

static void regime_verdict(ck_row *r, double best)
{
    r->speedup = r->t[FR_METHOD_EXACT] >= 0 && best > 0 ? r->t[FR_METHOD_EXACT] / best : NAN;
    r->verdict = !isfinite(r->speedup) || r->speedup <= 1 ? "exact-only"
                 : r->speedup >= 2                        ? "fast"
                                                          : "marginal";
}

/* One head: degree and predicted times from its bounds. */
static int head_row(ck_ctx *c, const fr_problem *p, const fr_bounds *b, ck_row *r, char *err,
                    size_t errlen)
{
    fr_plan_info info;
    int st = fr_plan_estimate(p, b, &c->attn.opt, &info, err, errlen);
    if (st) return st;
    r->B_q = b->B_q, r->B_k = b->B_k, r->B_v = b->B_v, r->B = b->B;
    r->B_sl = b->B_over_sqrt_ln_n, r->R = b->R, r->R_from = b->R_from;
    r->degree = info.degree;
    for (int m = 0; m < FR_NMETHODS; m++)
        r->t[m] = info.predicted_s[m] >= 0 ? info.predicted_s[m] : -1;
    regime_verdict(r, best_time(r->t));
    return EXIT_OK;
}

/* Every head's row: the bounds of all heads at once (query head h on key/value head h / g; the
 * rotation's share computed once), then each head's estimate. Estimating a degree costs about
 * a millisecond (polynomial fits), as much as reading a few MB: the heads are estimated in
 * parallel. */
static int head_rows(ck_ctx *c, const fr_problem *p, const reducer *red, const set_shape *sh,
                     ck_row *rows, char *err, size_t errlen)
{
    fr_problem pb = *p;
    pb.batch = sh->batch, pb.kv_batch = sh->kv_batch;
    fr_bounds *b = malloc((size_t)sh->batch * sizeof *b);
    double *bv = malloc((size_t)sh->kv_batch * sizeof *bv);
    int st = b && bv ? EXIT_OK : (snprintf(err, errlen, "out of memory"), EXIT_INTERNAL);
    for (int64_t j = 0; j < sh->kv_batch && !st; j++)
        bv[j] = max_of(red[2].col_max + j * sh->dv, sh->dv);
    if (!st)
        st = fr_bounds_from_stats_batch(&pb, red[0].row_sq, red[1].row_sq, red[0].col_max,
                                        red[1].col_max, bv, b, err, errlen);
    if (!st) {
#pragma omp parallel for schedule(dynamic, 4)
        for (int64_t h = 0; h < sh->batch; h++) {
            char e[1024];
            int s1 = head_row(c, p, &b[h], &rows[h], e, sizeof e);
            if (s1) {
#pragma omp critical
                if (!st) st = s1, snprintf(err, errlen, "%s", e);
            }
        }
    }
    free(b);
    free(bv);
    return st;
}

/* The set's row from its heads': the worst head's R, the largest degree (none when a head has
 * none), summed times, and the speed-up of every head running its own best method. */
static void set_row(const ck_row *heads, int64_t count, ck_row *r)
{
    double best = 0;
    r->degree = 0;
    for (int m = 0; m < FR_NMETHODS; m++)
        r->t[m] = 0;
    for (int64_t h = 0; h < count; h++) {
        const ck_row *x = &heads[h];
        if (h == 0 || x->R > r->R) r->R = x->R, r->R_from = x->R_from, r->worst = h;
        r->B_q = fmax(r->B_q, x->B_q), r->B_k = fmax(r->B_k, x->B_k);
        r->B_v = fmax(r->B_v, x->B_v), r->B = fmax(r->B, x->B);
        r->degree =
            r->degree < 0 || x->degree < 0 ? -1 : (x->degree > r->degree ? x->degree : r->degree);
        for (int m = 0; m < FR_NMETHODS; m++)
            r->t[m] = r->t[m] < 0 || x->t[m] < 0 ? -1 : r->t[m] + x->t[m];
        best += best_time(x->t);
    }
    r->B_sl = r->n > 1 ? r->B / sqrt(log((double)r->n)) : INFINITY;
    if (count == 1) r->worst = -1;
    regime_verdict(r, best);
}

/* Mismatches decide the verdict over the regime: they are what the user must act on. */
static void mismatch_verdict(const ck_ctx *c, ck_row *r)
{
    for (int k = 0; k < CMP_N; k++)
        if (r->cmp[k].count && !(r->cmp[k].max_rel <= c->tol)) {
            r->verdict = k == CMP_OUT ? "output-mismatch" : "gradient-mismatch";
            return;
        }
}

static int check_qkv(ck_ctx *c, const ck_set *s, ck_files *f, char *err, size_t errlen)
{
    fr_tensor shapes[3]; /* copies: a directory set's files are opened one after the other */
    fr_members *m;
    int idx, st;
    for (int r = 0; r < 3; r++) {
        if ((st = ck_locate(f, s->file[r], s->member[r], &m, &idx, err, errlen))) return st;
        shapes[r] = *fr_members_shape(m, idx);
    }
    /* Shapes first, from the headers: a mismatch costs no data read. */
    set_shape sh;
    fr_problem p;
    if (set_shape_of(&shapes[0], &shapes[1], &shapes[2], &sh, err, errlen)) return EXIT_INPUT;
    if ((st = make_problem(c, &sh, &p, err, errlen))) return st;

    reducer red[3];
    ck_row *rows = calloc((size_t)sh.batch, sizeof *rows);
    fr_diff *q_cmp = calloc((size_t)(2 * sh.batch), sizeof *q_cmp);
    fr_diff *kv_cmp = calloc((size_t)(2 * sh.kv_batch), sizeof *kv_cmp);
    const int64_t heads[3] = {sh.batch, sh.kv_batch, sh.kv_batch}, cols[3] = {sh.d, sh.d, sh.dv};
    char note[4096] = "";
    memset(red, 0, sizeof red);
    st = rows && q_cmp && kv_cmp ? EXIT_OK : EXIT_INTERNAL;
    for (int r = 0; r < 3 && !st; r++) {
        if (reducer_init(&red[r], heads[r], sh.n, cols[r])) st = EXIT_INTERNAL;
        if (!st) st = stream_into(c, f, s, r, &red[r], err, errlen);
    }
    if (st == EXIT_INTERNAL && !*err) snprintf(err, errlen, "out of memory");
    if (!st) st = head_rows(c, &p, red, &sh, rows, err, errlen);
    if (!st) {
        if (s->note) snprintf(note, sizeof note, "%s", s->note);
        st = ck_verify(c, s, f, &p, &sh, q_cmp, kv_cmp, note, sizeof note, err, errlen);
    }
    ck_row base = {.path = s->path,
                   .set = s->name,
                   .head = -1,
                   .worst = -1,
                   .kv_head = -1,
                   .kind = CK_QKV,
                   .n = sh.n,
                   .d = sh.d,
                   .dv = sh.dv,
                   .heads = sh.batch,
                   .kv_heads = sh.kv_batch,
                   .cmp_cols = {sh.dv, sh.d, sh.d, sh.dv},
                   .note = *note ? note : NULL};
    for (int64_t h = 0; h < sh.batch && !st; h++) {
        ck_row *r = &rows[h];
        int64_t j = h / sh.group;
        const ck_row est = *r;
        *r = base;
        r->B_q = est.B_q, r->B_k = est.B_k, r->B_v = est.B_v, r->B = est.B, r->B_sl = est.B_sl;
        r->R = est.R, r->R_from = est.R_from, r->degree = est.degree;
        memcpy(r->t, est.t, sizeof r->t);
        r->speedup = est.speedup, r->verdict = est.verdict;
        r->head = h;
        r->kv_head = sh.group > 1 ? j : -1;
        r->cmp[CMP_OUT] = q_cmp[2 * h];
        r->cmp[CMP_DQ] = q_cmp[2 * h + 1];
        r->cmp[CMP_DK] = kv_cmp[2 * j];
        r->cmp[CMP_DV] = kv_cmp[2 * j + 1];
    }
    if (!st && c->per_head) {
        for (int64_t h = 0; h < sh.batch; h++) {
            mismatch_verdict(c, &rows[h]);
            ck_emit(c, &rows[h]);
        }
    } else if (!st) {
        ck_row r = base;
        set_row(rows, sh.batch, &r);
        for (int64_t h = 0; h < sh.batch; h++) {
            fr_diff_merge(&r.cmp[CMP_OUT], &q_cmp[2 * h]);
            fr_diff_merge(&r.cmp[CMP_DQ], &q_cmp[2 * h + 1]);
        }
        for (int64_t j = 0; j < sh.kv_batch; j++) {
            fr_diff_merge(&r.cmp[CMP_DK], &kv_cmp[2 * j]);
            fr_diff_merge(&r.cmp[CMP_DV], &kv_cmp[2 * j + 1]);
        }
        mismatch_verdict(c, &r);
        ck_emit(c, &r);
    }
    free(rows);
    free(q_cmp);
    free(kv_cmp);
    for (int r = 0; r < 3; r++)
        reducer_free(&red[r]);
    return st;
}

static int check_tensor(ck_ctx *c, const ck_set *s, ck_files *f, char *err, size_t errlen)
{
    fr_members *m;
    int idx, st;
    if ((st = ck_locate(f, s->file[0], s->member[0], &m, &idx, err, errlen))) return st;
    const fr_tensor *sh = fr_members_shape(m, idx);
    int64_t heads, n, cols;
    split_shape(sh, &heads, &n, &cols);
    if (count_of(sh) == 0) return snprintf(err, errlen, "empty tensor"), EXIT_INPUT;
    reducer r;
    if (reducer_init(&r, heads, n, cols)) {
        reducer_free(&r);
        return snprintf(err, errlen, "out of memory"), EXIT_INTERNAL;
    }
    st = stream_into(c, f, s, 0, &r, err, errlen);
    int64_t nrows = c->per_head ? heads : 1;
    for (int64_t h = 0; h < nrows && !st; h++) {
        int64_t h0 = c->per_head ? h : 0, h1 = c->per_head ? h + 1 : heads;
        ck_row row = {.path = s->path,
                      .set = s->name,
                      .head = c->per_head ? h : -1,
                      .worst = -1,
                      .kv_head = -1,
                      .kind = CK_TENSOR,
                      .n = n,
                      .d = cols};
        row.B = max_of(r.col_max + h0 * cols, (h1 - h0) * cols);
        row.B_sl = n > 1 ? row.B / sqrt(log((double)n)) : INFINITY;
        row.verdict = "entries-only";
        row.speedup = NAN;
        ck_emit(c, &row);
    }
    reducer_free(&r);
    return st;
}

static void check_set(ck_ctx *c, const ck_set *s, ck_files *f)
{
    char err[2048] = "";
    int64_t before = c->rows;
    int st = s->kind == CK_ERROR ? EXIT_INPUT
             : s->kind == CK_QKV ? check_qkv(c, s, f, err, sizeof err)
                                 : check_tensor(c, s, f, err, sizeof err);
    if (st && cli_interrupted()) return; /* the set was not finished: nothing to say of it */
    if (st && c->rows == before) {
        ck_row row = {.path = s->path,
                      .set = s->name,
                      .head = -1,
                      .worst = -1,
                      .kv_head = -1,
                      .kind = s->kind,
                      .note = s->note};
        row.error = s->kind == CK_ERROR ? s->error : *err ? err : "failed";
        ck_emit(c, &row);
    }
}

/* ---- the command -------------------------------------------------------------------------- */

/* stdout went to a closed pipe or a full disk: say so (exit 1) rather than lose rows. */
static int output_failed(void)
{
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    cli_fail(EXIT_INTERNAL, "check: writing the results to stdout failed: %s",
             errno ? strerror(errno) : "write error");
    return 1;
}

/* ---- options ------------------------------------------------------------------------------ */

enum { FORMAT_TABLE, FORMAT_JSONL, FORMAT_CSV };
static const char *const format_name[] = {"table", "jsonl", "csv"};

typedef struct {
    cli_attn attn;
    fr_limits limits;
    int recursive, per_head, quiet, format;
    set_words words;
    int64_t check_rows; /* -2: all */
    double tol;
    int64_t shard[2]; /* K, N */
    cli_strings paths;
} ck_opts;

static int parse_names(const char *flag, const char *value, void *field)
{
    char err[512];
    (void)flag; /* set_words_parse's messages name --names themselves */
    if (set_words_parse(field, value, err, sizeof err)) return cli_fail(EXIT_USAGE, "%s", err);
    return EXIT_OK;
}

static int parse_rows(const char *flag, const char *value, void *field)
{
    char *end;
    if (strcmp(value, "all") == 0) return *(int64_t *)field = -2, EXIT_OK;
    long long m = strtoll(value, &end, 10);
    if (end == value || *end || m < 0)
        return cli_fail(EXIT_USAGE, "%s: '%s' is not a count >= 0 or 'all'", flag, value);
    *(int64_t *)field = m;
    return EXIT_OK;
}

static int parse_shard(const char *flag, const char *value, void *field)
{
    int64_t *kn = field;
    char *end;
    long long a = strtoll(value, &end, 10), b = 0;
    const char *p = end + 1;
    int ok = end != value && *end == '/';
    if (ok) b = strtoll(p, &end, 10);
    if (!ok || end == p || *end || b < 1 || a < 1 || a > b)
        return cli_fail(EXIT_USAGE, "%s: '%s' is not K/N with 1 <= K <= N", flag, value);
    kn[0] = a, kn[1] = b;
    return EXIT_OK;
}

static const cli_choice formats[] = {
    {"table", FORMAT_TABLE}, {"jsonl", FORMAT_JSONL}, {"csv", FORMAT_CSV}, {NULL, 0}};

static const cli_opt check_table[] = {
    OPT_GROUP("What is read:"),
    OPT_FLAG("recursive", 'r', ck_opts, recursive,
             "descend into subdirectories (each directory and bundle once, whatever the "
             "symbolic links)"),
    OPT_CUSTOM("names", 0, ck_opts, words, parse_names, "ROLE=NAME,...",
               "other names for the roles q, k, v, out, dout, dq, dk, dv: q=wq,k=wk,v=wv finds "
               "layers.0.wq, layers.0.wk, ..."),
    OPT_GROUP("Stored outputs and gradients:"),
    OPT_CUSTOM("check-rows", 0, ck_opts, check_rows, parse_rows, "N|all",
               "rows of each head compared with exact attention (256; 0: none)"),
    OPT_DOUBLE("tol", ck_opts, tol, 0, INFINITY, CLI_ABOVE, "T",
               "relative difference beyond which they mismatch (1e-4; a float16 or bfloat16 "
               "dump needs about 1e-2)"),
    OPT_GROUP("Output:"),
    OPT_FLAG("per-head", 0, ck_opts, per_head, "one row per head (leading index)"),
    OPT_CHOICE("format", ck_opts, format, formats, "F",
               "table (default), jsonl (one JSON object per line) or csv; the summary line goes "
               "to stdout for table, to stderr otherwise"),
    OPT_CUSTOM("shard", 0, ck_opts, shard, parse_shard, "K/N",
               "only the sets whose index in the sorted list (by path, then set name) is K-1 "
               "modulo N: the N shards partition the list"),
    OPT_FLAG("quiet", 0, ck_opts, quiet, "no summary line and no progress bar"),
    OPT_END};

static const cli_section sections[] = {
    {check_table, 0, NULL},
    {cli_attn_table, offsetof(ck_opts, attn), cli_attn_finish_section},
    {cli_limits_table, offsetof(ck_opts, limits), NULL},
    {NULL, 0, NULL}};

static const cli_command command = {
    "check", "PATH...",
    "For dumped activations: the entry bounds B_q, B_k, B_v, B / sqrt(ln n), the score bound "
    "R (the same as `fastrope run` reports on the same head), the polynomial degree needed for "
    "--eps, each method's predicted time (cost model) and a verdict: fast (predicted speed-up "
    "of every head's best method over exact >= 2), marginal (1 to 2) or exact-only (no head "
    "gains). Every head (leading index: layers, heads, batch) gets its own bounds and degree, "
    "as run plans them: a set's row gives the worst head's R (worst_head), the largest degree "
    "and the heads' summed times.\n\n"
    "Stored outputs and gradients: when a set also holds its attention output (out, o, "
    "output, attn_output), --check-rows sampled rows of every head are compared with exact "
    "attention under the given options (rotation, scale, mask; --preset): out_max_abs, and "
    "out_max_rel over the largest exact entry. Beyond --tol the verdict is output-mismatch and "
    "the exit code 4. Likewise dq, dk, dv (grad_q, ...) when the set holds dout (grad_out): "
    "gradient-mismatch.\n\n"
    "Sets: the members of a bundle (.npz, .json, .safetensors) or the .npy files of a "
    "directory are grouped by name: query_states, q_proj, query, xq or q (likewise k, v), "
    "alone or after '.', '_' or '/', case-insensitive: model.layers.3.self_attn.query_states "
    "is q of the set model.layers.3.self_attn. Members beside a set that are not q, k, v "
    "(attn_weights, ...) are ignored; none is a set of its own. A directory's bundles are "
    "checked one by one, its subdirectories with --recursive; '-' is stdin. A tensor file, or "
    "a bundle without q/k/v names: each tensor alone (entry bound only, entries-only).\n\n"
    "Shapes: q [..., H, n, d], k [..., H/g, n, d], v [..., H/g, n, dv]; with g > 1 "
    "(grouped-query or multi-query attention) query head h uses key/value head h // g, as HF's "
    "repeat_kv. out is [..., H, n, dv], dq like q, dk like k, dv like v."
    "\vExit codes: 0 all checked; 3 an unreadable or malformed input, an incomplete or "
    "ambiguous set (each gets its own row with an error, also on stderr; the rest is checked), "
    "or nothing to check; 4 a stored output or gradient differs from exact attention (even "
    "amid errors); 1 the results could not be written; 2 a usage error.",
    sections, offsetof(ck_opts, paths)};

/* An exit code, or CLI_HELP. */
static int parse(int argc, char **argv, ck_ctx *c, ck_opts *o)
{
    memset(o, 0, sizeof *o);
    cli_attn_init(&o->attn);
    o->limits = cli_default_limits;
    set_words_default(&o->words);
    o->check_rows = 256;
    o->tol = 1e-4;
    o->shard[0] = o->shard[1] = 1;
    int st = cli_parse(&command, argc, argv, o);
    if (st) return st;
    if (o->attn.rot.kind == FR_ROT_EXPLICIT)
        return cli_fail(EXIT_USAGE, "check: -w (an explicit W) is not supported; check with "
                                    "--rope, --rope-clip or --no-rope");
    if (o->paths.count == 0)
        return cli_fail(EXIT_USAGE, "check: give at least one PATH (see fastrope check --help)");
    c->format = format_name[o->format];
    c->per_head = o->per_head;
    c->quiet = o->quiet;
    c->attn = o->attn;
    c->check_rows = o->check_rows;
    c->tol = o->tol;
    return EXIT_OK;
}

static void summary(const ck_ctx *c, const ck_sets *l, int64_t mine, double dt)
{
    FILE *out = strcmp(c->format, "table") == 0 ? stdout : stderr;
    char skipped[1024] = "";
    if (l->skipped_dirs)
        snprintf(skipped, sizeof skipped, "; %lld subdirector%s not visited (--recursive)",
                 (long long)l->skipped_dirs, l->skipped_dirs == 1 ? "y" : "ies");
    fprintf(out,
            "check: %lld sets%s, %lld rows: %lld fast, %lld marginal, %lld exact-only, %lld "
            "entries-only, %lld mismatched, %lld errors; %.1f MB read in %.2f s (%.0f MB/s)%s\n",
            (long long)mine, l->count == 0 ? " (nothing to check)" : "", (long long)c->rows,
            (long long)c->by_verdict[V_FAST], (long long)c->by_verdict[V_MARGINAL],
            (long long)c->by_verdict[V_EXACT_ONLY], (long long)c->by_verdict[V_ENTRIES_ONLY],
            (long long)(c->by_verdict[V_OUT_MISMATCH] + c->by_verdict[V_GRAD_MISMATCH]),
            (long long)c->errors, (double)c->bytes / 1e6, dt,
            dt > 0 ? (double)c->bytes / 1e6 / dt : 0.0, skipped);
}

int cmd_check(int argc, char **argv)
{
    ck_ctx c;
    ck_opts o;
    memset(&c, 0, sizeof c);
    /* A closed pipe is a write error to report (exit 1), not a silent death by signal. */
    signal(SIGPIPE, SIG_IGN);
    cli_signals_catch();
    int st = parse(argc, argv, &c, &o);
    if (st) {
        cli_strings_free(&o.paths);
        return st == CLI_HELP ? (output_failed() ? EXIT_INTERNAL : EXIT_OK) : st;
    }

    double t0 = cli_now();
    cli_progress_begin("check", c.quiet);
    ck_files f = {.limits = &o.limits};
    ck_sets l;
    ck_find(&l, &f, o.paths.s, o.paths.count, o.recursive, &o.words);
    int64_t mine = 0, checked = 0, k = o.shard[0], n = o.shard[1];
    for (int64_t i = 0; i < l.count; i++)
        mine += i % n == k - 1;
    ck_header(&c);
    int failed = output_failed();
    for (int64_t i = 0; i < l.count && !failed && !cli_interrupted(); i++) {
        if (i % n != k - 1) continue;
        check_set(&c, &l.s[i], &f);
        failed = output_failed();
        if (!c.quiet) job_progress(++checked, mine, t0);
    }
    int stopped = cli_interrupted() ? cli_interrupt_exit() : 0;
    if (stopped) failed = 1;
    if (!failed && !c.quiet) summary(&c, &l, mine, cli_now() - t0);
    if (!failed && l.count == 0)
        cli_fail(EXIT_INPUT,
                 "check: nothing to check: no .npy, .npz, .json or .safetensors file found%s%s%s",
                 l.skipped_dirs ? "; " : "", l.skipped_dirs ? l.first_skipped_dir : "",
                 l.skipped_dirs ? " has subdirectories: add --recursive to check them" : "");
    failed = failed || output_failed();
    ck_files_close(&f);
    int64_t mismatched = c.by_verdict[V_OUT_MISMATCH] + c.by_verdict[V_GRAD_MISMATCH];
    int empty = l.count == 0;
    ck_sets_free(&l);
    cli_strings_free(&o.paths);
    return stopped             ? stopped
           : failed            ? EXIT_INTERNAL
           : mismatched        ? EXIT_ACCURACY
           : c.errors || empty ? EXIT_INPUT
                               : EXIT_OK;
}
