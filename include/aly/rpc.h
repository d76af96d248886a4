/*
 * JSON-RPC 2.0 error codes: every code alyd puts in an error object, in one
 * place.  The -32768..-32000 range is reserved by JSON-RPC; -32099..-32000 is
 * "implementation-defined server errors", where the MCP specification and
 * alyd pick theirs.  A code is part of the wire contract: never renumber one.
 */
#ifndef ALY_RPC_H
#define ALY_RPC_H

/* JSON-RPC 2.0 */
#define RPC_PARSE_ERROR (-32700)
#define RPC_INVALID_REQUEST (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS (-32602)
#define RPC_INTERNAL_ERROR (-32603)

/* MCP: resources/read of a URI nothing serves (legacy sessions; the modern era uses -32602 with data.uri). */
#define RPC_RESOURCE_NOT_FOUND (-32002)

/* MCP 2026-07-28: HTTP 400 refusals of a modern request before it reaches a method. */
#define RPC_HEADER_MISMATCH (-32020)     /* a standard header is missing or disagrees with the body */
#define RPC_MISSING_CAPABILITY (-32021)  /* data.requiredCapabilities: what the request did not declare */
#define RPC_UNSUPPORTED_VERSION (-32022) /* data.supported, data.requested */

/* alyd: the HTTP refusals also carry a JSON-RPC error body. */
#define RPC_UNAUTHORIZED (-32001)       /* 401: no or bad credential */
#define RPC_INSUFFICIENT_SCOPE (-32003) /* 403: data.required_scope names the missing scope */
#define RPC_RATE_LIMITED (-32029)       /* 429: data.retry_after_seconds says when to come back */

/*
 * The same three refusals answering an MCP 2026-07-28 request.  That revision
 * keeps -32020..-32099 for codes it defines (emitting another there is a MUST
 * NOT), and asks that -32000..-32019 not be used by new code: so outside the
 * range JSON-RPC reserves, numbered after the HTTP status that carries them.
 * Legacy requests keep the codes above, byte for byte.
 */
#define RPC_MODERN_UNAUTHORIZED (-31401)
#define RPC_MODERN_INSUFFICIENT_SCOPE (-31403)
#define RPC_MODERN_RATE_LIMITED (-31429)

#endif
