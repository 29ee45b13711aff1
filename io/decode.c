/* decode.c - raw little- or big-endian elements to double, in bulk: the inner loop of the
 * streaming readers (fastrope check reads gigabytes through it, so the common float types
 * have straight loops the compiler vectorises; half precision uses F16C when the CPU has it). */
#include "io_internal.h"

#include <math.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG 1
#else
#define HOST_BIG 0
#endif

static double half(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static void load(const unsigned char *p, int size, int swap, unsigned char b[8])
{
    size = size < 8 ? size : 8;
    if (swap)
        for (int i = 0; i < size; i++)
            b[i] = p[size - 1 - i];
    else
        memcpy(b, p, (size_t)size);
}

/* One element, any type: the slow path (swapped byte order, integers). */
static double one(const unsigned char *p, const io_dtype *dt)
{
    unsigned char b[8] = {0};
    load(p, dt->size, dt->swap, b);
    uint64_t u = 0;
    int64_t s = 0;
    switch (dt->size) {
    case 1: u = b[0], s = (int8_t)b[0]; break;
    case 2: {
        uint16_t x;
        memcpy(&x, b, 2);
        u = x, s = (int16_t)x;
        break;
    }
    case 4: {
        uint32_t x;
        memcpy(&x, b, 4);
        u = x, s = (int32_t)x;
        break;
    }
    default: memcpy(&u, b, 8), s = (int64_t)u;
    }
    switch (dt->kind) {
    case 'b': return u != 0;
    case 'u': return (double)u;
    case 'i': return (double)s;
    case 'B': { /* bfloat16: the top half of a float32 */
        uint32_t x = (uint32_t)u << 16;
        float f;
        memcpy(&f, &x, 4);
        return f;
    }
    default:
        if (dt->size == 2) return half((uint16_t)u);
        if (dt->size == 4) {
            uint32_t x = (uint32_t)u;
            float f;
            memcpy(&f, &x, 4);
            return f;
        }
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
}

void io_decode(const unsigned char *raw, int64_t count, const io_dtype *dt, double *out)
{
    int64_t i = 0;
    if (!dt->swap && dt->kind == 'f' && dt->size == 8) {
        memcpy(out, raw, (size_t)count * 8);
        return;
    }
    if (!dt->swap && dt->kind == 'f' && dt->size == 4) {
        for (; i < count; i++) {
            float f;
            memcpy(&f, raw + 4 * i, 4);
            out[i] = f;
        }
        return;
    }
    if (!dt->swap && dt->kind == 'B') {
        for (; i < count; i++) {
            uint16_t h;
            memcpy(&h, raw + 2 * i, 2);
            uint32_t x = (uint32_t)h << 16;
            float f;
            memcpy(&f, &x, 4);
            out[i] = f;
        }
        return;
    }
    if (!dt->swap && dt->kind == 'f' && dt->size == 2) {
#if defined(__F16C__)
        for (; i + 8 <= count; i += 8) {
            __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(raw + 2 * i)));
            _mm256_storeu_pd(out + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
            _mm256_storeu_pd(out + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
        }
#endif
        for (; i < count; i++) {
            uint16_t h;
            memcpy(&h, raw + 2 * i, 2);
            out[i] = half(h);
        }
        return;
    }
    for (; i < count; i++)
        out[i] = one(raw + i * dt->size, dt);
}

int io_dtype_from_descr(char kind, int size, int big, io_dtype *dt)
{
    dt->kind = kind;
    dt->size = size;
    dt->swap = size > 1 && big != HOST_BIG;
    return FR_OK;
}
