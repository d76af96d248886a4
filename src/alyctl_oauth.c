/*
 * alyctl's commands for the built-in authorization server: users (add,
 * list, passwd, remove) and oauth clients / grants / rotate-key.  Each parses
 * its arguments, calls one oauth_*() function (aly/oauth.h) and prints the
 * result as text or JSON.  Passwords come from --password-file or the
 * terminal (echo off, asked twice), never from the command line.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "alyctl.h"
#include "aly/oauth.h"

/* One line of fp without its line end into buf; -1 when there is none or it is empty. */
static int read_line(FILE *fp, char *buf, size_t len)
{
    if (fgets(buf, (int)len, fp) == NULL)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] != '\0' ? 0 : -1;
}

static int prompt(const char *what, char *buf, size_t len)
{
    struct termios old, quiet;
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fprintf(stderr, "%s: ", what);
    }
    int rc = read_line(stdin, buf, len);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    return rc;
}

/* The new password: the first line of file, or typed twice at the terminal (one line of stdin otherwise). */
static int get_password(const char *file, char *buf, size_t len)
{
    if (file != NULL) {
        FILE *fp = fopen(file, "r");
        if (fp == NULL)
            return ctl_fail("cannot open %s: %s", file, strerror(errno)), -1;
        int rc = read_line(fp, buf, len);
        fclose(fp);
        return rc == 0 ? 0 : (ctl_fail("%s holds no password on its first line", file), -1);
    }
    char again[1100];
    if (prompt("password", buf, len) != 0)
        return ctl_fail("no password given (type it, or use --password-file)"), -1;
    if (isatty(STDIN_FILENO)) {
        int same = prompt("again", again, sizeof(again)) == 0 && strcmp(again, buf) == 0;
        OPENSSL_cleanse(again, sizeof(again));
        if (!same)
            return ctl_fail("the passwords differ"), -1;
    }
    return 0;
}

static json_t *user_json(const oauth_user_t *u)
{
    json_t *m = json_array();
    char created[40];
    for (size_t i = 0; i < u->n_members; i++) {
        char scopes[256];
        scope_format((scope_set_t)u->members[i].scopes, scopes, sizeof(scopes));
        json_array_append_new(m, json_pack("{s:s, s:s}", "workspace", u->members[i].workspace, "scopes", scopes));
    }
    ctl_format_time(u->created_ms, created, sizeof(created));
    return json_pack("{s:s, s:s, s:s, s:o}", "id", u->id, "email", u->email, "created", created, "workspaces", m);
}

static int print_user(void *ctx, const void *rec)
{
    json_t *out = ctx;
    const oauth_user_t *u = rec;
    if (out != NULL) {
        json_array_append_new(out, user_json(u));
        return 0;
    }
    printf("%-26s %s", u->id, u->email);
    for (size_t i = 0; i < u->n_members; i++) {
        char scopes[256];
        scope_format((scope_set_t)u->members[i].scopes, scopes, sizeof(scopes));
        printf(" %s(%s)", u->members[i].workspace, scopes);
    }
    putchar('\n');
    return 0;
}

static int users_run(ctl_t *ctl, store_t *st)
{
    static const char *const names[] = {"--workspace", "--email", "--scopes", "--password-file"};
    const char *v[4] = {NULL};
    if (ctl_take_options(ctl, names, v, 4) != 0)
        return 1;
    const char *sub = ctl->argv[0];
    aly_err_t err;
    char pw[1100];
    if (strcmp(sub, "add") == 0) {
        if (ctl->argc != 1 || v[0] == NULL || v[1] == NULL)
            return ctl_fail("usage: users add --workspace WS --email E [--scopes S1,S2] [--password-file F]");
        scope_set_t cap = ((scope_set_t)1 << scope_count) - 1;
        if (v[2] != NULL && scope_parse(v[2], &cap, &err) != 0)
            return ctl_fail("%s", err.msg);
        store_txn_t t;
        oauth_user_t u;
        int exists = 0;
        if (store_begin(st, 0, &t, &err) == 0) {
            exists = oauth_user_get(&t, v[1], &u, &err) == 0;
            store_abort(&t);
        }
        if ((!exists || v[3] != NULL) && get_password(v[3], pw, sizeof(pw)) != 0)
            return 1;
        int rc = oauth_user_add(st, v[1], v[0], cap, !exists || v[3] != NULL ? pw : NULL, &u, &err);
        OPENSSL_cleanse(pw, sizeof(pw));
        if (rc != 0)
            return ctl_fail("%s", err.msg);
        if (ctl->json)
            ctl_print_json(user_json(&u));
        else
            printf("%s %s\n", u.id, u.email);
        return 0;
    }
    if (strcmp(sub, "list") == 0) {
        json_t *out = ctl->json ? json_array() : NULL;
        if (oauth_user_list(st, print_user, out, &err) != 0) {
            json_decref(out);
            return ctl_fail("%s", err.msg);
        }
        if (out != NULL)
            ctl_print_json(out);
        return 0;
    }
    if ((strcmp(sub, "passwd") == 0 || strcmp(sub, "remove") == 0) && ctl->argc == 2) {
        const char *email = ctl->argv[1];
        int rc, passwd = sub[0] == 'p';
        if (passwd) {
            if (get_password(v[3], pw, sizeof(pw)) != 0)
                return 1;
            rc = oauth_user_passwd(st, email, pw, &err);
            OPENSSL_cleanse(pw, sizeof(pw));
        } else {
            rc = oauth_user_remove(st, email, &err);
        }
        if (rc != 0)
            return rc == 1 ? ctl_fail("no user %s (alyctl users list)", email) : ctl_fail("%s", err.msg);
        if (ctl->json)
            ctl_print_json(json_pack("{s:s, s:s}", "email", email, "status", passwd ? "password changed" : "removed"));
        else
            printf("%s %s\n", passwd ? "changed the password of" : "removed", email);
        return 0;
    }
    return ctl_fail("usage: users add ... | users list | users passwd EMAIL [--password-file F] | users remove EMAIL");
}

