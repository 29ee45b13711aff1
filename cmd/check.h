/* check.h - what the files of `fastrope check` share: the sets found in the paths and the files
 * they are in (check_find.c), a row of results and how rows are printed (check_print.c), and
 * the verification of stored outputs and gradients (check_verify.c). */
#ifndef FR_CHECK_H
#define FR_CHECK_H

#include "cli.h"
#include "sets.h"

/* ---- sets and files (check_find.c) ---------------------------------------------------------- */

typedef enum { CK_QKV, CK_TENSOR, CK_ERROR } ck_kind;

typedef struct {
    ck_kind kind;
    char *path;               /* the bundle file or directory the set lives in */
    char *name;               /* the set's name (sets.h), or the tensor's member name */
    char *file[SET_NROLES];   /* where each role is (CK_TENSOR: file[0]); NULL: absent */
    char *member[SET_NROLES]; /* "" for a single-tensor file */
    char *error;              /* CK_ERROR: why */
    char *note;               /* what was left out of the set, or NULL */
} ck_set;

typedef struct {
    ck_set *s;
    int64_t count, cap;
    int64_t skipped_dirs;    /* subdirectories not visited (no --recursive): for the hint */
    char *first_skipped_dir; /* the directory that held the first of them */
} ck_sets;

/* Open files, shared by finding and checking; stdin ("-") stays open once read, because it
 * cannot be read twice. */
#define CK_OPEN_FILES 12
typedef struct {
    struct {
        char *path;
        fr_members *m;
        int64_t used;
    } slot[CK_OPEN_FILES];
    int64_t tick;
    const fr_limits *limits; /* for every file opened */
} ck_files;

int ck_files_get(ck_files *f, const char *path, fr_members **m, char *err, size_t errlen);
void ck_files_close(ck_files *f);
/* The open file and the index of member in it (a single-tensor file: its tensor). Valid until
 * CK_OPEN_FILES - 1 other files were opened: every role of a set (and stdin) fits. An exit
 * code. */
int ck_locate(ck_files *f, const char *file, const char *member, fr_members **m, int *idx,
              char *err, size_t errlen);

/* Every set (or lone tensor, or error) in paths, sorted by path and then name. Each directory
 * and each bundle is visited once, whatever the symbolic links. */
void ck_find(ck_sets *l, ck_files *f, const char *const *paths, int npaths, int recursive,
             const set_words *w);
void ck_sets_free(ck_sets *l);

/* ---- rows (check_print.c) ------------------------------------------------------------------ */

enum { CMP_OUT, CMP_DQ, CMP_DK, CMP_DV, CMP_N };

typedef struct {
    const char *path, *set;
    int64_t head, worst, kv_head; /* -1: none */
    ck_kind kind;
    int64_t n, d, dv, heads, kv_heads;
    double B_q, B_k, B_v, B, B_sl, R;
    const char *R_from;
    int degree;
    double t[FR_NMETHODS];
    double speedup;
    fr_diff cmp[CMP_N];      /* the stored out, dq, dk, dv against exact attention (count 0: not) */
    int64_t cmp_cols[CMP_N]; /* values per row: dv or d */
    const char *verdict;
    const char *error;
    const char *note;
} ck_row;

typedef enum {
    V_FAST,
    V_MARGINAL,
    V_EXACT_ONLY,
    V_ENTRIES_ONLY,
    V_OUT_MISMATCH,
    V_GRAD_MISMATCH,
    V_N
} ck_verdict;
extern const char *const ck_verdicts[V_N];

typedef struct {
    const char *format; /* table, jsonl or csv */
    int per_head, quiet;
    cli_attn attn;
    int64_t check_rows; /* -2: all */
    double tol;
    int64_t rows, errors, by_verdict[V_N], bytes;
} ck_ctx;

void ck_header(const ck_ctx *c);
void ck_emit(ck_ctx *c, const ck_row *r);

/* ---- verification (check_verify.c) -------------------------------------------------------- */

/* Compare the set's stored out (and dq, dk, dv given dout) with exact attention under p on
 * sampled rows of every head, one head of q, k, v in memory at a time. q_cmp[h * 2 + 0/1]: out
 * and dq of query head h; kv_cmp[j * 2 + 0/1]: dk and dv of key/value head j. What could not be
 * compared (a member of another shape, a NaN in dout) is appended to note. An exit code. */
int ck_verify(const ck_ctx *c, const ck_set *s, ck_files *f, const fr_problem *p,
              const set_shape *sh, fr_diff *q_cmp, fr_diff *kv_cmp, char *note, size_t notelen,
              char *err, size_t errlen);

#endif
