/*
 * Unit tests of the error log's flood guard (src/log.c): one call site
 * writes at most LOG_BURST lines a second, says how many it dropped, and
 * does not silence the other sites.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/log.h"
#include "tap.h"

static char path[] = "/tmp/aly-unit-log-XXXXXX";

/* Lines of the log containing needle. */
static int count_lines(const char *needle)
{
    FILE *fp = fopen(path, "r");
    char line[4096];
    int n = 0;
    if (fp == NULL)
        return -1;
    while (fgets(line, sizeof(line), fp) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(fp);
    return n;
}

/* Sleeps into the next wall-clock second, so a burst starts with a fresh count. */
static void next_second(void)
{
    uint64_t s = aly_wall_ms() / 1000;
    while (aly_wall_ms() / 1000 == s)
        usleep(10000);
}

static void flood(int n)
{
    for (int i = 0; i < n; i++)
        log_error("flood line %d", i);
}

int main(void)
{
    aly_err_t err;
    int fd = mkstemp(path);
    if (fd < 0 || log_open(path, "off", (uid_t)-1, (gid_t)-1, &err) != 0) {
        printf("Bail out! cannot open a log in %s\n", path);
        return 1;
    }
    close(fd);

    next_second();
    flood(100);
    log_warn("another site %d", 1);
    is_int(count_lines("flood line"), LOG_BURST, "100 lines from one site in a second: %d written", LOG_BURST);
    is_int(count_lines("another site 1"), 1, "another site still writes during the flood");
    is_int(count_lines("suppressed"), 0, "nothing said about the dropped lines yet");

    next_second();
    flood(1);
    is_int(count_lines("suppressed 90 more lines like \"flood line %d\""), 1, "the next second says 90 lines were dropped");
    is_int(count_lines("flood line"), LOG_BURST + 2, "and writes the new line (the count line names the format)");

    next_second();
    flood(LOG_BURST);
    is_int(count_lines("suppressed"), 1, "a burst within the limit drops nothing");
    is_int(count_lines("flood line"), 2 * LOG_BURST + 2, "all %d lines of it written", LOG_BURST);

    unlink(path);
    return done_testing();
}
