/*
 * The workspace data model: sites, products, orders, daily visits and the
 * audit trail, stored in DB_DATA of the durable store.
 *
 * Every key starts with the owning workspace id, so tenant isolation is part
 * of the key layout: a lookup built from the principal's workspace cannot
 * reach another workspace's record, and another workspace's id is simply
 * "not found".  Layout ("<ws>/" then):
 *   S/<site>                  site (with product and order counts)
 *   P/<site>/<product>        product
 *   K/<site>/<sku>            product id (sku unique per site)
 *   O/<order>                 order
 *   T/<site>/<ms:16x>/<order> "" (orders by time, per site)
 *   V/<site>/<YYYY-MM-DD>     visits that day (uint64)
 *   I/<idempotency key>       products.create replay record
 *   A/<ms:16x><seq:8x>        audit record
 * Functions take the caller's transaction, so a mutation, its index updates
 * and its audit record commit together or not at all.
 */
#ifndef ALY_SHOP_H
#define ALY_SHOP_H

#include <stdint.h>

#include "aly/record.h"
#include "aly/store.h"

#define SHOP_MAX_TAGS 10
#define SHOP_MAX_ITEMS 20

/*
 * Free text is limited in characters (the schemas' maxLength, which the
 * tool schemas take from these *_CHARS, counts code points) and stored in
 * bytes: a field holds its limit at 4 bytes per character (the longest
 * UTF-8 sequence) plus the NUL, so a valid argument always fits whole and is
 * never cut inside a character.
 */
#define SHOP_TEXT_BYTES(chars) (4 * (chars) + 1)
#define SHOP_SITE_NAME_CHARS 127
#define SHOP_TITLE_CHARS 200
#define SHOP_DESCRIPTION_CHARS 2000
#define SHOP_TAG_CHARS 32
#define SHOP_CARRIER_CHARS 63
#define SHOP_REASON_CHARS 500
#define SHOP_SITE_NAME_MAX SHOP_TEXT_BYTES(SHOP_SITE_NAME_CHARS)
#define SHOP_TITLE_MAX SHOP_TEXT_BYTES(SHOP_TITLE_CHARS)
#define SHOP_DESCRIPTION_MAX SHOP_TEXT_BYTES(SHOP_DESCRIPTION_CHARS)
#define SHOP_TAG_MAX SHOP_TEXT_BYTES(SHOP_TAG_CHARS)
#define SHOP_CARRIER_MAX SHOP_TEXT_BYTES(SHOP_CARRIER_CHARS)
#define SHOP_REASON_MAX SHOP_TEXT_BYTES(SHOP_REASON_CHARS)

typedef struct site_record {
    char id[ALY_ID_MAX];
    char name[SHOP_SITE_NAME_MAX];
    char domain[254];
    char currency[4];
    uint64_t created_ms, updated_ms, version;
    uint64_t products, orders;
} site_record_t;

typedef struct tag_item {
    char tag[SHOP_TAG_MAX];
} tag_item_t;

typedef struct product_record {
    char id[ALY_ID_MAX];
    char site[ALY_ID_MAX];
    char title[SHOP_TITLE_MAX];
    char sku[65];
    char description[SHOP_DESCRIPTION_MAX];
    char status[10]; /* draft, active, archived */
    uint64_t price;  /* minor units of the site's currency */
    uint64_t inventory;
    uint64_t version, created_ms, updated_ms;
    uint64_t n_tags;
    tag_item_t tags[SHOP_MAX_TAGS];
} product_record_t;

typedef struct line_item {
    char product[ALY_ID_MAX];
    char title[SHOP_TITLE_MAX];
    uint64_t quantity;
    uint64_t unit_price;
} line_item_t;

