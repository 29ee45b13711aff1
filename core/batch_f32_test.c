/* batch_f32_test.c - the public single-precision path (fr_bounds_compute_f32, a plan made with
 * precision FR_F32, fr_execute_f32) against the double exact reference on the same values:
 *  - the bounds of float data are those of its double copy, to the bit;
 *  - every entry of a batch within 1e-5 of exact attention in double (normwise: the largest
 *    error over the largest reference entry, fr_diff), for every rotation kind, mask and batch
 *    layout (one problem, grouped-query, an explicit W per problem), odd n, n = 1, dv != d;
 *  - the gradients (fr_execute_backward_f32: dq, dk and dv summed over each group, dW of an
 *    explicit W, T and the loss) within 2e-5 of the double exact ones on every layout;
 *  - auto means exact in single precision, the other methods are refused, and a plan runs only
 *    in its own precision. */
#include "internal.h"
#include "test.h"

#include <string.h>

static unsigned long long seed = 1717;

/* A batch's tensors in float, and their double copies for the reference. */
typedef struct {
    fr_problem p;
    float *q, *k, *v;
    double *qd, *kd, *vd, *w;
    float *up; /* the backward's dout or target */
    double *upd;
} set;

static void fill(float *x, double *xd, int64_t count, double scale)
{
    for (int64_t i = 0; i < count; i++)
        xd[i] = x[i] = (float)(scale * t_rand(&seed));
}

static set make(fr_problem p, double scale)
{
    set s;
    memset(&s, 0, sizeof s);
    s.p = p;
    int64_t B = fr__batch(&p), KV = fr__kv_batch(&p), n = p.n, d = p.d, dv = p.dv;
    s.q = malloc((size_t)(B * n * d) * sizeof *s.q);
    s.k = malloc((size_t)(KV * n * d) * sizeof *s.k);
    s.v = malloc((size_t)(KV * n * dv) * sizeof *s.v);
    s.qd = malloc((size_t)(B * n * d) * sizeof *s.qd);
    s.kd = malloc((size_t)(KV * n * d) * sizeof *s.kd);
    s.vd = malloc((size_t)(KV * n * dv) * sizeof *s.vd);
    fill(s.q, s.qd, B * n * d, scale);
    fill(s.k, s.kd, KV * n * d, scale);
    fill(s.v, s.vd, KV * n * dv, 1);
    s.up = malloc((size_t)(B * n * dv) * sizeof *s.up);
    s.upd = malloc((size_t)(B * n * dv) * sizeof *s.upd);
    fill(s.up, s.upd, B * n * dv, 1);
    return s;
}

static void drop(set *s)
{
    free(s->q), free(s->k), free(s->v), free(s->qd), free(s->kd), free(s->vd), free(s->w);
    free(s->up), free(s->upd);
}

/* Rotation kinds by number: 0 none, 1 RoPE, 2 RoPE half pairs on part of the coordinates,
 * 3 clipped RoPE, 4 an explicit W equal to RoPE (shared), 5 a general explicit W per problem. */
enum { NKINDS = 6 };

static void set_rotation(set *s, int kind)
{
    fr_problem *p = &s->p;
    int64_t n = p->n, d = p->d, nd = 2 * n - 1, dd = d * d, B = fr__batch(p);
    switch (kind) {
    case 0: p->rot.kind = FR_ROT_NONE; break;
    case 1: break;
    case 2:
        p->rot.pairs = FR_PAIRS_HALF;
        p->rot.rotary_dim = d - 2;
        p->rot.base = 100;
        break;
    case 3:
        p->rot.kind = FR_ROT_CLIP;
        p->rot.clip = 3;
        break;
    case 4:
        s->w = malloc((size_t)(nd * dd) * sizeof *s->w);
        for (int64_t t = 0; t < nd; t++)
            fr_rotation_matrix(p, t - (n - 1), s->w + t * dd);
        p->rot.kind = FR_ROT_EXPLICIT;
        p->rot.w = s->w;
        p->rot.w_count = 1;
        break;
    default:
        s->w = malloc((size_t)(B * nd * dd) * sizeof *s->w);
        for (int64_t e = 0; e < B * nd * dd; e++)
            s->w[e] = e % dd == 1 ? 0 : 0.5 * t_rand(&seed);
        p->rot.kind = FR_ROT_EXPLICIT;
        p->rot.w = s->w;
        p->rot.w_count = B;
        break;
    }
}

