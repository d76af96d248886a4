/*
 * The registry of tools, resources and prompts (aly/registry.h): holds the
 * descriptor tables with their parsed schemas and pre-built listings, pages
 * the list methods with opaque cursors, and guards every use with the scope
 * check and, for tools, the argument validator.
 */
#include "aly/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/cursor.h"
#include "aly/json_ref.h"
#include "aly/schema.h"

#define PAGE_SIZE 50
#define CACHE_SLOTS 256
#define CACHE_MAX_ENTRY (64 * 1024)
#define CACHE_MAX_BYTES ((size_t)2 << 20) /* results and keys held at once, per worker */
#define CACHE_MAX_KEY 2048                /* workspace, tool and canonical arguments */

/*
 * Results of cacheable tools (TOOL_CACHED), per worker, keyed by workspace, tool and
 * canonical arguments, and valid only for the store snapshot they were
 * computed at: any write to the durable store moves the snapshot id and so
 * retires every entry.  A hit skips the tool and the JSON serialisation.
 * Direct-mapped (a colliding key replaces the slot); isError and
 * input_required results are not kept, and a call that carries the client's
 * answers neither reads nor fills it.  Bounded by CACHE_MAX_BYTES in all: a
 * result that would pass it first retires the entries of older snapshots,
 * and is not kept when that is not enough (256 x 64 KB could otherwise pin
 * 16 MB per worker).
 */
typedef struct cache_entry {
    char *key;
    char *text;
    size_t len;
    uint64_t snapshot;
} cache_entry_t;

static cache_entry_t result_cache[CACHE_SLOTS];
static size_t cache_bytes;

typedef struct keybuf {
    char *p;
    size_t len, cap; /* len == cap: it did not fit */
} keybuf_t;

/* A json_dump_callback sink into a fixed buffer, leaving room for the NUL. */
static int key_append(const char *s, size_t n, void *data)
{
    keybuf_t *k = data;
    if (n >= k->cap - k->len) {
        k->len = k->cap;
        return -1;
    }
    memcpy(k->p + k->len, s, n);
    k->len += n;
    return 0;
}

static size_t entry_bytes(const cache_entry_t *e)
{
    return e->key != NULL ? e->len + strlen(e->key) + 2 : 0;
}

static void cache_drop(cache_entry_t *e)
{
    cache_bytes -= entry_bytes(e);
    free(e->key);
    free(e->text);
    *e = (cache_entry_t){NULL, NULL, 0, 0};
}

/* Keeps key -> text (both stolen) in slot e when the budget allows; 0 when kept. */
static int cache_keep(cache_entry_t *e, char *key, char *text, size_t len, uint64_t snapshot)
{
    cache_entry_t n = {key, text, len, snapshot};
    if (cache_bytes - entry_bytes(e) + entry_bytes(&n) > CACHE_MAX_BYTES)
        for (size_t i = 0; i < CACHE_SLOTS; i++)
            if (result_cache[i].key != NULL && result_cache[i].snapshot != snapshot)
                cache_drop(&result_cache[i]);
    if (cache_bytes - entry_bytes(e) + entry_bytes(&n) > CACHE_MAX_BYTES)
        return -1;
    cache_drop(e);
    *e = n;
    cache_bytes += entry_bytes(&n);
    return 0;
}

typedef struct tool_entry {
    const mcp_tool_desc_t *d;
    json_t *input;
    json_t *listing; /* the tools/list item, built once */
    /* The schema accepts {} (validation is a function of schema and value alone): most calls of a tool without
       arguments skip it. */
    int empty_ok;
} tool_entry_t;

typedef struct resource_entry {
    const mcp_resource_desc_t *d;
    json_t *listing;
} resource_entry_t;

typedef struct prompt_entry {
    const mcp_prompt_desc_t *d;
    json_t *arguments;
    json_t *listing;
} prompt_entry_t;

static struct {
    tool_entry_t *tools;
    size_t n_tools;
    resource_entry_t *resources;
    size_t n_resources;
    prompt_entry_t *prompts;
    size_t n_prompts;
} reg;

static void *grow(void *p, size_t n, size_t size)
{
    void *q = realloc(p, (n + 1) * size);
    if (q == NULL)
        abort();
    return q;
}

