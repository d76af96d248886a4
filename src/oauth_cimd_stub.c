/*
 * Stand-in for the client-ID metadata document fetcher (oauth_cimd.c) until
 * it is merged: refuses every document, so a client_id that is an https URL
 * gets the authorization endpoint's error page.  Drop this file from the
 * build when oauth_cimd.c arrives.
 */
#include "aly/oauth_internal.h"

int oauth_cimd_fetch(h2o_loop_t *loop, const aly_config_t *cfg, const char *url,
                     void (*cb)(void *ctx, const char *doc, size_t len, const char *err), void *ctx)
{
    (void)loop;
    (void)cfg;
    (void)url;
    (void)cb;
    (void)ctx;
    return -1;
}
