/*
 * Shared by the two files of the limiter and nothing else: ratelimit.c (GCRA,
 * the lock-free cells, decisions) and ratelimit_table.c (the shared table
 * file: creation, validation, replacement, mapping; the key hash).
 */
#ifndef ALY_RATELIMIT_INTERNAL_H
#define ALY_RATELIMIT_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "aly/ratelimit.h"

#define NS_PER_S 1000000000ull
#define MAX_SPAN_NS ((uint64_t)1 << 62) /* B*T saturates here (146 years): no overflow with now added */

#define FILE_MAGIC "alyrate"
#define FILE_VERSION 1
#define HEADER_SIZE 4096

/* The head word: 62 bits of the digest and a state in the low two. */
#define HEAD_EMPTY 0
#define HEAD_PENDING 1 /* claimed by an insert that has not yet checked for a copy of its key */
#define HEAD_LIVE 2
#define HEAD_STATE 3ull

/*
 * The TAT word while a cell changes hands: the flag, the claimer's
 * CLOCK_MONOTONIC milliseconds (40 bits, 34 years) and its pid (23 bits, to
 * tell two claimers of one millisecond apart).  A TAT in nanoseconds since
 * 1970 never sets the flag before 2262.
 */
#define BUSY ((uint64_t)1 << 63)
#define BUSY_MS_BITS 40
#define BUSY_PID_BITS 23
#define BUSY_MS_MASK (((uint64_t)1 << BUSY_MS_BITS) - 1)
#define STALE_MS 1000             /* a claim this old was abandoned: inserts take a few microseconds */
#define GIVE_UP_MS (3 * STALE_MS) /* a decision that cannot settle for this long reports an error */

enum { PRINCIPALS, ADDRESSES, TABLES };

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics are lock-free, hence usable across processes");

typedef struct cell {
    _Atomic uint64_t head;
    _Atomic uint64_t lo; /* the digest's other 64 bits */
    _Atomic uint64_t tat;
    uint64_t spare;
} cell_t;

_Static_assert(sizeof(cell_t) == 32, "two cells per cache line");

typedef struct file_header {
    char magic[8];
    uint32_t version;
    uint32_t cell_size;
    uint64_t window;
    uint64_t cells[TABLES];
    uint64_t hash_key[2];
    _Atomic uint64_t evictions[TABLES];
} file_header_t;

_Static_assert(sizeof(file_header_t) <= HEADER_SIZE, "the header fits its page");

struct ratelimit {
    store_t *st;
    void *map;
    size_t map_len;
    file_header_t *hdr;
    cell_t *cells[TABLES];
    uint64_t n[TABLES];
    unsigned window[TABLES];
    uint64_t k0, k1; /* the hash key, copied out of the shared page */
};

/* A key as the tables see it. */
typedef struct cell_key {
    uint64_t head; /* digest bits, state bits clear */
    uint64_t lo;
    uint64_t home; /* index of the first cell of its window */
} cell_key_t;

#endif
