/*
 * Unit tests of the authorization server's small grammars and crypto
 * (aly/oauth.h, aly/oauth_internal.h): which redirect URIs may be registered,
 * the strict form decoder, HTML escaping, email addresses, and Argon2id
 * password hashes; and, on a store in a temporary directory, an
 * authorization code past its 60 s (which no HTTP test waits for).
 */
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/admin.h"
#include "aly/common.h"
#include "aly/oauth.h"
#include "aly/oauth_internal.h"
#include "tap.h"
#include "unit-store.h"

static void redirects(void)
{
    static const char *const good[] = {
        "https://app.example/cb",
        "https://app.example:8443/cb?x=1",
        "http://127.0.0.1:3000/callback",
        "http://localhost/cb",
        "http://[::1]:9/cb",
        "https://app.example",
        "http://LOCALHOST:1/x",
    };
    static const char *const bad[] = {
        "http://app.example/cb",           /* plain http off loopback */
        "http://127.0.0.1.evil.example/x", /* a look-alike of loopback */
        "http://localhost.evil.example/x",
        "https://user@app.example/cb", /* user info */
        "https://app.example/cb#frag", /* fragment */
        "javascript:alert(1)",
        "custom-app:/cb",
        "https:///cb", /* no host */
        "https://app.example:/cb",
        "https://app.example:80x/cb",
        "https://app.example/c b",
        "https://app.example/\"><script>",
        "http://[::1/cb",
        "",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ok(oauth_redirect_ok(good[i]), "redirect URI accepted: %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(!oauth_redirect_ok(bad[i]), "redirect URI refused: %s", bad[i]);
    char longer[OAUTH_URI_MAX + 8] = "https://app.example/";
    memset(longer + strlen(longer), 'a', OAUTH_URI_MAX - strlen(longer));
    longer[OAUTH_URI_MAX] = '\0';
    ok(!oauth_redirect_ok(longer), "a redirect URI of %d bytes is refused", OAUTH_URI_MAX);
}

static void forms(void)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    oauth_form_t f;
    aly_err_t why;
    const char *text = "a=1&b=x+y%20z&c=&d&a=2&e=%C3%A9";
    ok(oauth_form_parse(&pool, text, strlen(text), &f, &why) == 0, "a form parses");
    is_int(f.n, 6, "six fields");
    int dup = 0;
    ok(oauth_form_get(&f, "a", &dup) == NULL && dup, "a repeated field reads as NULL with dup set");
    is_str(oauth_form_get(&f, "b", NULL), "x y z", "+ and %%20 are spaces");
    is_str(oauth_form_get(&f, "c", NULL), "", "an empty value");
    is_str(oauth_form_get(&f, "d", NULL), "", "a name without =");
    is_str(oauth_form_get(&f, "e", NULL), "\xc3\xa9", "a UTF-8 escape");
    ok(oauth_form_get(&f, "zz", NULL) == NULL, "an absent field is NULL");
    static const char *const bad[] = {"a=%", "a=%4", "a=%zz", "a=%00", "a=%ff", "%c3=1", "a=%C3%28"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(oauth_form_parse(&pool, bad[i], strlen(bad[i]), &f, &why) != 0, "malformed form refused: %s (%s)", bad[i], why.msg);
    char many[OAUTH_FORM_MAX_FIELDS * 4 + 8] = "";
    for (int i = 0; i <= OAUTH_FORM_MAX_FIELDS; i++)
        strcat(many, "a=1&");
    ok(oauth_form_parse(&pool, many, strlen(many), &f, &why) != 0, "more than %d fields refused", OAUTH_FORM_MAX_FIELDS);
    char *big = malloc(OAUTH_FORM_MAX_BYTES + 2);
    memset(big, 'a', OAUTH_FORM_MAX_BYTES + 1);
    big[OAUTH_FORM_MAX_BYTES + 1] = '\0';
    ok(oauth_form_parse(&pool, big, OAUTH_FORM_MAX_BYTES + 1, &f, &why) != 0, "a form over %d bytes refused", OAUTH_FORM_MAX_BYTES);
    free(big);
    is_str(oauth_html(&pool, "<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;", "HTML escaping");
    is_str(oauth_urlenc(&pool, "a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~", "query escaping");
    h2o_mem_clear_pool(&pool);
}

static void people(void)
{
    ok(oauth_email_ok("ann@example.com"), "an email address");
    ok(!oauth_email_ok("ann"), "no @");
    ok(!oauth_email_ok("a@b@c"), "two @");
    ok(!oauth_email_ok("@example.com"), "nothing before @");
    ok(!oauth_email_ok("ann@"), "nothing after @");
    ok(!oauth_email_ok("an n@example.com"), "a space");
    ok(!oauth_email_ok("<ann>@example.com"), "markup");
    char hash[128];
    aly_err_t err;
    ok(oauth_password_hash("correct horse", hash, &err) == 0, "a password hashes");
    ok(strncmp(hash, "$argon2id$", 10) == 0, "as Argon2id (%.30s...)", hash);
    ok(oauth_password_check(hash, "correct horse", 13), "the password matches");
    ok(!oauth_password_check(hash, "correct hors", 12), "a shorter one does not");
    ok(!oauth_password_check(hash, "Correct horse", 13), "nor another");
    char again[128];
    oauth_password_hash("correct horse", again, &err);
    ok(strcmp(hash, again) != 0, "two hashes of one password differ (salted)");
    ok(oauth_password_hash("", hash, &err) != 0, "an empty password is refused");
    ok(!oauth_password_check("not a hash", "x", 1), "a broken hash matches nothing");
}

/* Issues a code for user u of client c with the verifier's challenge; 0 with code filled. */
static int issue_code(store_t *st, auth_pepper_t *p, const oauth_client_t *c, const oauth_user_t *u, const char *verifier,
                      char *code)
{
    oauth_code_t k;
    memset(&k, 0, sizeof(k));
    unsigned char d[32];
    SHA256((const unsigned char *)verifier, strlen(verifier), d);
    k.challenge[aly_b64url_encode(d, sizeof(d), k.challenge)] = '\0';
    snprintf(k.client, sizeof(k.client), "%s", c->id);
    snprintf(k.redirect, sizeof(k.redirect), "%s", c->redirects[0].uri);
    snprintf(k.workspace, sizeof(k.workspace), "%s", u->members[0].workspace);
    snprintf(k.user, sizeof(k.user), "%s", u->id);
    snprintf(k.email, sizeof(k.email), "%s", u->email);
    k.scopes = 1;
    aly_err_t err;
    return oauth_code_issue(st, p, &k, code, 64, &err);
}

/* A code past its expiry: its record rewritten with expires_ms in the past, nothing else changed. */
static void code_expiry(store_t *st, const char *dir)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/pepper", dir);
    char raw[41];
    FILE *fp = fopen(path, "w");
    ok(fp != NULL && aly_random_b62(raw, 40) == 0 && fwrite(raw, 1, 40, fp) == 40, "a pepper file");
    if (fp != NULL)
        fclose(fp);
    aly_err_t err;
    auth_pepper_t *p = auth_pepper_load(path, &err);
    oauth_user_t u;
    oauth_client_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.name, sizeof(c.name), "App");
    c.n_redirects = 1;
    snprintf(c.redirects[0].uri, sizeof(c.redirects[0].uri), "http://127.0.0.1:9/cb");
    char secret[80];
    workspace_record_t ws;
    ok(p != NULL && admin_workspace_create(st, "Unit", &ws, &err) == 0 &&
           oauth_user_add(st, "ann@example.com", ws.id, 1, "a password", &u, &err) == 0 &&
           oauth_client_create(st, p, &c, secret, sizeof(secret), &err) == 0,
       "a workspace, a user and a client");
    if (p == NULL)
        return;
    const char *verifier = "v-0123456789012345678901234567890123456789012345";
    char fresh[64], late[64], refresh[128];
    ok(issue_code(st, p, &c, &u, verifier, fresh) == 0 && issue_code(st, p, &c, &u, verifier, late) == 0, "two codes");
    char k[34] = "c/";
    store_txn_t t;
    oauth_code_t rec;
    int moved = oauth_mac(p, "code", late, strlen(late), (unsigned char *)k + 2, &err) == 0 &&
                store_begin(st, STORE_WRITE, &t, &err) == 0;
    if (moved) {
        moved = store_get_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &oauth_record_code, &rec, &err) == 0;
        rec.expires_ms = aly_wall_ms() - 1;
        moved = moved && store_put_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &oauth_record_code, &rec, 0, &err) == 0;
        moved = store_finish(&t, moved ? 0 : -1, &err) == 0 && moved;
    }
    ok(moved, "the second code's expiry moved into the past");
    oauth_grant_t g;
    aly_err_t why;
    is_int(oauth_code_redeem(st, p, late, c.id, c.redirects[0].uri, verifier, &g, refresh, sizeof(refresh), &why), 1,
           "an expired code is refused");
    ok(strstr(why.msg, "expired") != NULL, "saying it expired: %s", why.msg);
    is_str(refresh, "", "and no refresh token");
    is_int(oauth_code_redeem(st, p, fresh, c.id, c.redirects[0].uri, verifier, &g, refresh, sizeof(refresh), &why), 0,
           "the same request with the live code is granted (so the refusal is the expiry)");
    auth_pepper_free(p);
}

int main(void)
{
    redirects();
    forms();
    people();
    char dir[] = "/tmp/aly-unit-oauth-XXXXXX";
    aly_config_t *cfg = NULL;
    store_t *st = mkdtemp(dir) != NULL ? unit_temp_store(dir, &cfg) : NULL;
    ok(st != NULL, "a store in a temporary directory");
    if (st != NULL)
        code_expiry(st, dir);
    unit_temp_done(dir, st, cfg);
    return done_testing();
}
