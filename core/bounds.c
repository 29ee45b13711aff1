/* bounds.c - entry bounds and the score bound R (ALGORITHM.md 2). STUB. */
#include "internal.h"

int fr_bounds_compute(const fr_problem *p, const double *q, const double *k, const double *v,
                      int64_t batch, fr_bounds *out, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "bounds: not implemented");
}
