/* exact.c - the exact reference: online softmax over key blocks. STUB. */
#include "internal.h"

int fr_exact_rows(const fr_problem *p, const double *q, const double *k, const double *v,
                  const int64_t *rows, int64_t nrows, double *out, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "exact: not implemented");
}
