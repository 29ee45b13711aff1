/* backward_test.c - exact gradients against finite differences of the exact forward and against
 * a naive dense O(n^2 d^2) implementation of ALGORITHM.md 7 written here, on one thread and on
 * all of them (small problems take the threaded path when asked). */
#include "internal.h"
#include "test.h"

#include <omp.h>
#include <string.h>

typedef struct {
    const char *name;
    fr_rot_kind kind;
    fr_pairs pairs;
    int64_t rotary_dim, clip;
    int causal;
    int64_t window;
    int explicit_family; /* EXPLICIT: W built from RoPE (1) or random (0) */
} config;

static const config configs[] = {
    {"rope-interleaved", FR_ROT_ROPE, FR_PAIRS_INTERLEAVED, 0, 0, 0, -1, 0},
    {"rope-half-causal", FR_ROT_ROPE, FR_PAIRS_HALF, 0, 0, 1, -1, 0},
    {"rope-partial-window", FR_ROT_ROPE, FR_PAIRS_INTERLEAVED, 2, 0, 0, 1, 0},
    {"rope-half-partial-causal-window", FR_ROT_ROPE, FR_PAIRS_HALF, 2, 0, 1, 2, 0},
    {"clip", FR_ROT_CLIP, FR_PAIRS_INTERLEAVED, 0, 1, 0, -1, 0},
    {"clip-causal", FR_ROT_CLIP, FR_PAIRS_HALF, 0, 2, 1, -1, 0},
    {"explicit-random", FR_ROT_EXPLICIT, FR_PAIRS_INTERLEAVED, 0, 0, 0, -1, 0},
    {"explicit-random-window", FR_ROT_EXPLICIT, FR_PAIRS_INTERLEAVED, 0, 0, 0, 2, 0},
    {"explicit-rope-family", FR_ROT_EXPLICIT, FR_PAIRS_INTERLEAVED, 0, 0, 1, -1, 1},
    {"none", FR_ROT_NONE, FR_PAIRS_INTERLEAVED, 0, 0, 0, -1, 0},
    {"none-causal-window", FR_ROT_NONE, FR_PAIRS_INTERLEAVED, 0, 0, 1, 1, 0},
};
#define NCONFIGS ((int)(sizeof configs / sizeof configs[0]))

/* A problem for config c; an explicit W is written into *w (caller frees). */
static fr_problem make_problem(const config *c, int64_t n, int64_t d, int64_t dv, double tau,
                               double **w, unsigned long long *seed)
{
    fr_problem p = fr_problem_default(n, d, dv);
    p.tau = tau;
    p.rot.kind = c->kind;
    p.rot.pairs = c->pairs;
    p.rot.rotary_dim = c->rotary_dim;
    p.rot.clip = c->clip;
    p.causal = c->causal;
    p.window = c->window;
    *w = NULL;
    if (c->kind == FR_ROT_EXPLICIT) {
        int64_t nd = 2 * n - 1;
        *w = malloc((size_t)(nd * d * d) * sizeof **w);
        if (c->explicit_family) {
            fr_problem r = p;
            r.rot.kind = FR_ROT_ROPE;
            r.rot.base = 7;
            for (int64_t t = 0; t < nd; t++)
                fr_rotation_matrix(&r, t - (n - 1), *w + t * d * d);
        } else {
            for (int64_t e = 0; e < nd * d * d; e++)
                (*w)[e] = t_rand(seed);
        }
        p.rot.w = *w;
    }
    return p;
}

static double *rand_vec(int64_t cnt, double scale, unsigned long long *seed)
{
    double *x = malloc((size_t)cnt * sizeof *x);
    for (int64_t e = 0; e < cnt; e++)
        x[e] = scale * t_rand(seed);
    return x;
}

static int keep(const fr_problem *p, int64_t i, int64_t j)
{
    if (p->causal && j > i) return 0;
    if (p->window >= 0 && (j - i > p->window || i - j > p->window)) return 0;
    return 1;
}

