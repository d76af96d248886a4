/*
 * libFuzzer target: the JSON-RPC body of an MCP POST up to the point where a
 * tool would run.  The body is parsed as mcp_serve() parses it (jansson,
 * any JSON value); each message of it (one, or a batch) goes through
 * mcp_message_check(), the dispatcher's own check, whose verdict must hold
 * (a request it passes has a string method, jsonrpc "2.0", an object or no
 * params, a string or integer id).  A request it passes that is a tools/call
 * of a built-in tool then has its arguments validated against that tool's
 * inputSchema with schema_validate(), the one check between hostile JSON and
 * the tools' handlers.
 *
 * The same bytes also go through rpc_parse(), the hot path's parser, which
 * must build a tree equal to json_loadb's or decline, and rpc_parse_flat(),
 * the modern era's, which must read what json_loadb reads or decline.
 *
 * The handlers trust what validation accepted: they read an "integer" with
 * json_integer_value(), copy a string bounded by maxLength into a fixed
 * buffer, rely on required members being there and on minimum/maximum.  So
 * an accepted value is walked again here against the same schema with those
 * rules, written independently of schema.c: any disagreement aborts.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/mcp.h"
#include "aly/rpc.h"
#include "aly/rpc_parse.h"
#include "aly/schema.h"
#include "aly/tools.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_TOOLS 64
#define MAX_BATCH 100 /* mcp_http.c refuses longer batches (MCP_MAX_BATCH, internal to the engine) */

static struct {
    const char *name;
    json_t *schema;
} tools[MAX_TOOLS];
static size_t n_tools;

static void add_table(const mcp_tool_desc_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_error_t jerr;
        aly_err_t err;
        json_t *s = json_loads(t[i].input_schema, JSON_REJECT_DUPLICATES, &jerr);
        if (s == NULL || schema_check(s, &err) != 0 || n_tools == MAX_TOOLS) {
            fprintf(stderr, "fuzz-mcp: inputSchema of %s is unusable\n", t[i].name);
            abort();
        }
        tools[n_tools].name = t[i].name;
        tools[n_tools++].schema = s;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    add_table(tools_sites, tools_sites_count);
    add_table(tools_products, tools_products_count);
    add_table(tools_orders, tools_orders_count);
    add_table(tools_analytics, tools_analytics_count);
    return 0;
}

static void disagree(const char *tool, const char *path, const char *why)
{
    fprintf(stderr, "%s: schema_validate accepted %s, but %s\n", tool, path[0] ? path : "the arguments", why);
    abort();
}

static size_t code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

/* Is v (an integer or a real) below (sign < 0) or above (sign > 0) the bound b? */
static int beyond(json_t *v, json_t *b, int sign)
{
    if (!json_is_number(b))
        return 0;
    if (json_is_integer(v) && json_is_integer(b))
        return sign < 0 ? json_integer_value(v) < json_integer_value(b) : json_integer_value(v) > json_integer_value(b);
    return sign < 0 ? json_number_value(v) < json_number_value(b) : json_number_value(v) > json_number_value(b);
}

