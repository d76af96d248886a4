/*
 * Unit tests of the hot path's JSON-RPC parser (src/rpc_parse.c): the usual
 * shapes of both protocol eras are built, and built equal to json_loadb's
 * tree; everything it must leave to json_loadb (escapes, non-ASCII, reals,
 * duplicate members, trailing bytes, invalid nested values) is declined; a
 * repeated _meta is shared from the cache, and a different one is not.
 * The flat reader (rpc_parse_flat, the modern era's) takes only the flat
 * shape, reads it as json_loadb would, and declines everything else.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "aly/rpc_parse.h"
#include "tap.h"

/* rpc_parse() on text: 0 and equal to json_loadb, or 1 (declined). */
static int same_member(json_t *a, json_t *b)
{
    return a == NULL ? b == NULL : b != NULL && json_equal(a, b);
}

/* The view rpc_parse() returned equals the one rpc_view_of() finds in json_loadb's tree, member by member. */
static int same_view(const rpc_view_t *a, const rpc_view_t *b)
{
    json_t *const *pa = (json_t *const *)a, *const *pb = (json_t *const *)b;
    for (size_t i = 0; i < sizeof(*a) / sizeof(json_t *); i++)
        if (!same_member(pa[i], pb[i]))
            return 0;
    return 1;
}

static int parse(const char *text, json_t **out)
{
    json_t *fast = NULL;
    rpc_view_t fv, sv;
    if (rpc_parse(text, strlen(text), &fast, &fv) != 0)
        return 1;
    json_t *slow = json_loadb(text, strlen(text), JSON_DECODE_ANY, NULL);
    rpc_view_of(slow, &sv);
    int same = slow != NULL && json_equal(slow, fast) && same_view(&fv, &sv);
    json_decref(slow);
    if (out != NULL)
        *out = fast;
    else
        json_decref(fast);
    return same ? 0 : -1;
}

/*
 * rpc_parse_flat() on text: 0 when it took the body and its view holds what
 * json_loadb's tree holds (the message of the flat shape: no members but
 * jsonrpc, id, method and params, params of name, arguments and _meta only),
 * 1 when it declined, -1 when it took a body it should not have or read it
 * otherwise.
 */
static int flat(const char *text)
{
    rpc_view_t fv, sv;
    if (rpc_parse_flat(text, strlen(text), &fv) != 0)
        return 1;
    json_t *slow = json_loadb(text, strlen(text), JSON_DECODE_ANY, NULL);
    rpc_view_of(slow, &sv);
    int same = json_is_object(slow) && json_is_string(sv.method) && (sv.params == NULL || json_is_object(sv.params));
    const char *k;
    json_t *m;
    json_object_foreach(slow, k, m)
        same = same && (!strcmp(k, "jsonrpc") || !strcmp(k, "id") || !strcmp(k, "method") || !strcmp(k, "params"));
    json_object_foreach(sv.params, k, m)
        same = same && (!strcmp(k, "name") || !strcmp(k, "arguments") || !strcmp(k, "_meta"));
    json_t *fm[] = {fv.jsonrpc, fv.id, fv.method, fv.name, fv.arguments, fv.meta, fv.claim, fv.caps, fv.log_level},
           *sm[] = {sv.jsonrpc, sv.id, sv.method, sv.name, sv.arguments, sv.meta, sv.claim, sv.caps, sv.log_level};
    for (size_t i = 0; i < sizeof(fm) / sizeof(fm[0]); i++)
        same = same && same_member(fm[i], sm[i]);
    same = same && fv.params == NULL && fv.result == NULL && fv.error == NULL && fv.inputs == NULL && fv.state == NULL;
    json_decref(slow);
    rpc_view_release(&fv);
    same = same && fv.method == NULL && fv.meta == NULL && fv.claim == NULL;
    return same ? 0 : -1;
}

static const char *const flat_taken[] = {
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"sites.list\",\"arguments\":{},\"_meta\":{"
    "\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
    " {\"method\" : \"tools/list\", \"jsonrpc\":\"2.0\",\n\"id\":\"abc\"}\r\n",
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{}}",
    "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"_meta\":{\"io.modelcontextprotocol/logLevel\":\"info\"},"
    "\"arguments\":{\"site_id\":\"s\\\"}\",\"t\":\"Caf\xc3\xa9\",\"n\":[1,2.5]},\"name\":\"products.list\"}}",
    /* Values the engine refuses are still read as they are: judging them is its work. */
    "{\"jsonrpc\":\"1.0\",\"id\":{\"x\":1},\"method\":\"m\",\"params\":{\"name\":5,\"arguments\":[],\"_meta\":null}}",
};

