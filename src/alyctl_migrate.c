/*
 * alyctl migrate --to postgresql://...: copies the durable LMDB store of the
 * configuration's data_dir into PostgreSQL (store_migrate()), for a
 * deployment moving to cluster mode.  The volatile environment (rate-limit
 * state, last-used stamps) is not copied: it is rebuilt as requests arrive.
 */
#include <stdio.h>
#include <string.h>

#include "alyctl.h"

int ctl_cmd_migrate(ctl_t *ctl)
{
    const char *names[] = {"--to"}, *values[1] = {NULL};
    int force = 0, kept = 0;
    for (int i = 0; i < ctl->argc; i++) {
        if (strcmp(ctl->argv[i], "--force") == 0)
            force = 1;
        else
            ctl->argv[kept++] = ctl->argv[i];
    }
    ctl->argc = kept;
    if (ctl_take_options(ctl, names, values, 1) != 0)
        return 1;
    if (values[0] == NULL || ctl->argc != 0)
        return ctl_fail("usage: migrate --to postgresql://... [--force]");
    if (strncmp(values[0], "postgresql://", 13) != 0 && strncmp(values[0], "postgres://", 11) != 0)
        return ctl_fail("--to \"%s\" is not a postgresql:// URL", values[0]);
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    size_t counts[DB_N];
    aly_err_t err;
    int rc = store_migrate(st, ctl->cfg, values[0], force, counts, &err);
    store_close(st);
    if (rc != 0)
        return ctl_fail("migrate: %s", err.msg);
    size_t total = 0;
    json_t *per = json_object();
    for (int db = 0; db < DB_N; db++) {
        total += counts[db];
        json_object_set_new(per, store_db_name(db), json_integer((json_int_t)counts[db]));
    }
    if (ctl->json) {
        ctl_print_json(json_pack("{s:I, s:o}", "records", (json_int_t)total, "databases", per));
        return 0;
    }
    printf("copied %zu records into PostgreSQL:", total);
    for (int db = 0; db < DB_N; db++)
        printf(" %s %zu%s", store_db_name(db), counts[db], db + 1 < DB_N ? "," : "\n");
    json_decref(per);
    return 0;
}
