/* sets.h - which tensors of a bundle (or files of a directory) form a q/k/v set, by their names.
 *
 * `fastrope check` lists the sets it finds as PATH:NAME; `run --input` and `run --set NAME` pick
 * one by these same rules, so a NAME that check prints is a NAME run accepts.
 *
 * The rules:
 * - A name plays a role when it is one of the role's words, or ends in one after '.', '_' or '/'
 *   (case-insensitive; the longest word that fits wins, so "grad_q" is dq, not q):
 *     q     query_states  q_proj  query  xq  q
 *     k     key_states    k_proj  key    xk  k
 *     v     value_states  v_proj  value  xv  v
 *     out   attn_output   output  out    o
 *     dout  a word of out with grad_ before it or _grad or .grad after it, or dout
 *     dq    likewise from the words of q (grad_query_states, q_proj.grad, q_grad), or dq;
 *           dk, dv alike
 *   `model.layers.3.self_attn.query_states` is q of the set `model.layers.3.self_attn`.
 * - What comes before the separator is the set's name; names equal but for case are one set.
 *   A bare q, k, v makes the set "" (check lists it as the path alone).
 * - A set has exactly one q, k and v. Some but not all of them, or two members for one of
 *   them, make an unusable set (its `error` says why). Two members for one of the other roles
 *   leave that role out of the set (its `note` says so).
 * - out, dout, dq, dk, dv only join the set of their name: alone (no q, k or v under that name)
 *   they are no set and no error. Names that play no role are ignored.
 * - `--names ROLE=WORD,...` (set_words_parse) replaces the words of the roles it names, for
 *   anything else: `--names q=wq,k=wk,v=wv` finds `layers.0.wq` ...; a whole member name works
 *   too (its set is then "").
 *
 * Usage:
 *   set_words w;
 *   set_words_default(&w);
 *   if (set_words_parse(&w, "q=wq,k=wk,v=wv", err, sizeof err)) ... usage error, err says why
 *   set_list l;
 *   if (sets_find(names, count, &w, &l)) ... out of memory
 *   for (int i = 0; i < l.count; i++)  l.set[i].name, l.set[i].member[SET_Q] (index into names,
 *                                      or -1), l.set[i].error (NULL when usable)
 *   int i = sets_pick(&l, "model.layers.3.self_attn");   // run --set NAME; -1 when none
 *   sets_free(&l);
 */
#ifndef FR_SETS_H
#define FR_SETS_H

#include <stddef.h>
#include <stdint.h>

#include "fr_io.h"

typedef enum {
    SET_Q,
    SET_K,
    SET_V,
    SET_OUT,
    SET_DOUT,
    SET_DQ,
    SET_DK,
    SET_DV,
    SET_NROLES
} set_role;

/* "q", "k", "v", "out", "dout", "dq", "dk", "dv": the ROLE of --names ROLE=WORD. */
extern const char *const set_role_name[SET_NROLES];

#define SET_MAX_WORDS 20
typedef struct {
    const char *s; /* NULL ends a role's list; not owned, not NUL-terminated */
    size_t len;
} set_word;
typedef struct {
    set_word word[SET_NROLES][SET_MAX_WORDS];
    int given[SET_NROLES]; /* the role's word came from --names: it wins a tie */
} set_words;

void set_words_default(set_words *w);
/* "q=A,k=B,...": each ROLE at most once, WORD non-empty. The words point into spec, which must
 * outlive w (argv does). 0, or 1 with err set. */
int set_words_parse(set_words *w, const char *spec, char *err, size_t errlen);

typedef struct {
    char *name;             /* the set's name, as check lists it */
    int member[SET_NROLES]; /* index into the names given, or -1 */
    char *error;            /* NULL, or why the set cannot be used */
    char *note;             /* NULL, or which of out ... dv were left out (held twice) */
} set_found;

typedef struct {
    set_found *set; /* in the order of each set's first member */
    int count;
    int any; /* some name plays q, k or v (with count 0 only when there are no names) */
} set_list;

/* The sets among count names. 0, or 1 when out of memory (l is then empty). */
int sets_find(const char *const *names, int count, const set_words *w, set_list *l);
/* The set called name (case-insensitive, as sets are grouped), or -1. */
int sets_pick(const set_list *l, const char *name);
void sets_free(set_list *l);

/* The role a name plays under w, or -1; *prefix_len: the length of its set's name. */
int set_role_of(const char *name, const set_words *w, size_t *prefix_len);

/* ---- how a set's tensors fit together ---------------------------------------------------- */

typedef struct {
    int64_t batch;    /* problems: q's leading axes flattened (layers x heads x ...) */
    int64_t kv_batch; /* problems of k and v: batch / group */
    int64_t group;    /* query heads per key/value head: 1, or g (grouped-query attention) */
    int64_t n, d, dv;
} set_shape;

/* q [..., H, n, d], k [..., H/g, n, d], v [..., H/g, n, dv]: the same leading axes but the last,
 * where k and v may have g times fewer heads (grouped-query and multi-query attention, HF's
 * repeat_kv: query head h uses key/value head h / g). Flattened, problem b of q reads problem
 * b / g of k and v. 0, or 1 with err naming the shapes. */
int set_shape_of(const fr_tensor *q, const fr_tensor *k, const fr_tensor *v, set_shape *s,
                 char *err, size_t errlen);
/* t has the shape role r needs beside q and k: out and dout q's leading axes and [n, dv], dq
 * q's shape, dk k's, dv v's ([..., n, dv] with k's leading axes). 0, or 1 with err. */
int set_shape_check(const set_shape *s, const fr_tensor *q, const fr_tensor *k, set_role r,
                    const fr_tensor *t, char *err, size_t errlen);

#endif
