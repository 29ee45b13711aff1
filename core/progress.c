/* progress.c - progress and cancellation inside one call: fr_options.progress called from one
 * thread at a bounded rate, and a flag the other threads of a parallel region poll.
 *
 * Why a clock read only every so many steps: the steps are the engines' blocks, which range
 * from microseconds (a row block at n = 1024) to tens of milliseconds (a polyfft degree); the
 * number of steps between reads adapts so that one read falls every 1-10 ms of work, which
 * costs nothing next to the work and bounds how late a cancellation is noticed. */
#include "internal.h"

#include <string.h>
#include <time.h>

#define REPORT_EVERY 0.2 /* seconds between two calls of the callback: five a second at most */
#define CHECK_LO 1e-3    /* clock reads further apart than this ... */
#define CHECK_HI 1e-2    /* ... and closer than this */
#define EVERY_MAX (1 << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fr__prog_start(fr__prog *pg, fr_progress_fn fn, void *user, const char *phase)
{
    memset(pg, 0, sizeof *pg);
    pg->fn = fn;
    pg->user = user;
    pg->phase = phase;
    pg->span = 1;
    pg->every = pg->left = 1;
    pg->last = now();
    pg->next = pg->last + REPORT_EVERY;
    /* The phase's start is always reported: a caller that wants to stop is heard before any
     * work, and a display learns the phase. */
    return fr__prog_report(pg, 0);
}

int fr__prog_report(fr__prog *pg, double f)
{
    if (!pg || !pg->fn) return 0;
    if (pg->cancel) return 1;
    f = f < 0 ? 0 : f > 1 ? 1 : f;
    if (pg->fn(pg->user, pg->phase, pg->lo + pg->span * f)) {
#pragma omp atomic write
        pg->cancel = 1;
    }
    return pg->cancel;
}

int fr__prog_step(fr__prog *pg, double f)
{
    if (!pg || !pg->fn) return 0;
    if (--pg->left > 0) return pg->cancel;
    double t = now(), dt = t - pg->last;
    pg->last = t;
    if (dt < CHECK_LO && pg->every < EVERY_MAX)
        pg->every *= 2;
    else if (dt > CHECK_HI && pg->every > 1)
        pg->every /= 2;
    pg->left = pg->every;
    if (t < pg->next) return pg->cancel;
    pg->next = t + REPORT_EVERY;
    return fr__prog_report(pg, f);
}

int fr__prog_canceled(const fr__prog *pg)
{
    int c = 0;
    if (pg) {
#pragma omp atomic read
        c = pg->cancel;
    }
    return c;
}

fr__prog_range fr__prog_narrow(fr__prog *pg, double a, double b)
{
    fr__prog_range r = {0, 1};
    if (!pg) return r;
    r.lo = pg->lo, r.span = pg->span;
    pg->lo = r.lo + r.span * a;
    pg->span = r.span * (b - a);
    return r;
}

void fr__prog_restore(fr__prog *pg, fr__prog_range r)
{
    if (pg) pg->lo = r.lo, pg->span = r.span;
}

int fr__prog_err(const fr__prog *pg, char *err, size_t errlen)
{
    return fr__err(err, errlen, FR_ECANCELED, "%s canceled", pg && pg->phase ? pg->phase : "run");
}
