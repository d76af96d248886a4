/*
 * The input side of the records (aly/tools_schema.h): copying fields that
 * were checked against the shared schema fragments into a site or a product.
 * The tools and alyctl import both go through here, so a field means the
 * same thing whichever way it came in.
 */
#include <stdio.h>

#include "aly/tools_schema.h"

/* Copies in[key], when present, into the buffer dst of size len. */
static void copy(char *dst, size_t len, const json_t *in, const char *key)
{
    const char *v = json_string_value(json_object_get(in, key));
    if (v != NULL)
        snprintf(dst, len, "%s", v);
}

static void copy_uint(uint64_t *dst, const json_t *in, const char *key)
{
    json_t *v = json_object_get(in, key);
    if (v != NULL)
        *dst = (uint64_t)json_integer_value(v);
}

void tools_site_apply(site_record_t *s, const json_t *in)
{
    copy(s->name, sizeof(s->name), in, "name");
    copy(s->domain, sizeof(s->domain), in, "domain");
    copy(s->currency, sizeof(s->currency), in, "currency");
}

void tools_product_apply(product_record_t *p, const json_t *in)
{
    copy(p->title, sizeof(p->title), in, "title");
    copy(p->sku, sizeof(p->sku), in, "sku");
    copy(p->description, sizeof(p->description), in, "description");
    copy(p->status, sizeof(p->status), in, "status");
    copy_uint(&p->price, in, "price");
    copy_uint(&p->inventory, in, "inventory");
    json_t *tags = json_object_get(in, "tags");
    if (tags == NULL)
        return;
    size_t i;
    json_t *tag;
    p->n_tags = 0;
    json_array_foreach(tags, i, tag)
    {
        if (p->n_tags == SHOP_MAX_TAGS)
            break;
        snprintf(p->tags[p->n_tags++].tag, sizeof(p->tags[0].tag), "%s", json_string_value(tag));
    }
}
