/* cost.c - the cost model's constants as a file: `fastrope calibrate` writes this machine's
 * (cmd/calibrate.c) into the cache directory beside FFTW's wisdom (cmd/wisdom.c), and every
 * command that plans reads them back for the core (fr_options.cost; the core reads no files).
 *
 * The file is text, one "key value" per line, keyed like FFTW's wisdom by what it measured:
 * the CPU's model name and the number of threads (the constants are wall-clock seconds with
 * OpenMP on every thread). A file measured elsewhere would mislead auto as the built-in
 * constants do, so a cache file whose key differs, or that is not a complete cost file, is
 * ignored with a warning; the built-in constants are used. */
#include "cost.h"

#include "cli.h"
#include "wisdom.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "fastrope-cost-model 1"
#define COST_MAX_BYTES 65536

/* The constants by name, as the file spells them. */
typedef struct {
    const char *key;
    size_t off;
    int positive; /* 1: must be > 0 (a factor); 0: >= 0 */
} field;

#define F(name, member, pos)                                                                       \
    {                                                                                              \
        name, offsetof(fr_cost_model, member), pos                                                 \
    }
static const field fields[] = {
    F("exact_0", exact_0, 0),
    F("exact_flop", exact_flop, 0),
    F("exact_exp", exact_exp, 0),
    F("rope_0", rope_0, 0),
    F("rope_row", rope_row, 0),
    F("rope", rope, 0),
    F("rope_causal", rope_causal, 1),
    F("rope_window", rope_window, 1),
    F("fft_0", fft_0, 0),
    F("fft_kissfft", fft[FR_FFT_KISSFFT], 0),
    F("fft_fftw", fft[FR_FFT_FFTW], 0),
    F("fft_fftw-float", fft[FR_FFT_FFTW_FLOAT], 0),
    F("acc_kissfft", acc[FR_FFT_KISSFFT], 0),
    F("acc_fftw", acc[FR_FFT_FFTW], 0),
    F("acc_fftw-float", acc[FR_FFT_FFTW_FLOAT], 0),
};
#undef F
#define NFIELDS (sizeof fields / sizeof fields[0])

static double *at(fr_cost_model *c, const field *f)
{
    return (double *)(void *)((char *)c + f->off);
}

void cli_cpu_model(char *buf, size_t len)
{
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon || strncmp(line, "model name", 10) != 0) continue;
        char *s = colon + 1;
        while (*s == ' ' || *s == '\t')
            s++;
        s[strcspn(s, "\r\n")] = '\0';
        if (*s) snprintf(buf, len, "%s", s);
        break;
    }
    fclose(f);
}

int cli_cost_cache_path(char *buf, size_t len)
{
    char dir[4096];
    if (!cli_cache_dir(dir, sizeof dir)) return 0;
    int n = snprintf(buf, len, "%s/cost-model", dir);
    return n > 0 && (size_t)n < len;
}

/* The file's constants and key, or why not (0 and why). */
typedef struct {
    fr_cost_model c;
    char cpu[256];
    long threads;
} cost_file;

static int parse(const char *text, cost_file *cf, char *why, size_t len)
{
    memset(cf, 0, sizeof *cf);
    cf->threads = -1;
    int seen[NFIELDS] = {0}, magic = 0, lineno = 0;
    for (const char *s = text; *s;) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char line[512];
        lineno++;
        if (n >= sizeof line) {
            snprintf(why, len, "line %d is too long", lineno);
            return 0;
        }
        memcpy(line, s, n);
        line[n] = '\0';
        s += n + (e != NULL);
        if (!line[0] || line[0] == '#') continue;
        if (!magic) {
            if (strcmp(line, MAGIC) != 0) {
                snprintf(why, len, "not a cost file (its first line is not '%s')", MAGIC);
                return 0;
            }
            magic = 1;
            continue;
        }
        char *val = strchr(line, ' ');
        if (!val) {
            snprintf(why, len, "line %d has no value", lineno);
            return 0;
        }
        *val++ = '\0';
        if (strcmp(line, "cpu") == 0) {
            snprintf(cf->cpu, sizeof cf->cpu, "%s", val);
            continue;
        }
        char *end;
        errno = 0;
        double x = strtod(val, &end);
        if (strcmp(line, "threads") == 0) {
            if (end == val || *end || x < 1 || x > 1e6 || x != floor(x)) {
                snprintf(why, len, "line %d: threads '%.64s' is not a whole number >= 1", lineno,
                         val);
                return 0;
            }
            cf->threads = (long)x;
            continue;
        }
        size_t i = 0;
        while (i < NFIELDS && strcmp(fields[i].key, line) != 0)
            i++;
        if (i == NFIELDS) {
            snprintf(why, len, "line %d: unknown constant '%.64s'", lineno, line);
            return 0;
        }
        if (end == val || *end || errno || !isfinite(x) || x < 0 ||
            (fields[i].positive && x == 0)) {
            snprintf(why, len, "line %d: %.64s = '%.64s' is not a finite number %s 0", lineno, line,
                     val, fields[i].positive ? ">" : ">=");
            return 0;
        }
        *at(&cf->c, &fields[i]) = x;
        seen[i] = 1;
    }
    if (!magic) {
        snprintf(why, len, "empty: not a cost file");
        return 0;
    }
    for (size_t i = 0; i < NFIELDS; i++)
        if (!seen[i]) {
            snprintf(why, len, "incomplete: no %s", fields[i].key);
            return 0;
        }
    if (!cf->cpu[0] || cf->threads < 1) {
        snprintf(why, len, "incomplete: no cpu or threads line");
        return 0;
    }
    return 1;
}

