/* check_print.c - `fastrope check`'s rows as a table, JSON lines or CSV.
 *
 * Numbers that a machine reads (jsonl, csv) are printed to the last bit (%.17g), so that the
 * bounds read back are exactly the ones computed. */
#include "check.h"
#include "cost.h"
#include "progress.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const ck_verdicts[V_N] = {"fast",         "marginal",        "exact-only",
                                      "entries-only", "output-mismatch", "gradient-mismatch"};

static const char *const cmp_name[CMP_N] = {"out", "dq", "dk", "dv"};

/* A NaN difference (a NaN stored where exact attention is finite) is the worst: shown as null in
 * JSON and CSV, and a mismatch. */
static double diff_rel(const fr_diff *d)
{
    return isnan(d->max_rel) ? INFINITY : d->max_rel;
}

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

static void csv_int(int64_t x)
{
    putchar(',');
    if (x >= 0) printf("%lld", (long long)x);
}

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

static void jint(cJSON *o, const char *key, int64_t x)
{
    if (x >= 0) cJSON_AddNumberToObject(o, key, (double)x);
}

static void jsonl_row(const ck_row *r)
{
    int qkv = r->kind == CK_QKV, ok = !r->error;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", r->path);
    cJSON_AddStringToObject(o, "set", r->set);
    jint(o, "head", r->head);
    jint(o, "kv_head", r->kv_head);
    jint(o, "worst_head", r->worst);
    if (ok) {
        cJSON_AddNumberToObject(o, "n", (double)r->n);
        cJSON_AddNumberToObject(o, "d", (double)r->d);
        if (qkv)
            cJSON_AddNumberToObject(o, "dv", (double)r->dv);
        else
            cJSON_AddNullToObject(o, "dv");
    }
    if (ok && qkv) {
        jint(o, "heads", r->heads);
        jint(o, "kv_heads", r->kv_heads);
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
        cJSON_AddStringToObject(o, "cost", cli_cost_source());
        jnum(o, "speedup", r->speedup);
        for (int k = 0; k < CMP_N; k++) {
            if (!r->cmp[k].count) continue;
            char key[32];
            snprintf(key, sizeof key, "%s_max_abs", cmp_name[k]);
            jnum(o, key, r->cmp[k].max_abs);
            snprintf(key, sizeof key, "%s_max_rel", cmp_name[k]);
            jnum(o, key, diff_rel(&r->cmp[k]));
            snprintf(key, sizeof key, "%s_rows", cmp_name[k]);
            cJSON_AddNumberToObject(o, key, (double)(r->cmp[k].count / r->cmp_cols[k]));
        }
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
}

static void csv_row(const ck_row *r)
{
    int qkv = r->kind == CK_QKV, ok = !r->error;
    double nan = NAN;
    csv_str(r->path);
    putchar(',');
    csv_str(r->set);
    csv_int(r->head);
    csv_int(r->kv_head);
    csv_int(r->worst);
    csv_int(ok ? r->n : -1);
    csv_int(ok ? r->d : -1);
    csv_int(ok && qkv ? r->dv : -1);
    csv_int(ok && qkv ? r->heads : -1);
    csv_int(ok && qkv ? r->kv_heads : -1);
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
    for (int k = 0; k < CMP_N; k++) {
        int have = ok && qkv && r->cmp[k].count;
        csv_num(have ? r->cmp[k].max_abs : nan, "%.17g");
        csv_num(have ? diff_rel(&r->cmp[k]) : nan, "%.17g");
    }
    putchar(',');
    if (ok) fputs(r->verdict, stdout);
    putchar(',');
    csv_str(r->error);
    putchar(',');
    csv_str(r->note);
    putchar('\n');
}

/* The reader's messages start with the file's name: not twice. */
static int names_path(const ck_row *r)
{
    size_t n = strlen(r->path);
    return r->error && !*r->set && strncmp(r->error, r->path, n) == 0 && r->error[n] == ':';
}

static void table_row(const ck_row *r)
{
    int qkv = r->kind == CK_QKV;
    char where[4096];
    size_t off =
        (size_t)snprintf(where, sizeof where, "%s%s%s", r->path, *r->set ? ":" : "", r->set);
    if (r->head >= 0 && off < sizeof where)
        off += (size_t)snprintf(where + off, sizeof where - off, " [%lld]", (long long)r->head);
    if (r->kv_head >= 0 && off < sizeof where)
        off += (size_t)snprintf(where + off, sizeof where - off, " (kv [%lld])",
                                (long long)r->kv_head);
    if (r->worst >= 0 && off < sizeof where)
        snprintf(where + off, sizeof where - off, " (worst [%lld])", (long long)r->worst);
    if (r->error) {
        if (names_path(r))
            printf("%-17s %s\n", "error", r->error);
        else
            printf("%-17s %s: %s\n", "error", where, r->error);
        return;
    }
    char b[3][16], R[16], deg[8], t[FR_NMETHODS][16], sp[16], dv[16], rel[16];
    const double bb[3] = {r->B_q, r->B_k, r->B_v};
    for (int i = 0; i < 3; i++)
        snprintf(b[i], sizeof b[i], qkv ? "%.4g" : "-", bb[i]);
    snprintf(R, sizeof R, qkv ? "%.4g" : "-", r->R);
    snprintf(dv, sizeof dv, qkv ? "%lld" : "-", (long long)r->dv);
    snprintf(deg, sizeof deg, qkv && r->degree >= 0 ? "%d" : "-", r->degree);
    for (int m = 0; m < FR_NMETHODS; m++)
        snprintf(t[m], sizeof t[m], qkv && r->t[m] >= 0 ? "%.3g" : "-", r->t[m]);
    snprintf(sp, sizeof sp, qkv && isfinite(r->speedup) ? "%.2f" : "-", r->speedup);
    double worst_rel = -1;
    for (int k = 0; k < CMP_N; k++)
        if (r->cmp[k].count) worst_rel = fmax(worst_rel, diff_rel(&r->cmp[k]));
    snprintf(rel, sizeof rel, worst_rel >= 0 ? "%.2g" : "-", worst_rel);
    printf("%-17s %8lld %5lld %5s %9s %9s %9s %8.3g %9s %4s %9s %9s %9s %7s %8s  %s\n", r->verdict,
           (long long)r->n, (long long)r->d, dv, b[0], b[1], b[2], r->B_sl, R, deg,
           t[FR_METHOD_EXACT], t[FR_METHOD_POLYFFT], t[FR_METHOD_POLYROPE], sp, rel, where);
}

void ck_header(const ck_ctx *c)
{
    if (strcmp(c->format, "csv") == 0) {
        printf("path,set,head,kv_head,worst_head,n,d,dv,heads,kv_heads,B_q,B_k,B_v,B,"
               "B_over_sqrt_ln_n,R,degree");
        for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++)
            printf(",predicted_s_%s", fr_method_name((fr_method)m));
        printf(",speedup");
        for (int k = 0; k < CMP_N; k++)
            printf(",%s_max_abs,%s_max_rel", cmp_name[k], cmp_name[k]);
        printf(",verdict,error,note\n");
    } else if (strcmp(c->format, "table") == 0) {
        printf("%-17s %8s %5s %5s %9s %9s %9s %8s %9s %4s %9s %9s %9s %7s %8s  %s\n", "verdict",
               "n", "d", "dv", "B_q", "B_k", "B_v", "B/sqrtln", "R", "deg", "t_exact", "t_polyfft",
               "t_polyrope", "speedup", "max_rel", "set");
    }
}

void ck_emit(ck_ctx *c, const ck_row *r)
{
    cli_progress_end(); /* a row starts on a line of its own */
    c->rows++;
    if (r->error) {
        c->errors++;
        if (names_path(r))
            fprintf(stderr, "fastrope: check: %s\n", r->error);
        else
            fprintf(stderr, "fastrope: check: %s%s%s: %s\n", r->path, *r->set ? ":" : "", r->set,
                    r->error);
    } else {
        for (int v = 0; v < V_N; v++)
            if (strcmp(r->verdict, ck_verdicts[v]) == 0) c->by_verdict[v]++;
    }
    /* A note belongs to the set: said once, not once per head. */
    if (r->note && r->head <= 0)
        fprintf(stderr, "fastrope: check: %s%s%s: note: %s\n", r->path, *r->set ? ":" : "", r->set,
                r->note);
    if (strcmp(c->format, "jsonl") == 0)
        jsonl_row(r);
    else if (strcmp(c->format, "csv") == 0)
        csv_row(r);
    else
        table_row(r);
}
