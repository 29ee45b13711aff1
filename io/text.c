/* text.c - text outputs (reports), written atomically like tensors.
 * TODO(lead): share the temporary-file-and-rename code with the tensor writers. */
#include "fr_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fr_write_text(const char *path, const char *text, char *err, size_t errlen)
{
    if (strcmp(path, "-") == 0) {
        if (fputs(text, stdout) < 0 || fputc('\n', stdout) == EOF || fflush(stdout)) {
            snprintf(err, errlen, "stdout: write failed");
            return FR_ENOMEM;
        }
        return FR_OK;
    }
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp) {
        snprintf(err, errlen, "%s: out of memory", path);
        return FR_ENOMEM;
    }
    snprintf(tmp, len, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f)
        ok = fclose(f) == 0 && ok;
    else if (fd >= 0)
        close(fd);
    if (ok && rename(tmp, path) == 0) {
        free(tmp);
        return FR_OK;
    }
    if (fd >= 0) unlink(tmp);
    free(tmp);
    snprintf(err, errlen, "%s: cannot write the file", path);
    return FR_ENOMEM;
}
