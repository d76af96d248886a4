/*
 * The JSON-RPC request parser of the hot path (rpc_parse.c).
 *
 * json_loadb costs more than the tool call a small request carries: its
 * lexer grows a buffer per token and reads through a stream abstraction a
 * character at a time.  Nearly every message an MCP client sends has one
 * shape: an object of plain members and a "params" object, itself of plain
 * members and nested JSON.  rpc_parse() builds exactly the tree json_loadb
 * would build for such a body, with jansson's constructors for the plain
 * values and json_loadb only for nested values' own bytes.
 *
 * It never judges a body: anything outside that shape (escapes or non-ASCII
 * in a string it would build, numbers other than small non-negative
 * integers, duplicate members, a body that is not an object, bytes that do
 * not parse) is declined, and the caller parses the body with json_loadb,
 * which also words the error.  The fuzz-mcp target checks that every tree it
 * returns equals json_loadb's.
 *
 * Parts of the tree are shared with other requests' trees, of any
 * principal: params._meta (a small per-process cache keyed by its exact
 * bytes: a client sends the same _meta with every request), every string
 * value of up to 48 bytes of the message and of params (a table of kept
 * strings: "2.0", methods, tool names, ids, cursors, requestState) and every
 * integer from 0 to 255 there (ids).  Nothing may modify them in place
 * (json_string_set*, json_integer_set, or writing into _meta).  What is
 * modified in place must stay per-request, as it is: params.arguments
 * (schema_validate coerces into it) and params.inputResponses.  One
 * exception: an empty arguments object read by rpc_parse_flat() is shared
 * (schema_validate only replaces members, and {} has none), so the modern
 * route must not add members to arguments.
 */
#ifndef ALY_RPC_PARSE_H
#define ALY_RPC_PARSE_H

#include <jansson.h>
#include <stddef.h>

/*
 * Borrowed pointers to the members the MCP engine reads of every message,
 * NULL when absent: found while parsing, so the hot path does not look them
 * up (a jansson lookup hashes the key) again and again.
 */
typedef struct rpc_view {
    json_t *jsonrpc, *id, *method, *params, *result, *error; /* of the message */
    json_t *name, *arguments, *meta, *inputs, *state;        /* of params (object): inputResponses, requestState */
    json_t *claim, *caps, *log_level; /* of params._meta (object): the io.modelcontextprotocol/ protocolVersion,
                                         clientCapabilities and logLevel */
} rpc_view_t;

/* 0 with *out (a new reference) and its view, or 1: not of the common shape, parse it with json_loadb. */
int rpc_parse(const char *buf, size_t len, json_t **out, rpc_view_t *view);

/*
 * The flat reader, for a request the modern era serves (its view is all it
 * reads): 0 with *view holding a reference to each member it names, to be
 * let go with rpc_view_release(); 1 declines, and the body is read with
 * rpc_parse() or json_loadb instead.  Nothing is built beyond the members'
 * own values: no message object and no params object.  It takes a message
 * of jsonrpc, id, method (a string) and params, whose members are only
 * name, arguments and _meta; any other member, a duplicate, or what
 * rpc_parse() would decline, declines.  params, result, error, inputs and
 * state stay NULL in its view.
 */
int rpc_parse_flat(const char *buf, size_t len, rpc_view_t *view);

/* Lets go of what rpc_parse_flat() put in *view, and clears it. */
void rpc_view_release(rpc_view_t *view);

/* The view of a message parsed otherwise (json_loadb, a batch's element): all NULL when msg is not an object. */
void rpc_view_of(json_t *msg, rpc_view_t *view);

/* Frees the _meta cache (at exit, so leak checkers see a clean process). */
void rpc_parse_reset(void);

#endif