/* The single-precision run of s against the double reference: the worst normwise relative error
 * over the entries, or -1 (with the reason printed) when something fails. */
static double run(const set *s, fr_method m)
{
    const fr_problem *p = &s->p;
    int64_t B = fr__batch(p), n = p->n, dv = p->dv;
    char err[256] = "";
    double worst = -1;
    fr_bounds *b32 = malloc((size_t)B * sizeof *b32), *b64 = malloc((size_t)B * sizeof *b64);
    float *out = malloc((size_t)(B * n * dv) * sizeof *out);
    double *outd = malloc((size_t)(B * n * dv) * sizeof *outd);
    fr_exec_info *ex = malloc((size_t)B * sizeof *ex);
    fr_diff *per = malloc((size_t)B * sizeof *per), all;
    fr_plan *pl = NULL;
    fr_options o = fr_options_default();
    o.method = m;
    o.precision = FR_F32;
    if (fr_bounds_compute_f32(p, s->q, s->k, s->v, b32, err, sizeof err) ||
        fr_bounds_compute(p, s->qd, s->kd, s->vd, b64, err, sizeof err) ||
        fr_plan_create(&pl, p, b32, &o, err, sizeof err) ||
        fr_execute_f32(pl, s->q, s->k, s->v, out, ex, err, sizeof err)) {
        printf("#   failed: %s\n", err);
        goto done;
    }
    for (int64_t b = 0; b < B; b++)
        if (b32[b].R != b64[b].R || b32[b].B_q != b64[b].B_q || b32[b].B_v != b64[b].B_v ||
            b32[b].B_over_sqrt_ln_n != b64[b].B_over_sqrt_ln_n) {
            printf("#   problem %lld: float bounds differ from double ones\n", (long long)b);
            goto done;
        }
    fr_plan_info info;
    fr_plan_get_info(pl, &info);
    for (int64_t b = 0; b < B; b++)
        if (info.method != FR_METHOD_EXACT || ex[b].rows_recomputed != 0 ||
            ex[b].a_priori_bound != info.a_priori_bound ||
            ex[b].rounding_bound != info.a_priori_bound) {
            printf("#   problem %lld: plan %s or execution info not exact's\n", (long long)b,
                   fr_method_name(info.method));
            goto done;
        }
    for (int64_t e = 0; e < B * n * dv; e++)
        outd[e] = out[e];
    if (fr_check_rows(p, s->qd, s->kd, s->vd, outd, NULL, n, per, &all, err, sizeof err)) {
        printf("#   reference failed: %s\n", err);
        goto done;
    }
    worst = 0;
    for (int64_t b = 0; b < B; b++)
        if (!(per[b].max_rel <= worst)) worst = per[b].max_rel; /* NaN propagates */
done:
    fr_plan_free(pl);
    free(b32), free(b64), free(out), free(outd), free(ex), free(per);
    return worst;
}

static double *widen(const float *x, int64_t count)
{
    double *y = malloc((size_t)(count ? count : 1) * sizeof *y);
    for (int64_t i = 0; i < count; i++)
        y[i] = x[i];
    return y;
}

/* The single-precision gradients of s (from dout, or from target when target is set) against the
 * double exact ones: the worst normwise relative error over dq, dk, dv (and dW for an explicit
 * W), T and the loss; -1 when something fails. */
