/*
 * Unit tests of the data layer below the tools: the msgpack record codec
 * (src/record.c: round trips, every kind of corrupt record refused without a
 * crash or a huge allocation), the store's checks (a database id used on the
 * other environment's transaction, keys over LMDB's limit), the typed record
 * layer (src/store_record.c), cursors (src/cursor.c), random ids, decimal
 * formatting, and the administrative operations alyctl calls (src/admin.c).
 */
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/admin.h"
#include "aly/auth.h"
#include "aly/config.h"
#include "aly/cursor.h"
#include "aly/record.h"
#include "aly/shop.h"
#include "aly/store.h"
#include "tap.h"
#include "unit-store.h"

static void roundtrip(void)
{
    key_record_t k = {.scopes = 5, .created_ms = 1234, .expires_ms = 99, .rate_count = 60, .rate_period_s = 60, .rate_burst = 10};
    strcpy(k.id, "key_abc");
    strcpy(k.workspace, "ws_abc");
    strcpy(k.name, "laptop");
    memset(k.hash, 0xab, sizeof(k.hash));
    char *buf;
    size_t len;
    aly_err_t err;
    is_int(record_encode(&record_key, &k, &buf, &len, &err), 0, "key record encodes");
    key_record_t back;
    is_int(record_decode(&record_key, buf, len, &back, &err), 0, "and decodes");
    ok(memcmp(&k, &back, sizeof(k)) == 0, "round trip is exact");
    is_int(record_decode(&record_key, buf, len - 1, &back, &err), -1, "truncated record refused");
    char *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = (char)0xc0;
    is_int(record_decode(&record_key, longer, len + 1, &back, &err), -1, "trailing byte refused");
    ok(strstr(err.msg, "well-formed") != NULL, "says why: %s", err.msg);
    free(longer);
    is_int(record_decode(&record_workspace, buf, len, &back, &err), -1, "a key record is not a workspace record");
    ok(strstr(err.msg, "not a ws record") != NULL, "says why: %s", err.msg);
    free(buf);
}

/* Packs a map with the given extra pairs after t and v. */
static size_t pack(char *out, size_t cap, const char *tag, unsigned version, void (*extra)(msgpack_packer *))
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, tag, strlen(tag));
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint32(&pk, version);
    extra(&pk);
    size_t n = sb.size < cap ? sb.size : cap;
    memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static void ws_good(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "id", 2);
    msgpack_pack_str_with_body(pk, "ws_1", 4);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, "Shop", 4);
    msgpack_pack_str_with_body(pk, "created", 7);
    msgpack_pack_uint64(pk, 7);
}

static void ws_created_is_string(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "id", 2);
    msgpack_pack_str_with_body(pk, "ws_1", 4);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, "Shop", 4);
    msgpack_pack_str_with_body(pk, "created", 7);
    msgpack_pack_str_with_body(pk, "7", 1);
}

static void ws_name_too_long(msgpack_packer *pk)
{
    char big[300];
    memset(big, 'x', sizeof(big));
    msgpack_pack_str_with_body(pk, "id", 2);
    msgpack_pack_str_with_body(pk, "ws_1", 4);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, big, sizeof(big));
    msgpack_pack_str_with_body(pk, "created", 7);
    msgpack_pack_uint64(pk, 7);
}

static void ws_missing_id(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "other", 5);
    msgpack_pack_str_with_body(pk, "ws_1", 4);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, "Shop", 4);
    msgpack_pack_str_with_body(pk, "created", 7);
    msgpack_pack_uint64(pk, 7);
}

static void shapes(void)
{
    char buf[1024];
    workspace_record_t ws;
    aly_err_t err;
    size_t n = pack(buf, sizeof(buf), "ws", 1, ws_good);
    is_int(record_decode(&record_workspace, buf, n, &ws, &err), 0, "hand-packed workspace decodes");
    is_str(ws.name, "Shop", "name read");
    n = pack(buf, sizeof(buf), "ws", 2, ws_good);
    is_int(record_decode(&record_workspace, buf, n, &ws, &err), -1, "unknown version refused");
    n = pack(buf, sizeof(buf), "ws", 1, ws_created_is_string);
    is_int(record_decode(&record_workspace, buf, n, &ws, &err), -1, "field of the wrong type refused");
    ok(strstr(err.msg, "created") != NULL, "names the field: %s", err.msg);
    n = pack(buf, sizeof(buf), "ws", 1, ws_name_too_long);
    is_int(record_decode(&record_workspace, buf, n, &ws, &err), -1, "string longer than its field refused");
    n = pack(buf, sizeof(buf), "ws", 1, ws_missing_id);
    is_int(record_decode(&record_workspace, buf, n, &ws, &err), -1, "missing required field refused");
    ok(strstr(err.msg, "lacks field id") != NULL, "names the missing field: %s", err.msg);
}

