/* fft.c - the FFT layer's dispatcher: back-end properties, transform sizes, aligned memory, and
 * the plan that routes each transform to KissFFT (core/fft_kiss.c) or FFTW (core/fft_fftw.c). */
#include "fft_impl.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const fft_names[FR_NFFTS] = {"auto", "kissfft", "fftw", "fftw-float"};

const char *fr_fft_name(fr_fft_backend b)
{
    return (b >= 0 && b < FR_NFFTS) ? fft_names[b] : "?";
}

fr_status fr_fft_parse(const char *s, fr_fft_backend *b)
{
    for (int i = 0; i < FR_NFFTS; i++)
        if (strcmp(s, fft_names[i]) == 0) {
            *b = (fr_fft_backend)i;
            return FR_OK;
        }
    return FR_EUSAGE;
}

fr_fft_backend fr__fft_resolve(fr_fft_backend b)
{
    return b == FR_FFT_AUTO ? FR_FFT_FFTW : b;
}

int fr__fft_is_double(fr_fft_backend b)
{
    return fr__fft_resolve(b) == FR_FFT_FFTW;
}

const char *fr__fft_precision(fr_fft_backend b)
{
    return fr__fft_is_double(b) ? "double" : "single";
}

double fr__fft_unit_roundoff(fr_fft_backend b)
{
    return fr__fft_is_double(b) ? 0x1.0p-53 : 0x1.0p-24;
}

int fr__fft_stage_count(fr_fft_backend b, int64_t N)
{
    int s = 0;
    int64_t r = N;
    for (int p = 2; p <= 7 && r > 1; p++)
        while (r % p == 0) {
            r /= p;
            s += p == 2 ? 1 : p == 3 ? 2 : 3; /* ceil(log2 p) */
        }
    /* Sizes this layer does not plan (other prime factors): charged as if radix-2 over the
     * rest, rounded up. */
    for (; r > 1; r = (r + 1) / 2)
        s++;
    (void)b; /* the same count serves both libraries: see fft.h */
    return s;
}

fr_fft_backend fr__fft_choose(const fr_problem *p, int64_t support, int g_single, int g_double,
                              int *degree)
{
    static const fr_fft_backend all[] = {FR_FFT_FFTW, FR_FFT_FFTW_FLOAT, FR_FFT_KISSFFT};
    fr_fft_backend best = FR_FFT_AUTO;
    double tbest = INFINITY, t[FR_NMETHODS];
    *degree = -1;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        int g = fr__fft_is_double(all[i]) ? g_double : g_single;
        if (g < 0) continue;
        fr_predict_times_cost(NULL, p, g, support, all[i], t);
        if (t[FR_METHOD_POLYFFT] < tbest) {
            tbest = t[FR_METHOD_POLYFFT];
            best = all[i];
            *degree = g;
        }
    }
    return best;
}

/* n is even and n / 2's only prime factors are 2, 3, 5 (KissFFT: the half-length complex
 * transform's radices), or n's are 2, 3, 5, 7 (FFTW). */
static int fast_for(fr_fft_backend b, int64_t n)
{
    if (n % 2) return 0;
    int64_t r = b == FR_FFT_KISSFFT ? n / 2 : n;
    int maxp = b == FR_FFT_KISSFFT ? 5 : 7;
    for (int p = 2; p <= maxp; p++)
        while (r % p == 0)
            r /= p;
    return r == 1;
}

int64_t fr__fft_fast_size(fr_fft_backend b, int64_t n_min)
{
    b = fr__fft_resolve(b);
    int64_t n = n_min < 2 ? 2 : n_min + (n_min % 2);
    while (!fast_for(b, n))
        n += 2;
    return n;
}

void *fr__fft_alloc(size_t bytes)
{
    if (bytes >= (size_t)4 << 20) return fr__alloc_big(bytes); /* 2 MB aligned */
    size_t sz = (bytes + FR__FFT_ALIGN - 1) / FR__FFT_ALIGN * FR__FFT_ALIGN;
    return aligned_alloc(FR__FFT_ALIGN, sz ? sz : FR__FFT_ALIGN);
}

int fr__fft_create(fr__fft **out, fr_fft_backend b, int64_t n_min, char *err, size_t errlen)
{
    *out = NULL;
    b = fr__fft_resolve(b);
    if (b <= FR_FFT_AUTO || b >= FR_NFFTS)
        return fr__err(err, errlen, FR_EUSAGE, "unknown FFT back end %d", (int)b);
    int64_t n = fr__fft_fast_size(b, n_min);
    if (n > INT32_MAX)
        return fr__err(err, errlen, FR_EUSAGE, "FFT length %lld too large", (long long)n);
    fr__fft *f = calloc(1, sizeof *f);
    if (!f) return fr__err(err, errlen, FR_ENOMEM, "out of memory planning an FFT");
    f->b = b;
    f->n = n;
    if (b == FR_FFT_KISSFFT) {
        if (!fr__kiss_create(&f->kiss, n)) {
            free(f);
            return fr__err(err, errlen, FR_ENOMEM, "out of memory planning an FFT of length %lld",
                           (long long)n);
        }
    } else {
        int st = fr__fftw_plan(f, err, errlen);
        if (st) {
            fr__fft_free(f);
            return st;
        }
    }
    *out = f;
    return FR_OK;
}

void fr__fft_free(fr__fft *f)
{
    if (!f) return;
    if (f->b == FR_FFT_KISSFFT)
        fr__kiss_free(f->kiss);
    else
        fr__fftw_destroy(f);
    free(f);
}

int64_t fr__fft_len(const fr__fft *f)
{
    return f->n;
}

int64_t fr__fft_bins(const fr__fft *f)
{
    return f->n / 2 + 1;
}

fr_fft_backend fr__fft_backend(const fr__fft *f)
{
    return f->b;
}

size_t fr__fft_scratch_bytes(const fr__fft *f)
{
    return f->b == FR_FFT_KISSFFT ? (size_t)(f->n / 2) * sizeof(fr__cpxf) : 0;
}

void fr__fft_forward_f(const fr__fft *f, const float *x, fr__cpxf *X, void *scratch)
{
    if (f->b == FR_FFT_KISSFFT)
        fr__kiss_forward(f->kiss, x, X, scratch);
    else
        fr__fftw_forward_f(f, x, X);
}

void fr__fft_inverse_f(const fr__fft *f, fr__cpxf *X, float *x, void *scratch)
{
    if (f->b == FR_FFT_KISSFFT)
        fr__kiss_inverse(f->kiss, X, x, scratch);
    else
        fr__fftw_inverse_f(f, X, x);
}

void fr__fft_forward_d(const fr__fft *f, const double *x, fr__cpxd *X, void *scratch)
{
    (void)scratch; /* only KissFFT, single precision, takes scratch */
    fr__fftw_forward_d(f, x, X);
}

void fr__fft_inverse_d(const fr__fft *f, fr__cpxd *X, double *x, void *scratch)
{
    (void)scratch;
    fr__fftw_inverse_d(f, X, x);
}
