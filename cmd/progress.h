/* progress.h - the commands' one progress line on stderr, and their interruption by SIGINT or
 * SIGTERM (progress.c). */
#ifndef FR_PROGRESS_H
#define FR_PROGRESS_H

#include <stdint.h>

/* Catch SIGINT and SIGTERM: the first sets a flag that the core's progress callback turns into
 * a cancellation (the command then removes its staged outputs and exits 130, or 143); the
 * handler is the default again at once, so a second one kills. */
void cli_signals_catch(void);
/* The signal caught (SIGINT, SIGTERM), or 0. */
int cli_interrupted(void);
/* After an interruption: the progress line cleared, "fastrope: interrupted" on stderr; returns
 * the exit code, 128 + the signal. */
int cli_interrupt_exit(void);

/* The progress line: shown on stderr when it is a terminal and quiet is 0, once the run is
 * predicted (cli_progress_expect) or seen (2 s gone) to be long; what names the command. */
void cli_progress_begin(const char *what, int quiet);
/* The cost model's prediction of the run, in seconds: over 2 s, the line shows at once. */
void cli_progress_expect(double seconds);
/* An fr_progress_fn for fr_options.progress (user unused): draws the phase, its percentage and
 * its ETA; returns non-zero once a signal was caught, which cancels the core's call. */
int cli_progress_fn(void *user, const char *phase, double fraction);
/* Outer progress (files of `check`): done of total finished; the core's phases inside the next
 * one fold into the same line. */
void cli_progress_outer(int64_t done, int64_t total, const char *unit);
/* The line erased (before the command's own output on stderr, and at its end). */
void cli_progress_end(void);

#endif