static void hostile(void)
{
    workspace_record_t ws;
    aly_err_t err;
    /* array32 of 100 million elements in 5 bytes: msgpack-c would reserve ~2.4 GB. */
    static const unsigned char bomb[] = {0xdd, 0x05, 0xf5, 0xe1, 0x00};
    is_int(record_decode(&record_workspace, bomb, sizeof(bomb), &ws, &err), -1, "array bomb refused before unpacking");
    ok(strstr(err.msg, "well-formed") != NULL, "array bomb: refused by the pre-scan, before msgpack-c: %s", err.msg);
    static const unsigned char map_bomb[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 0x74};
    is_int(record_decode(&record_workspace, map_bomb, sizeof(map_bomb), &ws, &err), -1, "map bomb refused");
    ok(strstr(err.msg, "well-formed") != NULL, "map bomb: refused by the pre-scan, before msgpack-c: %s", err.msg);
    static const unsigned char str_bomb[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 0x41};
    is_int(record_decode(&record_workspace, str_bomb, sizeof(str_bomb), &ws, &err), -1, "string length past the end refused");
    ok(strstr(err.msg, "well-formed") != NULL, "string past the end: refused by the pre-scan, before msgpack-c: %s", err.msg);
    static const unsigned char never_used[] = {0xc1};
    is_int(record_decode(&record_workspace, never_used, 1, &ws, &err), -1, "reserved byte 0xc1 refused");
    is_int(record_decode(&record_workspace, "", 0, &ws, &err), -1, "empty value refused");
    static const unsigned char deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
    is_int(record_decode(&record_workspace, deep, sizeof(deep), &ws, &err), -1, "deep nesting refused");
    ok(strstr(err.msg, "well-formed") != NULL, "deep nesting: refused by the pre-scan, before msgpack-c: %s", err.msg);
    static const unsigned char not_map[] = {0x93, 0x01, 0x02, 0x03};
    is_int(record_decode(&record_workspace, not_map, sizeof(not_map), &ws, &err), -1, "array instead of map refused");
    /* Every truncation and every single-byte corruption of a good record: an error or a clean decode, never a crash. */
    key_record_t k = {.scopes = 1, .created_ms = 1};
    strcpy(k.id, "key_x");
    strcpy(k.workspace, "ws_x");
    char *buf;
    size_t len;
    record_encode(&record_key, &k, &buf, &len, &err);
    int refused = 0;
    for (size_t cut = 0; cut < len; cut++)
        refused += record_decode(&record_key, buf, cut, &k, &err) != 0;
    is_int(refused, len, "all %zu truncations refused", len);
    for (size_t i = 0; i < len; i++) {
        for (int b = 0; b < 256; b += 17) {
            char saved = buf[i];
            buf[i] = (char)b;
            key_record_t tmp;
            (void)record_decode(&record_key, buf, len, &tmp, &err);
            buf[i] = saved;
        }
    }
    ok(1, "byte corruptions survived");
    free(buf);
}

static char dir[] = "/tmp/aly-unit-record-XXXXXX";

/* A database id names its environment: the other environment's ids are refused, never looked up. */
static void environments(store_t *st)
{
    store_txn_t t, vt;
    store_val_t v;
    aly_err_t err = {.msg = ""};
    is_int(store_begin(st, STORE_WRITE, &t, &err), 0, "durable write transaction");
    is_int(store_begin(st, STORE_WRITE | STORE_VOLATILE, &vt, &err), 0, "volatile write transaction");
    is_int(store_put(&t, DB_SESSIONS, "s1", 2, "x", 1, 0, &err), 0, "durable id on the durable environment");
    is_int(store_put(&vt, VDB_RATE, "r1", 2, "y", 1, 0, &err), 0, "volatile id on the volatile environment");
    is_int(store_get(&vt, VDB_RATE, "r1", 2, &v, &err), 0, "read back from the volatile environment");

    err.msg[0] = '\0';
    is_int(store_get(&vt, DB_SESSIONS, "s1", 2, &v, &err), -1, "durable id on a volatile transaction: get refused");
    ok(strstr(err.msg, "\"sessions\" is in the durable environment") != NULL, "says which environment: %s", err.msg);
    is_int(store_put(&vt, DB_DATA, "k", 1, "v", 1, 0, &err), -1, "durable id on a volatile transaction: put refused");
    is_int(store_del(&vt, DB_SESSIONS, "s1", 2, &err), -1, "durable id on a volatile transaction: del refused");
    is_int(store_scan(&vt, DB_SESSIONS, "", 0, NULL, 0, NULL, NULL, &err), -1,
           "durable id on a volatile transaction: scan refused");
    err.msg[0] = '\0';
    is_int(store_get(&t, VDB_RATE, "r1", 2, &v, &err), -1, "volatile id on a durable transaction: get refused");
    ok(strstr(err.msg, "\"rate\" is in the volatile environment") != NULL, "says which environment: %s", err.msg);
    is_int(store_put(&t, VDB_LAST_USED, "k", 1, "v", 1, 0, &err), -1, "volatile id on a durable transaction: put refused");
    int ids[] = {-1, DB_N, STORE_VDB_BASE - 1, VDB_END, 100000};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(ids); i++) {
        err.msg[0] = '\0';
        is_int(store_get(&t, ids[i], "s1", 2, &v, &err), -1, "id %d on the durable environment refused", ids[i]);
        is_int(store_get(&vt, ids[i], "r1", 2, &v, &err), -1, "id %d on the volatile environment refused", ids[i]);
        ok(strstr(err.msg, "no store database") != NULL, "names no database: %s", err.msg);
    }
    is_int(store_get(&t, DB_SESSIONS, "s1", 2, &v, &err), 0, "the durable record is still there");
    ok(v.len == 1 && memcmp(v.data, "x", 1) == 0, "with its value");
    store_abort(&vt);
    store_abort(&t);
}