static json_t *parse_json(const char *text, const char *what, const char *name, aly_err_t *err)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        aly_errf(err, "%s of %s is not JSON: %s", what, name, jerr.text);
    return j;
}

static int valid_tool_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 128)
        return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
              *p == '-'))
            return 0;
    return 1;
}

int registry_add_tools(const mcp_tool_desc_t *tools, size_t n, aly_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const mcp_tool_desc_t *d = &tools[i];
        if (!valid_tool_name(d->name))
            return aly_errf(err, "tool name \"%s\" is not [A-Za-z0-9._-]{1,128}", d->name);
        for (size_t k = 0; k < reg.n_tools; k++)
            if (strcmp(reg.tools[k].d->name, d->name) == 0)
                return aly_errf(err, "tool %s registered twice", d->name);
        json_t *in = parse_json(d->input_schema, "inputSchema", d->name, err), *out = NULL;
        if (in == NULL)
            return -1;
        aly_err_t why;
        if (schema_check(in, &why) != 0) {
            json_unref(in);
            return aly_errf(err, "inputSchema of %s: %s", d->name, why.msg);
        }
        if (d->output_schema != NULL && (out = parse_json(d->output_schema, "outputSchema", d->name, err)) == NULL) {
            json_unref(in);
            return -1;
        }
        json_t *ann = json_pack("{s:b, s:b, s:b, s:b}", "readOnlyHint", (d->annotations & TOOL_READ_ONLY) != 0, "destructiveHint",
                                (d->annotations & TOOL_DESTRUCTIVE) != 0, "idempotentHint", (d->annotations & TOOL_IDEMPOTENT) != 0,
                                "openWorldHint", (d->annotations & TOOL_OPEN_WORLD) != 0);
        if (d->title != NULL)
            json_object_set_new(ann, "title", json_string(d->title));
        json_t *item = json_pack("{s:s, s:s, s:O, s:o}", "name", d->name, "description", d->description, "inputSchema", in,
                                 "annotations", ann);
        if (d->title != NULL)
            json_object_set_new(item, "title", json_string(d->title));
        if (out != NULL)
            json_object_set_new(item, "outputSchema", out);
        const char *sn = scope_name(d->scope);
        if (sn != NULL)
            json_object_set_new(item, "_meta", json_pack("{s:s}", "aly/scope", sn));
        json_t *none = json_object();
        int empty_ok = none != NULL && schema_validate(in, none, &why) == 0 && json_object_size(none) == 0;
        json_unref(none);
        reg.tools = grow(reg.tools, reg.n_tools, sizeof(*reg.tools));
        reg.tools[reg.n_tools++] = (tool_entry_t){d, in, item, empty_ok};
    }
    return 0;
}

int registry_add_resources(const mcp_resource_desc_t *res, size_t n, aly_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const mcp_resource_desc_t *d = &res[i];
        json_t *item = json_pack("{s:s, s:s}", d->is_template ? "uriTemplate" : "uri", d->uri, "name", d->name);
        if (item == NULL)
            return aly_errf(err, "resource %s: bad descriptor", d->uri);
        if (d->title != NULL)
            json_object_set_new(item, "title", json_string(d->title));
        if (d->description != NULL)
            json_object_set_new(item, "description", json_string(d->description));
        if (d->mime_type != NULL)
            json_object_set_new(item, "mimeType", json_string(d->mime_type));
        reg.resources = grow(reg.resources, reg.n_resources, sizeof(*reg.resources));
        reg.resources[reg.n_resources++] = (resource_entry_t){d, item};
    }
    return 0;
}

int registry_add_prompts(const mcp_prompt_desc_t *prompts, size_t n, aly_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const mcp_prompt_desc_t *d = &prompts[i];
        json_t *args = parse_json(d->arguments != NULL ? d->arguments : "[]", "arguments", d->name, err);
        if (args == NULL)
            return -1;
        if (!json_is_array(args)) {
            json_unref(args);
            return aly_errf(err, "arguments of prompt %s must be an array", d->name);
        }
        json_t *item = json_pack("{s:s, s:O}", "name", d->name, "arguments", args);
        if (d->title != NULL)
            json_object_set_new(item, "title", json_string(d->title));
        if (d->description != NULL)
            json_object_set_new(item, "description", json_string(d->description));
        reg.prompts = grow(reg.prompts, reg.n_prompts, sizeof(*reg.prompts));
        reg.prompts[reg.n_prompts++] = (prompt_entry_t){d, args, item};
    }
    return 0;
}

