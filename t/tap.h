/*
 * A minimal TAP emitter for the C unit tests: ok(), is_int(), is_str(),
 * done_testing().  Output is read by automake's tap-driver.sh.
 */
#ifndef ALY_T_TAP_H
#define ALY_T_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                                                                              \
    do {                                                                                                                           \
        int ok_ = (cond);                                                                                                          \
        printf("%s %d - ", ok_ ? "ok" : "not ok", ++tap_n);                                                                        \
        printf(__VA_ARGS__);                                                                                                       \
        printf("\n");                                                                                                              \
        if (!ok_) {                                                                                                                \
            tap_failed++;                                                                                                          \
            printf("#   failed at %s line %d\n", __FILE__, __LINE__);                                                              \
        }                                                                                                                          \
    } while (0)

#define is_str(got, want, ...)                                                                                                     \
    do {                                                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                                                      \
        int same_ = (g_ == NULL && w_ == NULL) || (g_ != NULL && w_ != NULL && strcmp(g_, w_) == 0);                               \
        ok(same_, __VA_ARGS__);                                                                                                    \
        if (!same_)                                                                                                                \
            printf("#   got: \"%s\"\n#   expected: \"%s\"\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)");                             \
    } while (0)

#define is_int(got, want, ...)                                                                                                     \
    do {                                                                                                                           \
        long long g_ = (long long)(got), w_ = (long long)(want);                                                                   \
        ok(g_ == w_, __VA_ARGS__);                                                                                                 \
        if (g_ != w_)                                                                                                              \
            printf("#   got: %lld\n#   expected: %lld\n", g_, w_);                                                                 \
    } while (0)

static inline int done_testing(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed != 0;
}

#endif
