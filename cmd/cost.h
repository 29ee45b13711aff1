/* cost.h - the cost model's constants of this machine (cmd/cost.c): `fastrope calibrate`
 * measures them into the cache directory, run, grad, check and bound hand them to the core. */
#ifndef FR_CLI_COST_H
#define FR_CLI_COST_H

#include <stddef.h>

#include "fastrope_planner.h"

/* This CPU's model name ("unknown" when the system does not say). */
void cli_cpu_model(char *buf, size_t len);

/* The cache's cost file: cli_cache_dir()/cost-model. 0 when there is no cache directory. */
int cli_cost_cache_path(char *buf, size_t len);

/* The constants for this command into opt->cost: those of path (--cost FILE), else the cache
 * file's, else none (the built-in ones). A cache file that is broken, or was measured on another
 * CPU or thread count, is ignored with a warning. A --cost file must be a cost file (EXIT_INPUT,
 * having printed why, otherwise); one from another CPU is used, with a warning. An exit code. */
int cli_cost_use(const char *path, fr_options *opt);

/* What cli_cost_use settled on, for the report's plan: "calibrated PATH" or "built-in". */
const char *cli_cost_source(void);

/* Write c, measured on this CPU with threads threads, to path, atomically (a complete temporary
 * file renamed over it; the directories are made). An exit code, having printed why. */
int cli_cost_write(const char *path, const fr_cost_model *c, int threads);

#endif