/* Refuses the call with RPC_INSUFFICIENT_SCOPE when the principal lacks need; returns 1 when refused. */
static int lacks_scope(mcp_call_t *call, scope_set_t need)
{
    scope_set_t missing;
    if (need == 0 || scope_require(mcp_call_principal(call)->scopes, need, &missing) == 0)
        return 0;
    char msg[256];
    const char *name = scope_name(missing);
    if (name == NULL)
        name = "?";
    snprintf(msg, sizeof(msg), "this needs the scope %s, which your credential lacks: mint a key that has it", name);
    mcp_call_error(call, RPC_INSUFFICIENT_SCOPE, msg, json_pack("{s:s}", "required_scope", name));
    return 1;
}

/*
 * Pages over n listing items: reads params.cursor, appends up to PAGE_SIZE
 * items to a new array under key, adds nextCursor when more remain.
 * items(i) returns the i-th listing (borrowed) or NULL to skip it.
 */
static void page(mcp_call_t *call, json_t *params, const char *kind, const char *key, size_t n, json_t *(*item)(size_t))
{
    size_t start = 0;
    json_t *c = json_object_get(params, "cursor");
    if (c != NULL) {
        char after[32], *end;
        if (!json_is_string(c) || cursor_read(json_string_value(c), json_string_length(c), kind, after, sizeof(after)) != 0 ||
            (start = strtoul(after, &end, 10), end == after || *end != '\0')) {
            mcp_call_error(call, RPC_INVALID_PARAMS, "invalid cursor: pass next_cursor back unchanged, or omit it to start over",
                           NULL);
            return;
        }
    }
    json_t *arr = json_array();
    size_t i;
    for (i = start; i < n && json_array_size(arr) < PAGE_SIZE; i++) {
        json_t *it = item(i);
        if (it != NULL)
            json_array_append(arr, it);
    }
    json_t *result = json_pack("{s:o}", key, arr);
    if (i < n) {
        char after[32], text[CURSOR_TEXT_MAX];
        snprintf(after, sizeof(after), "%zu", i);
        if (cursor_make(kind, after, text, sizeof(text)) > 0)
            json_object_set_new(result, "nextCursor", json_string(text));
    }
    mcp_call_result(call, result);
}

static json_t *tool_item(size_t i)
{
    return reg.tools[i].listing;
}

static json_t *static_resource_item(size_t i)
{
    return reg.resources[i].d->is_template ? NULL : reg.resources[i].listing;
}

static json_t *template_item(size_t i)
{
    return reg.resources[i].d->is_template ? reg.resources[i].listing : NULL;
}

static json_t *prompt_item(size_t i)
{
    return reg.prompts[i].listing;
}

/* ---- methods ---- */

void registry_tools_list(mcp_call_t *call, json_t *params)
{
    page(call, params, "tools", "tools", reg.n_tools, tool_item);
}

static void call_cached(mcp_call_t *call, const tool_entry_t *t, json_t *args)
{
    /* Answers steer the result (which site the client picked), and the key does not hold them: neither serve nor keep. */
    if (mcp_call_answering(call)) {
        t->d->call(call, args);
        return;
    }
    /* The key is built on the stack: a hit allocates nothing.  Arguments too long for it are not cached. */
    char kbuf[CACHE_MAX_KEY];
    keybuf_t kb = {kbuf, 0, sizeof(kbuf)};
    const char *ws = mcp_call_principal(call)->workspace;
    uint64_t snapshot = store_snapshot(mcp_call_store(call));
    if (snapshot == 0 || key_append(ws, strlen(ws), &kb) != 0 || key_append("\n", 1, &kb) != 0 ||
        key_append(t->d->name, strlen(t->d->name), &kb) != 0 || key_append("\n", 1, &kb) != 0 ||
        (json_object_size(args) == 0 ? key_append("{}", 2, &kb)
                                     : json_dump_callback(args, key_append, &kb, JSON_COMPACT | JSON_SORT_KEYS)) != 0 ||
        kb.len == kb.cap) {
        t->d->call(call, args);
        return;
    }
    kbuf[kb.len] = '\0';
    cache_entry_t *e = &result_cache[aly_fnv1a(kbuf, strlen(kbuf)) % CACHE_SLOTS];
    if (e->key != NULL && e->snapshot == snapshot && strcmp(e->key, kbuf) == 0) {
        mcp_call_result_text(call, e->text, e->len);
        return;
    }
    mcp_capture_t cap = {NULL, 0, 0};
    mcp_call_capture(call, &cap);
    if (t->d->call(call, args) == MCP_PENDING) {
        mcp_call_capture(call, NULL); /* still running: its result will not be cached */
        return;
    }
    char *key = strdup(kbuf);
    /* The call has completed (and is gone); cap holds its result. */
    if (key != NULL && cap.text != NULL && !cap.is_error && cap.len <= CACHE_MAX_ENTRY &&
        cache_keep(e, key, cap.text, cap.len, snapshot) == 0)
        return;
    free(cap.text);
    free(key);
}

