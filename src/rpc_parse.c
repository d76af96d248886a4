/*
 * The JSON-RPC request parser of the hot path: see aly/rpc_parse.h for the
 * contract (the tree json_loadb would build, or a refusal to judge).
 *
 * Two levels are built by hand, the message and its params; every nested
 * value below them is located by bracket counting and handed to json_loadb
 * alone.  That split is sound because a JSON value's extent is decided by
 * its own bytes: when json_loadb accepts the span, the span is the value the
 * whole-body parse would have read there.
 */
#include "aly/rpc_parse.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aly/json_ref.h"

/* Nested values deeper than this are left to json_loadb on the whole body (which has its own limit). */
#define NEST_MAX 64
/* A _meta longer than this is parsed every time rather than kept. */
#define META_MAX_BYTES 2048
#define META_SLOTS 8
/* The levels of rpc_parse_flat(): the message and its params, neither built. */
#define FLAT_MESSAGE 2
#define FLAT_PARAMS 3

typedef struct {
    const char *p, *end;
} scan_t;

static void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* The bytes a plain string may hold: printable ASCII but the quote (0x22) and the backslash (0x5c). */
static const unsigned char plain_byte[256] = {[0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7e] = 1};

/* A string of printable ASCII without escapes (what method names, tool names and keys are): its content, or -1. */
static int plain_string(scan_t *s, const char **b, size_t *n)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    const char *q = s->p + 1;
    while (q < s->end && plain_byte[(unsigned char)*q])
        q++;
    if (q >= s->end || *q != '"')
        return -1;
    *b = s->p + 1;
    *n = (size_t)(q - *b);
    s->p = q + 1;
    return 0;
}

/* Moves past one object or array without building it; its bytes are judged by json_loadb afterwards. */
static int skip_nested(scan_t *s)
{
    int depth = 0;
    do {
        if (s->p >= s->end)
            return -1;
        char c = *s->p++;
        if (c == '{' || c == '[') {
            if (++depth > NEST_MAX)
                return -1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == '"') {
            while (s->p < s->end && *s->p != '"') {
                if (*s->p == '\\' && s->end - s->p < 2)
                    return -1; /* a backslash as the last byte: never step past the end */
                s->p += *s->p == '\\' ? 2 : 1;
            }
            if (s->p >= s->end)
                return -1;
            s->p++;
        }
    } while (depth > 0);
    return 0;
}

static void meta_view(json_t *meta, rpc_view_t *v)
{
    v->claim = json_object_get(meta, "io.modelcontextprotocol/protocolVersion");
    v->caps = json_object_get(meta, "io.modelcontextprotocol/clientCapabilities");
    v->log_level = json_object_get(meta, "io.modelcontextprotocol/logLevel");
}

static struct meta_slot {
    char *bytes;
    size_t len;
    json_t *value, *claim, *caps, *log_level; /* the _meta and what the view takes from it */
} meta_cache[META_SLOTS];
static unsigned meta_next;

/*
 * params._meta starting at s->p, shared with earlier requests that sent the same bytes.  A kept _meta is a
 * whole JSON value, so bytes that start with it are that value and end where it ends: a hit needs no scan.
 */
static json_t *meta_value(scan_t *s, rpc_view_t *view)
{
    size_t left = (size_t)(s->end - s->p);
    for (size_t i = 0; i < META_SLOTS; i++) {
        struct meta_slot *m = &meta_cache[i];
        if (m->value != NULL && m->len <= left && memcmp(m->bytes, s->p, m->len) == 0) {
            s->p += m->len;
            view->claim = m->claim;
            view->caps = m->caps;
            view->log_level = m->log_level;
            return json_ref(m->value);
        }
    }
    const char *b = s->p;
    if (skip_nested(s) != 0)
        return NULL;
    size_t n = (size_t)(s->p - b);
    json_t *v = json_loadb(b, n, 0, NULL);
    if (v == NULL)
        return NULL;
    meta_view(v, view);
    char *copy = n <= META_MAX_BYTES ? malloc(n) : NULL;
    if (copy != NULL) {
        struct meta_slot *slot = &meta_cache[meta_next++ % META_SLOTS];
        free(slot->bytes);
        json_unref(slot->value);
        memcpy(copy, b, n);
        *slot = (struct meta_slot){copy, n, json_ref(v), view->claim, view->caps, view->log_level};
    }
    return v;
}

