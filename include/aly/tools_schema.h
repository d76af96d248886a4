/*
 * JSON Schema fragments the workspace tools' descriptors are assembled from
 * (string literals, concatenated at compile time), so an id or a money
 * amount is described the same way by every tool.
 */
#ifndef ALY_TOOLS_SCHEMA_H
#define ALY_TOOLS_SCHEMA_H

#define ID_PATTERN(prefix) "{\"type\":\"string\",\"pattern\":\"^" prefix "_[0-9A-Za-z]{20}$\"}"
#define SITE_ID ID_PATTERN("site")
#define PRODUCT_ID ID_PATTERN("prod")
#define ORDER_ID ID_PATTERN("ord")
#define LIMIT_CURSOR                                                                                                            \
    "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"description\":\"page size, default 50\"},"               \
    "\"cursor\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":512,\"description\":\"next_cursor of the previous page\"}"
#define NAME_SCHEMA "{\"type\":\"string\",\"minLength\":1,\"maxLength\":127}"
#define DOMAIN_SCHEMA                                                                                                           \
    "{\"type\":\"string\",\"maxLength\":253,\"pattern\":\"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\\\.)+[a-z]{2,63}$\","             \
    "\"description\":\"lower-case host name, e.g. shop.example.com\"}"
#define CURRENCY_SCHEMA "{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\",\"description\":\"ISO 4217 code, e.g. EUR\"}"
#define DATE_SCHEMA "{\"type\":\"string\",\"format\":\"date\",\"description\":\"YYYY-MM-DD (UTC)\"}"
#define MONEY_OUT                                                                                                               \
    "{\"type\":\"object\",\"properties\":{\"amount\":{\"type\":\"integer\",\"description\":\"minor units (cents)\"},"            \
    "\"currency\":{\"type\":\"string\"}},\"required\":[\"amount\",\"currency\"]}"
#define SITE_PROPS                                                                                                              \
    "\"name\":{\"type\":\"string\"},\"domain\":{\"type\":\"string\"},\"currency\":{\"type\":\"string\"},"                      \
    "\"product_count\":{\"type\":\"integer\"},\"order_count\":{\"type\":\"integer\"},\"version\":{\"type\":\"integer\"}"

#endif
