/* polyfft_grad.c - backward of the polyfft pipeline (ALGORITHM.md 7). STUB. */
#include "internal.h"

int fr__polyfft_backward(fr__polyfft *pl, const double *q, const double *k, const double *v,
                         const double *dout, const double *target, double *t, double *dq,
                         double *dk, double *dv, double *dw, double *loss, char *err,
                         size_t errlen)
{
    return fr__err(err, errlen, FR_EUSAGE, "polyfft backward: not implemented yet");
}