static int count_cb(void *ctx, const store_val_t *key, const store_val_t *val)
{
    (void)key;
    (void)val;
    ++*(int *)ctx;
    return 0;
}

/* LMDB refuses keys over 511 bytes: that is an error, not "not found". */
static void key_sizes(store_t *st)
{
    char key[STORE_MAX_KEY + 2];
    memset(key, 'k', sizeof(key));
    store_txn_t t;
    store_val_t v;
    aly_err_t err = {.msg = ""};
    is_int(store_begin(st, STORE_WRITE, &t, &err), 0, "write transaction");
    is_int(store_put(&t, DB_DATA, key, STORE_MAX_KEY, "v", 1, 0, &err), 0, "a key of %d bytes is stored", STORE_MAX_KEY);
    is_int(store_get(&t, DB_DATA, key, STORE_MAX_KEY, &v, &err), 0, "and found");
    is_int(store_get(&t, DB_DATA, key, STORE_MAX_KEY + 1, &v, &err), -1, "get with a key of %d bytes is an error",
           STORE_MAX_KEY + 1);
    ok(strstr(err.msg, "512 bytes is over the limit of 511") != NULL, "says why: %s", err.msg);
    is_int(store_put(&t, DB_DATA, key, STORE_MAX_KEY + 1, "v", 1, 0, &err), -1, "put with an oversized key is an error");
    is_int(store_del(&t, DB_DATA, key, STORE_MAX_KEY + 1, &err), -1, "del with an oversized key is an error");
    int n = 0;
    is_int(store_scan(&t, DB_DATA, key, STORE_MAX_KEY + 1, NULL, 0, count_cb, &n, &err), -1,
           "scan with an oversized prefix is an error");
    is_int(store_scan(&t, DB_DATA, key, 1, key, STORE_MAX_KEY + 1, count_cb, &n, &err), -1,
           "scan after an oversized key is an error");
    is_int(store_scan(&t, DB_DATA, key, STORE_MAX_KEY, NULL, 0, count_cb, &n, &err), 0, "scan with a %d-byte prefix works",
           STORE_MAX_KEY);
    is_int(n, 1, "and finds the record");
    is_int(store_get(&t, DB_DATA, "", 0, &v, &err), 1, "an empty key is not found");
    is_int(store_put(&t, DB_DATA, "", 0, "v", 1, 0, &err), -1, "an empty key cannot be stored");
    is_int(store_del(&t, DB_DATA, key, STORE_MAX_KEY, &err), 0, "the %d-byte key is deleted", STORE_MAX_KEY);
    is_int(store_get(&t, DB_DATA, key, STORE_MAX_KEY, &v, &err), 1, "and gone");
    store_abort(&t);
}

typedef struct seen {
    int good, bad, stop_at;
    char names[8][SHOP_SITE_NAME_MAX];
    char why[ALY_ERR_MAX];
} seen_t;

static int site_each(void *ctx, const store_val_t *key, void *rec)
{
    (void)key;
    seen_t *s = ctx;
    const site_record_t *site = rec;
    if (s->good < 8)
        snprintf(s->names[s->good], sizeof(s->names[0]), "%s", site->name);
    s->good++;
    if (s->stop_at < 0)
        return -1;
    return s->good == s->stop_at;
}

static int site_bad(void *ctx, const store_val_t *key, const char *why)
{
    (void)key;
    seen_t *s = ctx;
    s->bad++;
    snprintf(s->why, sizeof(s->why), "%s", why);
    return 0;
}

