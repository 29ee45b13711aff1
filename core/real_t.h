/* real_t.h - the names a precision-generic body (a core/..._t.h file) is written in, for the
 * precision FR_T_DOUBLE selects: 1 double spectra and spectral sums (FFTW), 0 float (KissFFT, FFTW
 * float). Why a generic body rather than two copies: the pass, the kernel spectra and the
 * backward are the same algorithm in either precision, and two hand-kept copies drift.
 *
 *   #define FR_T_DOUBLE 0
 *   #include "body_t.h"      (which includes this file first)
 *   #undef FR_T_DOUBLE
 *   #define FR_T_DOUBLE 1
 *   #include "body_t.h"
 *
 * REAL and CPX are the types, T_(name) gives each instantiation's functions their own names
 * (name_f, name_d), FFT_FORWARD / FFT_INVERSE the matching transforms. No include guard: each
 * inclusion redefines the names for the next instantiation. */
#include "fft.h"

#undef REAL
#undef CPX
#undef T_
#undef FFT_FORWARD
#undef FFT_INVERSE

#if FR_T_DOUBLE
#define REAL double
#define CPX fr__cpxd
#define T_(name) name##_d
#define FFT_FORWARD fr__fft_forward_d
#define FFT_INVERSE fr__fft_inverse_d
#else
#define REAL float
#define CPX fr__cpxf
#define T_(name) name##_f
#define FFT_FORWARD fr__fft_forward_f
#define FFT_INVERSE fr__fft_inverse_f
#endif
