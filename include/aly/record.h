/*
 * Records: C structs stored as msgpack maps, described by tables.
 *
 * A record type is a tag ("t"), a version ("v") and a table of fields, each
 * a name, a kind and where it lives in the struct.  record_encode() walks the
 * table to write a map; record_decode() walks the map and refuses anything
 * that is not exactly what the table says: wrong tag or version, a field of
 * the wrong kind or over its size, a missing required field, or bytes left
 * over.  Strings are copied into fixed arrays of the struct, so a decoded
 * record owns its data and outlives the LMDB transaction it came from.
 * Unknown fields are skipped, so an older alyd can read a newer record that
 * only added optional fields.
 *
 * Most code does not call the codec directly: store_get_record(),
 * store_put_record() and store_scan_records() (aly/store.h) pair it with the
 * store.  The struct passed as obj must be the one the table describes: the
 * codec writes as far as the table's furthest field.
 */
#ifndef ALY_RECORD_H
#define ALY_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "aly/common.h"
#include "aly/scope.h"

typedef enum {
    RF_STR,  /* char[size], NUL-terminated, at most size-1 bytes */
    RF_U64,  /* uint64_t */
    RF_BIN,  /* unsigned char[size], exactly size bytes */
    RF_LIST, /* an array of at most max elements of type sub, each size bytes; count in a uint64_t at count_offset */
} record_kind_t;

struct record_type;

typedef struct record_field {
    const char *name;
    record_kind_t kind;
    size_t offset;
    size_t size;
    int optional; /* absent means zero / empty */
    size_t max;
    size_t count_offset;
    const struct record_type *sub;
} record_field_t;

typedef struct record_type {
    const char *tag;
    uint32_t version;
    const record_field_t *fields;
    size_t n_fields;
} record_type_t;

/* Table rows: RF_STR_(type, field, "name", optional) and friends (one line each: clang-format would split the braces). */
/* clang-format off */
#define RF_MEMBER_SIZE(t, f) sizeof(((t *)0)->f)
#define RF_STR_(t, f, n, opt) {.name = (n), .kind = RF_STR, .offset = offsetof(t, f), .size = RF_MEMBER_SIZE(t, f), .optional = (opt)}
#define RF_U64_(t, f, n, opt) {.name = (n), .kind = RF_U64, .offset = offsetof(t, f), .size = sizeof(uint64_t), .optional = (opt)}
#define RF_BIN_(t, f, n) {.name = (n), .kind = RF_BIN, .offset = offsetof(t, f), .size = RF_MEMBER_SIZE(t, f)}
#define RF_LIST_(t, f, n, count, subtype)                                                                                     \
    {.name = (n), .kind = RF_LIST, .offset = offsetof(t, f), .size = RF_MEMBER_SIZE(t, f[0]), .optional = 1,                    \
     .max = RF_MEMBER_SIZE(t, f) / RF_MEMBER_SIZE(t, f[0]), .count_offset = offsetof(t, count), .sub = &(subtype)}
/* clang-format on */

/* Largest encoded record record_decode() accepts; ours are a few KiB at most. */
#define RECORD_MAX_SIZE (64 * 1024)

/*
 * Encodes obj as a msgpack map: *out is malloc'd and the caller frees it;
 * *len is its size.  A list holds at most its field's max elements (more are
 * dropped).  -1 with err, and nothing to free, when a string field is not
 * NUL-terminated inside its array or is not valid UTF-8 (text that could not
 * become JSON again is never stored).
 */
int record_encode(const record_type_t *type, const void *obj, char **out, size_t *len, aly_err_t *err);

/*
 * Decodes data (len bytes, 1 to RECORD_MAX_SIZE) into obj, which it zeroes
 * first, so optional fields that are absent read as 0 or "".  -1 with err on
 * anything unexpected: another tag or version, a field of the wrong kind or
 * over its size, a missing required field, trailing bytes, nesting over 8
 * levels.  obj owns its data afterwards; data is not referenced.
 */
int record_decode(const record_type_t *type, const void *data, size_t len, void *obj, aly_err_t *err);

/*
 * Copies the string src into a char[size] field; -1, dst untouched, when it
 * does not fit.  Never cuts: a cut can split a UTF-8 character, and
 * record_encode() refuses a field that is not valid UTF-8.
 */
int record_str_copy(char *dst, size_t size, const char *src);
#define RECORD_SET_STR(field, src) record_str_copy((field), sizeof(field), (src))

/* 1 when s[0..len) is well-formed UTF-8 (RFC 3629). */
int record_utf8_valid(const char *s, size_t len);

/* ---- the records of the durable store ---- */

#define ALY_ID_MAX 32 /* "key_" + 20 base62, with room */
#define ALY_NAME_MAX 128

typedef struct workspace_record {
    char id[ALY_ID_MAX];
    char name[ALY_NAME_MAX];
    uint64_t created_ms;
} workspace_record_t;

typedef struct key_record {
    char id[ALY_ID_MAX];
    char workspace[ALY_ID_MAX];
    char name[ALY_NAME_MAX];
    uint64_t scopes; /* scope_set_t */
    uint64_t created_ms;
    uint64_t expires_ms; /* 0: never */
    uint64_t revoked_ms; /* 0: not revoked */
    uint64_t rate_count; /* 0: the configured default */
    uint64_t rate_period_s;
    uint64_t rate_burst;
    unsigned char hash[32]; /* HMAC-SHA256(pepper, key) */
} key_record_t;

typedef struct revocation_record {
    char subject[256]; /* the jti or sub */
    uint64_t revoked_ms;
} revocation_record_t;

/* An MCP session, bound to the principal that initialised it. */
typedef struct session_record {
    char id[48];
    char principal[160];
    char protocol[16];
    uint64_t created_ms;
    uint64_t expires_ms;
    uint64_t log_level;   /* index into the MCP log levels, debug = 0 */
    uint64_t client_caps; /* what initialize declared: MCP_CAP_* bits */
} session_record_t;

/*
 * The client capabilities a session remembers (session_record_t.client_caps).
 * MCP_CAP_ELICITATION is form-mode elicitation, the only kind alyd asks:
 * declared as an object that is empty (form, from before modes) or has form.
 */
#define MCP_CAP_ELICITATION 1u
#define MCP_CAP_SAMPLING 2u
#define MCP_CAP_ROOTS 4u

extern const record_type_t record_session;
extern const record_type_t record_workspace;
extern const record_type_t record_key;
extern const record_type_t record_revocation;

#endif
