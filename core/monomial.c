/* monomial.c - enumerating the multinomial expansion (ALGORITHM.md 4) and deduplicating its
 * monomials (ALGORITHM.md 5). */
#include "monomial.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Kernel functions whose normalised tables differ by less than this are one function. The
 * tables are computed in double from the same cos/sin, so genuine copies agree to ~1e-16. */
#define SAME_FUNCTION_TOL 1e-12

/* ---- a set of exponent vectors, numbered in order of insertion ------------------------------ */

typedef struct {
    int len;
    int64_t count, cap;  /* vectors stored */
    unsigned char *keys; /* cap x len */
    int64_t *slots;      /* open addressing, -1 empty */
    int64_t nslots;      /* power of two */
} vecset;

static int vecset_init(vecset *s, int len, int64_t expected)
{
    memset(s, 0, sizeof *s);
    s->len = len > 0 ? len : 1;
    s->nslots = 64;
    while (s->nslots < 2 * expected)
        s->nslots *= 2;
    s->cap = 16;
    s->keys = malloc((size_t)(s->cap * s->len));
    s->slots = malloc((size_t)s->nslots * sizeof *s->slots);
    if (!s->keys || !s->slots) return 0;
    for (int64_t i = 0; i < s->nslots; i++)
        s->slots[i] = -1;
    return 1;
}