static void typed_records(store_t *st)
{
    store_txn_t t;
    aly_err_t err = {.msg = ""};
    is_int(store_begin(st, STORE_WRITE, &t, &err), 0, "write transaction");
    workspace_record_t ws = {.created_ms = 42}, back;
    strcpy(ws.id, "ws_typed");
    strcpy(ws.name, "Typed");
    is_int(store_put_record(&t, DB_WORKSPACES, ws.id, strlen(ws.id), &record_workspace, &ws, 1, &err), 0, "put_record stores");
    is_int(store_put_record(&t, DB_WORKSPACES, ws.id, strlen(ws.id), &record_workspace, &ws, 1, &err), 1,
           "noclobber: 1 when it exists");
    is_int(store_get_record(&t, DB_WORKSPACES, ws.id, strlen(ws.id), &record_workspace, &back, &err), 0, "get_record finds it");
    ok(memcmp(&ws, &back, sizeof(ws)) == 0, "and decodes it exactly");
    is_int(store_get_record(&t, DB_WORKSPACES, "ws_none", 7, &record_workspace, &back, &err), 1, "get_record: 1 when absent");
    key_record_t k;
    is_int(store_get_record(&t, DB_WORKSPACES, ws.id, strlen(ws.id), &record_key, &k, &err), -1, "a workspace is not a key record");
    ok(strstr(err.msg, "not a key record") != NULL, "says why: %s", err.msg);
    is_int(store_put(&t, DB_WORKSPACES, "ws_raw", 6, "\xc1", 1, 0, &err), 0, "a raw, corrupt value");
    is_int(store_get_record(&t, DB_WORKSPACES, "ws_raw", 6, &record_workspace, &back, &err), -1, "get_record refuses it");
    is_int(store_put_record(&t, DB_WORKSPACES, "", 0, &record_workspace, &ws, 0, &err), -1, "put_record refuses an empty key");

    /* A scan that decodes: three sites under a prefix, one corrupt value among them, one site outside. */
    const char *names[] = {"Alpha", "Beta", "Gamma"};
    for (int i = 0; i < 3; i++) {
        site_record_t s = {.created_ms = 1, .version = 1};
        snprintf(s.id, sizeof(s.id), "site_%d", i);
        snprintf(s.name, sizeof(s.name), "%s", names[i]);
        strcpy(s.currency, "EUR");
        char key[64];
        size_t kl = shop_key(key, sizeof(key), "ws_typed", 'S', s.id, NULL);
        is_int(store_put_record(&t, DB_DATA, key, kl, &record_site, &s, 0, &err), 0, "site %d stored", i);
    }
    is_int(store_put(&t, DB_DATA, "ws_typed/S/site_1x", 18, "junk", 4, 0, &err), 0, "a value that is no record");
    site_record_t other = {.created_ms = 1};
    strcpy(other.id, "site_9");
    strcpy(other.name, "Elsewhere");
    strcpy(other.currency, "EUR");
    is_int(store_put_record(&t, DB_DATA, "ws_other/S/site_9", 17, &record_site, &other, 0, &err), 0, "a site of another workspace");

    site_record_t buf;
    seen_t seen = {0};
    store_records_t r = {&record_site, &buf, site_each, site_bad, &seen};
    is_int(store_scan_records(&t, DB_DATA, "ws_typed/S/", 11, NULL, 0, &r, &err), 0, "scan_records runs");
    is_int(seen.good, 3, "each record under the prefix decoded");
    is_str(seen.names[0], "Alpha", "in key order (1)");
    is_str(seen.names[2], "Gamma", "in key order (3)");
    is_int(seen.bad, 1, "the corrupt value went to bad");
    ok(seen.why[0] != '\0', "with the reason: %s", seen.why);

    memset(&seen, 0, sizeof(seen));
    r.bad = NULL;
    is_int(store_scan_records(&t, DB_DATA, "ws_typed/S/", 11, "ws_typed/S/site_0", 17, &r, &err), 0,
           "scan_records after a key, no bad");
    is_int(seen.good, 2, "resumes after the key, skips the corrupt value");
    is_str(seen.names[0], "Beta", "starting with the next one");

    memset(&seen, 0, sizeof(seen));
    seen.stop_at = 1;
    is_int(store_scan_records(&t, DB_DATA, "ws_typed/S/", 11, NULL, 0, &r, &err), 0, "each returning 1 stops");
    is_int(seen.good, 1, "after one record");

    memset(&seen, 0, sizeof(seen));
    seen.stop_at = -1;
    is_int(store_scan_records(&t, DB_DATA, "ws_typed/S/", 11, NULL, 0, &r, &err), -1, "each returning -1 fails the scan");

    memset(&seen, 0, sizeof(seen));
    product_record_t pbuf;
    store_records_t rp = {&record_product, &pbuf, site_each, site_bad, &seen};
    is_int(store_scan_records(&t, DB_DATA, "ws_typed/S/", 11, NULL, 0, &rp, &err), 0, "scan_records as another type");
    ok(seen.good == 0 && seen.bad == 4, "nothing decodes as a product: %d good, %d bad", seen.good, seen.bad);
    is_int(store_scan_records(&t, VDB_RATE, "", 0, NULL, 0, &r, &err), -1, "scan_records checks the environment too");
    store_abort(&t);
}

