/*
 * Opaque, tamper-evident pagination cursors.  A cursor is base64url of a
 * payload followed by a truncated HMAC-SHA256 under a key derived from the
 * pepper, so every worker (and every restart) accepts the cursors of the
 * others, and a client cannot forge or edit one.
 */
#ifndef ALY_CURSOR_H
#define ALY_CURSOR_H

#include <stddef.h>

#include "aly/common.h"

#define CURSOR_MAX_PAYLOAD 256

/* Derives the cursor key from the pepper file; once per process. */
int cursor_init(const char *pepper_path, aly_err_t *err);

/* Writes the cursor text for payload into out (>= 2 * CURSOR_MAX_PAYLOAD bytes); returns its length or 0. */
size_t cursor_encode(const void *payload, size_t len, char *out, size_t cap);

/* Decodes and verifies; returns the payload length (payload NUL-terminated) or -1 when invalid. */
long cursor_decode(const char *text, size_t len, char *payload, size_t cap);

#endif