/* What a handler may assume about v once schema s accepted it. */
static void agree(const char *tool, json_t *s, json_t *v, const char *path)
{
    const char *type = json_string_value(json_object_get(s, "type"));
    json_t *e = json_object_get(s, "enum");
    if (json_is_array(e)) {
        size_t i;
        json_t *x;
        int found = 0;
        json_array_foreach(e, i, x)
            found |= json_equal(x, v);
        if (!found)
            disagree(tool, path, "it is none of the enum's values");
    }
    if (type == NULL)
        return;
    if (strcmp(type, "integer") == 0 || strcmp(type, "number") == 0) {
        if (strcmp(type, "integer") == 0 && !json_is_integer(v))
            disagree(tool, path, "it is not a JSON integer, and handlers read it with json_integer_value()");
        if (!json_is_number(v))
            disagree(tool, path, "it is not a number");
        if (beyond(v, json_object_get(s, "minimum"), -1))
            disagree(tool, path, "it is below the minimum");
        if (beyond(v, json_object_get(s, "maximum"), 1))
            disagree(tool, path, "it is above the maximum");
    } else if (strcmp(type, "string") == 0) {
        if (!json_is_string(v))
            disagree(tool, path, "it is not a string");
        size_t cp = code_points(json_string_value(v), json_string_length(v));
        json_t *max = json_object_get(s, "maxLength"), *min = json_object_get(s, "minLength");
        if (json_is_integer(max) && cp > (size_t)json_integer_value(max))
            disagree(tool, path, "it is longer than maxLength");
        if (json_is_integer(min) && cp < (size_t)json_integer_value(min))
            disagree(tool, path, "it is shorter than minLength");
        if (strlen(json_string_value(v)) != json_string_length(v))
            disagree(tool, path, "it holds a NUL, which every C copy of it would cut");
    } else if (strcmp(type, "boolean") == 0) {
        if (!json_is_boolean(v))
            disagree(tool, path, "it is not a boolean");
    } else if (strcmp(type, "array") == 0) {
        if (!json_is_array(v))
            disagree(tool, path, "it is not an array");
        json_t *max = json_object_get(s, "maxItems"), *items = json_object_get(s, "items");
        if (json_is_integer(max) && json_array_size(v) > (size_t)json_integer_value(max))
            disagree(tool, path, "it has more items than maxItems");
        size_t i;
        json_t *x;
        char sub[512];
        json_array_foreach(v, i, x)
            if (json_is_object(items)) {
                snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
                agree(tool, items, x, sub);
            }
    } else if (strcmp(type, "object") == 0) {
        if (!json_is_object(v))
            disagree(tool, path, "it is not an object");
        json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
        int closed = json_is_false(json_object_get(s, "additionalProperties"));
        size_t i;
        json_t *x;
        json_array_foreach(req, i, x)
            if (json_object_get(v, json_string_value(x)) == NULL)
                disagree(tool, path, "it lacks a required member");
        const char *k;
        char sub[512];
        json_object_foreach(v, k, x) {
            json_t *ps = json_object_get(props, k);
            snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k);
            if (ps == NULL && closed)
                disagree(tool, sub, "additionalProperties is false");
            if (json_is_object(ps))
                agree(tool, ps, x, sub);
        }
    }
}

static void bad_verdict(const char *what)
{
    fprintf(stderr, "mcp_message_check passed a message %s\n", what);
    abort();
}

static void check_message(json_t *m)
{
    int code = 0;
    const char *why = NULL;
    int kind = mcp_message_check(m, &code, &why);
    if (kind < 0) {
        if (why == NULL || why[0] == '\0' || (code != RPC_INVALID_REQUEST && code != RPC_INVALID_PARAMS)) {
            fprintf(stderr, "mcp_message_check refused a message without a reason or with code %d\n", code);
            abort();
        }
        return;
    }
    json_t *id = json_object_get(m, "id"), *params = json_object_get(m, "params");
    const char *version = json_string_value(json_object_get(m, "jsonrpc"));
    if (!json_is_object(m) || version == NULL || strcmp(version, "2.0") != 0)
        bad_verdict("that is not a JSON-RPC 2.0 object");
    if (kind == 1) {
        if (id == NULL || json_object_get(m, "method") != NULL)
            bad_verdict("as a response that has no id, or has a method");
        return;
    }
    if (kind != 0)
        bad_verdict("with an unknown verdict");
    if (id != NULL && !json_is_string(id) && !json_is_integer(id))
        bad_verdict("whose id is neither a string nor an integer");
    if (params != NULL && !json_is_object(params))
        bad_verdict("whose params are not an object");
    const char *method = json_string_value(json_object_get(m, "method"));
    if (method == NULL)
        bad_verdict("without a string method");
    const char *name = json_string_value(json_object_get(params, "name"));
    /* Only requests (with an id) reach a method; notifications stop at the dispatcher. */
    if (id == NULL || strcmp(method, "tools/call") != 0 || name == NULL)
        return;
    size_t t;
    for (t = 0; t < n_tools && strcmp(tools[t].name, name) != 0; t++)
        ;
    if (t == n_tools)
        return;
    /* As the registry does: absent arguments are {}, non-object ones never reach validation. */
    json_t *args = json_object_get(params, "arguments");
    if (args != NULL && !json_is_object(args))
        return;
    json_t *own = args == NULL ? json_object() : json_incref(args);
    aly_err_t err = {.msg = ""};
    if (schema_validate(tools[t].schema, own, &err) != 0) {
        if (err.msg[0] == '\0') {
            fprintf(stderr, "%s: arguments refused without a reason\n", name);
            abort();
        }
    } else {
        agree(name, tools[t].schema, own, "");
    }
    json_decref(own);
}

