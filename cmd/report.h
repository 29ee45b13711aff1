/* report.h - pieces of the JSON report shared by run and grad. */
#ifndef FR_REPORT_H
#define FR_REPORT_H

#include <cJSON.h>

#include "fastrope.h"
#include "fr_io.h"

/* A number in the fewest digits that read back to it, or null where it is not finite (JSON
 * has no Infinity). */
void rep_num(cJSON *obj, const char *key, double x);
/* A whole number, every digit. */
void rep_int(cJSON *obj, const char *key, int64_t x);
/* method, n, d, dv, batch, preset (NULL: none), scale, causal, window, rotation */
cJSON *rep_problem(const fr_problem *p, const char *method, int64_t batch, const char *w_label,
                   const char *preset);
void rep_bounds(cJSON *r, const fr_bounds *b);
/* poly (or null for exact) and plan */
void rep_plan(cJSON *r, const fr_plan_info *info);

#endif
