/*
 * Filling a workspace with data: a deterministic demo (alyctl demo seed) and
 * JSON-lines import (alyctl import).  Both write in one transaction, so a
 * failure leaves the workspace as it was.
 */
#ifndef ALY_DEMO_H
#define ALY_DEMO_H

#include <stdio.h>

#include "aly/store.h"

typedef struct demo_opts {
    unsigned sites, products, orders, days;
    uint64_t seed;
} demo_opts_t;

typedef struct demo_counts {
    unsigned sites, products, orders, visit_days;
} demo_counts_t;

/* Seeds workspace ws (which must exist); the same seed gives the same ids and data relative to today. */
int demo_seed(store_t *st, const char *ws, const demo_opts_t *o, demo_counts_t *out, aly_err_t *err);

/*
 * Imports JSON lines into ws: {"type":"site"|"product"|"order"|"visits", ...}.
 * Every line is checked; on any invalid line nothing is written and report()
 * is called once per bad line with its number and reason.  Returns -1 then.
 */
int demo_import(store_t *st, const char *ws, FILE *in, void (*report)(unsigned line, const char *why, void *ctx), void *ctx,
                demo_counts_t *out, aly_err_t *err);

#endif
