/* exact_f32.c - the exact attention in single precision: the engine of exact_impl.h for float.
 *
 * Float inputs are read as they are (never widened to a double copy), and the tiles, the
 * products, expf and the sums are all float: twice the lanes per vector and half the memory
 * traffic of the double engine. Only what is O(n d) and sets up the data works in double: the
 * rotation of each row by its position (angles, sin and cos in double, rounded once to float)
 * and the score bounds. Accuracy against the double reference: about 1e-6 relative
 * (exact_f32_test holds it to 1e-5). */
/* as in exact.c: a * b + c as one fused multiply-add */
#pragma GCC optimize("fp-contract=fast")

#include "internal.h"
#include "tiles.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void fr__rotate_rows_f32(const fr_problem *p, const float *x, int64_t i0, int64_t cnt, float *out)
{
    int64_t d = p->d, n = p->n;
    double *row = malloc((size_t)(2 * d) * sizeof *row), *rot = row + d;
    double *freq = malloc((size_t)(d / 2 + 1) * sizeof *freq);
    int64_t *pa = malloc((size_t)(d / 2 + 1) * sizeof *pa);
    int64_t *pb = malloc((size_t)(d / 2 + 1) * sizeof *pb);
    if (!row || !freq || !pa || !pb) {
        /* cannot happen in practice (a few d-sized buffers); leave a state the caller can see:
         * NaN rows fail loudly in every test rather than looking plausible */
        for (int64_t e = 0; e < cnt * d; e++)
            out[e] = NAN;
        goto done;
    }
    int rope = p->rot.kind == FR_ROT_ROPE || p->rot.kind == FR_ROT_CLIP;
    int64_t np = rope ? fr__rope_pairs(p, pa, pb, freq) : 0;
    for (int64_t i = i0; i < i0 + cnt; i++) {
        for (int64_t a = 0; a < d; a++)
            row[a] = x[i * d + a];
        if (p->rot.kind == FR_ROT_EXPLICIT) {
            /* x_i W_{-i}, as fr__rotate_rows */
            const double *w = p->rot.w + (-i + n - 1) * d * d;
            for (int64_t b = 0; b < d; b++)
                rot[b] = 0;
            for (int64_t a = 0; a < d; a++)
                for (int64_t b = 0; b < d; b++)
                    rot[b] += row[a] * w[a * d + b];
            memcpy(row, rot, (size_t)d * sizeof *row);
        }
        for (int64_t m = 0; m < np; m++) {
            double ang = (double)i * freq[m], c = cos(ang), s = sin(ang);
            double xa = row[pa[m]], xb = row[pb[m]];
            row[pa[m]] = xa * c - xb * s;
            row[pb[m]] = xa * s + xb * c;
        }
        for (int64_t a = 0; a < d; a++)
            out[(i - i0) * d + a] = (float)row[a];
    }
done:
    free(row);
    free(freq);
    free(pa);
    free(pb);
}

#define REAL float
#define RV fr__vf
#define NV FR_VWF
#define EXPR expf
/* exp(-80) ~ 1.8e-35: inside float's normal range (1.2e-38), whatever the block's sums. */
#define SHIFT_MAX 80.0f
#define X(name) name##_f32
#define ROTATE_CHUNK(p, x, i0, cnt, out) fr__rotate_rows_f32(p, x, i0, cnt, out)
#include "exact_impl.h"

int fr__exact_rows_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                       const int64_t *rows, int64_t nrows, float *out, fr__prog *pg, char *err,
                       size_t errlen)
{
    return exact_rows_f32(p, q, k, v, rows, nrows, out, NULL, pg, err, errlen);
}

int fr__exact_rows_lse_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                           float *out, float *lse, fr__prog *pg, char *err, size_t errlen)
{
    return exact_rows_f32(p, q, k, v, NULL, p->n, out, lse, pg, err, errlen);
}
