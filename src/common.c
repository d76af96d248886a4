/*
 * Helpers declared in aly/common.h: the error record, clocks, time format,
 * base64url and random base62 ids.
 */
#include "aly/common.h"

#include <endian.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void verrf(aly_err_t *err, int refused, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

static void verrf(aly_err_t *err, int refused, const char *fmt, va_list ap)
{
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    err->refused = refused;
}

int aly_errf(aly_err_t *err, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        verrf(err, 0, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int aly_refusef(aly_err_t *err, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        verrf(err, 1, fmt, ap);
        va_end(ap);
    }
    return -1;
}

uint64_t aly_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t aly_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void aly_format_time(char *buf, size_t len, uint64_t wall_ms)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, (unsigned)(wall_ms % 1000));
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int aly_b64url_char(int c)
{
    return b64url_value(c) >= 0;
}

long aly_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

size_t aly_b64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64url[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = b64url[(acc << (6 - bits)) & 63];
    return o;
}

size_t aly_fmt_u64(char *out, uint64_t v)
{
    static const char two[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                              "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                              "8081828384858687888990919293949596979899";
    /* The length first, then the digits straight into place from the right, two at a time. */
    size_t n = 1;
    for (uint64_t t = v; t >= 10; t /= 10)
        n++;
    char *p = out + n;
    while (v >= 100) {
        p -= 2;
        memcpy(p, two + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(p - 2, two + 2 * v, 2);
    else
        p[-1] = (char)('0' + v);
    return n;
}

const char aly_b62_digits[63] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int aly_random_b62(char *out, size_t n)
{
    unsigned char rnd[64];
    size_t o = 0;
    while (o < n) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return -1;
        for (size_t i = 0; i < sizeof(rnd) && o < n; i++)
            if (rnd[i] < 248) /* 4 * 62: a byte above this would favour the first digits */
                out[o++] = aly_b62_digits[rnd[i] % 62];
    }
    OPENSSL_cleanse(rnd, sizeof(rnd));
    out[n] = '\0';
    return 0;
}

/* ---- SipHash-2-4, 128-bit output ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* One SipRound over the four state words, which stay in registers. */
#define SIP_ROUND(v0, v1, v2, v3)                                                                                                  \
    do {                                                                                                                           \
        v0 += v1;                                                                                                                  \
        v1 = ROTL(v1, 13);                                                                                                         \
        v1 ^= v0;                                                                                                                  \
        v0 = ROTL(v0, 32);                                                                                                         \
        v2 += v3;                                                                                                                  \
        v3 = ROTL(v3, 16);                                                                                                         \
        v3 ^= v2;                                                                                                                  \
        v0 += v3;                                                                                                                  \
        v3 = ROTL(v3, 21);                                                                                                         \
        v3 ^= v0;                                                                                                                  \
        v2 += v1;                                                                                                                  \
        v1 = ROTL(v1, 17);                                                                                                         \
        v1 ^= v2;                                                                                                                  \
        v2 = ROTL(v2, 32);                                                                                                         \
    } while (0)

/* Eight bytes as a little-endian word: one load where the host is little-endian. */
static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

uint64_t aly_fnv1a(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

void aly_siphash128(uint64_t k0, uint64_t k1, const void *data, size_t len, uint64_t out[2])
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1 ^ 0xee, v2 = 0x6c7967656e657261ull ^ k0,
             v3 = 0x7465646279746573ull ^ k1;
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = get_le64(p + i);
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = whole; i < len; i++)
        last |= (uint64_t)p[i] << (8 * (i - whole));
    v3 ^= last;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    v0 ^= last;
    v2 ^= 0xee;
    for (int r = 0; r < 4; r++)
        SIP_ROUND(v0, v1, v2, v3);
    out[0] = v0 ^ v1 ^ v2 ^ v3;
    v1 ^= 0xdd;
    for (int r = 0; r < 4; r++)
        SIP_ROUND(v0, v1, v2, v3);
    out[1] = v0 ^ v1 ^ v2 ^ v3;
}
