/*
 * libFuzzer target: the pagination cursor decoder (cursor_decode and
 * cursor_read) on client-supplied text, and the properties that make a
 * cursor safe to hand out: what cursor_make() wrote reads back exactly,
 * only under its own kind, and any one character changed is refused.
 *
 * Input: byte 0 picks the output capacity and the position to tamper with,
 * byte 1 the replacement character and the kind to read under; the rest is
 * both a cursor text to verify and, split at its first '|', a kind and an
 * "after" to make a cursor from.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/cursor.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const kinds[] = {"products", "orders", "sites", "audit", "p", ""};
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[512];
    aly_err_t err;
    fuzz_write(fuzz_path("pepper", path, sizeof(path)), FUZZ_PEPPER, sizeof(FUZZ_PEPPER) - 1);
    if (cursor_init(path, &err) != 0) {
        fprintf(stderr, "fuzz-cursor: %s\n", err.msg);
        abort();
    }
    return 0;
}

static void check_made(const char *kind, const char *after, unsigned pos, unsigned ch)
{
    char text[CURSOR_TEXT_MAX], back[CURSOR_MAX_PAYLOAD + 1];
    size_t n = cursor_make(kind, after, text, sizeof(text));
    if (n == 0) {
        if (kind[0] != '\0' && strchr(kind, '|') == NULL && strlen(kind) + 1 + strlen(after) <= CURSOR_MAX_PAYLOAD) {
            fprintf(stderr, "cursor_make refused a kind and after that fit\n");
            abort();
        }
        return;
    }
    if (n >= sizeof(text) || strlen(text) != n) {
        fprintf(stderr, "cursor_make returned a length that is not its text's\n");
        abort();
    }
    if (cursor_read(text, n, kind, back, sizeof(back)) != 0 || strcmp(back, after) != 0) {
        fprintf(stderr, "a cursor did not read back what it was made from\n");
        abort();
    }
    char other[CURSOR_MAX_PAYLOAD + 2];
    snprintf(other, sizeof(other), "%sx", kind);
    if (cursor_read(text, n, other, back, sizeof(back)) == 0) {
        fprintf(stderr, "a cursor was accepted under another kind\n");
        abort();
    }
    if (strlen(after) > 0 && cursor_read(text, n, kind, back, strlen(after)) == 0) {
        fprintf(stderr, "cursor_read wrote an after longer than its buffer\n");
        abort();
    }
    char c = b64url[ch % 64];
    size_t at = pos % n;
    if (text[at] != c) {
        text[at] = c;
        if (cursor_read(text, n, kind, back, sizeof(back)) == 0) {
            fprintf(stderr, "a cursor with one character changed was accepted\n");
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned b0 = data[0], b1 = data[1];
    const char *text = (const char *)data + 2;
    size_t len = size - 2;

    /* Exact-size heap copies, so a read past the end of the text is caught. */
    char *copy = malloc(len + 1);
    memcpy(copy, text, len);
    size_t cap = 1 + b0 % (CURSOR_MAX_PAYLOAD + 16);
    char *payload = malloc(cap);
    long n = cursor_decode(copy, len, payload, cap);
    if (n >= 0 && ((size_t)n >= cap || payload[n] != '\0')) {
        fprintf(stderr, "cursor_decode returned %ld for a %zu-byte buffer\n", n, cap);
        abort();
    }
    char *after = malloc(cap);
    const char *kind = kinds[b1 % (sizeof(kinds) / sizeof(kinds[0]))];
    if (cursor_read(copy, len, kind, after, cap) == 0 && strlen(after) >= cap)
        abort();
    free(after);
    free(payload);

    /* The same bytes as "kind|after", made into a cursor. */
    copy[len] = '\0';
    if (strlen(copy) == len) {
        char *bar = strchr(copy, '|');
        if (bar != NULL) {
            *bar = '\0';
            check_made(copy, bar + 1, b0, b1);
        } else {
            check_made(kind, copy, b0, b1);
        }
    }
    free(copy);
    return 0;
}
