/* rotation.c - W_delta for every rotation kind: matrices, support S, per-position rotation.
 *
 * Conventions (ALGORITHM.md 1): theta_m = base^(-2m/r); pair m is (2m, 2m+1) ("interleaved") or
 * (m, m + r/2) ("half"); R_p acts on column vectors with the block [[c, -s], [s, c]] at the
 * pair's rows/columns, angle (p / pos_scale) * theta_m; coordinates >= r stay fixed. Scores are
 * s_ij = tau * Q_i W_{j-i} K_j^T with Q_i, K_j row vectors. */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t rotary_dim(const fr_problem *p)
{
    return p->rot.rotary_dim > 0 ? p->rot.rotary_dim : p->d;
}

static int is_rope_kind(const fr_problem *p)
{
    return p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP;
}

/* The batch's counts: kv_batch divides batch, an explicit W is shared or one per problem, and
 * every tensor's size fits. */
static int check_batch(const fr_problem *p, char *err, size_t errlen)
{
    if (p->batch < 0 || p->kv_batch < 0)
        return fr__err(err, errlen, FR_EUSAGE, "batch = %lld and kv_batch = %lld must be >= 0",
                       (long long)p->batch, (long long)p->kv_batch);
    int64_t B = fr__batch(p), KV = fr__kv_batch(p), t;
    if (KV > B || B % KV)
        return fr__err(err, errlen, FR_EINPUT,
                       "kv_batch = %lld does not divide batch = %lld (grouped-query attention: "
                       "each key/value problem serves the same number of query problems)",
                       (long long)KV, (long long)B);
    if (p->rot.kind == FR_ROT_EXPLICIT && p->rot.w_count != 0 && p->rot.w_count != 1 &&
        p->rot.w_count != B)
        return fr__err(err, errlen, FR_EINPUT,
                       "w_count = %lld: an explicit W is shared (1) or one per problem (batch = "
                       "%lld)",
                       (long long)p->rot.w_count, (long long)B);
    int64_t wc = p->rot.kind == FR_ROT_EXPLICIT && p->rot.w_count > 1 ? p->rot.w_count : 1;
    int64_t wide = p->d > p->dv ? p->d : p->dv;
    if (!fr__mul_ok(B, p->n, &t) || !fr__mul_ok(t, wide, &t) || !fr__mul_ok(t, 8, &t) ||
        !fr__mul_ok(wc, 2 * p->n - 1, &t) || !fr__mul_ok(t, p->d * p->d, &t) ||
        !fr__mul_ok(t, 8, &t))
        return fr__err(err, errlen, FR_EINPUT, "batch too large: %lld problems of n = %lld",
                       (long long)B, (long long)p->n);
    return FR_OK;
}

