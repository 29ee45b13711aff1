/* rotation.c - W_delta for every rotation kind: matrices, support S, per-position rotation.
 * STUB: owned by the exact-engine work. */
#include "internal.h"

int fr_problem_check(const fr_problem *p, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "fr_problem_check: not implemented");
}
void fr_rotation_matrix(const fr_problem *p, int64_t delta, double *w) {}
int fr_rotation_is_rope_family(const fr_problem *p, double tol, const char **why) { return 0; }
int fr__support_build(const fr_problem *p, fr__support *s, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "support: not implemented");
}
void fr__support_free(fr__support *s) {}
void fr__rotate_rows(const fr_problem *p, const double *x, int64_t i0, int64_t cnt, double *out) {}
