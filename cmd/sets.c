/* sets.c - q/k/v sets from member and file names (the rules are in sets.h). */
#include "sets.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const set_role_name[SET_NROLES] = {"q", "k", "v", "out", "dout", "dq", "dk", "dv"};

/* The names real code writes: HF's LLaMA (query_states, attn_output), Meta's LLaMA (xq), the
 * projections' module names (q_proj), plain q/k/v, and the usual spellings of gradients. */
static const char *const defaults[SET_NROLES][SET_MAX_WORDS] = {
    {"query_states", "q_proj", "query", "xq", "q"},
    {"key_states", "k_proj", "key", "xk", "k"},
    {"value_states", "v_proj", "value", "xv", "v"},
    {"attn_output", "output", "out", "o"},
    {"grad_attn_output", "grad_output", "grad_out", "dout"},
    {"grad_query", "grad_q", "dq"},
    {"grad_key", "grad_k", "dk"},
    {"grad_value", "grad_v", "dv"},
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