static void cursors(const aly_config_t *cfg)
{
    char text[CURSOR_TEXT_MAX], after[64];
    aly_err_t err;
    is_int(cursor_make("orders", "ord_1", text, sizeof(text)), 0, "no cursor before cursor_init");
    is_int(cursor_init(cfg->key_pepper_file, &err), 0, "cursor key from the pepper");
    size_t n = cursor_make("orders", "ord_1", text, sizeof(text));
    ok(n > 0 && strlen(text) == n, "cursor made");
    is_int(cursor_read(text, n, "orders", after, sizeof(after)), 0, "and read back");
    is_str(after, "ord_1", "with its after");
    is_int(cursor_read(text, n, "products", after, sizeof(after)), -1, "another listing's cursor refused");
    is_int(cursor_read(text, n, "order", after, sizeof(after)), -1, "a listing whose name is a prefix refused");
    is_int(cursor_read(text, n, "orders", after, 5), -1, "an after longer than the caller's buffer refused");
    for (size_t i = 0; i < n; i++) {
        char saved = text[i];
        text[i] = text[i] == 'A' ? 'B' : 'A';
        int rc = cursor_read(text, n, "orders", after, sizeof(after));
        text[i] = saved;
        if (rc != -1) {
            ok(0, "tampered cursor at byte %zu refused", i);
            return;
        }
    }
    ok(1, "every single-byte edit refused");
    n = cursor_make("orders", "", text, sizeof(text));
    is_int(cursor_read(text, n, "orders", after, sizeof(after)), 0, "an empty after round-trips");
    is_str(after, "", "as empty");
    n = cursor_make("sites", "a|b", text, sizeof(text));
    is_int(cursor_read(text, n, "sites", after, sizeof(after)), 0, "an after holding | round-trips");
    is_str(after, "a|b", "intact");
    is_int(cursor_make("a|b", "c", text, sizeof(text)), 0, "a kind holding | refused");
    is_int(cursor_make("", "c", text, sizeof(text)), 0, "an empty kind refused");
    char big[CURSOR_MAX_PAYLOAD];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    is_int(cursor_make("k", big, text, sizeof(text)), 0, "a payload over CURSOR_MAX_PAYLOAD refused");
    big[CURSOR_MAX_PAYLOAD - 2] = '\0';
    ok(cursor_make("k", big, text, sizeof(text)) > 0, "a payload of exactly CURSOR_MAX_PAYLOAD accepted");
    is_int(cursor_make("k", "x", text, 8), 0, "a too small output buffer refused");
}

static uint64_t generation(store_t *st)
{
    store_txn_t t;
    store_val_t v;
    uint64_t gen = 0;
    if (store_begin(st, 0, &t, NULL) == 0) {
        if (store_get(&t, DB_META, "revocations", 11, &v, NULL) == 0 && v.len == sizeof(gen))
            memcpy(&gen, v.data, sizeof(gen));
        store_abort(&t);
    }
    return gen;
}

static int count_each(void *ctx, const void *rec)
{
    (void)rec;
    ++*(int *)ctx;
    return 0;
}