fr_status fr_problem_check(const fr_problem *p, char *err, size_t errlen)
{
    if (p->n < 1)
        return fr__err(err, errlen, FR_EINPUT, "need n >= 1 tokens, got n = %lld", (long long)p->n);
    if (p->d < 1)
        return fr__err(err, errlen, FR_EINPUT, "need a head dimension d >= 1, got d = %lld",
                       (long long)p->d);
    if (p->dv < 1)
        return fr__err(err, errlen, FR_EINPUT, "need a value dimension dv >= 1, got dv = %lld",
                       (long long)p->dv);
    /* Every buffer the core allocates is at most (2n-1) d^2 or n max(d, dv) doubles: make sure
     * those sizes cannot overflow before anyone multiplies them. */
    int64_t t;
    if (!fr__mul_ok(2 * p->n, p->d, &t) || !fr__mul_ok(t, p->d, &t) || !fr__mul_ok(t, 8, &t) ||
        !fr__mul_ok(p->n, p->dv, &t) || !fr__mul_ok(t, 8, &t))
        return fr__err(err, errlen, FR_EINPUT, "problem too large: n = %lld, d = %lld, dv = %lld",
                       (long long)p->n, (long long)p->d, (long long)p->dv);
    if (!isfinite(p->tau) || !(p->tau > 0))
        return fr__err(err, errlen, FR_EUSAGE,
                       "the score scale tau must be finite and positive, got %g", p->tau);
    switch (p->rot.kind) {
    case FR_ROT_NONE: break;
    case FR_ROT_ROPE:
    case FR_ROT_CLIP: {
        const char *what = p->rot.kind == FR_ROT_ROPE ? "RoPE" : "clipped RoPE";
        if (p->rot.rotary_dim < 0)
            return fr__err(err, errlen, FR_EUSAGE,
                           "%s needs a rotary dimension >= 0 (0: all of d), got %lld", what,
                           (long long)p->rot.rotary_dim);
        if (p->rot.rotary_dim > p->d)
            return fr__err(err, errlen, FR_EUSAGE,
                           "%s rotary dimension %lld exceeds the head dimension d = %lld", what,
                           (long long)p->rot.rotary_dim, (long long)p->d);
        if (rotary_dim(p) % 2) {
            if (p->rot.rotary_dim == 0)
                return fr__err(err, errlen, FR_EUSAGE,
                               "%s needs an even head dimension, got d = %lld", what,
                               (long long)p->d);
            return fr__err(err, errlen, FR_EUSAGE, "%s needs an even rotary dimension, got %lld",
                           what, (long long)p->rot.rotary_dim);
        }
        if (!isfinite(p->rot.base) || !(p->rot.base > 0))
            return fr__err(err, errlen, FR_EUSAGE, "%s base must be finite and positive, got %g",
                           what, p->rot.base);
        if (!isfinite(p->rot.pos_scale) || !(p->rot.pos_scale > 0))
            return fr__err(err, errlen, FR_EUSAGE,
                           "%s position scale must be finite and positive, got %g", what,
                           p->rot.pos_scale);
        if (p->rot.kind == FR_ROT_CLIP && p->rot.clip < 0)
            return fr__err(err, errlen, FR_EUSAGE, "clipped RoPE needs clip >= 0, got %lld",
                           (long long)p->rot.clip);
        break;
    }
    case FR_ROT_EXPLICIT:
        /* w == NULL with a support size describes a general W for estimates without data. */
        if (!p->rot.w && p->rot.support_hint <= 0)
            return fr__err(err, errlen, FR_EUSAGE, "an explicit rotation needs the W tensor");
        break;
    default: return fr__err(err, errlen, FR_EUSAGE, "unknown rotation kind %d", (int)p->rot.kind);
    }
    return check_batch(p, err, errlen);
}

/* Pair m's two coordinates under the problem's pair convention. */
static void pair_coords(const fr_problem *p, int64_t r, int64_t m, int64_t *a, int64_t *b)
{
    if (p->rot.pairs == FR_PAIRS_HALF) {
        *a = m;
        *b = m + r / 2;
    } else {
        *a = 2 * m;
        *b = 2 * m + 1;
    }
}

static double theta(const fr_problem *p, int64_t r, int64_t m)
{
    return pow(p->rot.base, -2.0 * (double)m / (double)r);
}

int64_t fr__rope_pairs(const fr_problem *p, int64_t *a, int64_t *b, double *freq)
{
    int64_t r = rotary_dim(p);
    for (int64_t m = 0; m < r / 2; m++) {
        pair_coords(p, r, m, &a[m], &b[m]);
        freq[m] = theta(p, r, m) / p->rot.pos_scale;
    }
    return r / 2;
}

/* R_pos (pos before scaling) as a d x d matrix. */
static void rope_matrix(const fr_problem *p, double pos, double *w)
{
    int64_t d = p->d, r = rotary_dim(p);
    memset(w, 0, (size_t)(d * d) * sizeof *w);
    for (int64_t i = 0; i < d; i++)
        w[i * d + i] = 1;
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a, b;
        pair_coords(p, r, m, &a, &b);
        double ang = pos / p->rot.pos_scale * theta(p, r, m);
        double c = cos(ang), s = sin(ang);
        w[a * d + a] = c;
        w[a * d + b] = -s;
        w[b * d + a] = s;
        w[b * d + b] = c;
    }
}

void fr_rotation_matrix(const fr_problem *p, int64_t delta, double *w)
{
    int64_t d = p->d;
    switch (p->rot.kind) {
    case FR_ROT_ROPE: rope_matrix(p, (double)delta, w); return;
    case FR_ROT_CLIP: {
        int64_t c = p->rot.clip;
        rope_matrix(p, (double)(delta < -c ? -c : delta > c ? c : delta), w);
        return;
    }
    case FR_ROT_EXPLICIT:
        memcpy(w, p->rot.w + (delta + p->n - 1) * d * d, (size_t)(d * d) * sizeof *w);
        return;
    case FR_ROT_NONE:
    default:
        memset(w, 0, (size_t)(d * d) * sizeof *w);
        for (int64_t i = 0; i < d; i++)
            w[i * d + i] = 1;
        return;
    }
}

/* c = a b for d x d row-major matrices (c distinct from a and b). */
static void matmul(int64_t d, const double *a, const double *b, double *c)
{
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = 0; j < d; j++)
            c[i * d + j] = 0;
        for (int64_t k = 0; k < d; k++) {
            double x = a[i * d + k];
            for (int64_t j = 0; j < d; j++)
                c[i * d + j] += x * b[k * d + j];
        }
    }
}