void registry_tools_call(mcp_call_t *call, json_t *params)
{
    registry_tools_call_named(call, json_object_get(params, "name"), json_object_get(params, "arguments"));
}

void registry_tools_call_named(mcp_call_t *call, json_t *tool, json_t *args)
{
    const char *name = json_string_value(tool);
    if (name == NULL) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "tools/call needs params.name, the tool to call", NULL);
        return;
    }
    if (args != NULL && !json_is_object(args)) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "params.arguments must be an object", NULL);
        return;
    }
    const tool_entry_t *t = NULL;
    for (size_t i = 0; i < reg.n_tools && t == NULL; i++)
        if (strcmp(reg.tools[i].d->name, name) == 0)
            t = &reg.tools[i];
    if (t == NULL) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "unknown tool: call tools/list for the tools this server has",
                       json_pack("{s:s}", "tool", name));
        return;
    }
    if (lacks_scope(call, t->d->scope))
        return;
    json_t *empty = NULL;
    if (args == NULL)
        args = empty = json_object();
    aly_err_t why;
    if (!(t->empty_ok && json_object_size(args) == 0) && schema_validate(t->input, args, &why) != 0) {
        char msg[ALY_ERR_MAX + 32];
        snprintf(msg, sizeof(msg), "Invalid arguments: %s", why.msg);
        mcp_call_result(call, mcp_text_result(msg, 1));
    } else if (t->d->run & TOOL_CACHED) {
        call_cached(call, t, args);
    } else {
        t->d->call(call, args);
    }
    json_unref(empty);
}

void registry_resources_list(mcp_call_t *call, json_t *params)
{
    page(call, params, "res", "resources", reg.n_resources, static_resource_item);
}

void registry_resource_templates_list(mcp_call_t *call, json_t *params)
{
    page(call, params, "tpl", "resourceTemplates", reg.n_resources, template_item);
}

/* Matches uri against a template with {var} segments; fills vars.  1 on a match. */
static int template_match(const char *tpl, const char *uri, json_t *vars)
{
    while (*tpl) {
        if (*tpl == '{') {
            const char *end = strchr(tpl, '}');
            if (end == NULL)
                return 0;
            size_t vlen = strcspn(uri, "/?#");
            if (vlen == 0 || vlen > 256)
                return 0;
            char name[64], value[257];
            snprintf(name, sizeof(name), "%.*s", (int)(end - tpl - 1), tpl + 1);
            snprintf(value, sizeof(value), "%.*s", (int)vlen, uri);
            json_object_set_new(vars, name, json_string(value));
            tpl = end + 1;
            uri += vlen;
        } else if (*tpl++ != *uri++) {
            return 0;
        }
    }
    return *uri == '\0';
}

void registry_resources_read(mcp_call_t *call, json_t *params)
{
    const char *uri = json_string_value(json_object_get(params, "uri"));
    if (uri == NULL) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "resources/read needs params.uri", NULL);
        return;
    }
    for (int templates = 0; templates < 2; templates++) {
        for (size_t i = 0; i < reg.n_resources; i++) {
            const mcp_resource_desc_t *d = reg.resources[i].d;
            if (d->is_template != templates)
                continue;
            json_t *vars = json_object();
            int hit = templates ? template_match(d->uri, uri, vars) : strcmp(d->uri, uri) == 0;
            if (hit) {
                if (!lacks_scope(call, d->scope))
                    d->read(call, uri, vars);
                json_unref(vars);
                return;
            }
            json_unref(vars);
        }
    }
    mcp_call_error(call, RPC_RESOURCE_NOT_FOUND, "Resource not found", json_pack("{s:s}", "uri", uri));
}

