/*
 * The table-driven msgpack codec of aly/record.h, and the tables of the
 * durable store's records.
 */
#include "aly/record.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

static const record_field_t workspace_fields[] = {
    RF_STR_(workspace_record_t, id, "id", 0),
    RF_STR_(workspace_record_t, name, "name", 0),
    RF_U64_(workspace_record_t, created_ms, "created", 0),
};
const record_type_t record_workspace = {"ws", 1, workspace_fields, ALY_ARRAY_SIZE(workspace_fields)};

static const record_field_t key_fields[] = {
    RF_STR_(key_record_t, id, "id", 0),
    RF_STR_(key_record_t, workspace, "ws", 0),
    RF_STR_(key_record_t, name, "name", 1),
    RF_U64_(key_record_t, scopes, "scopes", 0),
    RF_U64_(key_record_t, created_ms, "created", 0),
    RF_U64_(key_record_t, expires_ms, "expires", 1),
    RF_U64_(key_record_t, revoked_ms, "revoked", 1),
    RF_U64_(key_record_t, rate_count, "rl_n", 1),
    RF_U64_(key_record_t, rate_period_s, "rl_p", 1),
    RF_U64_(key_record_t, rate_burst, "rl_b", 1),
    RF_BIN_(key_record_t, hash, "hash"),
};
const record_type_t record_key = {"key", 1, key_fields, ALY_ARRAY_SIZE(key_fields)};

static const record_field_t session_fields[] = {
    RF_STR_(session_record_t, id, "id", 0),
    RF_STR_(session_record_t, principal, "principal", 0),
    RF_STR_(session_record_t, protocol, "protocol", 0),
    RF_U64_(session_record_t, created_ms, "created", 0),
    RF_U64_(session_record_t, expires_ms, "expires", 0),
    RF_U64_(session_record_t, log_level, "level", 1),
    RF_U64_(session_record_t, client_caps, "caps", 1),
};
const record_type_t record_session = {"session", 1, session_fields, ALY_ARRAY_SIZE(session_fields)};

static const record_field_t revocation_fields[] = {
    RF_STR_(revocation_record_t, subject, "subject", 0),
    RF_U64_(revocation_record_t, revoked_ms, "revoked", 0),
};
const record_type_t record_revocation = {"revoked", 1, revocation_fields, ALY_ARRAY_SIZE(revocation_fields)};

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str_with_body(pk, s, n);
}

static void pack_fields(msgpack_packer *pk, const record_type_t *type, const char *base)
{
    for (size_t i = 0; i < type->n_fields; i++) {
        const record_field_t *f = &type->fields[i];
        pack_str(pk, f->name);
        switch (f->kind) {
        case RF_STR:
            pack_str(pk, base + f->offset);
            break;
        case RF_U64: {
            uint64_t v;
            memcpy(&v, base + f->offset, sizeof(v));
            msgpack_pack_uint64(pk, v);
            break;
        }
        case RF_BIN:
            msgpack_pack_bin_with_body(pk, base + f->offset, f->size);
            break;
        case RF_LIST: {
            uint64_t n;
            memcpy(&n, base + f->count_offset, sizeof(n));
            if (n > f->max)
                n = f->max;
            msgpack_pack_array(pk, (size_t)n);
            for (uint64_t k = 0; k < n; k++) {
                msgpack_pack_map(pk, (uint32_t)f->sub->n_fields);
                pack_fields(pk, f->sub, base + f->offset + k * f->size);
            }
            break;
        }
        }
    }
}

/*
 * Length of the well-formed UTF-8 sequence at s (RFC 3629: shortest form, no
 * surrogates, nothing above U+10FFFF), or 0 when there is none.
 */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (left < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

int record_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0, n; i < len; i += n)
        if ((n = utf8_seq(p + i, len - i)) == 0)
            return 0;
    return 1;
}

int record_str_copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

/*
 * Every string field must be terminated inside its array and be UTF-8:
 * checked before packing, because a record whose text cannot become JSON
 * could be stored but never shown again.
 */