static int one_of(const char *k, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, names[i]) == 0)
            return 1;
    return 0;
}

/* What rpc_parse_flat() takes is a message of the flat shape, and its view holds what json_loadb's tree holds. */
static void check_flat(const uint8_t *data, size_t size, json_t *body)
{
    static const char *const top[] = {"jsonrpc", "id", "method", "params"}, *const in_params[] = {"name", "arguments", "_meta"};
    rpc_view_t fv, sv;
    if (rpc_parse_flat((const char *)data, size, &fv) != 0)
        return;
    rpc_view_of(body, &sv);
    int same = json_is_object(body) && json_is_string(sv.method) && (sv.params == NULL || json_is_object(sv.params)) &&
               fv.params == NULL && fv.result == NULL && fv.error == NULL && fv.inputs == NULL && fv.state == NULL;
    const char *k;
    json_t *m;
    json_object_foreach(body, k, m)
        same = same && one_of(k, top, 4);
    json_object_foreach(sv.params, k, m)
        same = same && one_of(k, in_params, 3);
    json_t *fm[] = {fv.jsonrpc, fv.id, fv.method, fv.name, fv.arguments, fv.meta, fv.claim, fv.caps, fv.log_level},
           *sm[] = {sv.jsonrpc, sv.id, sv.method, sv.name, sv.arguments, sv.meta, sv.claim, sv.caps, sv.log_level};
    for (size_t i = 0; i < sizeof(fm) / sizeof(fm[0]); i++)
        same = same && (fm[i] == NULL ? sm[i] == NULL : sm[i] != NULL && json_equal(fm[i], sm[i]));
    if (!same) {
        fprintf(stderr, "rpc_parse_flat took a body json_loadb reads otherwise\n");
        abort();
    }
    rpc_view_release(&fv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr), *fast = NULL;
    /* The hot path's parser must build json_loadb's tree or decline; twice, so the _meta cache's hit is checked too. */
    for (int round = 0; round < 2; round++) {
        rpc_view_t fv, sv;
        if (body != NULL)
            check_flat(data, size, body);
        if (rpc_parse((const char *)data, size, &fast, &fv) != 0)
            continue;
        if (body == NULL || !json_equal(body, fast)) {
            fprintf(stderr, "rpc_parse built a tree json_loadb %s\n", body == NULL ? "refuses" : "does not build");
            abort();
        }
        rpc_view_of(body, &sv);
        json_t *const *pf = (json_t *const *)&fv, *const *ps = (json_t *const *)&sv;
        for (size_t i = 0; i < sizeof(fv) / sizeof(json_t *); i++)
            if (pf[i] == NULL ? ps[i] != NULL : ps[i] == NULL || !json_equal(pf[i], ps[i])) {
                fprintf(stderr, "rpc_parse's view differs from rpc_view_of's in member %zu\n", i);
                abort();
            }
        json_decref(fast);
    }
    if (body == NULL) {
        rpc_view_t fv;
        if (rpc_parse_flat((const char *)data, size, &fv) == 0) {
            fprintf(stderr, "rpc_parse_flat took a body json_loadb refuses\n");
            abort();
        }
        return 0;
    }
    if (json_is_array(body)) {
        size_t i;
        json_t *m;
        json_array_foreach(body, i, m)
            if (i < MAX_BATCH)
                check_message(m);
    } else {
        check_message(body);
    }
    json_decref(body);
    return 0;
}
