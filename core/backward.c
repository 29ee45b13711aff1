/* backward.c - exact gradients, FlashAttention-2 style. STUB. */
#include "internal.h"

int fr_exact_backward(const fr_problem *p, const double *q, const double *k, const double *v,
                      const double *dout, const double *target, double *t, double *dq,
                      double *dk, double *dv, double *dw, double *loss, char *err,
                      size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "exact backward: not implemented");
}

int fr_exact_backward_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                           const double *dout, const double *target, const int64_t *rows,
                           int64_t nrows, double *dq, double *dk, double *dv, char *err,
                           size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "exact backward: not implemented");
}
