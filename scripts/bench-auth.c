/*
 * Micro-benchmark of the credential gate: the cost of auth_authenticate() for
 * an API key, and for an RS256/ES256 OAuth token with the per-worker cache cold
 * (a new token each call) and warm (the same token again).  Reference: the
 * same loop doing only a store read transaction, measured in the same run.
 *
 *   scripts/bench-auth CONF KEY TOKEN_FILE [N]
 *
 * TOKEN_FILE holds one "aly_oauth_..." token per line (cold runs use each
 * once).  Prints medians of 5 rounds in microseconds per call, and ratios.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aly/auth.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median5(double v[5])
{
    qsort(v, 5, sizeof(double), cmp);
    return v[2];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench-auth CONF KEY TOKEN_FILE [N]\n");
        return 2;
    }
    int n = argc > 4 ? atoi(argv[4]) : 20000;
    aly_err_t err;
    aly_config_t *cfg = config_load(argv[1], &err);
    store_t *st = cfg ? store_open(cfg, &err) : NULL;
    auth_t *a = st ? auth_new(cfg, st, &err) : NULL;
    if (a == NULL) {
        fprintf(stderr, "bench-auth: %s\n", err.msg);
        return 1;
    }
    char header[9000];
    char **tokens = NULL;
    size_t ntok = 0, cap = 0;
    FILE *fp = fopen(argv[3], "r");
    char line[9000];
    while (fp != NULL && fgets(line, sizeof(line), fp) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (ntok == cap) {
            cap = cap ? cap * 2 : 64;
            tokens = realloc(tokens, cap * sizeof(*tokens));
        }
        tokens[ntok++] = strdup(line);
    }
    if (fp != NULL)
        fclose(fp);
    if (ntok == 0) {
        fprintf(stderr, "bench-auth: no tokens in %s\n", argv[3]);
        return 1;
    }
    double ref[5], key[5], warm[5], cold[5];
    principal_t p;
    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        for (int i = 0; i < n; i++) {
            store_txn_t t;
            store_begin(st, 0, &t, &err);
            store_abort(&t);
        }
        ref[r] = (now_us() - t0) / n;

        snprintf(header, sizeof(header), "Bearer %s", argv[2]);
        t0 = now_us();
        for (int i = 0; i < n; i++)
            if (auth_authenticate(a, header, strlen(header), &p, &err) != AUTH_OK)
                return fprintf(stderr, "bench-auth: key refused: %s\n", err.msg), 1;
        key[r] = (now_us() - t0) / n;

        snprintf(header, sizeof(header), "Bearer %s", tokens[0]);
        t0 = now_us();
        for (int i = 0; i < n; i++)
            if (auth_authenticate(a, header, strlen(header), &p, &err) != AUTH_OK)
                return fprintf(stderr, "bench-auth: token refused: %s\n", err.msg), 1;
        warm[r] = (now_us() - t0) / n;

        /* Cold: tokens the cache has not seen (each used once per round: rounds reuse them, so skip the cache by count). */
        size_t m = ntok / 5, base = (size_t)r * m;
        t0 = now_us();
        for (size_t i = 0; i < m; i++) {
            snprintf(header, sizeof(header), "Bearer %s", tokens[base + i]);
            if (auth_authenticate(a, header, strlen(header), &p, &err) != AUTH_OK)
                return fprintf(stderr, "bench-auth: token refused: %s\n", err.msg), 1;
        }
        cold[r] = (now_us() - t0) / (double)m;
    }
    double mr = median5(ref), mk = median5(key), mw = median5(warm), mc = median5(cold);
    printf("reference (read txn begin+end)  %8.2f us\n", mr);
    printf("API key                         %8.2f us  (%.1fx reference)\n", mk, mk / mr);
    printf("OAuth token, cache warm         %8.2f us  (%.1fx reference)\n", mw, mw / mr);
    printf("OAuth token, cache cold         %8.2f us  (%.1fx reference, %.0fx warm)\n", mc, mc / mr, mc / mw);
    auth_free(a);
    store_close(st);
    config_free(cfg);
    return 0;
}
