/*
 * alyd's command line, shared by the daemon (alyd.c) and the test build
 * (t/fixtures/main.c).
 */
#ifndef ALY_ALYD_H
#define ALY_ALYD_H

#include "aly/hooks.h"

/*
 * The whole alyd command line (alyd [-ftv] [-c file] [-w workers]); returns
 * the exit status.  hooks is NULL in the shipped daemon; the test build
 * passes its fixtures.  hooks must outlive the call.
 */
int alyd_main(int argc, char **argv, const alyd_hooks_t *hooks);

/* The hooks alyd_main() was given (NULL in the shipped daemon); read by each worker. */
extern const alyd_hooks_t *alyd_hooks;

#endif