static void admin(store_t *st, const aly_config_t *cfg)
{
    aly_err_t err;
    char name[ALY_NAME_MAX + 1];
    memset(name, 'n', sizeof(name));
    name[ALY_NAME_MAX - 1] = '\0';
    ok(admin_name_ok(name), "a name of %d bytes is fine", ALY_NAME_MAX - 1);
    name[ALY_NAME_MAX - 1] = 'n';
    name[ALY_NAME_MAX] = '\0';
    ok(!admin_name_ok(name), "a name of %d bytes is not", ALY_NAME_MAX);
    ok(!admin_name_ok("") && !admin_name_ok("a\tb") && !admin_name_ok("a\x7f"), "empty names and control characters refused");

    workspace_record_t ws;
    is_int(admin_workspace_create(st, "", &ws, &err), -1, "workspace with an empty name refused");
    is_str(err.msg, "workspace name must be 1 to 127 printable bytes", "says why");
    is_int(admin_workspace_create(st, "Admin shop", &ws, &err), 0, "workspace created");
    ok(strncmp(ws.id, "ws_", 3) == 0 && strlen(ws.id) == 23, "with a ws_ id: %s", ws.id);
    int n = 0;
    is_int(admin_workspace_sites(st, ws.id, count_each, &n, &err), 0, "a new workspace has no sites");
    is_int(n, 0, "none listed");
    is_int(admin_workspace_sites(st, "ws_missing", count_each, &n, &err), -1, "sites of a missing workspace refused");
    is_str(err.msg, "no workspace ws_missing (alyctl workspace list)", "naming it");

    char key[AUTH_KEY_LEN + 1];
    key_record_t k, again;
    aly_rate_t rate = {60, 60, 10};
    admin_key_spec_t spec = {.workspace = "ws_missing", .scopes = 1};
    memset(key, 'x', sizeof(key));
    is_int(admin_key_mint(st, cfg->key_pepper_file, &spec, &k, key, sizeof(key), &err), -1, "no key for a missing workspace");
    is_str(err.msg, "no workspace ws_missing (alyctl workspace list)", "naming it");
    ok(key[0] == '\0' && key[AUTH_KEY_LEN - 1] == '\0', "the refused key's text is wiped");
    n = 0;
    is_int(admin_key_list(st, NULL, count_each, NULL, &n, &err), 0, "keys listed");
    is_int(n, 0, "nothing stored for the refused key");
    spec.name = "bad\nname";
    spec.workspace = ws.id;
    is_int(admin_key_mint(st, cfg->key_pepper_file, &spec, &k, key, sizeof(key), &err), -1, "a key name with a newline refused");
    spec.name = "laptop";
    spec.ttl_ms = 90000;
    spec.rate = &rate;
    is_int(admin_key_mint(st, "/nonexistent/pepper", &spec, &k, key, sizeof(key), &err), -1, "no key without the pepper");
    is_int(admin_key_mint(st, cfg->key_pepper_file, &spec, &k, key, sizeof(key), &err), 0, "key minted");
    ok(auth_key_well_formed(key, strlen(key)), "the key text is a well-formed key");
    ok(k.expires_ms == k.created_ms + 90000 && k.rate_count == 60 && k.rate_burst == 10, "expiry and rate stored");
    is_int(admin_key_get(st, k.id, &again, &err), 0, "found by id");
    ok(memcmp(&k, &again, sizeof(k)) == 0, "as minted (only the HMAC of the key is in it)");
    is_int(admin_key_get(st, "key_missing", &again, &err), 1, "a missing key id: 1");
    n = 0;
    is_int(admin_key_list(st, ws.id, count_each, NULL, &n, &err), 0, "keys of the workspace");
    is_int(n, 1, "one");

    uint64_t gen = generation(st);
    is_int(admin_key_revoke(st, "key_missing", &again, &err), 1, "revoking a missing key: 1");
    is_int(generation(st), gen, "and no generation bump");
    is_int(admin_key_revoke(st, k.id, &again, &err), 0, "key revoked");
    ok(again.revoked_ms != 0, "with a revocation time");
    is_int(generation(st), gen + 1, "the revocation generation moves");
    uint64_t first = again.revoked_ms;
    is_int(admin_key_revoke(st, k.id, &again, &err), 0, "revoking again is fine");
    ok(again.revoked_ms == first, "and keeps the first revocation time");
    is_int(generation(st), gen + 1, "without another bump");

    char big[300];
    memset(big, 's', sizeof(big));
    big[256] = '\0';
    is_int(admin_revoke(st, ADMIN_REVOKE_SUB, big, &err), -1, "a subject of 256 bytes refused");
    is_str(err.msg, "the subject must be 1 to 255 bytes", "says why");
    is_int(admin_revoke(st, ADMIN_REVOKE_JTI, "", &err), -1, "an empty jti refused");
    is_str(err.msg, "the jti must be 1 to 255 bytes", "says why");
    is_int(generation(st), gen + 1, "refused revocations bump nothing");
    big[255] = '\0';
    is_int(admin_revoke(st, ADMIN_REVOKE_SUB, big, &err), 0, "a subject of 255 bytes revoked");
    is_int(generation(st), gen + 2, "the generation moves");
    store_txn_t t;
    revocation_record_t r;
    store_begin(st, 0, &t, &err);
    is_int(store_get_record(&t, DB_REVOKED_SUB, big, 255, &record_revocation, &r, &err), 0,
           "the revocation is stored under the subject");
    is_int(store_get_record(&t, DB_REVOKED_JTI, big, 255, &record_revocation, &r, &err), 1, "and not as a jti");
    store_abort(&t);
}

