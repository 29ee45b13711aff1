/* polyrope_grad.c - backward of the factorised RoPE path. STUB. */
#include "internal.h"

int fr__polyrope_backward(fr__polyrope *pl, const double *q, const double *k, const double *v,
                          const double *dout, const double *target, double *t, double *dq,
                          double *dk, double *dv, double *loss, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_EUSAGE, "polyrope backward: not implemented yet");
}
