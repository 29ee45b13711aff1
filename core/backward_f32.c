/* backward_f32.c - exact gradients in single precision: the engine of backward_impl.h for float,
 * behind fr_execute_backward_f32. Float throughout, as the forward (exact_f32.c) whose row
 * statistics it starts from; the rotations and the loss go through double. */
/* as in exact.c: a * b + c as one fused multiply-add */
#pragma GCC optimize("fp-contract=fast")

#include "internal.h"
#include "tiles.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define REAL float
#define RV fr__vf
#define NV FR_VWF
#define EXPR expf
#define X(name) name##_f32
#define ROTATE_CHUNK(p, x, i0, cnt, out) fr__rotate_rows_f32(p, x, i0, cnt, out)
#define FORWARD_LSE(p, q, k, v, out, lse, pg, err, errlen)                                         \
    fr__exact_rows_lse_f32(p, q, k, v, out, lse, pg, err, errlen)
#include "backward_impl.h"

int fr__exact_backward_f32(const fr_problem *p, const float *q, const float *k, const float *v,
                           const float *dout, const float *target, float *t, float *dq, float *dk,
                           float *dv, float *dw, double *loss, fr__prog *pg, char *err,
                           size_t errlen)
{
    int st = fr_problem_check(p, err, errlen);
    if (!st)
        st =
            backward_check_f32(p, "exact backward", q, k, v, dout, target, dq, dk, dv, err, errlen);
    if (st) return st;
    return backward_f32(p, q, k, v, dout, target, NULL, p->n, t, dq, dk, dv, dw, loss,
                        FR_EXACT_PAR_MIN_SCORES, pg, err, errlen);
}