/* The whole file (at most COST_MAX_BYTES), or NULL with errno's reason in why. */
static char *read_small(const char *path, char *why, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, len, "%s", strerror(errno));
        return NULL;
    }
    char *s = malloc(COST_MAX_BYTES + 1);
    size_t n = s ? fread(s, 1, COST_MAX_BYTES + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!s || bad || n > COST_MAX_BYTES || memchr(s, '\0', n)) {
        snprintf(why, len, "%s", !s ? "out of memory" : bad ? "read error" : "not a cost file");
        free(s);
        return NULL;
    }
    s[n] = '\0';
    return s;
}

static fr_cost_model loaded;
static char source[4200] = "built-in";

const char *cli_cost_source(void)
{
    return source;
}

int cli_cost_use(const char *path, fr_options *opt)
{
    char cache[4200], why[512], cpu[256];
    int explicit = path != NULL;
    opt->cost = NULL;
    snprintf(source, sizeof source, "built-in");
    if (!explicit) {
        if (!cli_cost_cache_path(cache, sizeof cache)) return EXIT_OK;
        struct stat sb;
        if (stat(cache, &sb) != 0 && errno == ENOENT) return EXIT_OK; /* not calibrated */
        path = cache;
    }
    cost_file cf;
    char *text = read_small(path, why, sizeof why);
    int ok = text && parse(text, &cf, why, sizeof why);
    free(text);
    if (!ok) {
        if (explicit) return cli_fail(EXIT_INPUT, "%s: %s", path, why);
        cli_warn("%s: %s; ignored, the built-in cost constants are used (fastrope calibrate "
                 "rewrites it)",
                 path, why);
        return EXIT_OK;
    }
    cli_cpu_model(cpu, sizeof cpu);
    int threads = omp_get_max_threads();
    if (strcmp(cf.cpu, cpu) != 0 || cf.threads != threads) {
        if (!explicit) {
            cli_warn("%s was measured on '%s' with %ld threads, not this '%s' with %d; ignored, "
                     "the built-in cost constants are used (fastrope calibrate rewrites it)",
                     path, cf.cpu, cf.threads, cpu, threads);
            return EXIT_OK;
        }
        cli_warn("%s was measured on '%s' with %ld threads, not this '%s' with %d: its "
                 "predictions may be off",
                 path, cf.cpu, cf.threads, cpu, threads);
    }
    loaded = cf.c;
    opt->cost = &loaded;
    snprintf(source, sizeof source, "calibrated %.4000s", path);
    return EXIT_OK;
}

/* mkdir -p of path's directory. */
static int make_parent(const char *path)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return 0;
    for (char *s = tmp + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return 0;
            *s = '/';
        }
    return 1;
}

int cli_cost_write(const char *path, const fr_cost_model *c, int threads)
{
    char cpu[256], tmp[4300];
    cli_cpu_model(cpu, sizeof cpu);
    if (!make_parent(path) || snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp)
        return cli_fail(EXIT_INPUT, "%s: cannot make its directory: %s", path, strerror(errno));
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        return cli_fail(EXIT_INPUT, "%s: cannot write: %s", path, strerror(e));
    }
    fprintf(f, "%s\n# fastrope calibrate: seconds per counted operation (core/cost.c)\n", MAGIC);
    fprintf(f, "cpu %s\nthreads %d\n", cpu, threads);
    fr_cost_model copy = *c;
    for (size_t i = 0; i < NFIELDS; i++)
        fprintf(f, "%s %.6g\n", fields[i].key, *at(&copy, &fields[i]));
    int ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return cli_fail(EXIT_INPUT, "%s: cannot write: %s", path, strerror(e));
    }
    return EXIT_OK;
}
