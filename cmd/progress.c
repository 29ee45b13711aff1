/* progress.c - one progress line on stderr and a clean stop on SIGINT and SIGTERM.
 *
 * The signal handler only records the signal (a volatile sig_atomic_t): the core's progress
 * callback, called a few times a second from one thread, answers with a cancellation, the core
 * returns FR_ECANCELED having freed everything, and the command removes its staged outputs
 * (they live under temporary names until the commit) and exits 128 + signal. The handler is
 * installed with SA_RESETHAND: a second signal finds the default action and kills at once, and
 * still no partial file carries an output's name. */
#include "progress.h"

#include "cli.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t caught;

static void on_signal(int sig)
{
    caught = sig;
}

/* A signal the command was started with ignored (a shell's background job, nohup) stays
 * ignored: Ctrl-C at the terminal is not meant for it. */
static void catch_one(int sig)
{
    struct sigaction sa, old;
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN) return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

void cli_signals_catch(void)
{
    catch_one(SIGINT);
    catch_one(SIGTERM);
}

int cli_interrupted(void)
{
    return caught;
}

int cli_interrupt_exit(void)
{
    cli_progress_end();
    fputs("fastrope: interrupted\n", stderr);
    return 128 + caught;
}

/* ---- the line --------------------------------------------------------------------------------
 */

#define SHOW_AFTER 2.0 /* seconds: a run predicted or seen to be longer shows the line */
#define REDRAW 0.1     /* seconds between two drawings */

static struct {
    int enabled, shown, width;
    double t0, expect, drawn;
    char what[16], phase[32];
    double phase_t0, last; /* when the current phase started; its last fraction */
    int64_t done, total;   /* outer progress */
    char unit[16];
} line;

void cli_progress_begin(const char *what, int quiet)
{
    memset(&line, 0, sizeof line);
    line.enabled = !quiet && isatty(2);
    line.t0 = cli_now();
    snprintf(line.what, sizeof line.what, "%s", what);
}

void cli_progress_expect(double seconds)
{
    line.expect = seconds;
}

static void draw(double fraction, int force)
{
    double t = cli_now();
    if (!line.enabled) return;
    if (!line.shown && line.expect <= SHOW_AFTER && t - line.t0 < SHOW_AFTER) return;
    if (!force && line.shown && t - line.drawn < REDRAW) return;
    char buf[200], outer[80] = "", eta[32] = "";
    if (line.total > 1)
        snprintf(outer, sizeof outer, "%s %lld/%lld, ", line.unit, (long long)line.done + 1,
                 (long long)line.total);
    double spent = t - line.phase_t0;
    if (fraction > 0.01 && fraction < 1) {
        double left = spent * (1 - fraction) / fraction;
        if (left < 60)
            snprintf(eta, sizeof eta, ", ETA %.0f s", ceil(left));
        else
            snprintf(eta, sizeof eta, ", ETA %.0f min", ceil(left / 60));
    }
    int len = snprintf(buf, sizeof buf, "fastrope %s: %s%s %3.0f%%%s", line.what, outer,
                       line.phase[0] ? line.phase : "working", floor(100 * fraction), eta);
    if (len > (int)sizeof buf - 1) len = (int)sizeof buf - 1;
    /* the rest of a longer earlier line blanked */
    fprintf(stderr, "\r%s%*s", buf, line.width > len ? line.width - len : 0, "");
    fflush(stderr);
    line.width = len;
    line.shown = 1;
    line.drawn = t;
}

int cli_progress_fn(void *user, const char *phase, double fraction)
{
    (void)user;
    if (strcmp(phase, line.phase) != 0 || fraction < line.last) {
        snprintf(line.phase, sizeof line.phase, "%s", phase);
        line.phase_t0 = cli_now();
    }
    line.last = fraction;
    if (!caught) draw(fraction, 0);
    return caught != 0;
}

void cli_progress_outer(int64_t done, int64_t total, const char *unit)
{
    line.done = done;
    line.total = total;
    snprintf(line.unit, sizeof line.unit, "%s", unit);
    if (done == 0 || line.phase_t0 == 0) line.phase_t0 = cli_now();
    line.phase[0] = 0;
    /* between the units, the outer count is the progress */
    if (!caught && total > 1) {
        line.phase_t0 = line.t0;
        draw((double)done / (double)total, done == total);
    }
    if (done == total) cli_progress_end();
}

void cli_progress_end(void)
{
    if (line.shown) fprintf(stderr, "\r%*s\r", line.width, "");
    fflush(stderr);
    line.shown = 0;
    line.width = 0;
}