/* Naive dense forward and analytic backward (ALGORITHM.md 7), every W_delta as a matrix. */
static void naive(const fr_problem *p, const double *q, const double *k, const double *v,
                  const double *dout, const double *target, double *t, double *dq, double *dk,
                  double *dv, double *dw, double *loss)
{
    int64_t n = p->n, d = p->d, dv_ = p->dv, nd = 2 * n - 1;
    double *W = malloc((size_t)(nd * d * d) * sizeof *W);
    double *S = malloc((size_t)(n * n) * sizeof *S), *P = malloc((size_t)(n * n) * sizeof *P);
    double *G = malloc((size_t)(n * dv_) * sizeof *G);
    for (int64_t e = 0; e < nd; e++)
        fr_rotation_matrix(p, e - (n - 1), W + e * d * d);
    for (int64_t i = 0; i < n; i++) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            const double *w = W + (j - i + n - 1) * d * d;
            double s = 0;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++)
                    s += q[i * d + a] * w[a * d + b] * k[j * d + b];
            S[i * n + j] = p->tau * s;
            if (keep(p, i, j) && S[i * n + j] > mx) mx = S[i * n + j];
        }
        double sum = 0;
        for (int64_t j = 0; j < n; j++)
            sum += P[i * n + j] = keep(p, i, j) ? exp(S[i * n + j] - mx) : 0;
        for (int64_t j = 0; j < n; j++)
            P[i * n + j] /= sum;
        for (int64_t o = 0; o < dv_; o++) {
            double acc = 0;
            for (int64_t j = 0; j < n; j++)
                acc += P[i * n + j] * v[j * dv_ + o];
            t[i * dv_ + o] = acc;
        }
    }
    double l = 0;
    for (int64_t e = 0; e < n * dv_; e++) {
        G[e] = target ? t[e] - target[e] : dout[e];
        l += G[e] * G[e];
    }
    if (loss) *loss = 0.5 * l;
    memset(dq, 0, (size_t)(n * d) * sizeof *dq);
    memset(dk, 0, (size_t)(n * d) * sizeof *dk);
    memset(dv, 0, (size_t)(n * dv_) * sizeof *dv);
    if (dw) memset(dw, 0, (size_t)(nd * d * d) * sizeof *dw);
    for (int64_t i = 0; i < n; i++) {
        double delta = 0;
        for (int64_t o = 0; o < dv_; o++)
            delta += G[i * dv_ + o] * t[i * dv_ + o];
        for (int64_t j = 0; j < n; j++) {
            double pij = P[i * n + j], gv = 0;
            for (int64_t o = 0; o < dv_; o++) {
                dv[j * dv_ + o] += pij * G[i * dv_ + o];
                gv += G[i * dv_ + o] * v[j * dv_ + o];
            }
            double ds = pij * (gv - delta) * p->tau;
            const double *w = W + (j - i + n - 1) * d * d;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++) {
                    dq[i * d + a] += ds * w[a * d + b] * k[j * d + b];
                    dk[j * d + b] += ds * q[i * d + a] * w[a * d + b];
                    if (dw)
                        dw[(j - i + n - 1) * d * d + a * d + b] += ds * q[i * d + a] * k[j * d + b];
                }
        }
    }
    free(W);
    free(S);
    free(P);
    free(G);
}

/* max |a - b| / max(|b|, floor) */
static double rel_err(const double *a, const double *b, int64_t cnt)
{
    double m = 0, s = 1e-300;
    for (int64_t e = 0; e < cnt; e++) {
        double x = fabs(a[e] - b[e]);
        if (!(x <= m)) m = x;
        if (fabs(b[e]) > s) s = fabs(b[e]);
    }
    return m / s;
}

/* The loss through the exact forward: sum dout . T, or 1/2 ||T - E||^2. */
static double loss_of(const fr_problem *p, const double *q, const double *k, const double *v,
                      const double *dout, const double *target, double *t)
{
    char err[256];
    int st = fr_exact_rows(p, q, k, v, NULL, p->n, t, err, sizeof err);
    if (st) {
        printf("#   forward failed: %s\n", err);
        return NAN;
    }
    double l = 0;
    for (int64_t e = 0; e < p->n * p->dv; e++)
        l += target ? 0.5 * (t[e] - target[e]) * (t[e] - target[e]) : dout[e] * t[e];
    return l;
}

/* Central differences of the loss in every entry of x (cnt entries), into fd. */
static void fd_grad(const fr_problem *p, double *q, double *k, double *v, const double *dout,
                    const double *target, double *x, int64_t cnt, double *t, double *fd)
{
    const double h = 1e-5;
    /* hundreds of tiny forwards: threads would only add barrier waits (slow under ASan) */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int64_t e = 0; e < cnt; e++) {
        double x0 = x[e];
        x[e] = x0 + h;
        double lp = loss_of(p, q, k, v, dout, target, t);
        x[e] = x0 - h;
        double lm = loss_of(p, q, k, v, dout, target, t);
        x[e] = x0;
        fd[e] = (lp - lm) / (2 * h);
    }
    omp_set_num_threads(nt);
}

