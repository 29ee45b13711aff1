/* fft_fftw.c - the FFTW back ends (double: fftw_, single: fftwf_): plans, execution, wisdom.
 *
 * FFTW's rules, which this file keeps so that the rest of the pipeline need not know them:
 *  - the planner (plan creation and destruction, wisdom import and export) is not thread-safe:
 *    every call into it holds planner_lock. The lock is process-wide because FFTW's planner
 *    state is: two fr_plans made at once in two threads share it.
 *  - execution is thread-safe through the new-array interface (fftw_execute_dft_r2c and
 *    friends): one plan per size and direction, made once outside the threads, run by any
 *    number of threads on their own arrays...
 *  - ...provided those arrays have the alignment the plan was made with (SIMD codelets): the
 *    plans are made on FR__FFT_ALIGN-aligned arrays and every caller passes such arrays
 *    (checked: a misaligned array would make an aligned SIMD load fault).
 *  - plans are out of place; the complex-to-real transform destroys its input (FFTW's default
 *    for c2r, the fast one), which fft.h documents.
 *  - FFTW_MEASURE times candidate algorithms, which costs up to seconds at large sizes, once
 *    per size and process; wisdom remembers the outcome, and the command keeps it in the
 *    machine's cache directory (fr_fft_wisdom_export/import), so that the measuring is paid
 *    once per machine. */
#include "fft_impl.h"
#include "internal.h"

#include <assert.h>
#include <fftw3.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t planner_lock = PTHREAD_MUTEX_INITIALIZER;

/* Sizes below this are planned with FFTW_ESTIMATE: measuring costs more than it can win on a
 * transform of a few microseconds, and the tests plan hundreds of small sizes. */
#define MEASURE_MIN_N 4096

int fr__fftw_plan(fr__fft *f, char *err, size_t errlen)
{
    int64_t n = f->n, nb = n / 2 + 1;
    int dbl = f->b == FR_FFT_FFTW;
    size_t rs = dbl ? sizeof(double) : sizeof(float);
    void *x = fr__fft_alloc((size_t)n * rs), *X = fr__fft_alloc((size_t)nb * 2 * rs);
    if (!x || !X) {
        free(x);
        free(X);
        return fr__err(err, errlen, FR_ENOMEM, "out of memory planning an FFT of length %lld",
                       (long long)n);
    }
    unsigned flags = n >= MEASURE_MIN_N ? FFTW_MEASURE : FFTW_ESTIMATE;
    pthread_mutex_lock(&planner_lock);
    if (dbl) {
        f->fwd = fftw_plan_dft_r2c_1d((int)n, x, X, flags);
        f->inv = fftw_plan_dft_c2r_1d((int)n, X, x, flags);
    } else {
        f->fwd = fftwf_plan_dft_r2c_1d((int)n, x, X, flags);
        f->inv = fftwf_plan_dft_c2r_1d((int)n, X, x, flags);
    }
    pthread_mutex_unlock(&planner_lock);
    free(x);
    free(X);
    if (!f->fwd || !f->inv)
        return fr__err(err, errlen, FR_ENOMEM, "FFTW could not plan a transform of length %lld",
                       (long long)n);
    return FR_OK;
}

void fr__fftw_destroy(fr__fft *f)
{
    pthread_mutex_lock(&planner_lock);
    if (f->b == FR_FFT_FFTW) {
        if (f->fwd) fftw_destroy_plan(f->fwd);
        if (f->inv) fftw_destroy_plan(f->inv);
    } else {
        if (f->fwd) fftwf_destroy_plan(f->fwd);
        if (f->inv) fftwf_destroy_plan(f->inv);
    }
    pthread_mutex_unlock(&planner_lock);
    f->fwd = f->inv = NULL;
}

#define ALIGNED(p) (((uintptr_t)(p) % FR__FFT_ALIGN) == 0)

void fr__fftw_forward_f(const fr__fft *f, const float *x, fr__cpxf *X)
{
    assert(ALIGNED(x) && ALIGNED(X));
    /* Out of place, r2c: x is only read (FFTW_PRESERVE_INPUT is r2c's default). */
    fftwf_execute_dft_r2c(f->fwd, (float *)x, (fftwf_complex *)X);
}

void fr__fftw_forward_d(const fr__fft *f, const double *x, fr__cpxd *X)
{
    assert(ALIGNED(x) && ALIGNED(X));
    fftw_execute_dft_r2c(f->fwd, (double *)x, (fftw_complex *)X);
}

void fr__fftw_inverse_f(const fr__fft *f, fr__cpxf *X, float *x)
{
    assert(ALIGNED(x) && ALIGNED(X));
    fftwf_execute_dft_c2r(f->inv, (fftwf_complex *)X, x);
}

void fr__fftw_inverse_d(const fr__fft *f, fr__cpxd *X, double *x)
{
    assert(ALIGNED(x) && ALIGNED(X));
    fftw_execute_dft_c2r(f->inv, (fftw_complex *)X, x);
}

/* ---- wisdom ---------------------------------------------------------------------------------
 * The text is the double planner's wisdom followed by the single one's, each as FFTW prints it:
 * one parenthesised block per precision. */

/* Import one top-level block [s, s + len): whichever planner it belongs to accepts it (FFTW
 * checks the header and rejects the other's, changing nothing); 1 when one did. */
static int import_block(const char *s, size_t len)
{
    char *b = malloc(len + 1);
    if (!b) return 0;
    memcpy(b, s, len);
    b[len] = '\0';
    int ok = fftw_import_wisdom_from_string(b) || fftwf_import_wisdom_from_string(b);
    free(b);
    return ok;
}

fr_status fr_fft_wisdom_import(const char *w)
{
    int bad = 0, blocks = 0;
    pthread_mutex_lock(&planner_lock);
    for (const char *s = w; *s;) {
        while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
            s++;
        if (!*s) break;
        if (*s != '(') {
            bad = 1;
            break;
        }
        /* The block ends where its parentheses balance. */
        const char *e = s;
        int depth = 0;
        do {
            depth += *e == '(' ? 1 : *e == ')' ? -1 : 0;
            e++;
        } while (*e && depth > 0);
        if (depth > 0 || !import_block(s, (size_t)(e - s))) {
            bad = 1;
            break;
        }
        blocks++;
        s = e;
    }
    pthread_mutex_unlock(&planner_lock);
    return bad || !blocks ? FR_EINPUT : FR_OK;
}

char *fr_fft_wisdom_export(void)
{
    pthread_mutex_lock(&planner_lock);
    char *d = fftw_export_wisdom_to_string(), *f = fftwf_export_wisdom_to_string();
    pthread_mutex_unlock(&planner_lock);
    char *out = NULL;
    if (d && f) {
        size_t ld = strlen(d), lf = strlen(f);
        if ((out = malloc(ld + lf + 1))) {
            memcpy(out, d, ld);
            memcpy(out + ld, f, lf + 1);
        }
    }
    fftw_free(d);
    fftwf_free(f);
    return out;
}