static void random_ids(void)
{
    char a[41], b[41];
    memset(a, '!', sizeof(a));
    is_int(aly_random_b62(a, 40), 0, "40 random characters");
    is_int(strlen(a), 40, "NUL-terminated after exactly n");
    int all = 1;
    for (int i = 0; i < 40; i++)
        all &= aly_b62_char((unsigned char)a[i]);
    ok(all, "all base62: %s", a);
    aly_random_b62(b, 40);
    ok(strcmp(a, b) != 0, "two draws differ");
    ok(!aly_b62_char('-') && !aly_b62_char('_') && !aly_b62_char(0) && aly_b62_char('z') && aly_b62_char('0'),
       "aly_b62_char knows the alphabet");
    char id[ALY_ID_MAX];
    aly_err_t err;
    is_int(store_new_id("key_", id, sizeof(id), &err), 0, "store_new_id");
    ok(strncmp(id, "key_", 4) == 0 && strlen(id) == 24, "prefix + 20: %s", id);
    is_int(store_new_id("key_", id, 24, &err), -1, "refuses a buffer without room for the NUL");
}

/* Text: a field is never cut, and what is not UTF-8 is never encoded. */
static void text(void)
{
    workspace_record_t ws = {.created_ms = 1};
    aly_err_t err;
    char *buf = NULL;
    size_t len;
    strcpy(ws.id, "ws_1");
    char name[sizeof(ws.name) + 1];
    memset(name, 'a', sizeof(name) - 2);
    name[sizeof(name) - 2] = '\0';
    is_int(RECORD_SET_STR(ws.name, name), 0, "a string of size-1 bytes fits");
    is_str(ws.name, name, "and is copied whole");
    name[sizeof(name) - 2] = 'a';
    name[sizeof(name) - 1] = '\0';
    is_int(RECORD_SET_STR(ws.name, name), -1, "one byte more is refused");
    ok(strlen(ws.name) == sizeof(ws.name) - 1, "and the field keeps its old value");

    static const struct {
        const char *text, *why;
        int valid;
    } cases[] = {
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "2-, 3- and 4-byte characters", 1},
        {"\xf4\x8f\xbf\xbf", "U+10FFFF", 1},
        {"caf\xc3", "a 2-byte character cut after its first byte", 0},
        {"\xe2\x82", "a 3-byte character cut after two bytes", 0},
        {"\xf0\x9f\x98", "a 4-byte character cut after three bytes", 0},
        {"\x80", "a lone continuation byte", 0},
        {"\xc0\xaf", "an overlong '/'", 0},
        {"\xe0\x80\xaf", "an overlong 3-byte form", 0},
        {"\xed\xa0\x80", "a UTF-16 surrogate", 0},
        {"\xf4\x90\x80\x80", "above U+10FFFF", 0},
        {"\xff", "0xff", 0},
    };
    for (size_t i = 0; i < ALY_ARRAY_SIZE(cases); i++) {
        is_int(record_utf8_valid(cases[i].text, strlen(cases[i].text)), cases[i].valid, "UTF-8 check: %s", cases[i].why);
        strcpy(ws.name, cases[i].text);
        int rc = record_encode(&record_workspace, &ws, &buf, &len, &err);
        is_int(rc, cases[i].valid ? 0 : -1, "record_encode %s %s", cases[i].valid ? "takes" : "refuses", cases[i].why);
        if (rc == 0)
            free(buf);
        else
            ok(strstr(err.msg, "name is not valid UTF-8") != NULL, "says why: %s", err.msg);
    }
    /* What encode refuses, decode refuses too: a record that reads back can be written again. */
    strcpy(ws.name, "aXc");
    if (record_encode(&record_workspace, &ws, &buf, &len, &err) == 0) {
        char *at = memmem(buf, len, "aXc", 3);
        ok(at != NULL, "the encoded name is in the bytes");
        if (at != NULL)
            at[1] = (char)0xff;
        workspace_record_t back;
        is_int(record_decode(&record_workspace, buf, len, &back, &err), -1, "record_decode refuses a name that is not UTF-8");
        ok(strstr(err.msg, "name is not valid UTF-8") != NULL, "says why: %s", err.msg);
        free(buf);
    }
}

/*
 * A record re-packed from a good one's bytes with one change: the array under key list grown by a copy of its
 * last element, or a member of extra bytes added.  Everything else is as record_encode wrote it, so only the check
 * under test can refuse the result.
 */
