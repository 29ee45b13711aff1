/* main.c - the fastrope command: dispatch to the subcommands. */
#include "job.h"

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
    "  check     are dumped activations in the bounded regime, what speed-up would they get, and\n"
    "            do their stored outputs and gradients match exact attention\n"
    "  gen       generate a bounded random q, k, v bundle\n"
    "  calibrate measure this machine's cost constants (for auto) into the cache directory\n"
    "  convert   convert tensors between .npy, .npz, .json and .safetensors\n"
    "\n"
    "Tensors are read from .npy, .npz, .json and .safetensors (recognised by their first bytes)\n"
    "and written to the format their file name's extension names.\n"
    "\n"
    "Options:\n"
    "  --help     this text\n"
    "  --version  the version\n"
    "\n"
    "Exit codes: 0 ok, 1 internal/resources, 2 usage, 3 bad input, 4 accuracy not guaranteed.\n";

/* run and grad are configurations of one job (job.c); the others are commands of their own. */
static const struct {
    const char *name;
    int (*fn)(int, char **);
    const job_spec *job;
} commands[] = {
    {"run", NULL, &run_spec},           {"grad", NULL, &grad_spec}, {"bound", cmd_bound, NULL},
    {"check", cmd_check, NULL},         {"gen", cmd_gen, NULL},     {"convert", cmd_convert, NULL},
    {"calibrate", cmd_calibrate, NULL},
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
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].job ? job_main(commands[i].job, argc - 1, argv + 1)
                                   : commands[i].fn(argc - 1, argv + 1);
    return cli_fail(EXIT_USAGE, "unknown command '%s' (see fastrope --help)", argv[1]);
}