static const char *const flat_declined[] = {
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"x\":1}",                       /* a member it has no place for */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"cursor\":\"c\"}}", /* the same in params */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":\"aly://x\"}}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"name\":\"t\",\"inputResponses\":{}}}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"name\":\"t\",\"requestState\":\"v1.x.y\"}}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", /* a reply */
    "{\"jsonrpc\":\"2.0\",\"id\":1}",               /* no method */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}",  /* a method that is no string */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":null}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":5}", /* params that is no object */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":null}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":[]}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"m\"}", /* duplicates */
    "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{},\"params\":{\"name\":\"t\"}}",
    "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"name\":\"a\",\"name\":\"b\"}}",
    "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"_meta\":{},\"_meta\":{}}}",
    "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"name\":\"a\"}} x", /* trailing bytes */
    "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"name\":\"a\"}",    /* cut short */
    "{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{\"arguments\":{\"a\":1]}}}",
    /* Multi-byte text where the reader builds or matches: the whole read decides (jansson checks the UTF-8). */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"caf\xc3\xa9\"}}",
    "{\"jsonrpc\":\"2.0\",\"id\":\"\xc3\xa9\",\"method\":\"m\"}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"caf\xc3\xa9\":1}",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"caf\xc3\xa9\":1}}",
};

static const char *const built[] = {
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"sites.list\",\"arguments\":{}}}",
    " {\"jsonrpc\" : \"2.0\" ,\n\t\"id\":\"abc-1\", \"method\":\"tools/list\"}\r\n",
    "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"ping\",\"params\":{}}",
    "{\"jsonrpc\":\"2.0\",\"id\":123456789012345678,\"result\":{\"action\":\"accept\",\"content\":{\"x\":[1,2.5,\"\\u00e9\"]}}}",
    "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"products.list\",\"arguments\":{\"site_id\":"
    "\"s\\\"}\",\"limit\":20},\"_meta\":{\"progressToken\":5,\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
    "\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
    "{\"a\":true,\"b\":false,\"c\":null,\"d\":[],\"e\":{ },\"f\":[{}],\"params\":{\"x\":null,\"y\":[true]}}",
    "{}",
    "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"resources/read\",\"params\":{\"uri\":\"aly://x\",\"inputResponses\":{\"a\":{}},"
    "\"requestState\":\"s.t\",\"_meta\":{\"io.modelcontextprotocol/logLevel\":\"info\",\"io.modelcontextprotocol/clientCapabilities\":"
    "{\"elicitation\":{}}}}}",
    "{\"id\":\"r\",\"result\":{\"x\":1},\"error\":null,\"params\":[1]}",
    "{\"params\":{\"_meta\":7,\"name\":[\"n\"]}}",
    /* Multi-byte text below params is json_loadb's to read, and is kept intact. */
    "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"products.create\",\"arguments\":{\"title\":"
    "\"Caf\xc3\xa9 cr\xc3\xa8me \xe2\x98\x95 \xf0\x9f\x8d\xb0\"}}}",
};

static const char *const declined[] = {
    "",
    "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", /* a batch */
    "\"2.0\"",
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools\\/call\"}",           /* an escape in a value it builds */
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"caf\xc3\xa9\"}",            /* non-ASCII */
    "{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}",                 /* a real */
    "{\"jsonrpc\":\"2.0\",\"id\":1e3,\"method\":\"ping\"}",                 /* an exponent */
    "{\"jsonrpc\":\"2.0\",\"id\":-1,\"method\":\"ping\"}",                  /* negative */
    "{\"jsonrpc\":\"2.0\",\"id\":01,\"method\":\"ping\"}",                  /* a leading zero */
    "{\"jsonrpc\":\"2.0\",\"id\":1234567890123456789,\"method\":\"ping\"}", /* 19 digits */
    "{\"id\":1,\"id\":2}",                                                  /* a duplicate member */
    "{\"params\":{\"name\":\"a\",\"name\":\"b\"}}",                         /* a duplicate in params */
    "{\"jsonrpc\":\"2.0\"} x",                                              /* trailing bytes */
    "{\"jsonrpc\":\"2.0\",}",
    "{\"jsonrpc\":\"2.0\"",
    "{\"jsonrpc\" \"2.0\"}",
    "{\"params\":{\"arguments\":{\"a\":1]}}", /* a nested value that does not parse */
    "{\"params\":{\"arguments\":{ ]}}",       /* an "empty object" that is not one */
    "{\"params\":{\"arguments\":[1,}}}",
    "{\"params\":{\"arguments\":\"\\u0000\"}}",             /* NUL through an escape */
    "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"ping\"}", /* an integral real is a real */
    "{\"params\":{\"arguments\":{\"t\":\"\xc3\"}}}",        /* a cut multi-byte character */
    "{\"params\":{\"arguments\":{\"t\":\"\xff\xfe\"}}}",    /* bytes that are not UTF-8 */
    "{\"id\":truex}",
    "{\"id\":tru}",
};

