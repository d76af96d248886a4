/*
 * The temporary directory of fuzz/fuzz.h.  A target that crashes leaves it
 * behind in $TMPDIR (or /dev/shm) (libFuzzer does not run atexit handlers then); it is
 * small and named alyd-fuzz-*.
 */
#include "fuzz.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[256];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void cleanup(void)
{
    if (dir[0] != '\0')
        nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void)
{
    if (dir[0] != '\0')
        return dir;
    /* tmpfs first: on ext4 a file truncated and rewritten is flushed at close, which made
     * the config target wait on the disk for most of each run. */
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/alyd-fuzz-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(cleanup);
    return dir;
}

const char *fuzz_path(const char *name, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/%s", fuzz_tmpdir(), name);
    if (n < 0 || (size_t)n >= cap)
        abort();
    return buf;
}

void fuzz_write(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len) || close(fd) != 0) {
        perror(path);
        abort();
    }
}