static int check_strings(const record_type_t *type, const char *base, aly_err_t *err)
{
    for (size_t i = 0; i < type->n_fields; i++) {
        const record_field_t *f = &type->fields[i];
        if (f->kind == RF_STR) {
            const char *end = memchr(base + f->offset, '\0', f->size);
            if (end == NULL)
                return aly_errf(err, "record field %s is not terminated", f->name);
            if (!record_utf8_valid(base + f->offset, (size_t)(end - (base + f->offset))))
                return aly_errf(err, "record field %s is not valid UTF-8", f->name);
        }
        if (f->kind == RF_LIST) {
            uint64_t n;
            memcpy(&n, base + f->count_offset, sizeof(n));
            for (uint64_t k = 0; k < n && k < f->max; k++)
                if (check_strings(f->sub, base + f->offset + k * f->size, err) != 0)
                    return -1;
        }
    }
    return 0;
}

int record_encode(const record_type_t *type, const void *obj, char **out, size_t *len, aly_err_t *err)
{
    if (check_strings(type, obj, err) != 0)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (uint32_t)type->n_fields + 2);
    pack_str(&pk, "t");
    pack_str(&pk, type->tag);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, type->version);
    pack_fields(&pk, type, obj);
    *out = sb.data;
    *len = sb.size;
    return 0;
}

static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static int decode_map(const record_type_t *type, const msgpack_object *map, char *base, int tagged, aly_err_t *err)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return aly_errf(err, "%s record is not a map", type->tag);
    uint64_t seen = 0;
    int tag_ok = !tagged, version_ok = !tagged;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (tagged && key_is(k, "t")) {
            tag_ok = v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(type->tag) &&
                     memcmp(v->via.str.ptr, type->tag, v->via.str.size) == 0;
            continue;
        }
        if (tagged && key_is(k, "v")) {
            version_ok = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 == type->version;
            continue;
        }
        for (size_t f = 0; f < type->n_fields; f++) {
            const record_field_t *fd = &type->fields[f];
            if (!key_is(k, fd->name))
                continue;
            if (seen & ((uint64_t)1 << f))
                return aly_errf(err, "%s record repeats field %s", type->tag, fd->name);
            seen |= (uint64_t)1 << f;
            switch (fd->kind) {
            case RF_STR:
                if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= fd->size ||
                    memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL)
                    return aly_errf(err, "%s record field %s is not a string that fits", type->tag, fd->name);
                /* What encode refuses, decode refuses too: a record read back must be writable again. */
                if (!record_utf8_valid(v->via.str.ptr, v->via.str.size))
                    return aly_errf(err, "%s record field %s is not valid UTF-8", type->tag, fd->name);
                memcpy(base + fd->offset, v->via.str.ptr, v->via.str.size);
                base[fd->offset + v->via.str.size] = '\0';
                break;
            case RF_U64:
                if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                    return aly_errf(err, "%s record field %s is not an unsigned integer", type->tag, fd->name);
                memcpy(base + fd->offset, &v->via.u64, sizeof(uint64_t));
                break;
            case RF_BIN:
                if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != fd->size)
                    return aly_errf(err, "%s record field %s is not %zu bytes", type->tag, fd->name, fd->size);
                memcpy(base + fd->offset, v->via.bin.ptr, fd->size);
                break;
            case RF_LIST: {
                if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > fd->max)
                    return aly_errf(err, "%s record field %s is not a list of at most %zu", type->tag, fd->name, fd->max);
                uint64_t n = v->via.array.size;
                for (uint64_t e = 0; e < n; e++)
                    if (decode_map(fd->sub, &v->via.array.ptr[e], base + fd->offset + e * fd->size, 0, err) != 0)
                        return -1;
                memcpy(base + fd->count_offset, &n, sizeof(n));
                break;
            }
            }
        }
    }
    if (!tag_ok || !version_ok)
        return aly_errf(err, "record is not a %s record of version %u", type->tag, type->version);
    for (size_t f = 0; f < type->n_fields; f++)
        if (!type->fields[f].optional && !(seen & ((uint64_t)1 << f)))
            return aly_errf(err, "%s record lacks field %s", type->tag, type->fields[f].name);
    return 0;
}

static uint64_t be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * Walks one msgpack value without allocating, checking that every length
 * and element count fits in what is left.  msgpack-c reserves memory for a
 * container's declared count before reading it (5 bytes can ask for GBs), so
 * a corrupt record must be refused before msgpack_unpack_next() sees it.
 */
