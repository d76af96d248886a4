/*
 * Paging for the list tools (sites.list, products.list, orders.list): the
 * page a call asks for (cursor and limit), the scan that fills it, and the
 * next_cursor that resumes it.  A cursor holds the key suffix of the last
 * record returned, so the next page starts right after it even when records
 * were added or removed in between.
 *
 * A filter may skip almost everything, and each record it looks at is
 * decoded: one call examines at most list_scan_budget records.  When the
 * budget runs out the page ends early (possibly empty) with a next_cursor
 * after the last record examined, so a client that follows the cursors still
 * gets exactly the matching set, a bounded piece of work per call.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/cursor.h"
#include "aly/tools.h"

/*
 * What a list cursor resumes: "<scope>|<key suffix>" (inside the signed
 * "<kind>|<after>" of aly/cursor.h).  The scope tag is a digest of the
 * workspace, the site and the filter arguments of the listing that made the
 * cursor, so a cursor cannot resume another site's, another workspace's or
 * another filter's listing (where it would skip whatever sorts before its
 * key, without a word).
 */
int tools_page_in(mcp_call_t *call, json_t *args, const char *kind, tools_page_t *pg)
{
    json_t *c = json_object_get(args, "cursor"), *l = json_object_get(args, "limit");
    char after[TOOLS_SCOPE_HEX + 1 + TOOLS_AFTER_MAX];
    pg->after[0] = pg->scope[0] = '\0';
    pg->resumed = c != NULL;
    pg->limit = json_is_integer(l) ? (int)json_integer_value(l) : TOOLS_DEFAULT_LIMIT;
    if (c == NULL)
        return 0;
    if (json_is_string(c) && cursor_read(json_string_value(c), json_string_length(c), kind, after, sizeof(after)) == 0 &&
        strlen(after) > TOOLS_SCOPE_HEX && after[TOOLS_SCOPE_HEX] == '|') {
        memcpy(pg->scope, after, TOOLS_SCOPE_HEX);
        pg->scope[TOOLS_SCOPE_HEX] = '\0';
        snprintf(pg->after, sizeof(pg->after), "%s", after + TOOLS_SCOPE_HEX + 1);
        return 0;
    }
    tools_fail(call, "cursor: not a cursor from %s.list; pass next_cursor back unchanged, or omit it", kind);
    return -1;
}

/* The scope tag of a listing: the first TOOLS_SCOPE_HEX hex digits of SHA-256 over workspace, site and filters. */
static void scope_tag(mcp_call_t *call, const tools_list_t *l, char out[TOOLS_SCOPE_HEX + 1])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    const char *ws = tools_ws(call), *site = l->site != NULL ? l->site : "";
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        abort();
    /* Each part with its NUL, so that no two lists of parts hash alike. */
    EVP_DigestUpdate(md, ws, strlen(ws) + 1);
    EVP_DigestUpdate(md, site, strlen(site) + 1);
    for (const char *const *f = l->filters; f != NULL && *f != NULL; f++) {
        json_t *v = json_object_get(l->args, *f);
        char *text = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        EVP_DigestUpdate(md, *f, strlen(*f) + 1);
        EVP_DigestUpdate(md, text != NULL ? "=" : "-", 1); /* present (with its JSON) or absent */
        if (text != NULL)
            EVP_DigestUpdate(md, text, strlen(text) + 1);
        free(text);
    }
    if (EVP_DigestFinal_ex(md, d, &dl) != 1 || dl * 2 < TOOLS_SCOPE_HEX)
        abort();
    EVP_MD_CTX_free(md);
    for (int i = 0; i < TOOLS_SCOPE_HEX / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

typedef struct page_scan {
    const tools_list_t *l;
    size_t prefix_len;
    int limit, more;
    unsigned examined, budget;
    json_t *items;
    char last[TOOLS_AFTER_MAX];
    aly_err_t err;
    int failed; /* the item callback failed: err says why */
} page_scan_t;

/* The resume point: right after key. */
static void remember(page_scan_t *c, const store_val_t *key)
{
    /* Suffixes are an id or "<ms:16x>/<id>"; a longer key than the shop layout writes is listed but not resumed from. */
    size_t sl = key->len - c->prefix_len;
    if (sl < sizeof(c->last)) {
        memcpy(c->last, (const char *)key->data + c->prefix_len, sl);
        c->last[sl] = '\0';
    }
}

/* Counts key against the scan budget: 1 (stop, with a cursor after key) when the budget is spent. */
static int spend(page_scan_t *c, const store_val_t *key)
{
    if (++c->examined < c->budget)
        return 0;
    c->more = 1;
    remember(c, key);
    return 1;
}

static int page_add(void *vctx, const store_val_t *key, void *rec)
{
    page_scan_t *c = vctx;
    int full = (int)json_array_size(c->items) >= c->limit;
    json_t *item = NULL;
    /* Filtering comes before the limit: "more" means one more record that matches, not one more record. */
    int rc = c->l->item(c->l->ctx, key, rec, full ? NULL : &item, &c->err);
    if (rc < 0) {
        c->failed = 1;
        return -1;
    }
    if (rc == 0)
        return spend(c, key);
    if (full) {
        c->more = 1;
        return 1;
    }
    json_array_append_new(c->items, item);
    remember(c, key);
    return spend(c, key);
}

static int page_key(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)val;
    return page_add(vctx, key, NULL);
}