/*
 * Short string values of the message and its params ("2.0", method and tool
 * names) recur in nearly every request: kept, they cost no allocation.  A
 * direct-mapped table of immutable jansson strings (nothing in alyd changes
 * a string value in place), a slot replaced by the next string that maps to
 * it.
 */
#define INTERN_SLOTS 64
#define INTERN_MAX 48
static json_t *intern_table[INTERN_SLOTS];

static json_t *interned(const char *b, size_t n)
{
    if (n > INTERN_MAX)
        return json_stringn_nocheck(b, n);
    unsigned h = (unsigned)n * 31u;
    for (size_t i = 0; i < n; i++)
        h = h * 33u + (unsigned char)b[i];
    json_t **slot = &intern_table[h % INTERN_SLOTS];
    if (*slot != NULL && json_string_length(*slot) == n && memcmp(json_string_value(*slot), b, n) == 0)
        return json_ref(*slot);
    json_t *v = json_stringn_nocheck(b, n);
    if (v != NULL) {
        json_unref(*slot);
        *slot = json_ref(v);
    }
    return v;
}

/*
 * The empty object a flat read gives for "arguments": {} (an argument-less
 * tool call, most of the modern era's calls), one per process rather than an
 * object and its hash table per request.  Sharing it is safe because nothing
 * the modern route hands it to writes into arguments but schema_validate,
 * which replaces members' values and an empty object has none.  The built
 * tree of rpc_parse() keeps its own {} objects: the legacy engine is wider.
 */
static json_t *empty_args;

/*
 * Small non-negative integers at the message and params levels (request ids
 * counting up from 0 or 1: nearly every id a client sends), one kept value
 * each rather than an allocation per request.  Nothing in alyd sets an
 * integer in place (json_integer_set is never called).
 */
#define SMALL_INTS 256
static json_t *small_int[SMALL_INTS];

static json_t *integer(json_int_t v)
{
    if (v < 0 || v >= SMALL_INTS)
        return json_integer(v);
    if (small_int[v] == NULL)
        small_int[v] = json_integer(v);
    return json_ref(small_int[v]);
}

static json_t *flat_empty(void)
{
    if (empty_args == NULL)
        empty_args = json_object();
    return json_ref(empty_args);
}

void rpc_parse_reset(void)
{
    json_unref(empty_args);
    empty_args = NULL;
    for (size_t i = 0; i < SMALL_INTS; i++) {
        json_unref(small_int[i]);
        small_int[i] = NULL;
    }
    for (size_t i = 0; i < INTERN_SLOTS; i++) {
        json_unref(intern_table[i]);
        intern_table[i] = NULL;
    }
    for (size_t i = 0; i < META_SLOTS; i++) {
        free(meta_cache[i].bytes);
        json_unref(meta_cache[i].value);
        meta_cache[i] = (struct meta_slot){NULL, 0, NULL, NULL, NULL, NULL};
    }
}

static int parse_object(scan_t *s, int level, json_t **out, rpc_view_t *view);

/*
 * One member's value at level (0: the message, 1: params, both built; FLAT_MESSAGE and FLAT_PARAMS: read
 * flat, so params is walked for its members and nothing of it kept); NULL declines.
 */
