/*
 * alyd's command line (aly/alyd.h), shared by the daemon (alyd.c) and the
 * test build (t/fixtures/main.c): parses the options and hands over to the
 * master (master.c), which owns the process model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/alyd.h"
#include "aly/config.h"
#include "aly/master.h"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: alyd [-ftv] [-c file] [-w workers]\n"
                "  -c file     configuration file (default " ALY_DEFAULT_CONFIG ")\n"
                "  -f          stay in the foreground\n"
                "  -t          test the configuration and exit\n"
                "  -v          print the version and exit\n"
                "  -w workers  number of worker processes (overrides \"workers\")\n");
}

const alyd_hooks_t *alyd_hooks;

int alyd_main(int argc, char **argv, const alyd_hooks_t *hooks)
{
    alyd_hooks = hooks;
    const char *config_path = ALY_DEFAULT_CONFIG;
    int foreground = 0, test = 0, opt;
    unsigned workers = 0;
    while ((opt = getopt(argc, argv, "c:ftvw:h")) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'f':
            foreground = 1;
            break;
        case 't':
            test = 1;
            break;
        case 'v':
            printf("alyd %s\n", PACKAGE_VERSION);
            return 0;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end != '\0' || n < 1 || n > ALY_MAX_WORKERS) {
                fprintf(stderr, "alyd: -w takes a number of workers from 1 to %d\n", ALY_MAX_WORKERS);
                return 1;
            }
            workers = (unsigned)n;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }
    if (test)
        return master_test_config(config_path);
    return master_run(config_path, foreground, workers);
}
