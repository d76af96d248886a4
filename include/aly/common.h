/*
 * Shared vocabulary of every alyd module: the error record a failing function
 * fills, and a few helpers too small to deserve a module of their own.
 *
 * Convention: a function that can fail returns 0 on success and -1 on failure,
 * having filled the caller's aly_err_t with a sentence an operator or a client
 * can act on.  The caller decides where that sentence goes (log, HTTP body).
 */
#ifndef ALY_COMMON_H
#define ALY_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define ALY_ERR_MAX 512

typedef struct aly_err {
    char msg[ALY_ERR_MAX];
    /*
     * 1: not a failure but a refusal the client must hear as it is (a full
     * store, a storage quota), set by aly_refusef(); 0 for everything else.
     */
    int refused;
} aly_err_t;

/* Formats into err (when not NULL) and returns -1, so "return aly_errf(...)" reads naturally. */
int aly_errf(aly_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a refusal: err->refused is set, so the message reaches the client instead of "internal error". */
int aly_refusef(aly_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic clock in milliseconds; wall clock in milliseconds since the epoch. */
uint64_t aly_now_ms(void);
uint64_t aly_wall_ms(void);

/* RFC 3339 UTC time with milliseconds ("2026-11-25T14:58:56.123Z") into buf (>= 32 bytes). */
void aly_format_time(char *buf, size_t len, uint64_t wall_ms);

/* base64url without padding (RFC 4648 §5).  Decoding refuses any other character and non-zero
 * leftover bits, and returns the decoded length or -1 (also when out is too small). */
long aly_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);
/* Writes 4*ceil(len/3) characters at most (no padding, no NUL); returns the count. */
size_t aly_b64url_encode(const unsigned char *in, size_t len, char *out);
/* 1 when c is a base64url character. */
int aly_b64url_char(int c);

/* The 62 alphanumerics in ASCII order: the alphabet of every id, key and session name. */
extern const char aly_b62_digits[63];
/* 1 when c is one of aly_b62_digits (inline: every API key's 38 characters go through it per request). */
static inline int aly_b62_char(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Writes n characters drawn uniformly from aly_b62_digits by OpenSSL's CSPRNG into out, then a
 * NUL at out[n] (so out holds n + 1).  Returns 0, or -1 when the CSPRNG fails (out is then
 * undefined).  Thread-safe; the only source of random ids in the tree. */
int aly_random_b62(char *out, size_t n);

/*
 * SipHash-2-4 with a 128-bit output under the key (k0, k1): a keyed PRF
 * fast enough for every request (the limiter's cell keys, the verified-key
 * cache's tags).
 */
void aly_siphash128(uint64_t k0, uint64_t k1, const void *data, size_t len, uint64_t out[2]);

/* FNV-1a, 64 bits: spreads our own tables' keys; not for keys an adversary chooses to collide (aly_siphash128 is). */
uint64_t aly_fnv1a(const void *data, size_t len);

/* v in decimal into out (at least 20 bytes, not terminated): the length.  For per-request text, where printf costs. */
size_t aly_fmt_u64(char *out, uint64_t v);

#define ALY_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* A macro's value as a string literal. */
#define ALY_STR_(x) #x
#define ALY_STR(x) ALY_STR_(x)

#endif
