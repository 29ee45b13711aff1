/* main.c - the fastrope command: dispatch to subcommands. */
#include <stdio.h>
#include <string.h>

#include "fastrope.h"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("fastrope %s\n", FR_VERSION);
        return 0;
    }
    fprintf(stderr, "fastrope: not implemented yet\n");
    return 2;
}