static double max_abs_diff(int64_t cnt, const double *a, const double *b)
{
    double m = 0;
    for (int64_t i = 0; i < cnt; i++) {
        double e = fabs(a[i] - b[i]);
        if (!(e <= m)) m = e; /* NaN counts as a failure */
    }
    return m;
}

/* Every W_delta within tol0 + per_step |delta| of W_1^delta (and W_1 orthogonal as closely). */
static int explicit_is_family(const fr_problem *p, double tol0, double per_step, char *why,
                              size_t whylen)
{
    double tol = tol0;
    int64_t n = p->n, d = p->d, dd = d * d;
    const double *w = p->rot.w;
    const double *w0 = w + (n - 1) * dd;
    double *id = calloc((size_t)dd, sizeof *id), *pw = malloc((size_t)dd * sizeof *pw),
           *tmp = malloc((size_t)dd * sizeof *tmp), *w1t = calloc((size_t)dd, sizeof *w1t);
    int ok = 0;
    if (!id || !pw || !tmp || !w1t) {
        if (why) snprintf(why, whylen, "out of memory checking W");
        goto done;
    }
    for (int64_t i = 0; i < d; i++)
        id[i * d + i] = 1;
    double e = max_abs_diff(dd, w0, id);
    if (!(e <= tol)) {
        if (why) snprintf(why, whylen, "W_0 differs from the identity by %.3g", e);
        goto done;
    }
    if (n == 1) {
        ok = 1;
        goto done;
    }
    /* Orthogonal W_1 have entries of magnitude <= 1, so the absolute tolerance is relative to
     * the norm of the matrices compared. */
    const double *w1 = w0 + dd;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            w1t[i * d + j] = w1[j * d + i];
    matmul(d, w1, w1t, tmp);
    e = max_abs_diff(dd, tmp, id);
    tol = tol0 + per_step;
    if (!(e <= tol)) {
        if (why)
            snprintf(why, whylen, "W_1 is not orthogonal: W_1 W_1^T differs from I by %.3g", e);
        goto done;
    }
    /* Compare with the powers of W_1 (not with W_{delta-1} W_1) so that tolerances cannot add
     * up along the offsets: the factorised path relies on W_delta = W_1^delta itself. */
    for (int sign = 1; sign >= -1; sign -= 2) {
        const double *step = sign > 0 ? w1 : w1t;
        memcpy(pw, step, (size_t)dd * sizeof *pw);
        for (int64_t k = 1; k < n; k++) {
            if (k > 1) {
                matmul(d, pw, step, tmp);
                memcpy(pw, tmp, (size_t)dd * sizeof *pw);
            }
            int64_t delta = sign * k;
            tol = tol0 + per_step * (double)k;
            e = max_abs_diff(dd, w + (delta + n - 1) * dd, pw);
            if (!(e <= tol)) {
                if (why && delta == -1)
                    snprintf(why, whylen, "W_-1 differs from W_1^T by %.3g", e);
                else if (why)
                    snprintf(why, whylen, "W_%lld differs from W_1^%lld by %.3g", (long long)delta,
                             (long long)delta, e);
                goto done;
            }
        }
    }
    ok = 1;
done:
    free(id);
    free(pw);
    free(tmp);
    free(w1t);
    return ok;
}

int fr_rotation_is_rope_family(const fr_problem *p, double tol, char *why, size_t whylen)
{
    if (why && whylen) why[0] = '\0';
    switch (p->rot.kind) {
    case FR_ROT_NONE:
    case FR_ROT_ROPE: return 1;
    case FR_ROT_CLIP:
        /* Offsets never exceed n - 1, so a clip at n - 1 or beyond never bites. */
        if (p->rot.clip >= p->n - 1) return 1;
        if (why)
            snprintf(why, whylen,
                     "clipped RoPE with clip = %lld < n - 1 = %lld is no per-position rotation",
                     (long long)p->rot.clip, (long long)(p->n - 1));
        return 0;
    case FR_ROT_EXPLICIT: return p->rot.w ? explicit_is_family(p, tol, 0, why, whylen) : 0;
    }
    return 0;
}

int fr__rope_family(const fr_problem *p, char *why, size_t whylen)
{
    if (p->rot.kind != FR_ROT_EXPLICIT) return fr_rotation_is_rope_family(p, 0, why, whylen);
    if (why && whylen) why[0] = '\0';
    if (p->rot.family > 0) return 1;
    if (p->rot.family < 0 && !why) return 0;
    if (!p->rot.w) return 0;
    double ulp = FR_FAMILY_ULPS * (double)p->d * DBL_EPSILON;
    return explicit_is_family(p, ulp, ulp, why, whylen);
}