static double run_backward(const set *s, int target)
{
    const fr_problem *p = &s->p;
    int64_t B = fr__batch(p), KV = fr__kv_batch(p), n = p->n, d = p->d, dv = p->dv;
    int64_t W = s->w ? fr__w_count(p) : 0, wsize = (2 * n - 1) * d * d;
    char err[256] = "";
    double worst = -1;
    fr_bounds *bd = malloc((size_t)B * sizeof *bd);
    float *dq = malloc((size_t)(B * n * d) * sizeof *dq), *dk = malloc((size_t)(KV * n * d) * 4);
    float *dvv = malloc((size_t)(KV * n * dv) * 4), *t = malloc((size_t)(B * n * dv) * 4);
    float *dw = W ? malloc((size_t)(W * wsize) * 4) : NULL, loss = -1;
    double *tref = malloc((size_t)(n * dv) * sizeof *tref), loss_ref = 0;
    fr_diff all[FR_NGRADS];
    fr_plan *pl = NULL;
    fr_options o = fr_options_default();
    o.method = FR_METHOD_EXACT;
    o.precision = FR_F32;
    const float *up = target ? NULL : s->up, *tg = target ? s->up : NULL;
    if (fr_bounds_compute_f32(p, s->q, s->k, s->v, bd, err, sizeof err) ||
        fr_plan_create(&pl, p, bd, &o, err, sizeof err) ||
        fr_execute_backward_f32(pl, s->q, s->k, s->v, up, tg, t, dq, dk, dvv, dw, &loss, NULL, err,
                                sizeof err)) {
        printf("#   failed: %s\n", err);
        goto done;
    }
    double *g[5] = {widen(dq, B * n * d), widen(dk, KV * n * d), widen(dvv, KV * n * dv),
                    dw ? widen(dw, W * wsize) : NULL, widen(t, B * n * dv)};
    int st = fr_check_backward_rows(p, s->qd, s->kd, s->vd, target ? NULL : s->upd,
                                    target ? s->upd : NULL, g[0], g[1], g[2], g[3], NULL, n, NULL,
                                    all, err, sizeof err);
    if (st) printf("#   reference failed: %s\n", err);
    /* T and the loss, problem by problem */
    fr_diff tdiff = {0, 0, 0, 0};
    for (int64_t b = 0; !st && b < B; b++) {
        fr_problem pe = fr__entry_problem(p, b);
        int64_t h = b / fr__group(p);
        double *dq1 = malloc((size_t)(n * d) * 8), *dk1 = malloc((size_t)(n * d) * 8),
               *dv1 = malloc((size_t)(n * dv) * 8), l1 = 0;
        st = fr_exact_backward(&pe, s->qd + b * n * d, s->kd + h * n * d, s->vd + h * n * dv,
                               target ? NULL : s->upd + b * n * dv,
                               target ? s->upd + b * n * dv : NULL, tref, dq1, dk1, dv1, NULL,
                               target ? &l1 : NULL, err, sizeof err);
        fr_diff_add(&tdiff, g[4] + b * n * dv, tref, n * dv);
        loss_ref += l1;
        free(dq1), free(dk1), free(dv1);
    }
    if (!st) {
        worst = tdiff.max_rel;
        for (int e = 0; e < FR_NGRADS; e++)
            if (all[e].count && !(all[e].max_rel <= worst)) worst = all[e].max_rel;
        if (!dw != !all[FR_GRAD_DW].count) worst = 1; /* dW compared exactly when there is one */
        if (target && !(fabs(loss - loss_ref) <= 1e-5 * loss_ref)) worst = 1;
    }
    for (int e = 0; e < 5; e++)
        free(g[e]);
done:
    fr_plan_free(pl);
    free(bd), free(dq), free(dk), free(dvv), free(t), free(dw), free(tref);
    return worst;
}

