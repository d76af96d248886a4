/*
 * Unit tests of the msgpack record codec (src/record.c): round trips, and
 * every kind of corrupt record refused without a crash or a huge allocation.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "aly/record.h"
#include "tap.h"

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
    static const unsigned char map_bomb[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 0x74};
    is_int(record_decode(&record_workspace, map_bomb, sizeof(map_bomb), &ws, &err), -1, "map bomb refused");
    static const unsigned char str_bomb[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 0x41};
    is_int(record_decode(&record_workspace, str_bomb, sizeof(str_bomb), &ws, &err), -1, "string length past the end refused");
    static const unsigned char never_used[] = {0xc1};
    is_int(record_decode(&record_workspace, never_used, 1, &ws, &err), -1, "reserved byte 0xc1 refused");
    is_int(record_decode(&record_workspace, "", 0, &ws, &err), -1, "empty value refused");
    static const unsigned char deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
    is_int(record_decode(&record_workspace, deep, sizeof(deep), &ws, &err), -1, "deep nesting refused");
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

int main(void)
{
    roundtrip();
    shapes();
    hostile();
    return done_testing();
}
