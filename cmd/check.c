/* check.c - `fastrope check`: are dumped activations in the bounded-entry regime? STUB. */
#include "cli.h"

int cmd_check(int argc, char **argv)
{
    return cli_fail(EXIT_USAGE, "check: not implemented yet");
}