static int sane(const unsigned char *p, size_t len, size_t *off, int depth)
{
    if (depth > 8 || *off >= len)
        return 0;
    unsigned c = p[(*off)++];
    uint64_t items = 0, skip = 0;
    size_t left = len - *off;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 1;
    if (c >= 0x80 && c <= 0x8f)
        items = 2 * (uint64_t)(c & 0x0f);
    else if (c >= 0x90 && c <= 0x9f)
        items = c & 0x0f;
    else if (c >= 0xa0 && c <= 0xbf)
        skip = c & 0x1f;
    else {
        static const struct {
            unsigned char code, lenbytes, fixed, is_items, pairs;
        } t[] = {
            {0xc4, 1, 0, 0, 0}, {0xc5, 2, 0, 0, 0}, {0xc6, 4, 0, 0, 0},  {0xc7, 1, 1, 0, 0}, {0xc8, 2, 1, 0, 0}, {0xc9, 4, 1, 0, 0},
            {0xca, 0, 4, 0, 0}, {0xcb, 0, 8, 0, 0}, {0xcc, 0, 1, 0, 0},  {0xcd, 0, 2, 0, 0}, {0xce, 0, 4, 0, 0}, {0xcf, 0, 8, 0, 0},
            {0xd0, 0, 1, 0, 0}, {0xd1, 0, 2, 0, 0}, {0xd2, 0, 4, 0, 0},  {0xd3, 0, 8, 0, 0}, {0xd4, 0, 2, 0, 0}, {0xd5, 0, 3, 0, 0},
            {0xd6, 0, 5, 0, 0}, {0xd7, 0, 9, 0, 0}, {0xd8, 0, 17, 0, 0}, {0xd9, 1, 0, 0, 0}, {0xda, 2, 0, 0, 0}, {0xdb, 4, 0, 0, 0},
            {0xdc, 2, 0, 1, 0}, {0xdd, 4, 0, 1, 0}, {0xde, 2, 0, 1, 1},  {0xdf, 4, 0, 1, 1},
        };
        size_t i;
        for (i = 0; i < ALY_ARRAY_SIZE(t) && t[i].code != c; i++)
            ;
        if (i == ALY_ARRAY_SIZE(t) || left < t[i].lenbytes)
            return 0; /* 0xc1 is never used */
        uint64_t n = be(p + *off, t[i].lenbytes);
        *off += t[i].lenbytes;
        left -= t[i].lenbytes;
        if (t[i].is_items)
            items = t[i].pairs ? 2 * n : n;
        else
            skip = n + t[i].fixed;
    }
    if (skip > left || items > left)
        return 0;
    *off += (size_t)skip;
    for (uint64_t k = 0; k < items; k++)
        if (!sane(p, len, off, depth + 1))
            return 0;
    return 1;
}

int record_decode(const record_type_t *type, const void *data, size_t len, void *obj, aly_err_t *err)
{
    size_t struct_size = 0;
    for (size_t f = 0; f < type->n_fields; f++) {
        const record_field_t *fd = &type->fields[f];
        size_t end = fd->offset + (fd->kind == RF_LIST ? fd->size * fd->max : fd->size);
        if (end > struct_size)
            struct_size = end;
        if (fd->kind == RF_LIST && fd->count_offset + sizeof(uint64_t) > struct_size)
            struct_size = fd->count_offset + sizeof(uint64_t);
    }
    memset(obj, 0, struct_size);
    /* Our records are small; refusing big values bounds what a corrupt length prefix can make the decoder allocate. */
    if (len == 0 || len > RECORD_MAX_SIZE)
        return aly_errf(err, "%s record has an implausible size (%zu bytes)", type->tag, len);
    size_t off = 0;
    if (!sane(data, len, &off, 0) || off != len)
        return aly_errf(err, "%s record is not one well-formed msgpack value", type->tag);
    off = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = msgpack_unpack_next(&up, data, len, &off);
    int ret;
    if (rc != MSGPACK_UNPACK_SUCCESS)
        ret = aly_errf(err, "%s record is not valid msgpack", type->tag);
    else if (off != len)
        ret = aly_errf(err, "%s record has %zu trailing bytes", type->tag, len - off);
    else
        ret = decode_map(type, &up.data, obj, 1, err);
    msgpack_unpacked_destroy(&up);
    return ret;
}