int ctl_cmd_users(ctl_t *ctl)
{
    if (ctl->argc < 1)
        return ctl_fail("usage: users add|list|passwd|remove ...");
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    int rc = users_run(ctl, st);
    store_close(st);
    return rc;
}

/* ---- oauth clients, grants, rotate-key ---- */

static json_t *client_json(const oauth_client_t *c)
{
    static const char *const origins[] = {"alyctl", "dynamic", "metadata document"};
    json_t *uris = json_array();
    char created[40], used[40];
    for (size_t i = 0; i < c->n_redirects; i++)
        json_array_append_new(uris, json_string(c->redirects[i].uri));
    ctl_format_time(c->created_ms, created, sizeof(created));
    ctl_format_time(c->last_used_ms, used, sizeof(used));
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "client_id", c->id, "name", c->name, "type",
                     c->kind == OAUTH_CLIENT_CONFIDENTIAL ? "confidential" : "public", "registered_by",
                     origins[c->origin < 3 ? c->origin : 0], "redirect_uris", uris, "created", created, "last_used", used);
}

static int print_client(void *ctx, const void *rec)
{
    const oauth_client_t *c = rec;
    if (ctx != NULL)
        json_array_append_new(ctx, client_json(c));
    else
        printf("%-26s %-12s %-8s %s\n", c->id, c->kind == OAUTH_CLIENT_CONFIDENTIAL ? "confidential" : "public",
               c->origin == OAUTH_ORIGIN_DCR ? "dynamic" : "alyctl", c->name[0] ? c->name : "-");
    return 0;
}

static json_t *grant_json(const oauth_grant_t *g)
{
    char scopes[300], created[40], used[40], revoked[40];
    scope_format((scope_set_t)g->scopes, scopes, sizeof(scopes));
    if (g->scopes & OAUTH_SCOPE_OFFLINE)
        strncat(scopes, scopes[0] ? " offline_access" : "offline_access", sizeof(scopes) - strlen(scopes) - 1);
    ctl_format_time(g->created_ms, created, sizeof(created));
    ctl_format_time(g->last_used_ms, used, sizeof(used));
    ctl_format_time(g->revoked_ms, revoked, sizeof(revoked));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", g->id, "workspace", g->workspace, "user", g->user,
                     "email", g->email, "client_id", g->client, "client_name", g->client_name, "scopes", scopes, "created", created,
                     "last_used", used, "revoked", revoked);
}

static int print_grant(void *ctx, const void *rec)
{
    const oauth_grant_t *g = rec;
    if (ctx != NULL) {
        json_array_append_new(ctx, grant_json(g));
    } else {
        char used[40];
        ctl_format_time(g->last_used_ms, used, sizeof(used));
        printf("%-26s %-26s %-8s %-24s %s %s\n", g->id, g->workspace, g->revoked_ms ? "revoked" : "active", used, g->email,
               g->client_name[0] ? g->client_name : g->client);
    }
    return 0;
}

