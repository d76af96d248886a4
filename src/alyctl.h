/*
 * alyctl's own header: the state a command runs with, the helpers every
 * command group shares (errors, JSON output, options) and the command
 * handlers the table in alyctl.c names.  Not part of libaly.
 */
#ifndef ALY_ALYCTL_H
#define ALY_ALYCTL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "aly/config.h"
#include "aly/store.h"

typedef struct ctl {
    aly_config_t *cfg;
    int json; /* --json: print JSON on stdout instead of text */
    int argc; /* the command's arguments, without the command name and --json */
    char **argv;
} ctl_t;

/* A command or a subcommand: a row of a table that ctl_dispatch() and main() walk. */
typedef struct ctl_command {
    const char *name;
    const char *usage;
    int (*run)(ctl_t *ctl);
} ctl_command_t;

/* Prints "alyctl: <message>" on stderr and returns 1, the exit status of a failed command. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints doc on stdout (indented, keys sorted) and releases it. */
void ctl_print_json(json_t *doc);

/* Takes "--name value" options listed in names out of ctl->argv (the rest stay positional); -1 after ctl_fail(). */
int ctl_take_options(ctl_t *ctl, const char *const *names, const char **values, size_t n);

/* RFC 3339 time, or "-" for 0. */
void ctl_format_time(uint64_t ms, char *buf, size_t len);

/* Opens the store of ctl->cfg; NULL after ctl_fail(). */
store_t *ctl_open_store(ctl_t *ctl);

/* Command groups (alyctl_keys.c, alyctl_data.c). */
int ctl_cmd_workspace(ctl_t *ctl);
int ctl_cmd_keys(ctl_t *ctl);
int ctl_cmd_oauth(ctl_t *ctl);
int ctl_cmd_stats(ctl_t *ctl);
int ctl_cmd_demo(ctl_t *ctl);
int ctl_cmd_import(ctl_t *ctl);
int ctl_cmd_audit(ctl_t *ctl);
int ctl_cmd_migrate(ctl_t *ctl); /* alyctl_migrate.c */
/* The built-in authorization server (alyctl_oauth.c): users, and oauth clients|grants|rotate-key. */
int ctl_cmd_users(ctl_t *ctl);
int ctl_oauth_server(ctl_t *ctl);

#endif
