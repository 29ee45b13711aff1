/* polyrope.c - the factorised path for the RoPE family (ALGORITHM.md 6). STUB. */
#include "internal.h"

int fr__polyrope_create(fr__polyrope **pl, const fr_problem *p, const double *coef, int degree,
                        char *err, size_t errlen)
{
    *pl = NULL;
    return fr__err(err, errlen, FR_ENOMEM, "polyrope: not implemented");
}
int fr__polyrope_execute(fr__polyrope *pl, const double *q, const double *k, const double *v,
                         double *out, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "polyrope: not implemented");
}
void fr__polyrope_info(const fr__polyrope *pl, fr_plan_info *info) {}
void fr__polyrope_free(fr__polyrope *pl) {}