static void check_fd(const config *c, int use_target)
{
    unsigned long long seed = 0x1234ULL + (unsigned long long)(c - configs) * 77 + use_target;
    int64_t n = 5, d = 4, dv = 3, nd = 2 * n - 1;
    double *w;
    fr_problem p = make_problem(c, n, d, dv, 1.0 / sqrt((double)d), &w, &seed);
    double *q = rand_vec(n * d, 1.5, &seed), *k = rand_vec(n * d, 1.5, &seed);
    double *v = rand_vec(n * dv, 1, &seed), *g = rand_vec(n * dv, 1, &seed);
    double *t = malloc((size_t)(n * dv) * sizeof *t), *tt = malloc((size_t)(n * dv) * sizeof *tt);
    double *dq = malloc((size_t)(n * d) * sizeof *dq), *dk = malloc((size_t)(n * d) * sizeof *dk);
    double *dvv = malloc((size_t)(n * dv) * sizeof *dvv);
    double *dw = w ? malloc((size_t)(nd * d * d) * sizeof *dw) : NULL;
    double *fd = malloc((size_t)(nd * d * d + n * d) * sizeof *fd);
    const double *dout = use_target ? NULL : g, *target = use_target ? g : NULL;
    char err[256] = "";
    double loss = -1;
    int st =
        fr_exact_backward(&p, q, k, v, dout, target, t, dq, dk, dvv, dw, &loss, err, sizeof err);
    T_CHECK(st == FR_OK, "%s: %s", c->name, err);
    if (st == FR_OK) {
        double l0 = loss_of(&p, q, k, v, dout, target, tt);
        T_CHECK(rel_err(t, tt, n * dv) < 1e-12, "%s: T differs from fr_exact_rows", c->name);
        if (use_target)
            T_CHECK(fabs(loss - l0) <= 1e-12 * fabs(l0), "%s: loss %.17g, forward gives %.17g",
                    c->name, loss, l0);
        fd_grad(&p, q, k, v, dout, target, q, n * d, tt, fd);
        double e = rel_err(dq, fd, n * d);
        T_CHECK(e < 1e-7, "%s%s: dq vs finite differences %.3g", c->name,
                use_target ? " (target)" : "", e);
        fd_grad(&p, q, k, v, dout, target, k, n * d, tt, fd);
        e = rel_err(dk, fd, n * d);
        T_CHECK(e < 1e-7, "%s%s: dk vs finite differences %.3g", c->name,
                use_target ? " (target)" : "", e);
        fd_grad(&p, q, k, v, dout, target, v, n * dv, tt, fd);
        e = rel_err(dvv, fd, n * dv);
        T_CHECK(e < 1e-7, "%s%s: dv vs finite differences %.3g", c->name,
                use_target ? " (target)" : "", e);
        if (w) {
            fd_grad(&p, q, k, v, dout, target, w, nd * d * d, tt, fd);
            e = rel_err(dw, fd, nd * d * d);
            T_CHECK(e < 1e-7, "%s%s: dw vs finite differences %.3g", c->name,
                    use_target ? " (target)" : "", e);
        }
    }
    free(w);
    free(q);
    free(k);
    free(v);
    free(g);
    free(t);
    free(tt);
    free(dq);
    free(dk);
    free(dvv);
    free(dw);
    free(fd);
}

static void test_finite_differences_dout(void)
{
    for (int c = 0; c < NCONFIGS; c++)
        check_fd(&configs[c], 0);
}

static void test_finite_differences_target(void)
{
    for (int c = 0; c < NCONFIGS; c++)
        check_fd(&configs[c], 1);
}

/* fr_exact_backward against naive() on one problem; also the rows variant on a few rows.
 * Returns the worst relative error seen (for the caller's message). */
