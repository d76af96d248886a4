/*
 * Opaque, tamper-evident pagination cursors.  A cursor is base64url of a
 * payload followed by a truncated HMAC-SHA256 under a key derived from the
 * pepper, so every worker (and every restart) accepts the cursors of the
 * others, and a client cannot forge or edit one.
 *
 * The one payload format is "<kind>|<after>": kind names the listing (so a
 * cursor of one listing is refused by another) and after is where the next
 * page resumes (the last key or index the previous page returned).  Every
 * listing goes through cursor_make() / cursor_read(); cursor_encode() and
 * cursor_decode() are the raw layer beneath them.
 *
 * Usage:
 *     char text[CURSOR_TEXT_MAX];
 *     if (cursor_make("orders", last_id, text, sizeof(text)) == 0) ...      // cannot page
 *     char after[ALY_ID_MAX];
 *     if (cursor_read(arg, arg_len, "orders", after, sizeof(after)) != 0) ... // invalid cursor
 */
#ifndef ALY_CURSOR_H
#define ALY_CURSOR_H

#include <stddef.h>

#include "aly/common.h"

#define CURSOR_MAX_PAYLOAD 256                   /* bytes of payload, kind and "|" included */
#define CURSOR_TEXT_MAX (2 * CURSOR_MAX_PAYLOAD) /* room for any cursor text and its NUL */

/* Derives the cursor key from the pepper file; once per process. */
int cursor_init(const char *pepper_path, aly_err_t *err);

/* Writes the cursor text for payload into out (>= 2 * CURSOR_MAX_PAYLOAD bytes); returns its length or 0. */
size_t cursor_encode(const void *payload, size_t len, char *out, size_t cap);

/* Decodes and verifies; returns the payload length (payload NUL-terminated) or -1 when invalid. */
long cursor_decode(const char *text, size_t len, char *payload, size_t cap);

/*
 * Writes the cursor for "listing kind, resume after after" into out (cap >=
 * CURSOR_TEXT_MAX is always enough) and returns its length.  0 when kind is
 * empty or holds '|', when kind and after exceed CURSOR_MAX_PAYLOAD, when
 * cap is too small or before cursor_init().
 */
size_t cursor_make(const char *kind, const char *after, char *out, size_t cap);

/*
 * Verifies text (len bytes, not NUL-terminated necessarily) and that it was
 * made for kind, and copies its "after" (possibly empty) NUL-terminated into
 * after (cap bytes).  0, or -1 when forged, edited, made for another kind or
 * when its after does not fit in cap.
 */
int cursor_read(const char *text, size_t len, const char *kind, char *after, size_t cap);

#endif
