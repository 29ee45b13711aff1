/* poly.c - the polynomial: Chebyshev interpolant of exp, certified eta, degree choice. STUB. */
#include "internal.h"

#include <math.h>

int fr_poly_fit(double R, int degree, double *coef, double *eta, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "poly: not implemented");
}
double fr_a_priori_bound(double eta, double B_v)
{
    return eta >= 1 ? INFINITY : 2 * eta / (1 - eta) * B_v;
}
int fr_poly_choose_degree(double R, double B_v, double eps, int max_degree, int *degree,
                          double *eta, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ENOMEM, "poly: not implemented");
}