/* A record that does not decode fails the page rather than leave a silent hole in it. */
static int page_bad(void *vctx, const store_val_t *key, const char *why)
{
    page_scan_t *c = vctx;
    c->failed = 1;
    aly_errf(&c->err, "record %.*s: %s", (int)key->len, (const char *)key->data, why);
    return -1;
}

static json_t *cursor_out(const char *kind, const char *scope, const char *after)
{
    char text[CURSOR_TEXT_MAX], resume[TOOLS_SCOPE_HEX + 1 + TOOLS_AFTER_MAX];
    snprintf(resume, sizeof(resume), "%s|%s", scope, after);
    return cursor_make(kind, resume, text, sizeof(text)) == 0 ? json_null() : json_string(text);
}

mcp_status_t tools_list(mcp_call_t *call, store_txn_t *t, const tools_page_t *pg, const tools_list_t *l, json_t *out)
{
    /* Workspace and site ids live in char[ALY_ID_MAX], so the prefix fits in the first half of key and a resume point in the rest. */
    _Static_assert(2 * ALY_ID_MAX + 4 <= TOOLS_AFTER_MAX, "a list prefix must fit in TOOLS_AFTER_MAX");
    char key[2 * TOOLS_AFTER_MAX], scope[TOOLS_SCOPE_HEX + 1] = "";
    /* The tag is needed to check a cursor and to make one: a one-page listing (the common one) hashes nothing. */
    if (pg->resumed)
        scope_tag(call, l, scope);
    if (pg->resumed && CRYPTO_memcmp(scope, pg->scope, TOOLS_SCOPE_HEX) != 0) {
        store_abort(t);
        json_decref(out);
        return tools_fail(call,
                          "cursor: made for another %s.list (another site, workspace or filter); pass next_cursor back with the "
                          "arguments of the call that returned it, or omit it",
                          l->kind);
    }
    size_t pl = shop_key(key, TOOLS_AFTER_MAX, tools_ws(call), l->type, l->site, l->site ? "" : NULL), sl = 0;
    const char *after = pg->after[0] ? pg->after : l->from;
    if (after != NULL) {
        sl = pl + strlen(after);
        memcpy(key + pl, after, sl - pl);
    }
    page_scan_t c = {.l = l,
                     .prefix_len = pl,
                     .limit = pg->limit,
                     .budget = mcp_call_config(call)->list_scan_budget,
                     .items = json_array()};
    aly_err_t err;
    int rc;
    if (l->record != NULL) {
        store_records_t r = {l->record, l->rec, page_add, page_bad, &c};
        rc = store_scan_records(t, DB_DATA, key, pl, sl ? key : NULL, sl, &r, &err);
    } else {
        rc = store_scan(t, DB_DATA, key, pl, sl ? key : NULL, sl, page_key, &c, &err);
    }
    store_abort(t);
    if (rc != 0) {
        json_decref(c.items);
        json_decref(out);
        return tools_store_error(call, c.failed ? &c.err : &err);
    }
    json_object_set_new(out, l->kind, c.items);
    if (c.more && !pg->resumed)
        scope_tag(call, l, scope);
    json_object_set_new(out, "next_cursor", c.more ? cursor_out(l->kind, scope, c.last) : json_null());
    return tools_ok(call, out);
}
