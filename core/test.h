/* test.h - the small harness every C test uses.
 *
 *   static void test_something(void) { T_CHECK(x == 1, "x is %d", x); }
 *   int main(void) { T_RUN(test_something); return t_done(); }
 *
 * Each test prints "ok NAME" or "FAIL NAME" (with the failed checks above it);
 * scripts/runtests.sh counts those lines across all test programs. A program that dies before
 * t_done() is counted as a failure by the runner, so a crash cannot pass for a success. */
#ifndef FR_TEST_H
#define FR_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int t_passed, t_failed, t_cur_failed;

#define T_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("#   %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                    \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            t_cur_failed = 1;                                                                      \
        }                                                                                          \
    } while (0)

/* Like T_CHECK, but stops the test: for checks the rest of the test depends on. */
#define T_REQUIRE(cond, ...)                                                                       \
    do {                                                                                           \
        T_CHECK(cond, __VA_ARGS__);                                                                \
        if (t_cur_failed) return;                                                                  \
    } while (0)

#define T_RUN(fn) t_run(#fn, fn)

static void t_run(const char *name, void (*fn)(void))
{
    t_cur_failed = 0;
    fn();
    if (t_cur_failed) {
        t_failed++;
        printf("FAIL %s\n", name);
    } else {
        t_passed++;
        printf("ok %s\n", name);
    }
    fflush(stdout);
}

static int t_done(void)
{
    printf("# %d passed, %d failed\n", t_passed, t_failed);
    return t_failed ? 1 : 0;
}

/* Deterministic uniform numbers in [-1, 1) for test inputs (xorshift64*). */
static __attribute__((unused)) double t_rand(unsigned long long *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ULL) >> 11) / 4503599627370496.0 - 1.0;
}

#endif