static void test_backward(void)
{
    const struct {
        int64_t B, KV;
    } layouts[] = {{1, 0}, {3, 1}, {4, 2}};
    const struct {
        int causal;
        int64_t window;
    } masks[] = {{0, -1}, {1, -1}, {1, 4}};
    const int64_t ns[] = {1, 37, 150};
    for (int kind = 0; kind < NKINDS; kind++)
        for (size_t l = 0; l < sizeof layouts / sizeof *layouts; l++)
            for (size_t mi = 0; mi < sizeof masks / sizeof *masks; mi++)
                for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                    fr_problem p = fr_problem_default(ns[ni], 6, 5);
                    p.batch = layouts[l].B;
                    p.kv_batch = layouts[l].KV;
                    p.causal = masks[mi].causal;
                    p.window = masks[mi].window;
                    set s = make(p, 1.0);
                    set_rotation(&s, kind);
                    double e = run_backward(&s, (int)(ni & 1));
                    T_CHECK(e >= 0 && e <= 2e-5,
                            "kind %d batch %lld/%lld causal %d window %lld n %lld: %g", kind,
                            (long long)p.batch, (long long)p.kv_batch, p.causal,
                            (long long)p.window, (long long)p.n, e);
                    drop(&s);
                }
}

static void test_backward_shapes(void)
{
    /* d and dv across the float kernels' tiles: the dQ product's row tiles (4 vectors, 1 vector,
     * d padded to 16 lanes), dK's 8, 4 and single rows; sdpa scaling */
    const struct {
        int64_t n, d, dv;
    } cases[] = {{129, 8, 33}, {100, 64, 64}, {70, 36, 3}, {65, 2, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        fr_problem p = fr_problem_default(cases[c].n, cases[c].d, cases[c].dv);
        p.tau = 1 / sqrt((double)cases[c].d);
        p.causal = (int)(c & 1);
        set s = make(p, 1.0);
        double e = run_backward(&s, 0);
        T_CHECK(e >= 0 && e <= 2e-5, "n %lld d %lld dv %lld: %g", (long long)p.n, (long long)p.d,
                (long long)p.dv, e);
        drop(&s);
    }
}

static void test_every_kind_mask_and_batch(void)
{
    const struct {
        int64_t B, KV;
    } layouts[] = {{1, 0}, {3, 1}, {4, 2}};
    const struct {
        int causal;
        int64_t window;
    } masks[] = {{0, -1}, {1, -1}, {0, 4}, {1, 4}};
    const int64_t ns[] = {1, 37, 150}; /* 150: rows and keys across blocks */
    for (int kind = 0; kind < NKINDS; kind++)
        for (size_t l = 0; l < sizeof layouts / sizeof *layouts; l++)
            for (size_t mi = 0; mi < sizeof masks / sizeof *masks; mi++)
                for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                    fr_problem p = fr_problem_default(ns[ni], 6, 5);
                    p.batch = layouts[l].B;
                    p.kv_batch = layouts[l].KV;
                    p.causal = masks[mi].causal;
                    p.window = masks[mi].window;
                    set s = make(p, 1.0);
                    set_rotation(&s, kind);
                    double e = run(&s, FR_METHOD_EXACT);
                    T_CHECK(e >= 0 && e <= 1e-5,
                            "kind %d batch %lld/%lld causal %d window %lld n %lld: %g", kind,
                            (long long)p.batch, (long long)p.kv_batch, p.causal,
                            (long long)p.window, (long long)p.n, e);
                    drop(&s);
                }
}

static void test_shapes(void)
{
    /* dv across the float kernel's tile widths, d odd (no rotation), sdpa scaling, larger
     * entries */
    const struct {
        int64_t n, d, dv;
        int rot;
        double scale;
    } cases[] = {{129, 8, 33, 1, 1.0},
                 {64, 5, 1, 0, 1.0},
                 {200, 16, 40, 1, 2.0},
                 {77, 4, 130, 3, 1.0},
                 {1, 2, 7, 1, 3.0}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        fr_problem p = fr_problem_default(cases[c].n, cases[c].d, cases[c].dv);
        p.tau = 1 / sqrt((double)cases[c].d);
        p.batch = 2;
        set s = make(p, cases[c].scale);
        set_rotation(&s, cases[c].rot);
        double e = run(&s, FR_METHOD_EXACT);
        T_CHECK(e >= 0 && e <= 1e-5, "n %lld d %lld dv %lld: %g", (long long)p.n, (long long)p.d,
                (long long)p.dv, e);
        drop(&s);
    }
}

