/*
 * alyctl: the operator's command line on alyd's data directory.
 *
 * Commands are rows of a table (name, usage, handler), like the directives of
 * alyd.conf.  Every command takes -c FILE and --json; results go to stdout,
 * errors to stderr with a non-zero exit status.
 */
#include <getopt.h>
#include <grp.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/config.h"
#include "aly/store.h"

typedef struct ctl {
    aly_config_t *cfg;
    int json;
    int argc;
    char **argv;
} ctl_t;

typedef struct command {
    const char *name;
    const char *usage;
    int (*run)(ctl_t *ctl);
} command_t;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("alyctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text != NULL)
        puts(text);
    free(text);
    json_decref(doc);
}

static int cmd_init(ctl_t *ctl)
{
    if (ctl->argc != 0)
        return fail("init takes no arguments, got \"%s\"", ctl->argv[0]);
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    /* Run as root with "user" set, hand the data directory to that user so workers can open it. */
    if (geteuid() == 0 && ctl->cfg->user != NULL) {
        struct passwd *pw = getpwnam(ctl->cfg->user);
        if (pw == NULL)
            return fail("user \"%s\" does not exist", ctl->cfg->user);
        uid = pw->pw_uid;
        gid = pw->pw_gid;
        if (ctl->cfg->group != NULL) {
            struct group *gr = getgrnam(ctl->cfg->group);
            if (gr == NULL)
                return fail("group \"%s\" does not exist", ctl->cfg->group);
            gid = gr->gr_gid;
        }
    }
    aly_err_t err;
    if (store_init(ctl->cfg, uid, gid, &err) != 0)
        return fail("%s", err.msg);
    if (ctl->json)
        print_json(json_pack("{s:s, s:s, s:i}", "data_dir", ctl->cfg->data_dir, "pepper_file", ctl->cfg->key_pepper_file,
                             "schema", STORE_SCHEMA_VERSION));
    else
        printf("initialised %s (schema %d, pepper %s)\n", ctl->cfg->data_dir, STORE_SCHEMA_VERSION,
               ctl->cfg->key_pepper_file);
    return 0;
}

static int cmd_stats(ctl_t *ctl)
{
    if (ctl->argc != 0)
        return fail("stats takes no arguments, got \"%s\"", ctl->argv[0]);
    aly_err_t err;
    store_t *st = store_open(ctl->cfg, &err);
    if (st == NULL)
        return fail("%s", err.msg);
    store_db_stat_t dbs[32];
    store_env_stat_t envs[2];
    int n = store_stats(st, dbs, ALY_ARRAY_SIZE(dbs), envs, &err);
    store_close(st);
    if (n < 0)
        return fail("%s", err.msg);
    if (ctl->json) {
        json_t *doc = json_object(), *je = json_object();
        for (int e = 0; e < 2; e++) {
            json_t *dbo = json_object();
            for (int i = 0; i < n; i++)
                if (strcmp(dbs[i].env, envs[e].env) == 0)
                    json_object_set_new(dbo, dbs[i].name, json_integer((json_int_t)dbs[i].entries));
            json_object_set_new(je, envs[e].env,
                                json_pack("{s:I, s:I, s:i, s:i, s:o}", "map_size", (json_int_t)envs[e].map_size, "used_bytes",
                                          (json_int_t)envs[e].used_bytes, "readers", (int)envs[e].readers, "max_readers",
                                          (int)envs[e].max_readers, "databases", dbo));
        }
        json_object_set_new(doc, "data_dir", json_string(ctl->cfg->data_dir));
        json_object_set_new(doc, "environments", je);
        print_json(doc);
        return 0;
    }
    printf("data_dir %s\n", ctl->cfg->data_dir);
    for (int e = 0; e < 2; e++) {
        printf("%-9s map %zu MiB, used %zu KiB (%.2f%%), readers %u/%u\n", envs[e].env, envs[e].map_size >> 20,
               envs[e].used_bytes >> 10, 100.0 * (double)envs[e].used_bytes / (double)envs[e].map_size, envs[e].readers,
               envs[e].max_readers);
        for (int i = 0; i < n; i++)
            if (strcmp(dbs[i].env, envs[e].env) == 0)
                printf("  %-20s %zu records\n", dbs[i].name, dbs[i].entries);
    }
    return 0;
}

static const command_t commands[] = {
    {"init", "init                 create data_dir, the pepper file and the store", cmd_init},
    {"stats", "stats                record counts, map use and readers of the store", cmd_stats},
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
    const command_t *cmd = NULL;
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
