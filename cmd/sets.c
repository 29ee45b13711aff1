/* sets.c - q/k/v sets from member and file names (the rules are in sets.h). */
#include "sets.h"

#include "cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const set_role_name[SET_NROLES] = {"q", "k", "v", "out", "dout", "dq", "dk", "dv"};

/* The names real code writes: HF's LLaMA (query_states, attn_output), Meta's LLaMA (xq), the
 * projections' module names (q_proj), plain q/k/v; a gradient is its tensor's name with grad_
 * before it or _grad or .grad after it (what a backward hook or param.grad gives), or dq. */
static const char *const defaults[SET_NROLES][SET_MAX_WORDS] = {
    {"query_states", "q_proj", "query", "xq", "q"},
    {"key_states", "k_proj", "key", "xk", "k"},
    {"value_states", "v_proj", "value", "xv", "v"},
    {"attn_output", "output", "out", "o"},
    {"grad_attn_output", "attn_output_grad", "attn_output.grad", "grad_output", "output_grad",
     "output.grad", "grad_out", "out_grad", "out.grad", "dout"},
    {"grad_query_states", "query_states_grad", "query_states.grad", "grad_q_proj", "q_proj_grad",
     "q_proj.grad", "grad_query", "query_grad", "query.grad", "grad_xq", "xq_grad", "xq.grad",
     "grad_q", "q_grad", "q.grad", "dq"},
    {"grad_key_states", "key_states_grad", "key_states.grad", "grad_k_proj", "k_proj_grad",
     "k_proj.grad", "grad_key", "key_grad", "key.grad", "grad_xk", "xk_grad", "xk.grad", "grad_k",
     "k_grad", "k.grad", "dk"},
    {"grad_value_states", "value_states_grad", "value_states.grad", "grad_v_proj", "v_proj_grad",
     "v_proj.grad", "grad_value", "value_grad", "value.grad", "grad_xv", "xv_grad", "xv.grad",
     "grad_v", "v_grad", "v.grad", "dv"},
};

void set_words_default(set_words *w)
{
    memset(w, 0, sizeof *w);
    for (int r = 0; r < SET_NROLES; r++)
        for (int i = 0; i < SET_MAX_WORDS && defaults[r][i]; i++)
            w->word[r][i] = (set_word){defaults[r][i], strlen(defaults[r][i])};
}

static int role_named(const char *s, size_t len)
{
    for (int r = 0; r < SET_NROLES; r++)
        if (strlen(set_role_name[r]) == len && strncmp(set_role_name[r], s, len) == 0) return r;
    return -1;
}

int set_words_parse(set_words *w, const char *spec, char *err, size_t errlen)
{
    static const char roles[] = "q, k, v, out, dout, dq, dk, dv";
    const char *p = spec;
    for (;;) {
        const char *end = p + strcspn(p, ",");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        int len = (int)(end - p);
        if (!eq)
            return snprintf(err, errlen, "--names: '%.*s' is not ROLE=NAME (ROLE: %s)", len, p,
                            roles),
                   1;
        int r = role_named(p, (size_t)(eq - p));
        if (r < 0)
            return snprintf(err, errlen, "--names: '%.*s' is not a role (%s)", (int)(eq - p), p,
                            roles),
                   1;
        if (w->given[r])
            return snprintf(err, errlen, "--names: %s is given twice", set_role_name[r]), 1;
        if (eq + 1 == end)
            return snprintf(err, errlen, "--names: %s= needs a name", set_role_name[r]), 1;
        set_word nw = {eq + 1, (size_t)(end - eq - 1)};
        for (int o = 0; o < SET_NROLES; o++)
            if (w->given[o] && w->word[o][0].len == nw.len &&
                strncasecmp(w->word[o][0].s, nw.s, nw.len) == 0)
                return snprintf(err, errlen, "--names: '%.*s' is given for both %s and %s",
                                (int)nw.len, nw.s, set_role_name[o], set_role_name[r]),
                       1;
        memset(w->word[r], 0, sizeof w->word[r]);
        w->word[r][0] = nw;
        w->given[r] = 1;
        if (!*end) return 0;
        p = end + 1;
    }
}