void fr__settle_family(fr_problem *p)
{
    p->rot.family = 0;
    p->rot.family = fr__rope_family(p, NULL, 0) ? 1 : -1;
}

/* The kernel tables of the RoPE kinds without a d x d matrix per offset: one cos and sin per
 * pair and distinct position (2c + 1 of them when clipped), with rope_matrix's arithmetic to
 * the bit. Why: the generic fill took 0.14 s at n = 256K (pow, sincos and a matrix per
 * offset, twice), a third of the polyfft plan before its spectra. */
static void rope_tables(const fr_problem *p, fr__support *s)
{
    int64_t n = p->n, nd = 2 * n - 1, r = rotary_dim(p);
    int64_t c = p->rot.kind == FR_ROT_CLIP ? p->rot.clip : n - 1;
    for (int64_t j = 0; j < s->ns; j++)
        if (s->a[j] == s->b[j]) /* unrotated coordinates; rotated ones are overwritten below */
            for (int64_t t = 0; t < nd; t++)
                s->w[j * nd + t] = 1;
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a, b, slot[4] = {-1, -1, -1, -1}; /* (a,a), (a,b), (b,a), (b,b) */
        pair_coords(p, r, m, &a, &b);
        for (int64_t j = 0; j < s->ns; j++) {
            int64_t x = s->a[j], y = s->b[j];
            if (x == a && y == a) slot[0] = j;
            if (x == a && y == b) slot[1] = j;
            if (x == b && y == a) slot[2] = j;
            if (x == b && y == b) slot[3] = j;
        }
        double th = theta(p, r, m), co = 1, si = 0;
        int64_t prev = INT64_MIN;
        for (int64_t t = 0; t < nd; t++) {
            int64_t delta = t - (n - 1), pos = delta < -c ? -c : delta > c ? c : delta;
            if (pos != prev) { /* clipped offsets repeat the last position's values */
                double ang = (double)pos / p->rot.pos_scale * th;
                co = cos(ang);
                si = sin(ang);
                prev = pos;
            }
            if (slot[0] >= 0) s->w[slot[0] * nd + t] = co;
            if (slot[1] >= 0) s->w[slot[1] * nd + t] = -si;
            if (slot[2] >= 0) s->w[slot[2] * nd + t] = si;
            if (slot[3] >= 0) s->w[slot[3] * nd + t] = co;
        }
    }
}

int fr__support_build(const fr_problem *p, fr__support *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    int64_t n = p->n, d = p->d, nd = 2 * n - 1;
    int rope = p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP;
    s->n = n;
    double *wd = malloc((size_t)(d * d) * sizeof *wd);
    char *in = calloc((size_t)(d * d), 1);
    if (!wd || !in) {
        free(wd);
        free(in);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory building the support of W");
    }
    if (rope) {
        /* The diagonal is cos (1 at delta 0); the sines are not zero at some offset iff they
         * are not at the largest position, |angle| growing with |position|. */
        int64_t far = p->rot.kind == FR_ROT_CLIP && p->rot.clip < n - 1 ? p->rot.clip : n - 1;
        for (int64_t i = 0; i < d; i++)
            in[i * d + i] = 1;
        fr_rotation_matrix(p, far, wd);
        for (int64_t e = 0; e < d * d; e++)
            if (wd[e] != 0) in[e] = 1;
    } else {
        for (int64_t t = 0; t < nd; t++) {
            fr_rotation_matrix(p, t - (n - 1), wd);
            for (int64_t e = 0; e < d * d; e++)
                if (wd[e] != 0) in[e] = 1;
        }
    }
    for (int64_t e = 0; e < d * d; e++)
        s->ns += in[e];
    int64_t cells;
    if (!fr__mul_ok(s->ns, nd, &cells)) cells = -1;
    s->a = malloc((size_t)(s->ns ? s->ns : 1) * sizeof *s->a);
    s->b = malloc((size_t)(s->ns ? s->ns : 1) * sizeof *s->b);
    s->w = cells >= 0 ? malloc((size_t)(cells ? cells : 1) * sizeof *s->w) : NULL;
    if (!s->a || !s->b || !s->w) {
        free(wd);
        free(in);
        fr__support_free(s);
        return fr__err(err, errlen, FR_ENOMEM,
                       "out of memory for the kernel tables of W (|S| = %lld, %lld offsets)",
                       (long long)s->ns, (long long)nd);
    }
    int64_t k = 0;
    for (int64_t e = 0; e < d * d; e++)
        if (in[e]) {
            s->a[k] = (int)(e / d);
            s->b[k] = (int)(e % d);
            k++;
        }
    if (rope)
        rope_tables(p, s);
    else
        for (int64_t t = 0; t < nd; t++) {
            fr_rotation_matrix(p, t - (n - 1), wd);
            for (int64_t j = 0; j < s->ns; j++)
                s->w[j * nd + t] = wd[s->a[j] * d + s->b[j]];
        }
    free(wd);
    free(in);
    return FR_OK;
}