static json_t *value(scan_t *s, int level, const char *key, size_t klen, rpc_view_t *view)
{
    if (s->p >= s->end)
        return NULL;
    const char *start = s->p, *b;
    size_t n;
    char c = *s->p;
    if (c == '"')
        return plain_string(s, &b, &n) == 0 ? interned(b, n) : NULL;
    if (c >= '0' && c <= '9') {
        json_int_t v = 0;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9' && s->p - start < 18)
            v = v * 10 + (*s->p++ - '0');
        /* Leading zeros are not JSON; reals, exponents and longer integers are jansson's to read. */
        if ((*start == '0' && s->p - start > 1) ||
            (s->p < s->end && ((*s->p >= '0' && *s->p <= '9') || *s->p == '.' || *s->p == 'e' || *s->p == 'E')))
            return NULL;
        return integer(v);
    }
    static const struct {
        const char *text;
        size_t len;
    } literals[] = {{"true", 4}, {"false", 5}, {"null", 4}};
    for (size_t i = 0; i < 3; i++)
        if (c == literals[i].text[0] && (size_t)(s->end - s->p) >= literals[i].len &&
            memcmp(s->p, literals[i].text, literals[i].len) == 0) {
            s->p += literals[i].len;
            return i == 0 ? json_true() : i == 1 ? json_false() : json_null();
        }
    if (c != '{' && c != '[')
        return NULL;
    if (level == 0 && c == '{' && klen == 6 && memcmp(key, "params", 6) == 0) {
        json_t *params;
        return parse_object(s, 1, &params, view) == 0 ? params : NULL;
    }
    if (level == FLAT_MESSAGE && c == '{' && klen == 6 && memcmp(key, "params", 6) == 0)
        return parse_object(s, FLAT_PARAMS, NULL, view) == 0 ? json_null() : NULL; /* a placeholder: nothing is kept */
    if ((level == 1 || level == FLAT_PARAMS) && c == '{' && klen == 5 && memcmp(key, "_meta", 5) == 0)
        return meta_value(s, view);
    if (skip_nested(s) != 0)
        return NULL;
    n = (size_t)(s->p - start);
    scan_t in = {start + 1, s->p};
    skip_ws(&in);
    if (c == '{' && in.p == s->p - 1 && *in.p == '}')
        return level == FLAT_PARAMS ? flat_empty() : json_object(); /* {} needs no parser */
    return json_loadb(start, n, 0, NULL);
}

/* The members the view holds, by level: where each one goes. */
typedef struct {
    const char *name;
    size_t len;
    size_t off;
} view_member_t;

#define VIEW_MEMBER(level_name, field)                                                                                             \
    {                                                                                                                              \
        level_name, sizeof(level_name) - 1, offsetof(rpc_view_t, field)                                                            \
    }
static const view_member_t message_members[] = {
    VIEW_MEMBER("jsonrpc", jsonrpc), VIEW_MEMBER("id", id),         VIEW_MEMBER("method", method),
    VIEW_MEMBER("params", params),   VIEW_MEMBER("result", result), VIEW_MEMBER("error", error),
};
static const view_member_t params_members[] = {
    VIEW_MEMBER("name", name),          VIEW_MEMBER("arguments", arguments),
    VIEW_MEMBER("_meta", meta),         VIEW_MEMBER("inputResponses", inputs),
    VIEW_MEMBER("requestState", state),
};

static void view_note(rpc_view_t *view, int level, const char *key, size_t klen, json_t *v)
{
    const view_member_t *m = level == 0 ? message_members : params_members;
    size_t n = level == 0 ? sizeof(message_members) / sizeof(m[0]) : sizeof(params_members) / sizeof(m[0]);
    for (size_t i = 0; i < n; i++)
        if (m[i].len == klen && memcmp(m[i].name, key, klen) == 0) {
            *(json_t **)((char *)view + m[i].off) = v;
            return;
        }
}

/* Members a built object may have before duplicates are looked for with jansson rather than among these. */
#define SEEN_MAX 16

/*
 * Where a member of a flat level goes in the view, or NULL when the flat
 * reader does not take that member (the body is then read whole).  params
 * has its own mark, so a second params is seen as a duplicate.
 */
static json_t **flat_slot(rpc_view_t *view, int level, const char *key, size_t klen, json_t **params_mark)
{
#define FLAT_KEY(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, sizeof(lit) - 1) == 0)
    if (level == FLAT_MESSAGE)
        return FLAT_KEY("jsonrpc")  ? &view->jsonrpc
               : FLAT_KEY("id")     ? &view->id
               : FLAT_KEY("method") ? &view->method
               : FLAT_KEY("params") ? params_mark
                                    : NULL;
    return FLAT_KEY("name") ? &view->name : FLAT_KEY("arguments") ? &view->arguments : FLAT_KEY("_meta") ? &view->meta : NULL;
#undef FLAT_KEY
}

/*
 * An object whose members are built here; 0 with *out, -1 declines.  At a
 * flat level nothing is built: each member's value goes to its view slot
 * (a reference the view holds), and out is unused.
 */
