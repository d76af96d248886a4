/*
 * The input side of the records (aly/tools_schema.h): copying fields that
 * were checked against the shared schema fragments into a site or a product.
 * The tools and alyctl import both go through here, so a field means the
 * same thing whichever way it came in.
 */
#include "aly/tools_schema.h"

/* Copies in[key], when present, into the field dst of size len: whole, or -1 (never cut). */
static int copy(char *dst, size_t len, const json_t *in, const char *key)
{
    const char *v = json_string_value(json_object_get(in, key));
    return v != NULL ? record_str_copy(dst, len, v) : 0;
}

static void copy_uint(uint64_t *dst, const json_t *in, const char *key)
{
    json_t *v = json_object_get(in, key);
    if (v != NULL)
        *dst = (uint64_t)json_integer_value(v);
}

const char *tools_site_apply(site_record_t *s, const json_t *in)
{
    if (copy(s->name, sizeof(s->name), in, "name") != 0)
        return "name";
    if (copy(s->domain, sizeof(s->domain), in, "domain") != 0)
        return "domain";
    if (copy(s->currency, sizeof(s->currency), in, "currency") != 0)
        return "currency";
    return NULL;
}

const char *tools_product_apply(product_record_t *p, const json_t *in)
{
    if (copy(p->title, sizeof(p->title), in, "title") != 0)
        return "title";
    if (copy(p->sku, sizeof(p->sku), in, "sku") != 0)
        return "sku";
    if (copy(p->description, sizeof(p->description), in, "description") != 0)
        return "description";
    if (copy(p->status, sizeof(p->status), in, "status") != 0)
        return "status";
    copy_uint(&p->price, in, "price");
    copy_uint(&p->inventory, in, "inventory");
    json_t *tags = json_object_get(in, "tags");
    if (tags == NULL)
        return NULL;
    if (json_array_size(tags) > SHOP_MAX_TAGS)
        return "tags";
    size_t i;
    json_t *tag;
    p->n_tags = 0;
    json_array_foreach(tags, i, tag) {
        const char *v = json_string_value(tag);
        if (v == NULL || RECORD_SET_STR(p->tags[p->n_tags++].tag, v) != 0)
            return "tags";
    }
    return NULL;
}
