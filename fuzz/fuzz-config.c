/*
 * libFuzzer target: the alyd.conf parser (config_load) on arbitrary file
 * contents.  The file is trusted, but it is written by hand, often by copying
 * lines from elsewhere, and alyd -t must report a bad line rather than crash
 * or half-apply it.  Every rate a loaded configuration holds must survive
 * config_format_rate() and config_parse_rate() unchanged, since alyctl prints
 * rates in that form for operators to paste back.
 *
 * config_load() reads a path, so each input is written to a file in the
 * target's temporary directory first.  A few file names exist there
 * (readable key files, a pepper) so that lines naming them get past the
 * readability checks into the cross-directive ones.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/config.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char conf_path[512];
static int home; /* the working directory libFuzzer writes its artifacts to */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const files[] = {"jwks.json", "secret", "cert.pem", "key.pem", "pepper"};
    char path[512];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        fuzz_write(fuzz_path(files[i], path, sizeof(path)), "x\n", 2);
    fuzz_path("alyd.conf", conf_path, sizeof(conf_path));
    if ((home = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        abort();
    return 0;
}

static void check_rate(const char *what, const aly_rate_t *r)
{
    char text[128];
    aly_rate_t back;
    aly_err_t err;
    config_format_rate(r, text, sizeof(text));
    if (config_parse_rate(text, &back, &err) != 0) {
        fprintf(stderr, "%s: \"%s\" as printed does not parse: %s\n", what, text, err.msg);
        abort();
    }
    if (back.count != r->count || back.period_s != r->period_s || back.burst != r->burst) {
        fprintf(stderr, "%s: %u/%us burst=%u printed as \"%s\" reads back as %u/%us burst=%u\n", what, r->count, r->period_s,
                r->burst, text, back.count, back.period_s, back.burst);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write(conf_path, data, size);
    aly_err_t err = {.msg = ""};
    /* The directory's name is random: seeds name the files above relative to it. */
    if (chdir(fuzz_tmpdir()) != 0)
        abort();
    aly_config_t *cfg = config_load(conf_path, &err);
    if (fchdir(home) != 0)
        abort();
    if (cfg == NULL) {
        /* An error must name the file, so alyd -t output points somewhere. */
        if (strncmp(err.msg, conf_path, strlen(conf_path)) != 0) {
            fprintf(stderr, "config error does not start with the file name: %s\n", err.msg);
            abort();
        }
        return 0;
    }
    check_rate("rate_limit", &cfg->rate_limit);
    check_rate("auth_failure_limit", &cfg->auth_failure_limit);
    for (size_t i = 0; i < cfg->n_client_rates; i++)
        check_rate(cfg->client_rates[i].client_id, &cfg->client_rates[i].rate);
    if (config_worker_count(cfg) == 0 || cfg->n_listens == 0 || cfg->public_url == NULL || cfg->data_dir == NULL) {
        fprintf(stderr, "a loaded configuration lacks a default\n");
        abort();
    }
    config_free(cfg);
    return 0;
}