static int parse_object(scan_t *s, int level, json_t **out, rpc_view_t *view)
{
    int flat = level >= FLAT_MESSAGE;
    json_t *obj = flat ? NULL : json_object(), *params_mark = NULL;
    if (!flat && obj == NULL)
        return -1;
    s->p++; /* the '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        if (!flat)
            *out = obj;
        return 0;
    }
    struct {
        const char *key;
        size_t len;
    } seen[SEEN_MAX];
    size_t n_seen = 0;
    for (;;) {
        const char *key;
        size_t klen;
        if (plain_string(s, &key, &klen) != 0)
            break;
        json_t **slot = NULL;
        if (flat) {
            /* A member the flat view has no place for, or a duplicate: read the body whole. */
            slot = flat_slot(view, level, key, klen, &params_mark);
            if (slot == NULL || *slot != NULL)
                break;
        } else {
            /* A duplicate member: jansson keeps the last one; leave that to it. */
            int dup = n_seen == SEEN_MAX && json_object_getn(obj, key, klen) != NULL;
            for (size_t i = 0; i < n_seen && !dup; i++)
                dup = seen[i].len == klen && memcmp(seen[i].key, key, klen) == 0;
            if (dup)
                break;
            if (n_seen < SEEN_MAX)
                seen[n_seen].key = key, seen[n_seen++].len = klen;
        }
        skip_ws(s);
        if (s->p >= s->end || *s->p++ != ':')
            break;
        skip_ws(s);
        if (slot == &params_mark && (s->p >= s->end || *s->p != '{'))
            break; /* params that is not an object: the whole read words the error */
        json_t *v = value(s, level, key, klen, view);
        if (v == NULL)
            break;
        if (flat) {
            *slot = v;
        } else {
            view_note(view, level, key, klen, v);
            if (json_object_setn_new_nocheck(obj, key, klen, v) != 0)
                break;
        }
        skip_ws(s);
        if (s->p >= s->end)
            break;
        char c = *s->p++;
        if (c == '}') {
            if (!flat)
                *out = obj;
            return 0;
        }
        if (c != ',')
            break;
        skip_ws(s);
    }
    json_unref(obj);
    return -1;
}

int rpc_parse(const char *buf, size_t len, json_t **out, rpc_view_t *view)
{
    scan_t s = {buf, buf + len};
    rpc_view_t v = {0};
    skip_ws(&s);
    json_t *msg;
    if (s.p >= s.end || *s.p != '{' || parse_object(&s, 0, &msg, &v) != 0)
        return 1;
    skip_ws(&s);
    if (s.p != s.end) {
        json_unref(msg);
        return 1;
    }
    /* Members of params and of _meta count only when those are objects (they are, when built here). */
    *out = msg;
    *view = v;
    return 0;
}

int rpc_parse_flat(const char *buf, size_t len, rpc_view_t *view)
{
    scan_t s = {buf, buf + len};
    rpc_view_t v = {0};
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{' || parse_object(&s, FLAT_MESSAGE, NULL, &v) != 0) {
        rpc_view_release(&v);
        return 1;
    }
    skip_ws(&s);
    if (s.p != s.end || !json_is_string(v.method)) {
        rpc_view_release(&v);
        return 1;
    }
    *view = v;
    return 0;
}

void rpc_view_release(rpc_view_t *view)
{
    json_t *held[] = {view->jsonrpc, view->id, view->method, view->name, view->arguments, view->meta};
    for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
        json_unref(held[i]);
    *view = (rpc_view_t){0};
}

void rpc_view_of(json_t *msg, rpc_view_t *view)
{
    *view = (rpc_view_t){0};
    if (!json_is_object(msg))
        return;
    for (size_t i = 0; i < sizeof(message_members) / sizeof(message_members[0]); i++)
        *(json_t **)((char *)view + message_members[i].off) = json_object_get(msg, message_members[i].name);
    if (!json_is_object(view->params))
        return;
    for (size_t i = 0; i < sizeof(params_members) / sizeof(params_members[0]); i++)
        *(json_t **)((char *)view + params_members[i].off) = json_object_get(view->params, params_members[i].name);
    if (json_is_object(view->meta))
        meta_view(view->meta, view);
}
