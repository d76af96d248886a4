/*
 * The limiter's shared table file (data_dir/volatile/RATELIMIT_FILE): made,
 * checked and, when damaged or of another shape, replaced atomically; mapped
 * by every process that decides.
 */
#include "aly/ratelimit_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the table file ---- */

static void header_for(file_header_t *h, const uint64_t cells[TABLES])
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, FILE_MAGIC, sizeof(FILE_MAGIC));
    h->version = FILE_VERSION;
    h->cell_size = sizeof(cell_t);
    h->window = RATELIMIT_WINDOW;
    for (int t = 0; t < TABLES; t++)
        h->cells[t] = cells[t];
}

static size_t file_len(const uint64_t cells[TABLES])
{
    return HEADER_SIZE + (size_t)(cells[PRINCIPALS] + cells[ADDRESSES]) * sizeof(cell_t);
}

/* Sizes an empty file and writes its header with a new hash key (the cells are the file's zeros: empty). */
static int format(int fd, const char *path, const uint64_t cells[TABLES], aly_err_t *err)
{
    file_header_t h;
    header_for(&h, cells);
    if (getrandom(h.hash_key, sizeof(h.hash_key), 0) != (ssize_t)sizeof(h.hash_key))
        return aly_errf(err, "%s: no random bytes for the hash key: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)file_len(cells)) != 0 || pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || fdatasync(fd) != 0)
        return aly_errf(err, "%s: %s", path, strerror(errno));
    return 0;
}

/* Does the open file hold a table of this version and geometry? */
static int usable(int fd, off_t size, const uint64_t cells[TABLES])
{
    file_header_t want, have;
    header_for(&want, cells);
    if (size != (off_t)file_len(cells) || pread(fd, &have, sizeof(have), 0) != (ssize_t)sizeof(have))
        return 0;
    return memcmp(have.magic, want.magic, sizeof(want.magic)) == 0 && have.version == want.version &&
           have.cell_size == want.cell_size && have.window == want.window && have.cells[PRINCIPALS] == cells[PRINCIPALS] &&
           have.cells[ADDRESSES] == cells[ADDRESSES];
}

/* A fresh table takes the name; whoever still maps the old one keeps it until they reopen. */
static int replace(const char *path, const uint64_t cells[TABLES], aly_err_t *err)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new.%ld", path, (long)getpid()) >= sizeof(tmp))
        return aly_errf(err, "%s: path too long", path);
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return aly_errf(err, "%s: %s", tmp, strerror(errno));
    int rc = format(fd, tmp, cells, err);
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = aly_errf(err, "rename %s: %s", tmp, strerror(errno));
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/*
 * Opens, creates or replaces the file and maps it.  The flock serialises only
 * this: two processes starting together must not both format one file, and a
 * process that waited must see that the name now points to another file.
 */
static int table_open(ratelimit_t *rl, const char *path, const uint64_t cells[TABLES], aly_err_t *err)
{
    size_t len = file_len(cells);
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0)
            return aly_errf(err, "%s: %s", path, strerror(errno));
        struct stat fs, ps;
        if (flock(fd, LOCK_EX) != 0 || fstat(fd, &fs) != 0) {
            aly_errf(err, "%s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (stat(path, &ps) != 0 || ps.st_ino != fs.st_ino || ps.st_dev != fs.st_dev) {
            close(fd); /* replaced while we waited for the lock: open the new one */
            continue;
        }
        int rc = 0;
        if (fs.st_size == 0)
            rc = format(fd, path, cells, err);
        else if (!usable(fd, fs.st_size, cells)) {
            rc = replace(path, cells, err);
            close(fd); /* nothing maps it: this drops the lock */
            if (rc != 0)
                return -1;
            continue;
        }
        void *map = rc == 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (rc == 0 && map == MAP_FAILED)
            rc = aly_errf(err, "mmap %s: %s", path, strerror(errno));
        flock(fd, LOCK_UN); /* the mapping holds the open file, and with it the lock, until unmapped */
        close(fd);
        if (rc != 0)
            return -1;
        rl->map = map;
        rl->map_len = len;
        return 0;
    }
    return aly_errf(err, "%s: replaced again and again while opening", path);
}

/* The directory of the volatile environment, which store.h does not name: LMDB knows it. */
static int volatile_dir(store_t *st, char *buf, size_t len, aly_err_t *err)
{
    store_txn_t t;
    const char *dir = NULL;
    if (store_begin(st, STORE_VOLATILE, &t, err) != 0)
        return -1;
    int rc = mdb_env_get_path(mdb_txn_env((MDB_txn *)t.txn), &dir);
    if (rc == 0 && (size_t)snprintf(buf, len, "%s", dir) >= len)
        rc = ENAMETOOLONG;
    store_abort(&t);
    return rc == 0 ? 0 : aly_errf(err, "volatile directory: %s", mdb_strerror(rc));
}

ratelimit_t *ratelimit_new(store_t *st, size_t max_addresses, aly_err_t *err)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (volatile_dir(st, dir, sizeof(dir), err) != 0)
        return NULL;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, RATELIMIT_FILE) >= sizeof(path)) {
        aly_errf(err, "%s: path too long", dir);
        return NULL;
    }
    ratelimit_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        aly_errf(err, "out of memory");
        return NULL;
    }
    uint64_t cells[TABLES] = {RATELIMIT_PRINCIPAL_CELLS, max_addresses > 0 ? max_addresses : 1};
    if (table_open(rl, path, cells, err) != 0) {
        free(rl);
        return NULL;
    }
    rl->st = st;
    rl->hdr = rl->map;
    rl->k0 = rl->hdr->hash_key[0];
    rl->k1 = rl->hdr->hash_key[1];
    rl->cells[PRINCIPALS] = (cell_t *)((char *)rl->map + HEADER_SIZE);
    rl->cells[ADDRESSES] = rl->cells[PRINCIPALS] + cells[PRINCIPALS];
    for (int t = 0; t < TABLES; t++) {
        rl->n[t] = cells[t];
        rl->window[t] = cells[t] < RATELIMIT_WINDOW ? (unsigned)cells[t] : RATELIMIT_WINDOW;
    }
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    munmap(rl->map, rl->map_len);
    free(rl);
}

store_t *ratelimit_store(const ratelimit_t *rl)
{
    return rl->st;
}
