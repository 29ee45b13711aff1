/* polyfft.c - the papers' pipeline with spectral accumulation. STUB. */
#include "internal.h"

int fr__polyfft_create(fr__polyfft **pl, const fr_problem *p, const double *coef, int degree,
                       int literal, char *err, size_t errlen)
{
    *pl = NULL;
    return fr__err(err, errlen, FR_ENOMEM, "polyfft: not implemented");
}
int fr__polyfft_execute(fr__polyfft *pl, const double *q, const double *k, const double *v,
                        double *out, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "polyfft: not implemented");
}
void fr__polyfft_info(const fr__polyfft *pl, fr_plan_info *info) {}
void fr__polyfft_free(fr__polyfft *pl) {}