int set_role_of(const char *name, const set_words *w, size_t *prefix_len)
{
    size_t n = strlen(name), best_len = 0;
    int best = -1, best_given = 0;
    for (int r = 0; r < SET_NROLES; r++) {
        for (int i = 0; i < SET_MAX_WORDS && w->word[r][i].s; i++) {
            const set_word *x = &w->word[r][i];
            if (n < x->len || strncasecmp(name + n - x->len, x->s, x->len) != 0) continue;
            if (n > x->len && !strchr("._/", name[n - x->len - 1])) continue;
            /* The longest word wins ("grad_q" over "q"); on a tie, the user's --names word. */
            if (x->len > best_len || (x->len == best_len && w->given[r] && !best_given)) {
                best = r, best_len = x->len, best_given = w->given[r];
            }
        }
    }
    if (best >= 0) *prefix_len = n > best_len ? n - best_len - 1 : 0;
    return best;
}

/* "ambiguous set: ROLE is both 'A' and 'B'" for each role in [r0, r1] held twice. */
static size_t ambiguous(char *msg, size_t cap, size_t off, const char *const *names,
                        int who[SET_NROLES][2], const int cnt[SET_NROLES], int r0, int r1)
{
    for (int r = r0; r <= r1; r++)
        if (cnt[r] > 1 && off < cap)
            off += (size_t)snprintf(msg + off, cap - off, "%s%s is both '%s' and '%s'%s",
                                    off ? "; " : "", set_role_name[r], names[who[r][0]],
                                    names[who[r][1]], cnt[r] > 2 ? " (and more)" : "");
    return off;
}

/* Why a set cannot be used (q, k or v missing or twice), or NULL. */
static char *set_error(const char *const *names, int who[SET_NROLES][2], const int cnt[SET_NROLES],
                       int *oom)
{
    char msg[4096] = "ambiguous set: ";
    size_t pre = strlen(msg),
           off = ambiguous(msg + pre, sizeof msg - pre, 0, names, who, cnt, SET_Q, SET_V);
    if (!off && cnt[SET_Q] && cnt[SET_K] && cnt[SET_V]) return NULL;
    if (!off) {
        off = (size_t)snprintf(msg, sizeof msg, "incomplete set:");
        for (int r = SET_Q; r <= SET_V; r++)
            off += (size_t)snprintf(msg + off, sizeof msg - off, " %s%s%s%s%s",
                                    cnt[r] ? set_role_name[r] : "no ", cnt[r] ? " '" : "",
                                    cnt[r] ? names[who[r][0]] : set_role_name[r], cnt[r] ? "'" : "",
                                    r < SET_V ? "," : "");
    }
    char *s = strdup(msg);
    *oom |= !s;
    return s;
}

/* A role beside q, k, v held twice is left out of the set, with a note saying so: those
 * members must never make a set unusable. */
static char *set_note(const char *const *names, int who[SET_NROLES][2], int cnt[SET_NROLES],
                      int *oom)
{
    char msg[4096];
    size_t off = ambiguous(msg, sizeof msg, 0, names, who, cnt, SET_OUT, SET_DV);
    if (!off) return NULL;
    snprintf(msg + off, off < sizeof msg ? sizeof msg - off : 0,
             ": not used (name the member with --names ROLE=NAME)");
    for (int r = SET_OUT; r < SET_NROLES; r++)
        if (cnt[r] > 1) cnt[r] = 0;
    char *s = strdup(msg);
    *oom |= !s;
    return s;
}

void sets_free(set_list *l)
{
    for (int i = 0; i < l->count; i++) {
        free(l->set[i].name);
        free(l->set[i].error);
        free(l->set[i].note);
    }
    free(l->set);
    memset(l, 0, sizeof *l);
}

int sets_find(const char *const *names, int count, const set_words *w, set_list *l)
{
    memset(l, 0, sizeof *l);
    size_t m = count > 0 ? (size_t)count : 1;
    int *role = malloc(m * sizeof *role);
    size_t *plen = malloc(m * sizeof *plen);
    char *done = calloc(m, 1);
    l->set = calloc(m, sizeof *l->set);
    int oom = !role || !plen || !done || !l->set;
    for (int i = 0; i < count && !oom; i++) {
        role[i] = set_role_of(names[i], w, &plen[i]);
        l->any |= role[i] >= SET_Q && role[i] <= SET_V;
    }
    for (int i = 0; i < count && !oom; i++) {
        if (role[i] < 0 || done[i]) continue;
        int who[SET_NROLES][2], cnt[SET_NROLES] = {0};
        for (int j = i; j < count; j++) {
            if (role[j] < 0 || done[j] || plen[j] != plen[i] ||
                strncasecmp(names[j], names[i], plen[i]) != 0)
                continue;
            done[j] = 1;
            if (cnt[role[j]] < 2) who[role[j]][cnt[role[j]]] = j;
            cnt[role[j]]++;
        }
        /* out, dq, ... alone are what some dump keeps beside its sets: not a set, no error. */
        if (!cnt[SET_Q] && !cnt[SET_K] && !cnt[SET_V]) continue;
        set_found *s = &l->set[l->count++];
        s->name = strndup(names[i], plen[i]);
        s->error = set_error(names, who, cnt, &oom);
        s->note = set_note(names, who, cnt, &oom);
        oom |= !s->name;
        for (int r = 0; r < SET_NROLES; r++)
            s->member[r] = cnt[r] ? who[r][0] : -1;
    }
    free(role);
    free(plen);
    free(done);
    if (oom) sets_free(l);
    return oom;
}

