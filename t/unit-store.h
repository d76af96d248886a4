/*
 * A store in a temporary directory for the C unit tests: a configuration
 * naming dir/data, then store_init and store_open, as alyctl init and a
 * worker would.  NULL (saying why on a TAP comment line) when it cannot.
 * unit_temp_done() closes it and removes the directory.
 */
#ifndef ALY_T_UNIT_STORE_H
#define ALY_T_UNIT_STORE_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "aly/config.h"
#include "aly/store.h"

static store_t *unit_temp_store(const char *dir, aly_config_t **cfg_out)
{
    char path[300], text[400];
    snprintf(path, sizeof(path), "%s/alyd.conf", dir);
    snprintf(text, sizeof(text), "data_dir %s/data\nmap_size 16m\nvolatile_map_size 16m\n", dir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return NULL;
    fputs(text, fp);
    fclose(fp);
    aly_err_t err;
    aly_config_t *cfg = config_load(path, &err);
    store_t *st = NULL;
    if (cfg != NULL && store_init(cfg, (uid_t)-1, (gid_t)-1, &err) == 0)
        st = store_open(cfg, &err);
    if (st == NULL)
        printf("# cannot open a store in %s: %s\n", dir, err.msg);
    *cfg_out = cfg;
    return st;
}

/* Closes what unit_temp_store() opened (either may be NULL) and removes dir. */
static void unit_temp_done(const char *dir, store_t *st, aly_config_t *cfg)
{
    if (st != NULL)
        store_close(st);
    config_free(cfg);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
}

#endif
