/* tiles.h - what the exact forward (exact_impl.h) and the exact backward (backward_impl.h) share
 * in both precisions: the vector types of their micro-kernels, glibc's vector exp and aligned
 * buffers. */
#ifndef FR_TILES_H
#define FR_TILES_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* glibc declares exp's SIMD variants only under __FAST_MATH__; libmvec exports them regardless,
 * and with this declaration `#pragma omp simd` loops call the vector exp (up to ~3 ulp from the
 * scalar one, measured in exact_test) without -ffast-math, whose NaN shortcuts the input checks
 * cannot afford. */
#pragma omp declare simd notinbranch
extern double exp(double);
#pragma omp declare simd notinbranch
extern float expf(float);

#define FR_VW 8 /* doubles per vector of the micro-kernels */

/* GCC vector extension: lowered to AVX-512, AVX2 pairs or SSE quadruples as the target allows. */
typedef double fr__vd __attribute__((vector_size(FR_VW * sizeof(double))));
/* The single-precision kernels' vector: the same 64 bytes, twice the lanes. */
#define FR_VWF (2 * FR_VW)
typedef float fr__vf __attribute__((vector_size(FR_VWF * sizeof(float))));

/* count doubles, 64-byte aligned for the vector loads (free with free()). */
static inline void *fr__alloc_doubles(int64_t count)
{
    size_t bytes = ((size_t)(count > 0 ? count : 1) * sizeof(double) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

/* bytes, 64-byte aligned (free with free()): the tiles of either precision. */
static inline void *fr__alloc_aligned(int64_t bytes)
{
    size_t b = ((size_t)(bytes > 0 ? bytes : 1) + 63) & ~(size_t)63;
    return aligned_alloc(64, b);
}

#endif