int sets_pick(const set_list *l, const char *name)
{
    for (int i = 0; i < l->count; i++)
        if (strcasecmp(l->set[i].name, name) == 0) return i;
    return -1;
}

/* ---- shapes ------------------------------------------------------------------------------- */

static int shape_err(char *err, size_t errlen, const char *what, const fr_tensor *t,
                     const fr_tensor *q, const char *need)
{
    char st[256], sq[256];
    cli_shape_str(t, st, sizeof st);
    cli_shape_str(q, sq, sizeof sq);
    snprintf(err, errlen, "%s has shape %s but q has shape %s (%s)", what, st, sq, need);
    return 1;
}

int set_shape_of(const fr_tensor *q, const fr_tensor *k, const fr_tensor *v, set_shape *s,
                 char *err, size_t errlen)
{
    static const char need[] = "need q [..., n, d], k [..., n, d], v [..., n, dv] with the same "
                               "leading axes, or for grouped-query attention k and v with H/g "
                               "heads where q has H";
    memset(s, 0, sizeof *s);
    int nd = q->ndim;
    if (nd < 2)
        return snprintf(err, errlen, "q needs shape [..., n, d], got %d dimension%s", nd,
                        nd == 1 ? "" : "s"),
               1;
    if (k->ndim != nd || k->shape[nd - 1] != q->shape[nd - 1] ||
        k->shape[nd - 2] != q->shape[nd - 2])
        return shape_err(err, errlen, "k", k, q, need);
    if (v->ndim != nd || v->shape[nd - 2] != q->shape[nd - 2])
        return shape_err(err, errlen, "v", v, q, need);
    for (int i = 0; i < nd - 2; i++)
        if (v->shape[i] != k->shape[i]) return shape_err(err, errlen, "v", v, q, need);
    s->group = 1;
    for (int i = 0; i < nd - 2; i++) {
        int64_t a = q->shape[i], b = k->shape[i];
        /* Only the axis before n may be grouped: that is where heads are. */
        if (a == b) continue;
        if (i != nd - 3 || b == 0 || a % b != 0) return shape_err(err, errlen, "k", k, q, need);
        s->group = a / b;
    }
    s->n = q->shape[nd - 2];
    s->d = q->shape[nd - 1];
    s->dv = v->shape[nd - 1];
    s->batch = 1;
    for (int i = 0; i < nd - 2; i++)
        s->batch *= q->shape[i];
    s->kv_batch = s->batch / (s->group ? s->group : 1);
    if (s->batch == 0 || s->n == 0 || s->d == 0 || s->dv == 0)
        return snprintf(err, errlen, "empty tensors"), 1;
    return 0;
}

int set_shape_check(const set_shape *s, const fr_tensor *q, const fr_tensor *k, set_role r,
                    const fr_tensor *t, char *err, size_t errlen)
{
    const fr_tensor *like = r == SET_DK || r == SET_DV ? k : q;
    int64_t last = r == SET_DQ || r == SET_DK ? s->d : s->dv;
    int ok = t->ndim == like->ndim && t->shape[t->ndim - 1] == last;
    for (int i = 0; ok && i < like->ndim - 1; i++)
        ok = t->shape[i] == like->shape[i];
    if (ok) return 0;
    fr_tensor want = *like;
    want.shape[want.ndim - 1] = last;
    char st[256], sw[256];
    cli_shape_str(t, st, sizeof st);
    cli_shape_str(&want, sw, sizeof sw);
    snprintf(err, errlen, "%s has shape %s, not %s", set_role_name[r], st, sw);
    return 1;
}