static void check_naive(const config *c, int64_t n, int64_t d, int64_t dv, double tau,
                        int64_t batch, double scale, int use_target, int with_dw)
{
    unsigned long long seed = 0x9E37ULL + (unsigned long long)(n * 131 + d * 7 + dv) +
                              (unsigned long long)(c - configs) * 1009;
    int64_t nd = 2 * n - 1;
    double *w;
    fr_problem p = make_problem(c, n, d, dv, tau, &w, &seed);
    double *q = rand_vec(batch * n * d, scale, &seed), *k = rand_vec(batch * n * d, scale, &seed);
    double *v = rand_vec(batch * n * dv, scale, &seed), *g = rand_vec(batch * n * dv, 1, &seed);
    int64_t nw = with_dw ? nd * d * d : 0;
    double *r[5], *x[5]; /* t, dq, dk, dv, dw: engine (r) and naive (x) */
    int64_t sz[5] = {n * dv, n * d, n * d, n * dv, nw};
    for (int e = 0; e < 5; e++) {
        r[e] = malloc((size_t)(sz[e] ? sz[e] : 1) * sizeof(double));
        x[e] = malloc((size_t)(sz[e] ? sz[e] : 1) * sizeof(double));
    }
    const char *what[5] = {"t", "dq", "dk", "dv", "dw"};
    for (int64_t b = 0; b < batch; b++) {
        const double *qb = q + b * n * d, *kb = k + b * n * d, *vb = v + b * n * dv;
        const double *gb = g + b * n * dv;
        const double *dout = use_target ? NULL : gb, *target = use_target ? gb : NULL;
        char err[256] = "";
        double l1 = 0, l2 = 0;
        int st = fr_exact_backward(&p, qb, kb, vb, dout, target, r[0], r[1], r[2], r[3],
                                   with_dw ? r[4] : NULL, &l1, err, sizeof err);
        T_CHECK(st == FR_OK, "%s n=%lld: %s", c->name, (long long)n, err);
        if (st) break;
        naive(&p, qb, kb, vb, dout, target, x[0], x[1], x[2], x[3], with_dw ? x[4] : NULL, &l2);
        for (int e = 0; e < 5; e++) {
            if (!sz[e]) continue;
            double re = rel_err(r[e], x[e], sz[e]);
            T_CHECK(re < 1e-11, "%s n=%lld d=%lld dv=%lld tau=%g B=%g entry %lld: %s rel err %.3g",
                    c->name, (long long)n, (long long)d, (long long)dv, tau, scale, (long long)b,
                    what[e], re);
        }
        if (use_target)
            T_CHECK(fabs(l1 - l2) <= 1e-11 * fabs(l2), "%s: loss %.17g vs %.17g", c->name, l1, l2);
        if (!use_target) {
            /* the threaded pass: per-thread dQ and dW summed at the end */
            st = fr__exact_backward_par(&p, qb, kb, vb, gb, NULL, n, r[1], r[2], r[3],
                                        with_dw ? r[4] : NULL, 0, err, sizeof err);
            T_CHECK(st == FR_OK, "%s threaded: %s", c->name, err);
            for (int e = 1; e < 5 && !st; e++)
                if (sz[e])
                    T_CHECK(rel_err(r[e], x[e], sz[e]) < 1e-11,
                            "%s n=%lld threaded: %s rel err %.3g", c->name, (long long)n, what[e],
                            rel_err(r[e], x[e], sz[e]));
        }

        /* rows variant: a few rows, out of order, with a repeat */
        int64_t rows[4] = {n - 1, 0, n / 2, n - 1};
        double *rq = malloc(4 * (size_t)d * sizeof *rq), *rk = malloc(4 * (size_t)d * sizeof *rk);
        double *rv = malloc(4 * (size_t)dv * sizeof *rv);
        if (use_target)
            st = fr_exact_backward_rows(&p, qb, kb, vb, dout, target, rows, 4, rq, rk, rv, err,
                                        sizeof err);
        else /* threaded (the rows of dout problems; target ones run on one thread) */
            st = fr__exact_backward_par(&p, qb, kb, vb, gb, rows, 4, rq, rk, rv, NULL, 0, err,
                                        sizeof err);
        T_CHECK(st == FR_OK, "%s rows: %s", c->name, err);
        for (int t = 0; !st && t < 4; t++) {
            /* the same arithmetic, so the same bits up to summation order */
            T_CHECK(rel_err(rq + t * d, r[1] + rows[t] * d, d) < 1e-13, "%s rows: dq row %lld",
                    c->name, (long long)rows[t]);
            T_CHECK(rel_err(rk + t * d, r[2] + rows[t] * d, d) < 1e-13, "%s rows: dk row %lld",
                    c->name, (long long)rows[t]);
            T_CHECK(rel_err(rv + t * dv, r[3] + rows[t] * dv, dv) < 1e-13, "%s rows: dv row %lld",
                    c->name, (long long)rows[t]);
        }
        free(rq);
        free(rk);
        free(rv);
    }
    for (int e = 0; e < 5; e++) {
        free(r[e]);
        free(x[e]);
    }
    free(w);
    free(q);
    free(k);
    free(v);
    free(g);
}