static size_t repack(const char *good, size_t len, const char *list, size_t extra, msgpack_sbuffer *out)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_sbuffer_init(out);
    if (msgpack_unpack_next(&up, good, len, &off) != MSGPACK_UNPACK_SUCCESS || up.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&up);
        return 0;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    const msgpack_object_map *m = &up.data.via.map;
    msgpack_pack_map(&pk, m->size + (extra ? 1 : 0));
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
        msgpack_pack_object(&pk, *k);
        if (list != NULL && k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(list) &&
            memcmp(k->via.str.ptr, list, k->via.str.size) == 0 && v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size > 0) {
            msgpack_pack_array(&pk, v->via.array.size + 1);
            for (uint32_t e = 0; e < v->via.array.size; e++)
                msgpack_pack_object(&pk, v->via.array.ptr[e]);
            msgpack_pack_object(&pk, v->via.array.ptr[v->via.array.size - 1]);
        } else {
            msgpack_pack_object(&pk, *v);
        }
    }
    if (extra) {
        char *pad = calloc(1, extra);
        msgpack_pack_str_with_body(&pk, "padding", 7);
        msgpack_pack_bin_with_body(&pk, pad, extra);
        free(pad);
    }
    msgpack_unpacked_destroy(&up);
    return out->size;
}

static void limits(void)
{
    static product_record_t p, back;
    memset(&p, 0, sizeof(p));
    strcpy(p.id, "prod_1");
    strcpy(p.site, "site_1");
    strcpy(p.title, "Mug");
    strcpy(p.sku, "MUG");
    strcpy(p.status, "active");
    p.version = 1;
    p.n_tags = SHOP_MAX_TAGS;
    for (size_t i = 0; i < SHOP_MAX_TAGS; i++)
        snprintf(p.tags[i].tag, sizeof(p.tags[i].tag), "t%zu", i);
    char *buf;
    size_t len;
    aly_err_t err;
    is_int(record_encode(&record_product, &p, &buf, &len, &err), 0, "a product with the most tags encodes");
    is_int(record_decode(&record_product, buf, len, &back, &err), 0, "and decodes");
    msgpack_sbuffer sb;
    size_t n = repack(buf, len, NULL, 0, &sb);
    ok(n == len && memcmp(sb.data, buf, len) == 0, "re-packed unchanged, it is the same bytes (so a change below is the only one)");
    msgpack_sbuffer_destroy(&sb);
    n = repack(buf, len, "tags", 0, &sb);
    is_int(record_decode(&record_product, sb.data, n, &back, &err), -1, "one tag past the most (%d): refused", SHOP_MAX_TAGS);
    ok(strstr(err.msg, "list of at most") != NULL, "saying the list is too long: %s", err.msg);
    msgpack_sbuffer_destroy(&sb);
    /* An unknown member is skipped; one that takes the record past RECORD_MAX_SIZE is refused before unpacking. */
    n = repack(buf, len, NULL, 1000, &sb);
    is_int(record_decode(&record_product, sb.data, n, &back, &err), 0, "an unknown member of 1,000 bytes is skipped");
    msgpack_sbuffer_destroy(&sb);
    n = repack(buf, len, NULL, RECORD_MAX_SIZE, &sb);
    is_int(record_decode(&record_product, sb.data, n, &back, &err), -1, "one that takes it past %d bytes: refused",
           RECORD_MAX_SIZE);
    ok(strstr(err.msg, "implausible size") != NULL, "saying the size is implausible: %s", err.msg);
    msgpack_sbuffer_destroy(&sb);
    free(buf);
}

/* aly_fmt_u64 (ids, the access log, RateLimit) writes what printf would: every length, each power of ten and its neighbours. */
static void decimal(void)
{
    int bad = 0;
    uint64_t p = 1;
    for (int e = 0; e <= 19; e++, p *= 10)
        for (int d = -1; d <= 1; d++) {
            uint64_t v = d < 0 ? p - 1 : p + (uint64_t)d;
            char a[24], b[24];
            size_t n = aly_fmt_u64(a, v);
            int m = snprintf(b, sizeof(b), "%" PRIu64, v);
            bad += (int)n != m || memcmp(a, b, n) != 0;
        }
    for (uint64_t v = 0; v < 100000; v++) {
        char a[24], b[24];
        size_t n = aly_fmt_u64(a, v);
        int m = snprintf(b, sizeof(b), "%" PRIu64, v);
        bad += (int)n != m || memcmp(a, b, n) != 0;
    }
    char a[24];
    size_t n = aly_fmt_u64(a, UINT64_MAX);
    is_int(bad, 0, "aly_fmt_u64 agrees with printf at 0-99999 and around every power of ten");
    ok(n == 20 && memcmp(a, "18446744073709551615", 20) == 0, "aly_fmt_u64 writes the largest value, 20 digits");
}

int main(void)
{
    decimal();
    roundtrip();
    shapes();
    hostile();
    limits();
    random_ids();
    text();
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    aly_config_t *cfg = NULL;
    store_t *st = unit_temp_store(dir, &cfg);
    ok(st != NULL, "temporary store");
    if (st != NULL) {
        environments(st);
        key_sizes(st);
        typed_records(st);
        cursors(cfg);
        admin(st, cfg);
    }
    unit_temp_done(dir, st, cfg);
    return done_testing();
}
