/*
 * The JSON Schema fragments that describe the workspace records' fields
 * (string literals, concatenated at compile time), and the functions that
 * copy fields checked against them into records.  The tools' descriptors
 * and alyctl import (demo.c) are assembled from the same fragments, so an
 * id, a domain or a price is held to the same rule wherever it enters.
 */
#ifndef ALY_TOOLS_SCHEMA_H
#define ALY_TOOLS_SCHEMA_H

#include <jansson.h>

#include "aly/shop.h"

#define TOOLS_STR_(x) #x
#define TOOLS_STR(x) TOOLS_STR_(x)

/* The record limits as schema numbers, named so the schema strings below read (and format) as plain concatenations. */
#define MAX_SITE_NAME TOOLS_STR(SHOP_SITE_NAME_CHARS)
#define MAX_TITLE TOOLS_STR(SHOP_TITLE_CHARS)
#define MAX_DESCRIPTION TOOLS_STR(SHOP_DESCRIPTION_CHARS)
#define MAX_TAGS TOOLS_STR(SHOP_MAX_TAGS)
#define MAX_TAG TOOLS_STR(SHOP_TAG_CHARS)
#define MAX_REASON TOOLS_STR(SHOP_REASON_CHARS)
#define MAX_ITEMS TOOLS_STR(SHOP_MAX_ITEMS)
#define MAX_CARRIER TOOLS_STR(SHOP_CARRIER_CHARS)

#define ID_PATTERN(prefix) "{\"type\":\"string\",\"pattern\":\"^" prefix "_[0-9A-Za-z]{20}$\"}"
#define SITE_ID ID_PATTERN("site")
/* A tool's site_id argument: omitted, the tool uses the only site, or asks (or lists them) when there are several. */
#define SITE_ARG                                                                                                                   \
    "{\"type\":\"string\",\"pattern\":\"^site_[0-9A-Za-z]{20}$\",\"description\":\"the site (sites.list); may be omitted: "        \
    "the workspace's only site is used, and with several you are asked to pick one\"}"
#define PRODUCT_ID ID_PATTERN("prod")
#define ORDER_ID ID_PATTERN("ord")
#define LIMIT_CURSOR                                                                                                               \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"description\":\"page size, default 50\"},"                    \
    "\"cursor\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":512,\"description\":\"next_cursor of the previous page\"}"
#define EXPECTED_VERSION "\"expected_version\":{\"type\":\"integer\",\"minimum\":1}"
#define NAME_SCHEMA "{\"type\":\"string\",\"minLength\":1,\"maxLength\":" MAX_SITE_NAME "}"
#define DOMAIN_SCHEMA                                                                                                              \
    "{\"type\":\"string\",\"maxLength\":253,\"pattern\":\"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\\\.)+[a-z]{2,63}$\","              \
    "\"description\":\"lower-case host name, e.g. shop.example.com\"}"
#define CURRENCY_SCHEMA "{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\",\"description\":\"ISO 4217 code, e.g. EUR\"}"
#define DATE_SCHEMA "{\"type\":\"string\",\"format\":\"date\",\"description\":\"YYYY-MM-DD (UTC)\"}"
#define PRICE_SCHEMA                                                                                                               \
    "{\"type\":\"integer\",\"minimum\":0,\"maximum\":100000000000,\"description\":\"minor units of the site's currency, e.g. 1999 = 19.99\"}"
#define PRODUCT_STATUS_SCHEMA "{\"type\":\"string\",\"enum\":[\"draft\",\"active\",\"archived\"]}"
#define ORDER_STATUS_SCHEMA "{\"type\":\"string\",\"enum\":[\"pending\",\"paid\",\"fulfilled\",\"cancelled\"]}"

/* The fields a site is created with (sites.create, import). */
#define SITE_FIELDS "\"name\":" NAME_SCHEMA ",\"domain\":" DOMAIN_SCHEMA ",\"currency\":" CURRENCY_SCHEMA

/* The fields a product is created or changed with (products.create, products.update, import). */
#define PRODUCT_FIELDS                                                                                                              \
    "\"title\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":" MAX_TITLE "},"                                                  \
    "\"sku\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9._-]{1,64}$\",\"description\":\"stock keeping unit, unique per site\"}," \
    "\"description\":{\"type\":\"string\",\"maxLength\":" MAX_DESCRIPTION "},"                                                      \
    "\"price\":" PRICE_SCHEMA ","                                                                                                   \
    "\"inventory\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1000000000},"                                                    \
    "\"status\":" PRODUCT_STATUS_SCHEMA ","                                                                                         \
    "\"tags\":{\"type\":\"array\",\"maxItems\":" MAX_TAGS ",\"uniqueItems\":true,"                                                  \
    "\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":" MAX_TAG "}}"

/* A line item as import reads it: the product, how many, at which unit price. */
#define LINE_ITEM_SCHEMA                                                                                                           \
    "{\"type\":\"object\",\"properties\":{\"product_id\":" PRODUCT_ID ","                                                          \
    "\"quantity\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000000},\"unit_price\":" PRICE_SCHEMA "},"                      \
    "\"required\":[\"product_id\",\"quantity\"]}"

#define MONEY_OUT                                                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"amount\":{\"type\":\"integer\",\"description\":\"minor units (cents)\"},"              \
    "\"currency\":{\"type\":\"string\"}},\"required\":[\"amount\",\"currency\"]}"
#define SITE_PROPS                                                                                                                 \
    "\"name\":{\"type\":\"string\"},\"domain\":{\"type\":\"string\"},\"currency\":{\"type\":\"string\"},"                          \
    "\"product_count\":{\"type\":\"integer\"},\"order_count\":{\"type\":\"integer\"},\"version\":{\"type\":\"integer\"}"

/*
 * Copies the SITE_FIELDS present in in (already validated) into s; the others
 * stay as they are.  NULL, or the name of a field that does not fit whole
 * (s is then partly changed: write nothing).
 */
const char *tools_site_apply(site_record_t *s, const json_t *in);
/* The same for the PRODUCT_FIELDS and p; tags, when present, replace p's. */
const char *tools_product_apply(product_record_t *p, const json_t *in);

#endif