static void test_auto_and_refusals(void)
{
    fr_problem p = fr_problem_default(40, 4, 3);
    p.batch = 2;
    set s = make(p, 1.0);
    char err[256] = "";
    fr_bounds bd[2];
    T_REQUIRE(fr_bounds_compute_f32(&p, s.q, s.k, s.v, bd, err, sizeof err) == FR_OK, "%s", err);
    /* auto: exact, saying why */
    double e = run(&s, FR_METHOD_AUTO);
    T_CHECK(e >= 0 && e <= 1e-5, "auto: %g", e);
    fr_options o = fr_options_default();
    o.precision = FR_F32;
    fr_plan *pl = NULL;
    T_REQUIRE(fr_plan_create(&pl, &p, bd, &o, err, sizeof err) == FR_OK, "%s", err);
    fr_plan_info info;
    fr_plan_get_info(pl, &info);
    T_CHECK(info.method == FR_METHOD_EXACT && strstr(info.reason, "single precision"),
            "auto in f32: %s (%s)", fr_method_name(info.method), info.reason);
    /* a plan runs in its own precision only */
    double *out = calloc((size_t)(2 * 40 * 3), sizeof *out);
    T_CHECK(fr_execute(pl, s.qd, s.kd, s.vd, out, NULL, err, sizeof err) == FR_EUSAGE &&
                strstr(err, "fr_execute_f32"),
            "f32 plan through fr_execute: %s", err);
    fr_plan_free(pl);
    o.precision = FR_F64;
    T_REQUIRE(fr_plan_create(&pl, &p, NULL, (o.method = FR_METHOD_EXACT, &o), err, sizeof err) ==
                  FR_OK,
              "%s", err);
    float *outf = calloc((size_t)(2 * 40 * 3), sizeof *outf);
    T_CHECK(fr_execute_f32(pl, s.q, s.k, s.v, outf, NULL, err, sizeof err) == FR_EUSAGE,
            "f64 plan through fr_execute_f32");
    fr_plan_free(pl);
    /* the fast methods have no single-precision path */
    o.precision = FR_F32;
    const fr_method fast[] = {FR_METHOD_POLYROPE, FR_METHOD_POLYFFT, FR_METHOD_POLYFFT_LITERAL};
    for (int m = 0; m < 3; m++) {
        o.method = fast[m];
        T_CHECK(fr_plan_create(&pl, &p, bd, &o, err, sizeof err) == FR_EUSAGE &&
                    strstr(err, fr_method_name(fast[m])),
                "%s in f32: %s", fr_method_name(fast[m]), err);
    }
    /* non-finite input, named, in the bounds and in the execution */
    o.method = FR_METHOD_EXACT;
    T_REQUIRE(fr_plan_create(&pl, &p, bd, &o, err, sizeof err) == FR_OK, "%s", err);
    s.k[40 * 4 + 7] = NAN; /* problem 1's k */
    T_CHECK(fr_bounds_compute_f32(&p, s.q, s.k, s.v, bd, err, sizeof err) == FR_EINPUT &&
                strstr(err, "k has a non-finite value"),
            "NaN in k: %s", err);
    T_CHECK(fr_execute_f32(pl, s.q, s.k, s.v, outf, NULL, err, sizeof err) == FR_EINPUT &&
                strstr(err, "problem 1") && strstr(err, "k has a non-finite value at flat index 7"),
            "NaN in k at execution: %s", err);
    fr_plan_free(pl);
    free(out), free(outf);
    drop(&s);
}

int main(void)
{
    T_RUN(test_every_kind_mask_and_batch);
    T_RUN(test_shapes);
    T_RUN(test_backward);
    T_RUN(test_backward_shapes);
    T_RUN(test_auto_and_refusals);
    return t_done();
}
