/*
 * jansson reference counts without jansson's atomic read-modify-write.
 *
 * Debian's jansson is built with atomic builtins: json_incref and
 * json_decref are a locked add each.  On the hot path those took more time
 * than anything near them: perf put half the samples of the modern route's
 * own code on three of them, and a request read flat takes and lets go of
 * some twenty references (the kept strings, ids, _meta and {} of
 * rpc_parse.c, then the call and the exchange).  A worker's JSON values
 * never cross threads: its event loop is the only thread that sees them
 * (the one other thread, oauth_verify.c's, gets C strings), so the plain
 * ++ and -- that jansson itself uses when built without atomics are exact.
 *
 * json_ref()/json_unref() are json_incref()/json_decref() with that
 * difference; json_delete() is jansson's public destructor, called as
 * json_decref() calls it.  Mixing them with jansson's own on one value is
 * safe on one thread.  Any code that hands JSON values to another thread
 * must not use them.
 */
#ifndef ALY_JSON_REF_H
#define ALY_JSON_REF_H

#include <jansson.h>

static inline json_t *json_ref(json_t *json)
{
    if (json != NULL && json->refcount != (size_t)-1)
        json->refcount = json->refcount + 1;
    return json;
}

static inline void json_unref(json_t *json)
{
    if (json != NULL && json->refcount != (size_t)-1 && (json->refcount = json->refcount - 1) == 0)
        json_delete(json);
}

#endif