static uint64_t hash_bytes(const unsigned char *k, int len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (int i = 0; i < len; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    return h;
}

static int vecset_grow(vecset *s)
{
    int64_t ns = s->nslots * 2;
    int64_t *sl = malloc((size_t)ns * sizeof *sl);
    if (!sl) return 0;
    for (int64_t i = 0; i < ns; i++)
        sl[i] = -1;
    for (int64_t id = 0; id < s->count; id++) {
        uint64_t h = hash_bytes(s->keys + id * s->len, s->len) & (uint64_t)(ns - 1);
        while (sl[h] >= 0)
            h = (h + 1) & (uint64_t)(ns - 1);
        sl[h] = id;
    }
    free(s->slots);
    s->slots = sl;
    s->nslots = ns;
    return 1;
}

/* Index of key (inserted if new), or -1 when out of memory. */
static int64_t vecset_get(vecset *s, const unsigned char *key)
{
    if (2 * (s->count + 1) > s->nslots && !vecset_grow(s)) return -1;
    uint64_t mask = (uint64_t)(s->nslots - 1), h = hash_bytes(key, s->len) & mask;
    while (s->slots[h] >= 0) {
        if (memcmp(s->keys + s->slots[h] * s->len, key, (size_t)s->len) == 0) return s->slots[h];
        h = (h + 1) & mask;
    }
    if (s->count == s->cap) {
        unsigned char *k = realloc(s->keys, (size_t)(2 * s->cap * s->len));
        if (!k) return -1;
        s->keys = k;
        s->cap *= 2;
    }
    memcpy(s->keys + s->count * s->len, key, (size_t)s->len);
    s->slots[h] = s->count;
    return s->count++;
}

static void vecset_free(vecset *s)
{
    free(s->keys);
    free(s->slots);
}

/* ---- kernel functions ------------------------------------------------------------------------ */

/* Per support entry s: the function kf[s] it is a multiple of (-1: constant, -2: zero) and the
 * factor lam[s], w_s = lam[s] * f_kf[s] (or lam[s] alone when constant). Works on the numbers
 * only, so RoPE's cos/sin/-sin merge without the code knowing about RoPE. */
static int group_kernels(const fr__support *S, int *kf, double *lam, fr__monomials *m)
{
    int64_t L = 2 * S->n - 1;
    m->nk = 0;
    m->ftab = malloc((size_t)(S->ns * L + 1) * sizeof *m->ftab);
    double *g = malloc((size_t)L * sizeof *g);
    if (!m->ftab || !g) {
        free(g);
        return 0;
    }
    for (int64_t s = 0; s < S->ns; s++) {
        const double *w = S->w + s * L;
        int64_t piv = 0;
        for (int64_t t = 1; t < L; t++)
            if (fabs(w[t]) > fabs(w[piv])) piv = t;
        if (w[piv] == 0) {
            kf[s] = -2;
            lam[s] = 0;
            continue;
        }
        lam[s] = w[piv];
        int constant = 1;
        for (int64_t t = 0; t < L; t++) {
            g[t] = w[t] / lam[s];
            if (fabs(g[t] - 1) > SAME_FUNCTION_TOL) constant = 0;
        }
        if (constant) {
            kf[s] = -1;
            continue;
        }
        kf[s] = -3;
        for (int k = 0; k < m->nk && kf[s] == -3; k++) {
            const double *f = m->ftab + k * L;
            int64_t t = 0;
            while (t < L && fabs(f[t] - g[t]) <= SAME_FUNCTION_TOL)
                t++;
            if (t == L) kf[s] = k;
        }
        if (kf[s] == -3) {
            memcpy(m->ftab + m->nk * L, g, (size_t)L * sizeof *g);
            kf[s] = m->nk++;
        }
    }
    free(g);
    return 1;
}

/* ---- enumeration ------------------------------------------------------------------------------
 */

typedef struct {
    int32_t u, v, c;
    double coef;
} term;

static int term_cmp(const void *x, const void *y)
{
    const term *a = x, *b = y;
    if (a->u != b->u) return a->u < b->u ? -1 : 1;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    if (a->c != b->c) return a->c < b->c ? -1 : 1;
    return 0;
}

typedef struct {
    const fr__support *S;
    const int *kf;
    const double *lam;
    int ns, k;
    double ck_tau; /* c_k tau^k k! */
    int *alpha;
    vecset *us, *vs, *cs;
    term *terms;
    int64_t nterms;
    int failed;
    unsigned char *ue, *ve, *ce;
} enum_ctx;

static void emit(enum_ctx *e)
{
    int d = e->us->len;
    memset(e->ue, 0, (size_t)d);
    memset(e->ve, 0, (size_t)d);
    memset(e->ce, 0, (size_t)e->cs->len);
    double coef = e->ck_tau;
    for (int s = 0; s < e->ns; s++) {
        int a = e->alpha[s];
        if (!a) continue;
        if (e->kf[s] == -2) return; /* a zero kernel function: the term vanishes */
        e->ue[e->S->a[s]] += (unsigned char)a;
        e->ve[e->S->b[s]] += (unsigned char)a;
        if (e->kf[s] >= 0) e->ce[e->kf[s]] += (unsigned char)a;
        for (int t = 1; t <= a; t++)
            coef *= e->lam[s] / t; /* lam^a / a! */
    }
    term t;
    t.u = (int32_t)vecset_get(e->us, e->ue);
    t.v = (int32_t)vecset_get(e->vs, e->ve);
    t.c = (int32_t)vecset_get(e->cs, e->ce);
    if (t.u < 0 || t.v < 0 || t.c < 0) {
        e->failed = 1;
        return;
    }
    t.coef = coef;
    e->terms[e->nterms++] = t;
}

/* All alpha with alpha_s for s >= pos summing to left. */
static void rec(enum_ctx *e, int pos, int left)
{
    if (e->failed) return;
    if (pos == e->ns - 1) {
        e->alpha[pos] = left;
        emit(e);
        return;
    }
    for (int a = left; a >= 0; a--) {
        e->alpha[pos] = a;
        rec(e, pos + 1, left - a);
    }
}

int fr__monomials_build(const fr__support *S, const double *coef, int degree, double tau,
                        fr__monomials *m, char *err, size_t errlen)
{
    return fr__monomials_build_dim(S, 0, coef, degree, tau, m, err, errlen);
}

int fr__monomials_build_dim(const fr__support *S, int dim, const double *coef, int degree,
                            double tau, fr__monomials *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    int ns = (int)S->ns, g = degree;
    int d = dim > 0 ? dim : 0;
    for (int s = 0; s < ns; s++)
        d = S->a[s] + 1 > d ? S->a[s] + 1 : d;
    for (int s = 0; s < ns; s++)
        d = S->b[s] + 1 > d ? S->b[s] + 1 : d;
    if (d == 0) d = 1;
    m->d = d;
    m->degree = g;
    m->n = S->n;
    int64_t total = ns ? fr__binom(g + ns, ns) : 1;
    if (g > 255 || total > FR_MONOMIALS_MAX_ALPHAS)
        return fr__err(err, errlen, FR_EUSAGE,
                       "degree %d over a support of %d entries gives %lld terms (limit %d)", g, ns,
                       (long long)total, FR_MONOMIALS_MAX_ALPHAS);
    int *kf = malloc((size_t)(ns + 1) * sizeof *kf);
    double *lam = malloc((size_t)(ns + 1) * sizeof *lam);
    int *alpha = malloc((size_t)(ns + 1) * sizeof *alpha);
    term *terms = malloc((size_t)total * sizeof *terms);
    vecset us = {0}, vs = {0}, cs = {0};
    int ok = kf && lam && alpha && terms && group_kernels(S, kf, lam, m);
    ok = ok && vecset_init(&us, d, 64) && vecset_init(&vs, d, 64);
    ok = ok && vecset_init(&cs, m->nk, 64);
    unsigned char *ue = malloc((size_t)d), *ve = malloc((size_t)d),
                  *ce = malloc((size_t)(m->nk + 1));
    m->u_first = calloc((size_t)g + 2, sizeof *m->u_first);
    m->v_first = calloc((size_t)g + 2, sizeof *m->v_first);
    m->a_first = calloc((size_t)g + 2, sizeof *m->a_first);
    ok = ok && ue && ve && ce && m->u_first && m->v_first && m->a_first;

    enum_ctx e = {S, kf, lam, ns, 0, 0, alpha, &us, &vs, &cs, terms, 0, 0, ue, ve, ce};
    double tk = 1, kfact = 1;
    for (int k = 0; ok && k <= g; k++) {
        if (k) {
            tk *= tau;
            kfact *= k;
        }
        int64_t t0 = e.nterms;
        m->u_first[k] = us.count;
        m->v_first[k] = vs.count;
        m->a_first[k] = t0;
        e.k = k;
        e.ck_tau = coef[k] * tk * kfact;
        if (ns == 0 || coef[k] == 0) {
            if (k == 0) { /* the constant term alone */
                memset(ue, 0, (size_t)d);
                memset(ve, 0, (size_t)d);
                memset(ce, 0, (size_t)m->nk + 1);
                term t = {(int32_t)vecset_get(&us, ue), (int32_t)vecset_get(&vs, ve),
                          (int32_t)vecset_get(&cs, ce), e.ck_tau};
                terms[e.nterms++] = t;
            }
        } else {
            rec(&e, 0, k);
        }
        if (e.failed) ok = 0;
        /* u, v of degree k are new at degree k, so numbering by first appearance is by degree. */
        qsort(terms + t0, (size_t)(e.nterms - t0), sizeof *terms, term_cmp);
    }
    if (ok) {
        m->u_first[g + 1] = us.count;
        m->v_first[g + 1] = vs.count;
        m->a_first[g + 1] = e.nterms;
        m->nalpha = e.nterms;
        m->nu = us.count;
        m->nv = vs.count;
        m->nc = cs.count;
        /* Pairs: runs of equal (u, v) in the sorted terms. */
        int64_t np = 0;
        for (int64_t t = 0; t < e.nterms; t++)
            if (t == 0 || terms[t].u != terms[t - 1].u || terms[t].v != terms[t - 1].v) np++;
        m->npairs = np;
        m->a_u = malloc((size_t)(e.nterms + 1) * sizeof *m->a_u);
        m->a_v = malloc((size_t)(e.nterms + 1) * sizeof *m->a_v);
        m->a_c = malloc((size_t)(e.nterms + 1) * sizeof *m->a_c);
        m->a_coef = malloc((size_t)(e.nterms + 1) * sizeof *m->a_coef);
        m->p_u = malloc((size_t)(np + 1) * sizeof *m->p_u);
        m->p_v = malloc((size_t)(np + 1) * sizeof *m->p_v);
        m->p_first = malloc((size_t)(np + 1) * sizeof *m->p_first);
        m->u_pair = malloc((size_t)(m->nu + 1) * sizeof *m->u_pair);
        m->c_deg = calloc((size_t)m->nc + 1, sizeof *m->c_deg);
        m->u_exp = malloc((size_t)(m->nu * d + 1));
        m->v_exp = malloc((size_t)(m->nv * d + 1));
        m->c_exp = malloc((size_t)(m->nc * m->nk + 1));
        ok = m->a_u && m->a_v && m->a_c && m->a_coef && m->p_u && m->p_v && m->p_first &&
             m->u_pair && m->c_deg && m->u_exp && m->v_exp && m->c_exp;
    }
    if (ok) {
        memcpy(m->u_exp, us.keys, (size_t)(m->nu * d));
        memcpy(m->v_exp, vs.keys, (size_t)(m->nv * d));
        if (m->nk) memcpy(m->c_exp, cs.keys, (size_t)(m->nc * m->nk));
        for (int64_t c = 0; c < m->nc; c++)
            for (int k = 0; k < m->nk; k++)
                m->c_deg[c] += m->c_exp[c * m->nk + k];
        int64_t q = -1;
        for (int64_t u = 0; u <= m->nu; u++)
            m->u_pair[u] = -1;
        for (int64_t t = 0; t < e.nterms; t++) {
            m->a_u[t] = terms[t].u;
            m->a_v[t] = terms[t].v;
            m->a_c[t] = terms[t].c;
            m->a_coef[t] = terms[t].coef;
            if (t == 0 || terms[t].u != terms[t - 1].u || terms[t].v != terms[t - 1].v) {
                q++;
                m->p_u[q] = terms[t].u;
                m->p_v[q] = terms[t].v;
                m->p_first[q] = t;
                if (m->u_pair[terms[t].u] < 0) m->u_pair[terms[t].u] = q;
            }
        }
        m->p_first[m->npairs] = e.nterms;
        m->u_pair[m->nu] = m->npairs;
        /* every u has at least one pair (it was created by a term), so no -1 remains */
    }
    vecset_free(&us);
    vecset_free(&vs);
    vecset_free(&cs);
    free(kf);
    free(lam);
    free(alpha);
    free(terms);
    free(ue);
    free(ve);
    free(ce);
    if (!ok) {
        fr__monomials_free(m);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory enumerating %lld terms",
                       (long long)total);
    }
    return FR_OK;
}

void fr__monomials_free(fr__monomials *m)
{
    free(m->ftab);
    free(m->u_exp);
    free(m->v_exp);
    free(m->c_exp);
    free(m->u_first);
    free(m->v_first);
    free(m->c_deg);
    free(m->a_u);
    free(m->a_v);
    free(m->a_c);
    free(m->a_coef);
    free(m->a_first);
    free(m->p_u);
    free(m->p_v);
    free(m->p_first);
    free(m->u_pair);
    memset(m, 0, sizeof *m);
}

void fr__polyfft_counts(const fr_problem *p, int g, int64_t support, int64_t *alphas, int64_t *u,
                        int64_t *c)
{
    int64_t d = p->d, r = p->rot.rotary_dim > 0 ? p->rot.rotary_dim : d;
    *alphas = fr__binom(g + support, support);
    *u = fr__binom(g + d, d);
    if (*u > *alphas) *u = *alphas;
    int rotating =
        p->n > 1 && (p->rot.kind == FR_ROT_ROPE || (p->rot.kind == FR_ROT_CLIP && p->rot.clip > 0));
    if (p->rot.kind == FR_ROT_EXPLICIT)
        *c = *alphas;
    else
        *c = rotating ? fr__binom(g + r, r) : 1;
}
