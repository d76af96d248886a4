/*
 * Test-only hooks: what the test build (t/fixtures/, alyd-test) plugs into
 * every worker.  The shipped alyd passes no hooks, so none of their code is
 * linked into it; each hook replaces or extends one step of the worker's
 * composition, never a branch inside a production path.
 */
#ifndef ALY_HOOKS_H
#define ALY_HOOKS_H

#include "aly/common.h"
#include "aly/gate.h"

typedef struct alyd_hooks {
    /* Registers more registry tables after the built-in ones (the conformance fixtures). */
    int (*register_tables)(aly_err_t *err);
    /* Replaces auth_authenticate in the gate (an anonymous principal for the conformance suite). */
    gate_auth_fn authenticate;
} alyd_hooks_t;

#endif
