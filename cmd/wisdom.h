/* wisdom.h - FFTW's wisdom kept between runs in this machine's cache directory (cmd/wisdom.c). */
#ifndef FR_WISDOM_H
#define FR_WISDOM_H

#include <stddef.h>

/* The per-machine cache directory: $XDG_CACHE_HOME/fastrope, else $HOME/.cache/fastrope (the
 * XDG rule: XDG_CACHE_HOME counts only when absolute). 0 when neither variable gives one. */
int cli_cache_dir(char *buf, size_t len);

typedef struct {
    char *loaded; /* the text read, to tell whether planning added anything */
} cli_wisdom;

/* Import the cache's wisdom, if any. Whatever is wrong with the file (missing, unreadable,
 * not wisdom, truncated) is ignored: FFTW then measures its plans again. */
void cli_wisdom_load(cli_wisdom *w);
/* Write FFTW's wisdom back when planning added to it, atomically (a temporary file renamed
 * over the old one); silent on failure, as befits a cache. Frees w's text. */
void cli_wisdom_save(cli_wisdom *w);

#endif
