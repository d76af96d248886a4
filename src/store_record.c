/*
 * The typed record layer of aly/store.h: get, put and scan of msgpack
 * records, so encoding and decoding happen in one place next to the store.
 */
#include "aly/store.h"

#include <stdlib.h>

#include "aly/record.h"

int store_get_record(store_txn_t *t, int db, const void *key, size_t klen, const record_type_t *type, void *rec, aly_err_t *err)
{
    store_val_t v;
    int rc = store_get(t, db, key, klen, &v, err);
    if (rc != 0)
        return rc;
    return record_decode(type, v.data, v.len, rec, err) == 0 ? 0 : -1;
}

int store_put_record(store_txn_t *t, int db, const void *key, size_t klen, const record_type_t *type, const void *rec,
                     int noclobber, aly_err_t *err)
{
    char *val;
    size_t vlen;
    if (record_encode(type, rec, &val, &vlen, err) != 0)
        return -1;
    int rc = store_put(t, db, key, klen, val, vlen, noclobber, err);
    free(val);
    return rc;
}

static int scan_one(void *vctx, const store_val_t *key, const store_val_t *val)
{
    const store_records_t *r = vctx;
    aly_err_t err;
    if (record_decode(r->type, val->data, val->len, r->rec, &err) == 0)
        return r->each(r->ctx, key, r->rec);
    return r->bad != NULL ? r->bad(r->ctx, key, err.msg) : 0;
}

int store_scan_records(store_txn_t *t, int db, const void *prefix, size_t plen, const void *after, size_t alen,
                       const store_records_t *r, aly_err_t *err)
{
    return store_scan(t, db, prefix, plen, after, alen, scan_one, (void *)r, err);
}
