/*
 * The error and access logs declared in aly/log.h, the error log's flood
 * guard (at most LOG_BURST lines per second from one call site), and the
 * access log's per-process buffer: whole lines gathered in memory and written
 * to the file in as few write(2) calls as keep every line whole.
 */
#include "aly/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_BYTES 2048
#define SITES 64 /* call sites tracked by the flood guard; a colliding site takes the slot over */

typedef struct log_target {
    char *path;       /* NULL for stderr or off */
    int fd;           /* -1 when off */
    size_t write_max; /* the most one write(2) may carry and still land whole among other writers' lines */
} log_target_t;

/*
 * Regular files opened O_APPEND take any write whole (the kernel appends it
 * under the inode lock); a pipe or terminal only guarantees PIPE_BUF bytes.
 */
static size_t write_max_of(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        return SIZE_MAX;
    return PIPE_BUF;
}

static log_target_t error_target = {NULL, 2, PIPE_BUF}, access_target = {NULL, 2, PIPE_BUF};

static struct {
    char *data;
    size_t cap, len;
    int failing; /* the last write failed; reported once until a write succeeds */
} abuf;
static char role[32] = "alyd";
/* The worker user of log_open(): log files the master creates on reopen are handed to it. */
static uid_t owner_uid = (uid_t)-1;
static gid_t owner_gid = (gid_t)-1;

/*
 * Opens (creating) a log file for appending.  The master opens logs as root,
 * in a directory the worker user may be able to write, and then hands the
 * file to that user: so it refuses a symlink (O_NOFOLLOW), anything but a
 * regular file, and a file with other hard links, any of which the worker
 * user could have planted to make root append to, or give away, another file.
 */
static int open_log_file(const char *path, aly_err_t *err)
{
    struct stat st;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
    if (fd < 0)
        return aly_errf(err, "cannot open log file %s: %s%s", path, strerror(errno),
                        errno == ELOOP ? " (it is a symbolic link: name the file itself)" : ""),
               -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        close(fd);
        return aly_errf(err, "refusing log file %s: not a regular file with a single link", path), -1;
    }
    return fd;
}

static int open_target(const char *spec, log_target_t *t, uid_t uid, gid_t gid, aly_err_t *err)
{
    if (strcmp(spec, "off") == 0) {
        *t = (log_target_t){NULL, -1, 0};
        return 0;
    }
    if (strcmp(spec, "stderr") == 0) {
        *t = (log_target_t){NULL, 2, write_max_of(2)};
        return 0;
    }
    int fd = open_log_file(spec, err);
    if (fd < 0)
        return -1;
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0) {
        int e = errno;
        close(fd);
        return aly_errf(err, "cannot hand log file %s to the worker user: %s", spec, strerror(e));
    }
    char *copy = strdup(spec);
    if (copy == NULL)
        abort();
    *t = (log_target_t){copy, fd, write_max_of(fd)};
    return 0;
}

static void close_target(log_target_t *t)
{
    if (t->path != NULL)
        close(t->fd);
    free(t->path);
    t->path = NULL;
}

int log_open(const char *error_log, const char *access_log, uid_t uid, gid_t gid, aly_err_t *err)
{
    log_access_flush();
    log_target_t e, a;
    if (open_target(error_log, &e, uid, gid, err) != 0)
        return -1;
    if (open_target(access_log, &a, uid, gid, err) != 0) {
        close_target(&e);
        return -1;
    }
    close_target(&error_target);
    close_target(&access_target);
    error_target = e;
    access_target = a;
    owner_uid = uid;
    owner_gid = gid;
    return 0;
}

static int reopen_target(log_target_t *t, aly_err_t *err)
{
    if (t->path == NULL)
        return 0;
    struct stat st;
    int created = lstat(t->path, &st) != 0 && errno == ENOENT;
    int fd = open_log_file(t->path, err);
    if (fd < 0)
        return -1;
    /*
     * The root master reopens first: a file it creates goes to the worker
     * user, as in open_target(), or the workers' own reopen fails and they
     * keep writing to the rotated file.  A file logrotate created keeps the
     * owner it was given.
     */
    if (created && (owner_uid != (uid_t)-1 || owner_gid != (gid_t)-1) && geteuid() == 0 && fchown(fd, owner_uid, owner_gid) != 0) {
        int e = errno;
        close(fd);
        return aly_errf(err, "cannot hand log file %s to the worker user: %s", t->path, strerror(e));
    }
    /* dup2 keeps the descriptor number, so a line written concurrently goes to one file or the other. */
    if (dup2(fd, t->fd) < 0) {
        int e = errno;
        close(fd);
        return aly_errf(err, "cannot reopen log file %s: %s", t->path, strerror(e));
    }
    close(fd);
    t->write_max = write_max_of(t->fd);
    return 0;
}

int log_reopen(aly_err_t *err)
{
    /* Lines logged before the signal belong to the file being rotated away. */
    log_access_flush();
    int rc = reopen_target(&error_target, err);
    if (reopen_target(&access_target, err) != 0)
        rc = -1;
    return rc;
}

