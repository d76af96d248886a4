/*
 * What it takes to be a daemon on a Unix host, apart from supervising
 * workers (master.c): detaching from the terminal with a report back to the
 * starting process, the pid file, and running a step that touches data_dir
 * as the worker user instead of root.
 */
#include "aly/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aly/store.h"

int daemon_as_user(uid_t uid, gid_t gid, const char *what, daemon_task_fn task, void *arg, size_t argsize, unsigned timeout_ms,
                   aly_err_t *err)
{
    struct {
        int rc;
        aly_err_t err;
    } r = {-1, {.msg = ""}};
    int fds[2];
    if (argsize > DAEMON_TASK_ARG_MAX)
        return aly_errf(err, "cannot %s: %zu bytes of result is more than a pipe takes at once", what, argsize);
    if (pipe2(fds, O_CLOEXEC) != 0)
        return aly_errf(err, "cannot %s: pipe: %s", what, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return aly_errf(err, "cannot %s: fork: %s", what, strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        if (gid != (gid_t)-1 && (setgroups(1, &gid) != 0 || setgid(gid) != 0))
            aly_errf(&r.err, "cannot switch to group %u: %s", (unsigned)gid, strerror(errno));
        else if (uid != (uid_t)-1 && setuid(uid) != 0)
            aly_errf(&r.err, "cannot switch to user %u: %s", (unsigned)uid, strerror(errno));
        else
            r.rc = task(arg, &r.err);
        /* One write of at most PIPE_BUF bytes arrives whole. */
        char out[sizeof(r) + DAEMON_TASK_ARG_MAX];
        memcpy(out, &r, sizeof(r));
        memcpy(out + sizeof(r), arg, argsize);
        ssize_t n = write(fds[1], out, sizeof(r) + argsize);
        _exit(n == (ssize_t)(sizeof(r) + argsize) ? 0 : 1);
    }
    close(fds[1]);
    /* Bounded: the master waits here, and a file the task reads can be a FIFO or on a hung mount. */
    char in[sizeof(r) + DAEMON_TASK_ARG_MAX];
    size_t want = sizeof(r) + argsize, got = 0;
    uint64_t deadline = aly_now_ms() + timeout_ms;
    int late = 0;
    while (got < want) {
        uint64_t now = aly_now_ms();
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int ready = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            break; /* reported as a child that did not report */
        if (ready == 0) {
            late = 1;
            kill(pid, SIGKILL);
            break;
        }
        ssize_t n = read(fds[0], in + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status;
    if (late)
        waitpid(pid, &status,
                WNOHANG); /* not waited for: a child stuck in the kernel outlives SIGKILL; the master reaps it later */
    else
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    if (late)
        return aly_errf(err, "cannot %s: it took over %u ms as the worker user (a FIFO, a hung mount?)", what, timeout_ms);
    if (got != want)
        return aly_errf(err, "cannot %s: the child did not report (it died)", what);
    memcpy(&r, in, sizeof(r));
    memcpy(arg, in + sizeof(r), argsize);
    if (r.rc != 0) {
        *err = r.err;
        err->msg[sizeof(err->msg) - 1] = '\0';
        return -1;
    }
    return 0;
}

typedef struct reader_check {
    const aly_config_t *cfg;
    int cleared;
} reader_check_t;

static int reader_task(void *arg, aly_err_t *err)
{
    reader_check_t *c = arg;
    return store_reader_check(c->cfg, &c->cleared, err);
}

/*
 * mdb_reader_check for data_dir, run in a child that first becomes the
 * worker user.  data_dir belongs to that user, who could plant a symlink
 * where LMDB opens its files; root must never follow it (LMDB would create,
 * truncate or lock the target).
 */
int daemon_reader_check(const aly_config_t *cfg, uid_t uid, gid_t gid, int *cleared, aly_err_t *err)
{
    reader_check_t c = {cfg, 0};
    if (daemon_as_user(uid, gid, "check the store's readers", reader_task, &c, sizeof(c), DAEMON_TASK_MS, err) != 0)
        return -1;
    *cleared = c.cleared;
    return 0;
}

int daemon_write_pid_file(const char *path, aly_err_t *err)
{
    FILE *fp = fopen(path, "r");
    if (fp != NULL) {
        int old = 0;
        if (fscanf(fp, "%d", &old) == 1 && old > 0 && old != getpid() && kill(old, 0) == 0) {
            fclose(fp);
            return aly_errf(err, "alyd is already running as pid %d (pid_file %s)", old, path);
        }
        fclose(fp);
    }
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return aly_errf(err, "cannot write pid_file %s: %s", path, strerror(errno));
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    int ok = write(fd, buf, (size_t)n) == n;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return aly_errf(err, "cannot write pid_file %s: %s", path, strerror(errno));
    }
    return 0;
}

int daemon_detach(int keep_stderr, aly_err_t *err)
{
    int report[2];
    if (pipe(report) != 0)
        return aly_errf(err, "cannot create a pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        return aly_errf(err, "cannot fork: %s", strerror(errno));
    if (pid > 0) {
        close(report[1]);
        char ok = 0;
        ssize_t n;
        do
            n = read(report[0], &ok, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 && ok == 1 ? 0 : 1);
    }
    close(report[0]);
    if (setsid() < 0)
        return aly_errf(err, "setsid: %s", strerror(errno));
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        if (!keep_stderr)
            dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    fcntl(report[1], F_SETFD, FD_CLOEXEC);
    return report[1];
}

void daemon_report_started(int fd, int ok)
{
    if (fd < 0)
        return;
    char c = ok ? 1 : 0;
    ssize_t n = write(fd, &c, 1);
    (void)n;
    close(fd);
}
