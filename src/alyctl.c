/*
 * alyctl: the operator's command line on alyd's data directory.
 *
 * A thin command table over library calls, in the manner of OpenBSD's *ctl
 * programs: each row is a name, a usage line and a handler; handlers parse
 * their arguments, call one admin_*() (aly/admin.h), store_*() or demo_*()
 * function and print its result.  Every command takes -c FILE and --json;
 * results go to stdout, errors to stderr with a non-zero exit status.  This
 * file holds the table, main() and the helpers every command group shares;
 * the groups are alyctl_keys.c (workspace, keys, oauth) and alyctl_data.c
 * (stats, demo, import, audit).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alyctl.h"
#include "aly/admin.h"

int ctl_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("alyctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

void ctl_print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text != NULL)
        puts(text);
    free(text);
    json_decref(doc);
}

int ctl_take_options(ctl_t *ctl, const char *const *names, const char **values, size_t n)
{
    int kept = 0;
    for (int i = 0; i < ctl->argc; i++) {
        size_t k;
        for (k = 0; k < n; k++)
            if (strcmp(ctl->argv[i], names[k]) == 0)
                break;
        if (k == n) {
            if (strncmp(ctl->argv[i], "--", 2) == 0)
                return ctl_fail("unknown option %s", ctl->argv[i]), -1;
            ctl->argv[kept++] = ctl->argv[i];
            continue;
        }
        if (i + 1 >= ctl->argc)
            return ctl_fail("%s needs a value", names[k]), -1;
        values[k] = ctl->argv[++i];
    }
    ctl->argc = kept;
    return 0;
}

void ctl_format_time(uint64_t ms, char *buf, size_t len)
{
    if (ms == 0)
        snprintf(buf, len, "-");
    else
        aly_format_time(buf, len, ms);
}

store_t *ctl_open_store(ctl_t *ctl)
{
    aly_err_t err;
    store_t *st = store_open(ctl->cfg, &err);
    if (st == NULL)
        ctl_fail("%s", err.msg);
    return st;
}

static int cmd_init(ctl_t *ctl)
{
    if (ctl->argc != 0)
        return ctl_fail("init takes no arguments, got \"%s\"", ctl->argv[0]);
    aly_err_t err;
    if (admin_init(ctl->cfg, &err) != 0)
        return ctl_fail("%s", err.msg);
    json_t *doc = json_pack("{s:s, s:s, s:i}", "data_dir", ctl->cfg->data_dir, "pepper_file", ctl->cfg->key_pepper_file, "schema",
                            STORE_SCHEMA_VERSION);
    if (ctl->cfg->store != NULL)
        json_object_set_new(doc, "postgresql_schema", json_integer(STORE_PG_SCHEMA_VERSION));
    if (ctl->json) {
        ctl_print_json(doc);
        return 0;
    }
    json_decref(doc);
    printf("initialised %s (schema %d, pepper %s)", ctl->cfg->data_dir, STORE_SCHEMA_VERSION, ctl->cfg->key_pepper_file);
    if (ctl->cfg->store != NULL)
        printf("; PostgreSQL schema %d, this data_dir is its replica", STORE_PG_SCHEMA_VERSION);
    putchar('\n');
    return 0;
}

static int cmd_backup(ctl_t *ctl)
{
    if (ctl->argc != 1)
        return ctl_fail("usage: backup DEST_DIR");
    const char *dest = ctl->argv[0];
    if (mkdir(dest, 0750) != 0 && errno != EEXIST)
        return ctl_fail("cannot create %s: %s", dest, strerror(errno));
    char probe[4200];
    snprintf(probe, sizeof(probe), "%s/data.mdb", dest);
    if (access(probe, F_OK) == 0)
        return ctl_fail("%s already holds a data.mdb: back up into an empty directory", dest);
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    aly_err_t err;
    int rc = store_backup(st, dest, &err);
    store_close(st);
    if (rc != 0)
        return ctl_fail("%s", err.msg);
    if (ctl->json)
        ctl_print_json(json_pack("{s:s, s:s}", "backup", probe, "note", "the pepper file is not part of the backup"));
    else
        printf("backed up the store to %s (compacted). The pepper file %s is not in it: keep a copy of it once, apart.\n", probe,
               ctl->cfg->key_pepper_file);
    return 0;
}

static const ctl_command_t commands[] = {
    {"init", "init                 create data_dir, the pepper file and the store", cmd_init},
    {"stats", "stats [--workspace WS]   store: records, map use, readers; a workspace: its sites' counts", ctl_cmd_stats},
    {"workspace", "workspace create NAME | workspace list", ctl_cmd_workspace},
    {"keys",
     "keys create --workspace WS --scopes S1,S2 [--name N] [--expires 90d] [--rate-limit R]\n"
     "                       keys list [--workspace WS] | keys show ID | keys revoke ID",
     ctl_cmd_keys},
    {"oauth",
     "oauth revoke-jti JTI | oauth revoke-sub SUB | oauth rotate-key\n"
     "                       oauth clients create --name N --redirect-uri URI... [--confidential] | oauth clients list|remove ID\n"
     "                       oauth grants list [--workspace WS] | oauth grants revoke ID",
     ctl_cmd_oauth},
    {"users",
     "users add --workspace WS --email E [--scopes S1,S2] [--password-file F] | users list\n"
     "                       users passwd E [--password-file F] | users remove E",
     ctl_cmd_users},
    {"backup", "backup DEST_DIR      hot, compacted copy of the durable store", cmd_backup},
    {"demo", "demo seed --workspace WS [--sites 3 --products 40 --orders 300 --days 90 --seed N]", ctl_cmd_demo},
    {"import", "import --workspace WS FILE.jsonl   sites, products, orders, visits; all or nothing", ctl_cmd_import},
    {"audit", "audit [--workspace WS] [--since YYYY-MM-DD]   every mutation made through the tools", ctl_cmd_audit},
    {"migrate", "migrate --to postgresql://... [--force]   copy the durable store into PostgreSQL (cluster mode)", ctl_cmd_migrate},
};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: alyctl [-c file] [--json] command [args]\n\ncommands:\n");
    for (size_t i = 0; i < ALY_ARRAY_SIZE(commands); i++)
        fprintf(fp, "  %s\n", commands[i].usage);
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int json = 0, opt;
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"config", required_argument, NULL, 'c'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'v'},
                                             {NULL, 0, NULL, 0}};
    /* "+": stop at the command name; the command's own arguments follow it. */
    while ((opt = getopt_long(argc, argv, "+c:hv", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("alyctl %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const ctl_command_t *cmd = NULL;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(commands); i++)
        if (strcmp(commands[i].name, argv[optind]) == 0)
            cmd = &commands[i];
    if (cmd == NULL) {
        fprintf(stderr, "alyctl: unknown command \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    aly_err_t err;
    aly_config_t *cfg = config_load(config_path != NULL ? config_path : ALY_DEFAULT_CONFIG, &err);
    if (cfg == NULL && config_path == NULL && access(ALY_DEFAULT_CONFIG, F_OK) != 0)
        cfg = config_defaults(&err);
    if (cfg == NULL) {
        fprintf(stderr, "alyctl: %s\n", err.msg);
        return 1;
    }
    /* --json may also follow the command name. */
    int first = optind + 1, n = 0;
    char **rest = calloc((size_t)argc, sizeof(*rest));
    if (rest == NULL)
        return 1;
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else
            rest[n++] = argv[i];
    }
    ctl_t ctl = {.cfg = cfg, .json = json, .argc = n, .argv = rest};
    int rc = cmd->run(&ctl);
    free(rest);
    config_free(cfg);
    return rc;
}