void log_set_role(const char *r)
{
    snprintf(role, sizeof(role), "%s", r);
}

static const char *const level_names[] = {"error", "warn", "info"};

/*
 * One call site of the error log, known by its format string: a client that
 * can make one line appear per request must not be able to write the disk
 * full or bury every other message.
 */
typedef struct site {
    const char *fmt;
    log_level_t level;
    uint64_t second;     /* the wall-clock second count counts in */
    unsigned count;      /* lines from this site in that second */
    unsigned suppressed; /* lines dropped since the last one written */
} site_t;

static site_t sites[SITES];

static void write_line(log_level_t level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void write_line(log_level_t level, const char *fmt, va_list ap)
{
    char line[LINE_MAX_BYTES], ts[40];
    aly_format_time(ts, sizeof(ts), aly_wall_ms());
    int n = snprintf(line, sizeof(line), "%s [%s] alyd[%d] %s: ", ts, level_names[level], (int)getpid(), role);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* A message must not forge further log lines. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(error_target.fd, line, len);
    (void)w;
}

static void write_fmt(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void write_fmt(log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

/* Says how many lines of s were dropped, so a reader knows the log is not the whole story. */
static void flush_suppressed(site_t *s)
{
    if (s->suppressed == 0)
        return;
    write_fmt(s->level, "suppressed %u more lines like \"%.120s\" (more than %d a second)", s->suppressed, s->fmt, LOG_BURST);
    s->suppressed = 0;
}

/* 1 when the line of fmt may be written now. */
static int site_admits(log_level_t level, const char *fmt)
{
    site_t *s = &sites[((uintptr_t)fmt >> 3) % SITES];
    uint64_t second = aly_wall_ms() / 1000;
    if (s->fmt != fmt) {
        flush_suppressed(s);
        *s = (site_t){.fmt = fmt, .level = level, .second = second};
    }
    if (s->second != second) {
        flush_suppressed(s);
        s->second = second;
        s->count = 0;
    }
    if (s->count >= LOG_BURST) {
        s->suppressed++;
        return 0;
    }
    s->count++;
    return 1;
}

static void vlog(log_level_t level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void vlog(log_level_t level, const char *fmt, va_list ap)
{
    if (error_target.fd < 0 || !site_admits(level, fmt))
        return;
    write_line(level, fmt, ap);
}

void log_msg(log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    log_access_flush();
    va_list ap;
    va_start(ap, fmt);
    if (error_target.fd >= 0)
        write_line(LOG_LEVEL_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}

int log_access_enabled(void)
{
    return access_target.fd >= 0;
}

/* One write(2), retried only for an interruption before anything was written; the count written or -1. */
static ssize_t write_once(int fd, const char *p, size_t n)
{
    for (;;) {
        ssize_t w = write(fd, p, n);
        if (w >= 0 || errno != EINTR)
            return w;
    }
}

/*
 * Writes n bytes of whole lines in pieces of at most write_max bytes, each
 * ending at a line end, so that no write carries part of a line.  A short
 * write (disk full, a signal on a pipe) leaves a line's tail, which is written
 * next rather than lost.  On failure the rest is dropped and, once per run of
 * failures, the error log says how much.
 */
static void write_lines(const char *p, size_t n)
{
    while (n > 0) {
        size_t m = n;
        if (m > access_target.write_max) {
            m = access_target.write_max;
            while (m > 0 && p[m - 1] != '\n')
                m--;
            if (m == 0) /* a line longer than write_max: only possible on a pipe, and lines are shorter */
                m = access_target.write_max;
        }
        ssize_t w = write_once(access_target.fd, p, m);
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            if (!abuf.failing)
                log_error("access log: write failed, %zu byte(s) of lines dropped: %s", n, strerror(e));
            abuf.failing = 1;
            return;
        }
        abuf.failing = 0;
        p += w;
        n -= (size_t)w;
    }
}

void log_access_buffer(size_t size)
{
    log_access_flush();
    free(abuf.data);
    abuf.data = NULL;
    abuf.cap = abuf.len = 0;
    if (size == 0)
        return;
    abuf.data = malloc(size);
    if (abuf.data == NULL)
        abort();
    abuf.cap = size;
}

int log_access_buffered(void)
{
    return abuf.cap > 0;
}

void log_access_flush(void)
{
    if (abuf.len == 0)
        return;
    if (access_target.fd >= 0)
        write_lines(abuf.data, abuf.len);
    abuf.len = 0;
}

void log_access_line(const char *line, size_t len)
{
    if (access_target.fd < 0)
        return;
    if (len > LINE_MAX_BYTES - 1)
        len = LINE_MAX_BYTES - 1;
    if (abuf.len + len + 1 > abuf.cap)
        log_access_flush();
    if (len + 1 > abuf.cap) {
        /* No buffer, or one smaller than this line: the line goes out on its own. */
        char buf[LINE_MAX_BYTES];
        memcpy(buf, line, len);
        buf[len++] = '\n';
        write_lines(buf, len);
        return;
    }
    memcpy(abuf.data + abuf.len, line, len);
    abuf.len += len;
    abuf.data[abuf.len++] = '\n';
}
