/* main.c - the fastrope command: dispatch to the subcommands. */
#include "cli.h"

#include <string.h>

static const char usage[] =
    "usage: fastrope COMMAND [options]   (fastrope COMMAND --help for each)\n"
    "\n"
    "RoPE attention, exact and in almost linear time (polynomial + FFT).\n"
    "\n"
    "Commands:\n"
    "  run       forward pass: T = softmax(tau Q W K^T) V, with an error report\n"
    "  grad      gradients dL/dQ, dL/dK, dL/dV (and dL/dW), exact or fast\n"
    "  bound     degree, error bound, counts and predicted times for a size and entry bound\n"
    "  check     are dumped activations in the bounded regime, and what speed-up would they get\n"
    "  gen       generate a bounded random q, k, v bundle\n"
    "  convert   convert tensors between .npy, .npz and .json\n"
    "\n"
    "Options:\n"
    "  --help     this text\n"
    "  --version  the version\n"
    "\n"
    "Exit codes: 0 ok, 1 internal/resources, 2 usage, 3 bad input, 4 accuracy not guaranteed.\n";

static const struct {
    const char *name;
    int (*fn)(int, char **);
} commands[] = {
    {"run", cmd_run},     {"grad", cmd_grad}, {"bound", cmd_bound},
    {"check", cmd_check}, {"gen", cmd_gen},   {"convert", cmd_convert},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("fastrope %s\n", FR_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    return cli_fail(EXIT_USAGE, "unknown command '%s' (see fastrope --help)", argv[1]);
}
