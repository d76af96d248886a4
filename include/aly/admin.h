/*
 * Administrative operations on the store, as functions: what alyctl(1) does
 * to workspaces, API keys and revocations, with no command line in it.
 * alyctl parses arguments and prints; these functions validate, open
 * transactions, mint, store and revoke.  Each call is one transaction: it
 * commits everything or nothing.
 *
 * Messages in err are sentences for an operator; where the fix is another
 * alyctl command they name it ("no workspace ws_… (alyctl workspace list)").
 *
 * Listing functions call each() once per record, in key order, with a
 * pointer to the decoded record (the type the function names), valid during
 * the call only; each() returns 0 to go on, 1 to stop, -1 to fail the listing.
 * bad(), when not NULL, is told about each record that does not decode, and
 * the listing goes on.  Both run inside a read transaction: they must not
 * call back into the store.
 */
#ifndef ALY_ADMIN_H
#define ALY_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "aly/common.h"
#include "aly/config.h"
#include "aly/record.h"
#include "aly/scope.h"
#include "aly/store.h"

typedef int (*admin_each_fn)(void *ctx, const void *rec);
typedef void (*admin_bad_fn)(void *ctx, const char *why);

/*
 * Creates data_dir, both environments and the pepper file (store_init()).
 * Run as root with "user" set, resolves user and group and hands everything
 * created to them, so workers that dropped privileges can open it.
 */
int admin_init(const aly_config_t *cfg, aly_err_t *err);

/* 1 when name is usable for a workspace or a key: 1 to ALY_NAME_MAX - 1 bytes, no control characters. */
int admin_name_ok(const char *name);

/* ---- workspaces ---- */

/* Creates a workspace called name with a new id ("ws_" + 20 base62); out receives the stored record. */
int admin_workspace_create(store_t *st, const char *name, workspace_record_t *out, aly_err_t *err);

/* Every workspace (workspace_record_t), in id order. */
int admin_workspace_list(store_t *st, admin_each_fn each, admin_bad_fn bad, void *ctx, aly_err_t *err);

/* The sites of workspace ws (site_record_t, with their counts), in id order; -1 when ws does not exist.  Bad records are skipped. */
int admin_workspace_sites(store_t *st, const char *ws, admin_each_fn each, void *ctx, aly_err_t *err);

/* ---- API keys ---- */

typedef struct admin_key_spec {
    const char *workspace; /* must exist */
    const char *name;      /* NULL: none; else admin_name_ok() */
    scope_set_t scopes;
    uint64_t ttl_ms;        /* 0: never expires */
    const aly_rate_t *rate; /* NULL: the configured rate_limit applies */
} admin_key_spec_t;

/*
 * Mints an API key: generates the key, keeps only HMAC-SHA256 of it under
 * the pepper in pepper_file, gives it a new id ("key_" + 20 base62) and
 * stores the record.  key (keylen >= AUTH_KEY_LEN + 1) receives the key
 * text, which exists nowhere else: the caller shows it once and cleanses it.
 * out receives the stored record.
 */
int admin_key_mint(store_t *st, const char *pepper_file, const admin_key_spec_t *spec, key_record_t *out, char *key, size_t keylen,
                   aly_err_t *err);

/* The keys of workspace ws, or of every workspace when ws is NULL (key_record_t), in workspace then id order. */
int admin_key_list(store_t *st, const char *ws, admin_each_fn each, admin_bad_fn bad, void *ctx, aly_err_t *err);

/* The key with id (in any workspace) into out: 0, 1 when there is none, -1 error. */
int admin_key_get(store_t *st, const char *id, key_record_t *out, aly_err_t *err);

/*
 * Revokes the key with id and bumps the revocation generation, so every
 * worker drops its cached verdicts.  Revoking a revoked key changes nothing
 * (it keeps its first revocation time).  out receives the record as stored.
 * 0, 1 when there is no such key, -1 error.
 */
int admin_key_revoke(store_t *st, const char *id, key_record_t *out, aly_err_t *err);

/* When the key id last authenticated a request (ms since the epoch, at a granularity of minutes); 0 when never or unknown. */
uint64_t admin_key_last_used(store_t *st, const char *id);

/* ---- OAuth revocations ---- */

typedef enum {
    ADMIN_REVOKE_JTI, /* one token, by its jti claim */
    ADMIN_REVOKE_SUB, /* every token of a subject, by its sub claim */
} admin_revoke_t;

/* 0 when what can be revoked (1 to 255 bytes); -1 with err otherwise. */
int admin_revocation_ok(admin_revoke_t kind, const char *what, aly_err_t *err);

/* Records the revocation (replacing an earlier one of the same subject) and bumps the revocation generation. */
int admin_revoke(store_t *st, admin_revoke_t kind, const char *what, aly_err_t *err);

/* ---- audit trail ---- */

/* The audit records (audit_record_t) of workspace ws, or of every workspace when NULL, at or after since_ms, oldest first per workspace. */
int admin_audit_list(store_t *st, const char *ws, uint64_t since_ms, admin_each_fn each, void *ctx, aly_err_t *err);

#endif
