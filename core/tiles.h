/* tiles.h - what the exact forward (exact.c) and the exact backward (backward.c) share: the
 * vector types of their micro-kernels, glibc's vector exp, aligned buffers, and the register-tiled
 * block product that forms their score blocks. Header-only and static inline, so that each file's
 * block sizes stay compile-time constants in its copy of the kernel. */
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
#define FR_TR 4 /* rows per micro-tile */

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

/* out[br][bc] = a[br][K] bt[K][bc] in 8-row x 2-vector register tiles (br a multiple of 8, bc
 * of 2 FR_VW): the score blocks q kt and the G V^T blocks, the hottest products of the
 * backward. Sixteen accumulators: enough independent FMA chains to cover the latency of both
 * FMA ports (four, the earlier tile, left them half idle). */
static inline void fr__mm_tiles(const double *restrict a, const double *restrict bt, int64_t K,
                                int br, int bc, double *restrict out)
{
    for (int c = 0; c < bc; c += 2 * FR_VW)
        for (int r = 0; r < br; r += 8) {
            const double *a0 = a + r * K;
            fr__vd x[8][2];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                x[i][0] = x[i][1] = (fr__vd){0};
            for (int64_t t = 0; t < K; t++) {
                fr__vd b0 = *(const fr__vd *)(bt + t * bc + c);
                fr__vd b1 = *(const fr__vd *)(bt + t * bc + c + FR_VW);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    x[i][0] += a0[i * K + t] * b0;
                    x[i][1] += a0[i * K + t] * b1;
                }
            }
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                *(fr__vd *)(out + (r + i) * bc + c) = x[i][0];
                *(fr__vd *)(out + (r + i) * bc + c + FR_VW) = x[i][1];
            }
        }
}

#endif