static int clients_run(ctl_t *ctl, store_t *st)
{
    aly_err_t err;
    const char *sub = ctl->argc > 1 ? ctl->argv[1] : "";
    if (strcmp(sub, "create") == 0) {
        oauth_client_t c;
        memset(&c, 0, sizeof(c));
        const char *name = NULL;
        int confidential = 0;
        for (int i = 2; i < ctl->argc; i++) {
            const char *a = ctl->argv[i];
            if (strcmp(a, "--confidential") == 0)
                confidential = 1;
            else if (strcmp(a, "--name") == 0 && i + 1 < ctl->argc)
                name = ctl->argv[++i];
            else if (strcmp(a, "--redirect-uri") == 0 && i + 1 < ctl->argc) {
                /* Several URIs may follow one --redirect-uri, or each have their own. */
                while (i + 1 < ctl->argc && strncmp(ctl->argv[i + 1], "--", 2) != 0) {
                    if (c.n_redirects == OAUTH_MAX_REDIRECTS)
                        return ctl_fail("at most %d redirect URIs", OAUTH_MAX_REDIRECTS);
                    if (strlen(ctl->argv[i + 1]) >= OAUTH_URI_MAX)
                        return ctl_fail("redirect URI longer than %d bytes", OAUTH_URI_MAX - 1);
                    snprintf(c.redirects[c.n_redirects++].uri, OAUTH_URI_MAX, "%s", ctl->argv[++i]);
                }
            } else
                return ctl_fail("usage: oauth clients create --name N --redirect-uri URI... [--confidential]");
        }
        if (name == NULL || strlen(name) == 0 || strlen(name) >= sizeof(c.name))
            return ctl_fail("--name must be 1 to %zu bytes", sizeof(c.name) - 1);
        snprintf(c.name, sizeof(c.name), "%s", name);
        c.kind = confidential ? OAUTH_CLIENT_CONFIDENTIAL : OAUTH_CLIENT_PUBLIC;
        c.auth_method = confidential ? 2 : 0;
        c.origin = OAUTH_ORIGIN_ALYCTL;
        char secret[64] = "";
        auth_pepper_t *p = auth_pepper_load(ctl->cfg->key_pepper_file, &err);
        int rc = p != NULL ? oauth_client_create(st, p, &c, secret, sizeof(secret), &err) : -1;
        auth_pepper_free(p);
        if (rc != 0)
            return ctl_fail("%s", err.msg);
        json_t *j = client_json(&c);
        if (confidential)
            json_object_set_new(j, "client_secret", json_string(secret));
        if (ctl->json) {
            ctl_print_json(j);
        } else {
            printf("client_id %s\n", c.id);
            if (confidential)
                printf("client_secret %s\n", secret);
            json_decref(j);
            if (confidential)
                fprintf(stderr, "the client_secret above is shown once: store it now\n");
        }
        OPENSSL_cleanse(secret, sizeof(secret));
        return 0;
    }
    if (strcmp(sub, "list") == 0 && ctl->argc == 2) {
        json_t *out = ctl->json ? json_array() : NULL;
        if (oauth_client_list(st, print_client, out, &err) != 0)
            return json_decref(out), ctl_fail("%s", err.msg);
        if (out != NULL)
            ctl_print_json(out);
        return 0;
    }
    if (strcmp(sub, "remove") == 0 && ctl->argc == 3) {
        int rc = oauth_client_remove(st, ctl->argv[2], &err);
        if (rc != 0)
            return rc == 1 ? ctl_fail("no client %s (alyctl oauth clients list)", ctl->argv[2]) : ctl_fail("%s", err.msg);
        if (ctl->json)
            ctl_print_json(json_pack("{s:s, s:s}", "client_id", ctl->argv[2], "status", "removed"));
        else
            printf("removed %s and revoked its grants\n", ctl->argv[2]);
        return 0;
    }
    return ctl_fail("usage: oauth clients create --name N --redirect-uri URI... [--confidential] | list | remove ID");
}

static int grants_run(ctl_t *ctl, store_t *st)
{
    static const char *const names[] = {"--workspace"};
    const char *v[1] = {NULL};
    aly_err_t err;
    if (ctl_take_options(ctl, names, v, 1) != 0)
        return 1;
    const char *sub = ctl->argc > 1 ? ctl->argv[1] : "";
    if (strcmp(sub, "list") == 0 && ctl->argc == 2) {
        json_t *out = ctl->json ? json_array() : NULL;
        if (oauth_grant_list(st, v[0], print_grant, out, &err) != 0)
            return json_decref(out), ctl_fail("%s", err.msg);
        if (out != NULL)
            ctl_print_json(out);
        return 0;
    }
    if (strcmp(sub, "revoke") == 0 && ctl->argc == 3) {
        int rc = oauth_grant_revoke(st, ctl->argv[2], &err);
        if (rc != 0)
            return rc == 1 ? ctl_fail("no grant %s (alyctl oauth grants list)", ctl->argv[2]) : ctl_fail("%s", err.msg);
        if (ctl->json)
            ctl_print_json(json_pack("{s:s, s:s}", "id", ctl->argv[2], "status", "revoked"));
        else
            printf("revoked %s\n", ctl->argv[2]);
        return 0;
    }
    return ctl_fail("usage: oauth grants list [--workspace WS] | oauth grants revoke ID");
}

int ctl_oauth_server(ctl_t *ctl)
{
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    int rc;
    aly_err_t err;
    if (strcmp(ctl->argv[0], "clients") == 0) {
        rc = clients_run(ctl, st);
    } else if (strcmp(ctl->argv[0], "grants") == 0) {
        rc = grants_run(ctl, st);
    } else if (ctl->argc == 1) {
        char kid[ALY_ID_MAX];
        auth_pepper_t *p = auth_pepper_load(ctl->cfg->key_pepper_file, &err);
        rc = p != NULL && oauth_key_rotate(st, p, kid, sizeof(kid), &err) == 0 ? 0 : ctl_fail("%s", err.msg);
        auth_pepper_free(p);
        if (rc == 0 && ctl->json)
            ctl_print_json(json_pack("{s:s, s:s}", "kid", kid, "status", "active"));
        else if (rc == 0)
            printf("new signing key %s; the previous one verifies until its tokens expire\n", kid);
    } else {
        rc = ctl_fail("usage: oauth rotate-key");
    }
    store_close(st);
    return rc;
}