void fr__support_free(fr__support *s)
{
    free(s->a);
    free(s->b);
    free(s->w);
    memset(s, 0, sizeof *s);
}

int fr__rope_table_build(const fr_problem *p, fr__rope_table *t)
{
    memset(t, 0, sizeof *t);
    if (!is_rope_kind(p) || !fr__rope_family(p, NULL, 0)) return 0;
    int64_t n = p->n, np = rotary_dim(p) / 2;
    t->n = n;
    t->np = np;
    t->pa = malloc((size_t)(np ? np : 1) * sizeof *t->pa);
    t->pb = malloc((size_t)(np ? np : 1) * sizeof *t->pb);
    t->cs = malloc((size_t)(n * np * 2 + 1) * sizeof *t->cs);
    if (!t->pa || !t->pb || !t->cs) {
        fr__rope_table_free(t);
        return 0;
    }
    for (int64_t m = 0; m < np; m++) {
        pair_coords(p, 2 * np, m, &t->pa[m], &t->pb[m]);
        double th = theta(p, 2 * np, m);
        for (int64_t i = 0; i < n; i++) { /* fr__rotate_rows's angle, to the bit */
            double ang = (double)i / p->rot.pos_scale * th;
            t->cs[(i * np + m) * 2] = cos(ang);
            t->cs[(i * np + m) * 2 + 1] = sin(ang);
        }
    }
    return 1;
}

void fr__rope_table_free(fr__rope_table *t)
{
    free(t->pa);
    free(t->pb);
    free(t->cs);
    memset(t, 0, sizeof *t);
}

void fr__rope_table_rotate(const fr__rope_table *t, const double *x, int64_t d, int64_t i0,
                           int64_t cnt, double *out)
{
    memcpy(out, x + i0 * d, (size_t)(cnt * d) * sizeof *out);
    for (int64_t i = i0; i < i0 + cnt; i++) {
        const double *cs = t->cs + i * t->np * 2;
        double *o = out + (i - i0) * d;
        for (int64_t m = 0; m < t->np; m++) {
            int64_t a = t->pa[m], b = t->pb[m];
            double c = cs[2 * m], s = cs[2 * m + 1], xa = o[a], xb = o[b];
            o[a] = xa * c - xb * s;
            o[b] = xa * s + xb * c;
        }
    }
}

void fr__rotate_rows(const fr_problem *p, const double *x, int64_t i0, int64_t cnt, double *out)
{
    int64_t d = p->d, n = p->n;
    if (p->rot.kind == FR_ROT_EXPLICIT) {
        /* x_i W_{-i}: then (x_i W_{-i}) . (y_j W_{-j}) = x_i W_1^{-i} W_1^{j} y_j^T. */
        for (int64_t i = i0; i < i0 + cnt; i++) {
            const double *w = p->rot.w + (-i + n - 1) * d * d;
            const double *xi = x + i * d;
            double *o = out + (i - i0) * d;
            for (int64_t b = 0; b < d; b++)
                o[b] = 0;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++)
                    o[b] += xi[a] * w[a * d + b];
        }
        return;
    }
    memcpy(out, x + i0 * d, (size_t)(cnt * d) * sizeof *out);
    if (!is_rope_kind(p)) return;
    int64_t r = rotary_dim(p);
    for (int64_t m = 0; m < r / 2; m++) {
        int64_t a, b;
        pair_coords(p, r, m, &a, &b);
        double th = theta(p, r, m);
        for (int64_t i = i0; i < i0 + cnt; i++) {
            /* The angle is formed from the position directly (no recurrence) so that its error
             * stays at one rounding whatever the position. */
            double ang = (double)i / p->rot.pos_scale * th, c = cos(ang), s = sin(ang);
            double *o = out + (i - i0) * d;
            double xa = o[a], xb = o[b];
            o[a] = xa * c - xb * s;
            o[b] = xa * s + xb * c;
        }
    }
}