int main(void)
{
    for (size_t i = 0; i < sizeof(built) / sizeof(built[0]); i++)
        is_int(parse(built[i], NULL), 0, "built[%zu] as json_loadb builds it", i);
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        is_int(parse(declined[i], NULL), 1, "declined[%zu]", i);

    /* Nesting deeper than the parser follows is json_loadb's to judge. */
    char deep[400] = "{\"params\":{\"arguments\":";
    for (int i = 0; i < 100; i++)
        strcat(deep, "[");
    for (int i = 0; i < 100; i++)
        strcat(deep, "]");
    strcat(deep, "}}");
    is_int(parse(deep, NULL), 1, "nesting past its limit is declined");

    /* The same _meta twice: one shared tree; another _meta: its own. */
    const char *m1 = "{\"id\":1,\"params\":{\"_meta\":{\"k\":{\"v\":1}},\"name\":\"a\"}}";
    const char *m2 = "{\"id\":2,\"params\":{\"_meta\":{\"k\":{\"v\":1}},\"name\":\"b\"}}";
    const char *m3 = "{\"id\":3,\"params\":{\"_meta\":{\"k\":{\"v\":2}},\"name\":\"c\"}}";
    json_t *a = NULL, *b = NULL, *c = NULL;
    ok(parse(m1, &a) == 0 && parse(m2, &b) == 0 && parse(m3, &c) == 0, "three requests with _meta are built");
    json_t *ma = json_object_get(json_object_get(a, "params"), "_meta"),
           *mb = json_object_get(json_object_get(b, "params"), "_meta"),
           *mc = json_object_get(json_object_get(c, "params"), "_meta");
    ok(ma != NULL && ma == mb, "the same _meta bytes give the one cached tree");
    ok(mc != NULL && mc != ma && json_integer_value(json_object_get(json_object_get(mc, "k"), "v")) == 2,
       "other bytes their own tree");
    is_str(json_string_value(json_object_get(json_object_get(b, "params"), "name")), "b", "members after a cached _meta are read");
    /* A cached _meta followed by bytes that end the request wrongly is still declined. */
    is_int(parse("{\"id\":1,\"params\":{\"_meta\":{\"k\":{\"v\":1}}]}", NULL), 1, "a cache hit does not excuse what follows it");
    /* The view of a cache hit carries the _meta's members like a miss did. */
    rpc_view_t v;
    json_t *d = NULL;
    const char *mm =
        "{\"id\":4,\"params\":{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"},\"name\":\"d\"}}";
    ok(rpc_parse(mm, strlen(mm), &d, &v) == 0 && json_is_string(v.claim), "a new _meta: its protocolVersion in the view");
    json_decref(d);
    ok(rpc_parse(mm, strlen(mm), &d, &v) == 0 && json_is_string(v.claim) &&
           v.claim ==
               json_object_get(json_object_get(json_object_get(d, "params"), "_meta"), "io.modelcontextprotocol/protocolVersion") &&
           strcmp(json_string_value(v.name), "d") == 0 && json_integer_value(v.id) == 4,
       "the same _meta again: the view points into the tree it returned");
    json_decref(d);
    json_decref(a);
    json_decref(b);
    json_decref(c);

    /* The flat reader: what it takes, it reads as json_loadb would; the rest it declines. */
    for (size_t i = 0; i < sizeof(flat_taken) / sizeof(flat_taken[0]); i++)
        is_int(flat(flat_taken[i]), 0, "flat_taken[%zu] read flat, as json_loadb reads it", i);
    for (size_t i = 0; i < sizeof(flat_declined) / sizeof(flat_declined[0]); i++)
        is_int(flat(flat_declined[i]), 1, "flat_declined[%zu]", i);
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        is_int(flat(declined[i]), 1, "flat: declined[%zu], which rpc_parse declines too", i);
    /* Limits: nesting past the parser's limit, and a _meta too long to keep (read anew each time), as flat. */
    char deepm[400] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"arguments\":";
    for (int i = 0; i < 100; i++)
        strcat(deepm, "[");
    for (int i = 0; i < 100; i++)
        strcat(deepm, "]");
    strcat(deepm, "}}");
    is_int(flat(deepm), 1, "flat: nesting past its limit is declined");
    deepm[strlen(deepm) - 2 - 100 - 100 + 40] = '\0'; /* 40 levels: within it */
    strcat(deepm, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}");
    is_int(flat(deepm), 0, "flat: 40 levels of nesting are read as json_loadb reads them");
    static char big[4096];
    int bl = snprintf(big, sizeof(big), "{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"m\",\"params\":{\"_meta\":{\"pad\":\"");
    while (bl < 3000)
        big[bl++] = 'x';
    snprintf(big + bl, sizeof(big) - (size_t)bl, "\",\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}");
    ok(flat(big) == 0 && flat(big) == 0, "flat: a _meta over 2 KB is read (anew each time) as json_loadb reads it");
    /* A flat read shares the cached _meta, and letting the view go leaves the cache whole. */
    const char *fq = "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"m\",\"params\":{\"_meta\":{\"k\":{\"v\":9}}}}";
    rpc_view_t f1, f2;
    ok(rpc_parse_flat(fq, strlen(fq), &f1) == 0 && rpc_parse_flat(fq, strlen(fq), &f2) == 0 && f1.meta == f2.meta &&
           json_integer_value(json_object_get(json_object_get(f1.meta, "k"), "v")) == 9,
       "the same _meta read flat twice: the one cached tree");
    json_t *kept = f1.meta;
    rpc_view_release(&f1);
    rpc_view_release(&f2);
    ok(f1.meta == NULL && f2.id == NULL, "rpc_view_release clears the view");
    json_t *e = NULL;
    ok(rpc_parse(fq, strlen(fq), &e, &v) == 0 && v.meta == kept &&
           json_integer_value(json_object_get(json_object_get(kept, "k"), "v")) == 9,
       "the cached _meta outlives the flat views");
    json_decref(e);
    /* Empty arguments read flat are one shared object; the built tree keeps its own, and nothing fills the shared one. */
    const char *fa = "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{\"name\":\"t\",\"arguments\":{ }}}";
    rpc_view_t a1, a2;
    ok(rpc_parse_flat(fa, strlen(fa), &a1) == 0 && rpc_parse_flat(fa, strlen(fa), &a2) == 0 && a1.arguments == a2.arguments &&
           json_is_object(a1.arguments) && json_object_size(a1.arguments) == 0,
       "{} arguments read flat twice: the one shared empty object");
    ok(rpc_parse(fa, strlen(fa), &e, &v) == 0 && v.arguments != a1.arguments && json_object_size(v.arguments) == 0,
       "rpc_parse builds its own {} for arguments");
    json_decref(e);
    rpc_view_release(&a1);
    rpc_view_release(&a2);
    /* Ids 0-255 are kept values, shared by every request that sends them; 256 and beyond are each request's own. */
    static const long long ids[] = {0, 1, 255, 256, 99999};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"m\",\"params\":{}}", ids[i]);
        rpc_view_t i1 = {0}, i2 = {0};
        json_t *t2 = NULL;
        int read_flat = rpc_parse_flat(body, strlen(body), &i1) == 0, read_tree = rpc_parse(body, strlen(body), &t2, &i2) == 0;
        ok(read_flat && read_tree && json_integer_value(i1.id) == ids[i] && json_integer_value(i2.id) == ids[i] &&
               parse(body, NULL) == 0 && (i1.id == i2.id) == (ids[i] < 256),
           "id %lld: read flat and built as json_loadb reads it, %s", ids[i], ids[i] < 256 ? "one kept value" : "each its own");
        rpc_view_release(&i1);
        json_decref(t2);
    }
    /* Ids the fast path must not take for a kept integer: a real, a negative, an exponent, a leading zero, the
       largest int64 (past the 18 digits it reads itself).  Each is json_loadb's to read. */
    static const char *const odd_ids[] = {"1.0", "-1", "1e0", "01", "9223372036854775807"};
    for (size_t i = 0; i < sizeof(odd_ids) / sizeof(odd_ids[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"m\",\"params\":{}}", odd_ids[i]);
        rpc_view_t fv = {0};
        json_t *slow = json_loadb(body, strlen(body), 0, NULL);
        int both_declined = rpc_parse_flat(body, strlen(body), &fv) == 1 && parse(body, NULL) == 1;
        ok(both_declined && fv.id == NULL &&
               (slow == NULL || !json_is_integer(json_object_get(slow, "id")) ||
                json_integer_value(json_object_get(slow, "id")) < 0 || json_integer_value(json_object_get(slow, "id")) > 255),
           "id %s: left to json_loadb by both readers, never a kept integer", odd_ids[i]);
        json_decref(slow);
    }
    rpc_parse_reset();
    return done_testing();
}
