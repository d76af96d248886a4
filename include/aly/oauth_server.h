/*
 * The built-in OAuth 2.1 authorization server's HTTP endpoints, on the same
 * origin as /api/mcp: RFC 8414 metadata, /oauth/authorize (the consent page
 * and its decision), /oauth/token, /oauth/register (RFC 7591), /oauth/revoke
 * (RFC 7009) and /oauth/jwks.  Each is an http_serve_fn over one worker's
 * oauth_server_t; the worker names them in its route table.  With
 * oauth_server off they answer 404 like any unknown path.
 *
 * The data they work on is aly/oauth.h; access tokens they sign are checked
 * by the same validator as external ones (auth_oauth.c), which finds the
 * built-in keys in the store by kid.
 */
#ifndef ALY_OAUTH_SERVER_H
#define ALY_OAUTH_SERVER_H

#include <h2o.h>

#include "aly/auth.h"
#include "aly/config.h"
#include "aly/oauth.h"
#include "aly/store.h"

typedef struct oauth_server {
    const aly_config_t *cfg;
    store_t *store;
    h2o_loop_t *loop;
    auth_pepper_t *pepper;
    oauth_signer_t *signer;
    char resource[1024]; /* public_url + "/api/mcp" */
} oauth_server_t;

/* Per worker, after fork.  With oauth_server off it only remembers cfg. */
int oauth_server_init(oauth_server_t *s, const aly_config_t *cfg, store_t *st, h2o_loop_t *loop, aly_err_t *err);
void oauth_server_free(oauth_server_t *s);

void oauth_serve_metadata(void *server, h2o_req_t *req);
void oauth_serve_authorize(void *server, h2o_req_t *req);
void oauth_serve_token(void *server, h2o_req_t *req);
void oauth_serve_register(void *server, h2o_req_t *req);
void oauth_serve_revoke(void *server, h2o_req_t *req);
void oauth_serve_jwks(void *server, h2o_req_t *req);

#endif
