/* number.c - a double as the shortest decimal that reads back (strtod) to the same double, so
 * that numbers written to JSON (tensors, the reports) compare equal when read again.
 *
 * %.17g always round-trips; fewer digits often do. If p digits round-trip, so do p + 1 (the
 * nearest (p+1)-digit decimal is at least as close as the p-digit one with a 0 appended), so
 * the shortest is found by bisection: a few tries instead of seventeen. */
#include "io_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int round_trips(char *buf, size_t len, int p, double x)
{
    snprintf(buf, len, "%.*g", p, x);
    return strtod(buf, NULL) == x;
}

int fr_format_double(char *buf, size_t len, double x)
{
    char tmp[FR_DOUBLE_BUF];
    if (isnan(x) || isinf(x)) {
        snprintf(tmp, sizeof tmp, "null"); /* JSON has neither; callers decide before */
    } else if (x == 0) {
        /* "-0" would read back as the integer 0 in most JSON readers */
        snprintf(tmp, sizeof tmp, signbit(x) ? "-0.0" : "0");
    } else {
        /* Computed values mostly need 16 or 17 digits: 15 is tried first, and only when it
         * round-trips is a shorter form searched for. */
        int lo = 1, hi = 15;
        if (!round_trips(tmp, sizeof tmp, 15, x))
            lo = hi = round_trips(tmp, sizeof tmp, 16, x) ? 16 : 17;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (round_trips(tmp, sizeof tmp, mid, x))
                hi = mid;
            else
                lo = mid + 1;
        }
        snprintf(tmp, sizeof tmp, "%.*g", lo, x);
    }
    int n = (int)strlen(tmp);
    if (buf && len) snprintf(buf, len, "%s", tmp);
    return n;
}

int io_format_float(char *buf, size_t len, float x)
{
    if (!isfinite(x) || x == 0) return fr_format_double(buf, len, x);
    char tmp[FR_DOUBLE_BUF];
    int p = 1;
    for (; p < 9; p++) { /* %.9g always reads back to the same float */
        snprintf(tmp, sizeof tmp, "%.*g", p, (double)x);
        if (strtof(tmp, NULL) == x) break;
    }
    return snprintf(buf, len, "%.*g", p, (double)x);
}