typedef struct order_record {
    char id[ALY_ID_MAX];
    char site[ALY_ID_MAX];
    char customer_name[ALY_NAME_MAX];
    char customer_email[254];
    char status[12]; /* pending, paid, fulfilled, cancelled */
    char currency[4];
    char carrier[SHOP_CARRIER_MAX];
    char tracking[128];
    char cancel_reason[SHOP_REASON_MAX]; /* orders.cancel's reason, "" when none was given */
    uint64_t total;                      /* minor units */
    uint64_t created_ms, paid_ms, fulfilled_ms, cancelled_ms;
    uint64_t version;
    uint64_t n_items;
    line_item_t items[SHOP_MAX_ITEMS];
} order_record_t;

typedef struct audit_record {
    char workspace[ALY_ID_MAX];
    char principal[160];
    char tool[64];
    char object[ALY_ID_MAX];
    uint64_t at_ms;
    uint64_t before_version; /* 0: created */
    uint64_t after_version;  /* 0: deleted */
} audit_record_t;

typedef struct idempotency_record {
    unsigned char request_hash[32];
    char product[ALY_ID_MAX];
} idempotency_record_t;

extern const record_type_t record_site, record_product, record_order, record_audit, record_idempotency;

/* Builds "<ws>/<kind>/<parts...>" into buf (NUL-terminated); returns its length, 0 when it does not fit in len. */
size_t shop_key(char *buf, size_t len, const char *ws, char kind, const char *a, const char *b);

/*
 * store_get_record() / store_put_record() on DB_DATA, taking shop_key()'s
 * result as is: klen 0 (a key too long to build) is "not found" for get and
 * an error for put.  get: 0 found, 1 not found, -1 error; put: 0 or -1.
 */
int shop_get(store_txn_t *t, const char *key, size_t klen, const record_type_t *type, void *rec, aly_err_t *err);
int shop_put(store_txn_t *t, const char *key, size_t klen, const record_type_t *type, const void *rec, aly_err_t *err);

int shop_site_get(store_txn_t *t, const char *ws, const char *site, site_record_t *out, aly_err_t *err);
int shop_site_put(store_txn_t *t, const char *ws, const site_record_t *s, aly_err_t *err);
int shop_product_get(store_txn_t *t, const char *ws, const char *site, const char *product, product_record_t *out, aly_err_t *err);
/* Stores p and its sku index entry; old_sku (may be NULL) is the sku it had before. */
int shop_product_put(store_txn_t *t, const char *ws, const product_record_t *p, const char *old_sku, aly_err_t *err);
int shop_product_delete(store_txn_t *t, const char *ws, const product_record_t *p, aly_err_t *err);
/* 0 when sku is free in site (or taken by except), 1 when taken by another product. */
int shop_sku_taken(store_txn_t *t, const char *ws, const char *site, const char *sku, const char *except, aly_err_t *err);
int shop_order_get(store_txn_t *t, const char *ws, const char *order, order_record_t *out, aly_err_t *err);
/* Stores o; with is_new, also its time index entry. */
int shop_order_put(store_txn_t *t, const char *ws, const order_record_t *o, int is_new, aly_err_t *err);
int shop_visits_add(store_txn_t *t, const char *ws, const char *site, const char *date, uint64_t n, aly_err_t *err);

/*
 * Deletes at most max of ws's audit records written before cutoff_ms, oldest
 * first (in the caller's transaction).  Called with every new audit record,
 * so the trail stays within its retention without a separate sweep: each
 * write retires a few more than it adds while old ones remain.
 */
int shop_audit_prune(store_txn_t *t, const char *ws, uint64_t cutoff_ms, unsigned max, aly_err_t *err);

/* Appends an audit record (in the caller's transaction). */
int shop_audit(store_txn_t *t, const char *ws, const char *principal, const char *tool, const char *object, uint64_t before_version,
               uint64_t after_version, aly_err_t *err);

/* "YYYY-MM-DD" of a UTC time; and back (midnight UTC, -1 when invalid). */
void shop_date(uint64_t ms, char out[11]);
int64_t shop_date_ms(const char *date);

#endif
