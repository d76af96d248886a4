/*
 * The one validator of tool arguments: a JSON Schema (2020-12) subset, enough
 * for every inputSchema alyd declares.  Tools declare their schema once and
 * the registry validates calls against it, so the declared contract and the
 * checks cannot drift apart.
 *
 * Supported keywords: type (a name or a list), properties, required,
 * additionalProperties (false or a schema), enum, const, minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum, minLength, maxLength (in code points),
 * pattern (POSIX extended regex, anchored as written), format "date" and
 * "date-time", items, minItems, maxItems, uniqueItems, and annotations that
 * need no check (title, description, default, examples, $schema).  A schema
 * using anything else is refused at registration, not ignored at call time.
 */
#ifndef ALY_SCHEMA_H
#define ALY_SCHEMA_H

#include <jansson.h>

#include "aly/common.h"

/* Checks that schema only uses supported keywords and that its patterns compile. */
int schema_check(const json_t *schema, aly_err_t *err);

/*
 * Validates value against schema.  On failure returns -1 and err says which
 * field broke which rule ("price: must be >= 0"), using a dotted path.
 *
 * JSON Schema counts 1999.0 as an integer, but a handler reading it with
 * json_integer_value() would get 0: so a real with an integral value, where
 * the schema wants an integer, is replaced in value by that integer (a
 * member or an item; value itself is never replaced).  Handlers then see
 * integers only.  1999.5 is not an integer and is refused.
 */
int schema_validate(const json_t *schema, json_t *value, aly_err_t *err);

#endif