static void test_naive_shapes(void)
{
    /* odd n, n = 1, dv != d, spanning several blocks (BR = 32, BC = 128) */
    static const int64_t shapes[][3] = {{1, 4, 3}, {7, 4, 5}, {33, 6, 2}, {261, 4, 9}};
    for (int c = 0; c < NCONFIGS; c++)
        for (int s = 0; s < 4; s++) {
            int64_t n = shapes[s][0], d = shapes[s][1], dv = shapes[s][2];
            if (configs[c].rotary_dim > d) continue;
            check_naive(&configs[c], n, d, dv, 1.0 / (double)d, 1, 1, s & 1, 1);
            check_naive(&configs[c], n, d, dv, 1.0 / sqrt((double)d), 1, 1, !(s & 1), 0);
        }
}

static void test_wide_rows(void)
{
    /* d across the register tiles of the dQ product from the keys' rows (4 vectors, 1 vector,
     * and leftover lanes), over key blocks of 128 consecutive keys, causal and not */
    static const int64_t shapes[][3] = {{150, 8, 3}, {140, 36, 5}, {131, 40, 8}};
    for (int s = 0; s < 3; s++) {
        int64_t n = shapes[s][0], d = shapes[s][1], dv = shapes[s][2];
        check_naive(&configs[0], n, d, dv, 1.0 / sqrt((double)d), 1, 1, s & 1, 0);
        check_naive(&configs[1], n, d, dv, 1.0 / sqrt((double)d), 1, 1, !(s & 1), 0);
    }
}

static void test_naive_batch(void)
{
    check_naive(&configs[1], 70, 4, 3, 0.5, 3, 1, 0, 0);
    check_naive(&configs[6], 70, 4, 3, 0.5, 2, 1, 1, 1);
}

/* B = 30 with tau = 1: scores in the thousands; the running maximum keeps everything finite. */
static void test_large_entries(void)
{
    check_naive(&configs[0], 66, 4, 4, 1.0, 1, 30, 0, 0);
    check_naive(&configs[4], 66, 4, 4, 1.0, 1, 30, 1, 0);
    check_naive(&configs[7], 40, 4, 4, 1.0, 1, 30, 1, 1);
}

static void test_errors(void)
{
    int64_t n = 3, d = 2, dv = 2;
    fr_problem p = fr_problem_default(n, d, dv);
    double q[6] = {0}, k[6] = {0}, v[6] = {0}, g[6] = {0}, dq[6], dk[6], dvv[6];
    char err[256] = "";
    int st = fr_exact_backward(&p, q, k, v, g, g, NULL, dq, dk, dvv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE && err[0], "dout and target both given: %d", st);
    st = fr_exact_backward(&p, q, k, v, NULL, NULL, NULL, dq, dk, dvv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE, "neither dout nor target: %d", st);
    k[3] = NAN;
    st = fr_exact_backward(&p, q, k, v, g, NULL, NULL, dq, dk, dvv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "k"), "NaN in k: %d %s", st, err);
    k[3] = 0;
    g[5] = INFINITY;
    st = fr_exact_backward(&p, q, k, v, NULL, g, NULL, dq, dk, dvv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EINPUT && strstr(err, "target"), "Inf in target: %d %s", st, err);
    g[5] = 0;
    int64_t bad[1] = {3};
    st = fr_exact_backward_rows(&p, q, k, v, g, NULL, bad, 1, dq, dk, dvv, err, sizeof err);
    T_CHECK(st == FR_EUSAGE, "row out of range: %d", st);
    p.d = 3; /* RoPE needs an even d */
    st = fr_exact_backward(&p, q, k, v, g, NULL, NULL, dq, dk, dvv, NULL, NULL, err, sizeof err);
    T_CHECK(st == FR_EUSAGE, "odd d with RoPE: %d", st);
}

int main(void)
{
    T_RUN(test_finite_differences_dout);
    T_RUN(test_finite_differences_target);
    T_RUN(test_naive_shapes);
    T_RUN(test_wide_rows);
    T_RUN(test_naive_batch);
    T_RUN(test_large_entries);
    T_RUN(test_errors);
    return t_done();
}
