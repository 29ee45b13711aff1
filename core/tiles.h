/* tiles.h - what the exact forward (exact.c) and the exact backward (backward.c) share: the
 * vector type of their micro-kernels, glibc's vector exp, aligned buffers, and the register-tiled
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

/* out[br][bc] = a[br][K] bt[K][bc] in FR_TR x FR_VW register tiles (br a multiple of FR_TR, bc
 * of FR_VW): the score blocks q kt and the G V^T blocks, the hottest products of both passes. */
static inline void fr__mm_tiles(const double *restrict a, const double *restrict bt, int64_t K,
                                int br, int bc, double *restrict out)
{
    for (int r = 0; r < br; r += FR_TR) {
        const double *a0 = a + r * K;
        for (int c = 0; c < bc; c += FR_VW) {
            fr__vd x0 = {0}, x1 = {0}, x2 = {0}, x3 = {0};
            for (int64_t t = 0; t < K; t++) {
                fr__vd b = *(const fr__vd *)(bt + t * bc + c);
                x0 += a0[t] * b;
                x1 += a0[K + t] * b;
                x2 += a0[2 * K + t] * b;
                x3 += a0[3 * K + t] * b;
            }
            *(fr__vd *)(out + (r + 0) * bc + c) = x0;
            *(fr__vd *)(out + (r + 1) * bc + c) = x1;
            *(fr__vd *)(out + (r + 2) * bc + c) = x2;
            *(fr__vd *)(out + (r + 3) * bc + c) = x3;
        }
    }
}

/* One key block of the online softmax for one row: sr[0..bc) holds the scores, *m and *l the
 * row's running maximum and sum. On return sr holds exp(score - new maximum), or zeros when the
 * mask removed every key of the block; the result is the factor by which what the row has
 * accumulated so far must be scaled (1: nothing to do; 0 on the row's first block). */
static inline double fr__softmax_block(double *restrict sr, int bc, double *m, double *l)
{
    double mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int c = 0; c < bc; c++)
        mx = sr[c] > mx ? sr[c] : mx;
    if (mx == -INFINITY) {
        memset(sr, 0, (size_t)bc * sizeof *sr);
        return 1;
    }
    double mnew = mx > *m ? mx : *m;
    double alpha = exp(*m - mnew), sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < bc; c++) {
        double e = exp(sr[c] - mnew);
        sr[c] = e;
        sum += e;
    }
    *l = *l * alpha + sum;
    *m = mnew;
    return alpha;
}

#endif