void registry_prompts_list(mcp_call_t *call, json_t *params)
{
    page(call, params, "prompts", "prompts", reg.n_prompts, prompt_item);
}

static const prompt_entry_t *find_prompt(const char *name)
{
    for (size_t i = 0; name != NULL && i < reg.n_prompts; i++)
        if (strcmp(reg.prompts[i].d->name, name) == 0)
            return &reg.prompts[i];
    return NULL;
}

void registry_prompts_get(mcp_call_t *call, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    const prompt_entry_t *p = find_prompt(name);
    if (p == NULL) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "unknown prompt: call prompts/list for the prompts this server has", NULL);
        return;
    }
    if (lacks_scope(call, p->d->scope))
        return;
    json_t *args = json_object_get(params, "arguments"), *empty = NULL;
    if (args != NULL && !json_is_object(args)) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "params.arguments must be an object of strings", NULL);
        return;
    }
    if (args == NULL)
        args = empty = json_object();
    size_t i;
    json_t *a;
    json_array_foreach(p->arguments, i, a) {
        const char *an = json_string_value(json_object_get(a, "name"));
        json_t *v = json_object_get(args, an);
        if ((json_is_true(json_object_get(a, "required")) && v == NULL) || (v != NULL && !json_is_string(v))) {
            char msg[200];
            snprintf(msg, sizeof(msg), "prompt %s needs the string argument %s", p->d->name, an);
            mcp_call_error(call, RPC_INVALID_PARAMS, msg, NULL);
            json_unref(empty);
            return;
        }
    }
    p->d->get(call, args);
    json_unref(empty);
}

void registry_complete(mcp_call_t *call, json_t *params)
{
    json_t *ref = json_object_get(params, "ref"), *arg = json_object_get(params, "argument");
    const char *type = json_string_value(json_object_get(ref, "type"));
    const char *an = json_string_value(json_object_get(arg, "name"));
    const char *value = json_string_value(json_object_get(arg, "value"));
    if (type == NULL || an == NULL || value == NULL) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "completion/complete needs ref.type, argument.name and argument.value", NULL);
        return;
    }
    json_t *values = NULL;
    if (strcmp(type, "ref/prompt") == 0) {
        const prompt_entry_t *p = find_prompt(json_string_value(json_object_get(ref, "name")));
        if (p == NULL) {
            mcp_call_error(call, RPC_INVALID_PARAMS, "unknown prompt in ref.name", NULL);
            return;
        }
        if (lacks_scope(call, p->d->scope))
            return;
        values = p->d->complete != NULL ? p->d->complete(call, an, value) : NULL;
    } else if (strcmp(type, "ref/resource") == 0) {
        const char *uri = json_string_value(json_object_get(ref, "uri"));
        const mcp_resource_desc_t *d = NULL;
        for (size_t i = 0; uri != NULL && i < reg.n_resources && d == NULL; i++)
            if (strcmp(reg.resources[i].d->uri, uri) == 0)
                d = reg.resources[i].d;
        if (d == NULL) {
            mcp_call_error(call, RPC_INVALID_PARAMS, "unknown resource template in ref.uri", NULL);
            return;
        }
        if (lacks_scope(call, d->scope))
            return;
        values = d->complete != NULL ? d->complete(call, an, value) : NULL;
    } else {
        mcp_call_error(call, RPC_INVALID_PARAMS, "ref.type must be ref/prompt or ref/resource", NULL);
        return;
    }
    if (values == NULL)
        values = json_array();
    size_t total = json_array_size(values);
    while (json_array_size(values) > 100)
        json_array_remove(values, json_array_size(values) - 1);
    mcp_call_result(call, json_pack("{s:{s:o, s:I, s:b}}", "completion", "values", values, "total", (json_int_t)total, "hasMore",
                                    total > 100));
}
