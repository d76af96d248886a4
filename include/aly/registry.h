/*
 * The registry of what an MCP client can list and use: tools, resources
 * (static and templates) and prompts, each a table of descriptors.  Adding a
 * tool is adding one descriptor (name, scope, schemas, annotations, handler).
 *
 * Modules register their tables once per worker at start-up; registration
 * parses and checks every schema, so a broken descriptor stops the worker
 * with a message instead of misbehaving at call time.  The registry enforces
 * the required scope (a principal lacking it gets RPC_INSUFFICIENT_SCOPE with
 * data {"required_scope": name}, which the transport turns into an HTTP 403)
 * and validates arguments against inputSchema (aly/schema.h) before a handler
 * runs.  The registry knows no transport: it sees calls through aly/handler.h.
 */
#ifndef ALY_REGISTRY_H
#define ALY_REGISTRY_H

#include <jansson.h>

#include "aly/handler.h"
#include "aly/scope.h"

/* Annotations: advertised to the client in tools/list as hints. */
enum {
    TOOL_READ_ONLY = 1 << 0,
    TOOL_DESTRUCTIVE = 1 << 1,
    TOOL_IDEMPOTENT = 1 << 2,
    TOOL_OPEN_WORLD = 1 << 3,
};

/*
 * How the registry may run a tool: never advertised.  TOOL_CACHED: the result
 * depends only on the workspace, the arguments and the durable store, and the
 * tool emits no notifications, so the registry may serve it from its
 * snapshot-keyed result cache.
 */
enum {
    TOOL_CACHED = 1 << 0,
};

typedef mcp_status_t (*mcp_tool_fn)(mcp_call_t *call, json_t *args);

typedef struct mcp_tool_desc {
    const char *name;
    const char *title;
    const char *description;
    scope_set_t scope;         /* 0: any principal */
    const char *input_schema;  /* JSON text */
    const char *output_schema; /* JSON text or NULL */
    unsigned annotations;      /* TOOL_READ_ONLY ... */
    mcp_tool_fn call;
    unsigned run; /* TOOL_CACHED or 0 */
} mcp_tool_desc_t;

/* Resource handlers complete with {"contents":[...]}. vars holds template variables. */
typedef mcp_status_t (*mcp_resource_fn)(mcp_call_t *call, const char *uri, json_t *vars);
/* Completion: returns a new array of suggestions for argument arg starting with prefix. */
typedef json_t *(*mcp_complete_fn)(mcp_call_t *call, const char *arg, const char *prefix);

typedef struct mcp_resource_desc {
    const char *uri; /* a URI, or a template with {var} segments */
    int is_template;
    const char *name;
    const char *title;
    const char *description;
    const char *mime_type;
    scope_set_t scope;
    mcp_resource_fn read;
    mcp_complete_fn complete; /* templates: suggests variable values; may be NULL */
} mcp_resource_desc_t;

/* Prompt handlers complete with {"description":..., "messages":[...]}. */
typedef mcp_status_t (*mcp_prompt_fn)(mcp_call_t *call, json_t *args);

typedef struct mcp_prompt_desc {
    const char *name;
    const char *title;
    const char *description;
    const char *arguments; /* JSON array of {"name","description","required"} */
    scope_set_t scope;
    mcp_prompt_fn get;
    mcp_complete_fn complete; /* may be NULL */
} mcp_prompt_desc_t;

int registry_add_tools(const mcp_tool_desc_t *tools, size_t n, aly_err_t *err);
int registry_add_resources(const mcp_resource_desc_t *res, size_t n, aly_err_t *err);
int registry_add_prompts(const mcp_prompt_desc_t *prompts, size_t n, aly_err_t *err);

/* The MCP methods backed by the registry (params may be NULL). */
void registry_tools_list(mcp_call_t *call, json_t *params);
void registry_tools_call(mcp_call_t *call, json_t *params);
/* tools/call with params' name and arguments (either may be NULL) given apart: a request read flat has no params object. */
void registry_tools_call_named(mcp_call_t *call, json_t *name, json_t *arguments);
void registry_resources_list(mcp_call_t *call, json_t *params);
void registry_resource_templates_list(mcp_call_t *call, json_t *params);
void registry_resources_read(mcp_call_t *call, json_t *params);
void registry_prompts_list(mcp_call_t *call, json_t *params);
void registry_prompts_get(mcp_call_t *call, json_t *params);
void registry_complete(mcp_call_t *call, json_t *params);

#endif
