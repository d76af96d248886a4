/*
 * libFuzzer target: record_decode() of every record type on the same bytes.
 *
 * Records come out of LMDB, so a corrupt or hostile store (a restored backup,
 * a disk error, another program writing the map) reaches the decoder; its
 * guard in front of msgpack-c (lengths and counts checked against the bytes
 * left, before msgpack-c reserves memory for them) is what this exercises.
 * Whatever decodes must also survive the trip back: encoded again and decoded
 * again it must give the identical struct, or a record could change meaning
 * on its next write.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/record.h"
#include "aly/shop.h"

typedef union any_record {
    workspace_record_t workspace;
    key_record_t key;
    revocation_record_t revocation;
    session_record_t session;
    site_record_t site;
    product_record_t product;
    order_record_t order;
    audit_record_t audit;
    idempotency_record_t idempotency;
} any_record_t;

static const struct {
    const record_type_t *type;
    size_t size;
} types[] = {
    {&record_workspace, sizeof(workspace_record_t)},
    {&record_key, sizeof(key_record_t)},
    {&record_revocation, sizeof(revocation_record_t)},
    {&record_session, sizeof(session_record_t)},
    {&record_site, sizeof(site_record_t)},
    {&record_product, sizeof(product_record_t)},
    {&record_order, sizeof(order_record_t)},
    {&record_audit, sizeof(audit_record_t)},
    {&record_idempotency, sizeof(idempotency_record_t)},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static any_record_t first, second;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        aly_err_t err = {.msg = ""};
        memset(&first, 0, sizeof(first));
        if (record_decode(types[i].type, data, size, &first, &err) != 0) {
            if (err.msg[0] == '\0') {
                fprintf(stderr, "record_decode(%s) failed without saying why\n", types[i].type->tag);
                abort();
            }
            continue;
        }
        char *buf = NULL;
        size_t len = 0;
        if (record_encode(types[i].type, &first, &buf, &len, &err) != 0) {
            fprintf(stderr, "a decoded %s record does not encode: %s\n", types[i].type->tag, err.msg);
            abort();
        }
        memset(&second, 0, sizeof(second));
        if (record_decode(types[i].type, buf, len, &second, &err) != 0) {
            fprintf(stderr, "a re-encoded %s record does not decode: %s\n", types[i].type->tag, err.msg);
            abort();
        }
        free(buf);
        if (memcmp(&first, &second, types[i].size) != 0) {
            fprintf(stderr, "a %s record changed on its way back through the encoder\n", types[i].type->tag);
            abort();
        }
    }
    return 0;
}
