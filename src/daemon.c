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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aly/store.h"

/*
 * mdb_reader_check for data_dir, run in a child that first becomes the
 * worker user.  data_dir belongs to that user, who could plant a symlink
 * where LMDB opens its files; root must never follow it (LMDB would create,
 * truncate or lock the target).  The child reports through a pipe.
 */
int daemon_reader_check(const aly_config_t *cfg, uid_t uid, gid_t gid, int *cleared, aly_err_t *err)
{
    struct {
        int rc, cleared;
        aly_err_t err;
    } r = {-1, 0, {.msg = ""}};
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return aly_errf(err, "cannot check the store's readers: pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return aly_errf(err, "cannot check the store's readers: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        if (gid != (gid_t)-1 && (setgroups(1, &gid) != 0 || setgid(gid) != 0))
            aly_errf(&r.err, "cannot switch to group %u: %s", (unsigned)gid, strerror(errno));
        else if (uid != (uid_t)-1 && setuid(uid) != 0)
            aly_errf(&r.err, "cannot switch to user %u: %s", (unsigned)uid, strerror(errno));
        else
            r.rc = store_reader_check(cfg, &r.cleared, &r.err);
        ssize_t n = write(fds[1], &r, sizeof(r));
        _exit(n == (ssize_t)sizeof(r) ? 0 : 1);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = read(fds[0], (char *)&r + got, sizeof(r) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got != sizeof(r))
        return aly_errf(err, "the store's reader check did not report (it died)");
    if (r.rc != 0) {
        *err = r.err;
        err->msg[sizeof(err->msg) - 1] = '\0';
        return -1;
    }
    *cleared = r.cleared;
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
