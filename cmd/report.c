/* report.c - the JSON error report (its keys are a stable interface: scripts read them). */
#include "report.h"

#include "cost.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON has no Infinity or NaN: a bound that does not exist (B / sqrt(ln 1)) is null. The
 * digits are the fewest that read back to the same double (cJSON's own 15 digits do not always:
 * check's R then differed from run's printed R for identical values). */
void rep_num(cJSON *obj, const char *key, double x)
{
    char buf[FR_DOUBLE_BUF];
    if (!isfinite(x)) {
        cJSON_AddNullToObject(obj, key);
        return;
    }
    fr_format_double(buf, sizeof buf, x);
    cJSON_AddRawToObject(obj, key, buf);
}

/* Every digit: a double would round counts past 2^53. */
void rep_int(cJSON *obj, const char *key, int64_t x)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)x);
    cJSON_AddRawToObject(obj, key, buf);
}

static const char *kind_name(fr_rot_kind k)
{
    switch (k) {
    case FR_ROT_NONE: return "none";
    case FR_ROT_ROPE: return "rope";
    case FR_ROT_CLIP: return "rope-clip";
    case FR_ROT_EXPLICIT: return "explicit";
    }
    return "?";
}

cJSON *rep_problem(const fr_problem *p, const char *method, int64_t batch, const char *w_label,
                   const char *preset)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "method", method);
    rep_int(r, "n", p->n);
    rep_int(r, "d", p->d);
    rep_int(r, "dv", p->dv);
    rep_int(r, "batch", batch);
    if (preset)
        cJSON_AddStringToObject(r, "preset", preset);
    else
        cJSON_AddNullToObject(r, "preset");
    rep_num(r, "scale", p->tau);
    cJSON_AddBoolToObject(r, "causal", p->causal);
    if (p->window >= 0)
        rep_int(r, "window", p->window);
    else
        cJSON_AddNullToObject(r, "window");
    cJSON *rot = cJSON_AddObjectToObject(r, "rotation");
    cJSON_AddStringToObject(rot, "kind", kind_name(p->rot.kind));
    if (p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP) {
        rep_num(rot, "base", p->rot.base);
        cJSON_AddStringToObject(rot, "pairs",
                                p->rot.pairs == FR_PAIRS_HALF ? "half" : "interleaved");
        rep_num(rot, "pos_scale", p->rot.pos_scale);
        rep_int(rot, "rotary_dim", p->rot.rotary_dim ? p->rot.rotary_dim : p->d);
    }
    if (p->rot.kind == FR_ROT_CLIP) rep_int(rot, "clip", p->rot.clip);
    if (p->rot.kind == FR_ROT_EXPLICIT && w_label) cJSON_AddStringToObject(rot, "file", w_label);
    return r;
}

void rep_bounds(cJSON *r, const fr_bounds *b)
{
    cJSON *o = cJSON_AddObjectToObject(r, "bounds");
    rep_num(o, "B_q", b->B_q);
    rep_num(o, "B_k", b->B_k);
    rep_num(o, "B_v", b->B_v);
    rep_num(o, "B", b->B);
    rep_num(o, "B_over_sqrt_ln_n", b->B_over_sqrt_ln_n);
    rep_num(o, "R", b->R);
    if (b->R_from) cJSON_AddStringToObject(o, "R_from", b->R_from);
}

static void add_count(cJSON *o, const char *key, int64_t x)
{
    if (x > 0)
        rep_int(o, key, x);
    else
        cJSON_AddNullToObject(o, key);
}

void rep_plan(cJSON *r, const fr_plan_info *info)
{
    if (info->degree >= 0) {
        cJSON *o = cJSON_AddObjectToObject(r, "poly");
        rep_int(o, "degree", info->degree);
        rep_num(o, "eta", info->eta);
        /* The plan's certificate, before any data pass (core/ALGORITHM.md 3.1). */
        rep_num(o, "poly_bound", info->poly_bound);
        rep_num(o, "rounding_bound", info->rounding_bound);
        rep_num(o, "a_priori_bound", info->a_priori_bound);
        rep_int(o, "exact_below_keys", info->keys_exact);
        rep_int(o, "rows_exact_at_most", info->rows_exact);
        add_count(o, "support", info->support);
        if (info->method == FR_METHOD_POLYROPE) {
            add_count(o, "features", info->features);
        } else {
            add_count(o, "alphas", info->alphas);
            add_count(o, "q_monomials", info->q_monomials);
            add_count(o, "k_monomials", info->k_monomials);
            add_count(o, "kernels", info->kernels);
            add_count(o, "ffts", info->ffts);
            add_count(o, "fft_size", info->fft_size);
            cJSON_AddStringToObject(o, "fft", fr_fft_name(info->fft));
            if (info->fft_precision)
                cJSON_AddStringToObject(o, "fft_precision", info->fft_precision);
        }
    } else {
        cJSON_AddNullToObject(r, "poly");
    }
    cJSON *pl = cJSON_AddObjectToObject(r, "plan");
    cJSON_AddStringToObject(pl, "chosen", fr_method_name(info->method));
    cJSON_AddStringToObject(pl, "reason", info->reason ? info->reason : "");
    cJSON_AddStringToObject(pl, "cost", cli_cost_source());
    cJSON *t = cJSON_AddObjectToObject(pl, "predicted_s");
    for (int m = FR_METHOD_EXACT; m < FR_NMETHODS; m++) {
        if (info->predicted_s[m] >= 0)
            rep_num(t, fr_method_name((fr_method)m), info->predicted_s[m]);
        else
            cJSON_AddNullToObject(t, fr_method_name((fr_method)m));
    }
}
