/* limits.c - what this machine can do at most, for judging the exact engine against it.
 *
 *   cc -O2 -march=native -fopenmp -fno-math-errno scripts/limits.c -o limits -lm && ./limits
 *
 * Prints one JSON object: the fused multiply-add peak (GFLOP/s, an FMA counted as 2 flops) and
 * glibc's vector exp rate (G exps/s), in double and in single, with every OpenMP thread busy at
 * once (the engine runs on all cores, so the shared turbo and memory system are part of it).
 *
 * Why measured, not taken from a data sheet: the project's machines have been AMD and Intel
 * parts, with AVX-512 double-pumped on one and not on the other, behind a hypervisor that may
 * not give the nominal clock. The figures are the best of a few repetitions: the limit is the
 * fastest the machine was seen to go, so that "1.2x the limit" never flatters the engine.
 *
 * Built with the project's flags (-fno-math-errno, no -ffast-math) so that the exp measured is
 * the libmvec variant the engine calls. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* libmvec exports the vector variants; glibc's header declares them only under -ffast-math. */
#pragma omp declare simd notinbranch
extern double exp(double);
#pragma omp declare simd notinbranch
extern float expf(float);

/* 64-byte vectors: one AVX-512 register, two AVX2 ones, four SSE ones; the compiler lowers the
 * operations to whatever the target has, so the same source measures each machine's widest. */
typedef double vd __attribute__((vector_size(64)));
typedef float vf __attribute__((vector_size(64)));

/* Independent accumulators: enough to cover the FMA latency (4-5 cycles) times the FMA ports
 * (2) with room to spare, few enough to stay in registers (16 on AVX2 with the operands). */
#define NACC 10

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The accumulators stay bounded (x = x * a + b with |a| < 1 converges), so no denormal or
 * infinity slows the loop; the sum is returned so the compiler keeps the work. */
#define FMA_KERNEL(name, vt, st)                                                                   \
    static st name(long iters, st seed)                                                            \
    {                                                                                              \
        vt acc[NACC], a, b;                                                                        \
        for (int e = 0; e < (int)(sizeof(vt) / sizeof(st)); e++) {                                 \
            a[e] = (st)0.999 - (st)e * (st)1e-4;                                                   \
            b[e] = seed * (st)1e-3;                                                                \
        }                                                                                          \
        for (int t = 0; t < NACC; t++)                                                             \
            acc[t] = b + (st)t;                                                                    \
        for (long i = 0; i < iters; i++) {                                                         \
            _Pragma("GCC unroll 10") for (int t = 0; t < NACC; t++) acc[t] = acc[t] * a + b;       \
            __asm__ volatile("" : "+v"(a), "+v"(b));                                               \
        }                                                                                          \
        st s = 0;                                                                                  \
        for (int t = 0; t < NACC; t++)                                                             \
            for (int e = 0; e < (int)(sizeof(vt) / sizeof(st)); e++)                               \
                s += acc[t][e];                                                                    \
        return s;                                                                                  \
    }

FMA_KERNEL(fma_f64, vd, double)
FMA_KERNEL(fma_f32, vf, float)

/* Exps of arguments in [-20, 0] (the range the online softmax feeds it), a block that stays in
 * L1, over and over. */
#define EXP_BLOCK 2048
static double exp_f64(long reps, double seed)
{
    static _Thread_local double x[EXP_BLOCK], y[EXP_BLOCK];
    for (int i = 0; i < EXP_BLOCK; i++)
        x[i] = -20.0 * (double)i / EXP_BLOCK + seed * 1e-9;
    double s = 0;
    for (long r = 0; r < reps; r++) {
#pragma omp simd
        for (int i = 0; i < EXP_BLOCK; i++)
            y[i] = exp(x[i]);
        s += y[r % EXP_BLOCK];
        __asm__ volatile("" ::: "memory");
    }
    return s;
}

static double exp_f32(long reps, double seed)
{
    static _Thread_local float x[EXP_BLOCK], y[EXP_BLOCK];
    for (int i = 0; i < EXP_BLOCK; i++)
        x[i] = -20.0f * (float)i / EXP_BLOCK + (float)(seed * 1e-9);
    double s = 0;
    for (long r = 0; r < reps; r++) {
#pragma omp simd
        for (int i = 0; i < EXP_BLOCK; i++)
            y[i] = expf(x[i]);
        s += y[r % EXP_BLOCK];
        __asm__ volatile("" ::: "memory");
    }
    return s;
}

enum { FMA64, FMA32, EXP64, EXP32 };

/* Operations per second of one kernel with every thread running it at once: the slowest
 * thread's time counts (all cores busy is the condition being measured). */
static double rate(int kind, long work)
{
    double best = 0, sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = 0, t1 = 0;
        int nt = 1;
#pragma omp parallel reduction(+ : sink)
        {
#pragma omp barrier
#pragma omp single
            {
                nt = omp_get_num_threads();
                t0 = now();
            }
            int id = omp_get_thread_num();
            switch (kind) {
            case FMA64: sink += fma_f64(work, id + 1); break;
            case FMA32: sink += fma_f32(work, (float)(id + 1)); break;
            case EXP64: sink += exp_f64(work, id + 1); break;
            case EXP32: sink += exp_f32(work, id + 1); break;
            }
#pragma omp barrier
#pragma omp single
            t1 = now();
        }
        double ops = (double)work * nt;
        if (kind == FMA64) ops *= NACC * 2.0 * sizeof(vd) / sizeof(double);
        if (kind == FMA32) ops *= NACC * 2.0 * sizeof(vf) / sizeof(float);
        if (kind == EXP64 || kind == EXP32) ops *= EXP_BLOCK;
        if (ops / (t1 - t0) > best) best = ops / (t1 - t0);
    }
    if (sink == 12345.678) printf(" ");
    return best;
}

static void cpu_model(char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t')
            c++;
        c[strcspn(c, "\n")] = 0;
        /* JSON-safe: the model names seen hold no quotes, but never emit one unescaped */
        for (char *p = c; *p; p++)
            if (*p == '"' || *p == '\\') *p = ' ';
        snprintf(out, len, "%s", c);
        break;
    }
    fclose(f);
}

int main(void)
{
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    /* ~0.1 s per repetition; the first kernel also warms the cores up (clock, vector unit
     * power-up), which is why it runs once more before its figure is taken */
    rate(FMA64, 20000000);
    double f64 = rate(FMA64, 40000000) / 1e9, f32 = rate(FMA32, 40000000) / 1e9;
    double e64 = rate(EXP64, 50000) / 1e9, e32 = rate(EXP32, 100000) / 1e9;
    printf("{\"cpu\": \"%s\", \"threads\": %d, \"fma_gflops_f64\": %.1f, \"fma_gflops_f32\": %.1f, "
           "\"exp_gps_f64\": %.3f, \"exp_gps_f32\": %.3f}\n",
           cpu, omp_get_max_threads(), f64, f32, e64, e32);
    return 0;
}
