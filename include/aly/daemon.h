/*
 * Process chores of the master that are not supervision: detaching, the pid
 * file, and running the store's reader check as the worker user.
 */
#ifndef ALY_DAEMON_H
#define ALY_DAEMON_H

#include <sys/types.h>

#include "aly/common.h"
#include "aly/config.h"

/*
 * Forks into the background: the parent waits until the child reports that
 * the pid file is written (or that start-up failed) and exits 0 or 1, so an
 * init system that reads the pid file after the parent exits (systemd
 * Type=forking) finds it.  In the child: a new session, stdin and stdout (and
 * stderr unless keep_stderr) on /dev/null; returns the write end of the report
 * pipe for daemon_report_started(), or -1 with err.
 */
int daemon_detach(int keep_stderr, aly_err_t *err);
/* Tells the waiting parent of daemon_detach() whether start-up succeeded; closes fd (-1: nothing to do). */
void daemon_report_started(int fd, int ok);

/* Writes our pid to path (through a temporary file and rename); refuses when a live alyd holds it. */
int daemon_write_pid_file(const char *path, aly_err_t *err);

/*
 * Runs task(arg, err) in a child that first switches to uid/gid ((uid_t)-1:
 * stay), so that what it opens is opened as the worker user, never as root;
 * waits at most timeout_ms (then kills it).  The child hands back task's
 * return value, its err and arg's argsize bytes (at most
 * DAEMON_TASK_ARG_MAX), where task leaves its results.  0, or -1 with err
 * (task's own, or what went wrong around it, "cannot <what>: ...").
 */
typedef int (*daemon_task_fn)(void *arg, aly_err_t *err);
#define DAEMON_TASK_ARG_MAX 256
#define DAEMON_TASK_MS 10000 /* the bound the master's checks use */
int daemon_as_user(uid_t uid, gid_t gid, const char *what, daemon_task_fn task, void *arg, size_t argsize, unsigned timeout_ms,
                   aly_err_t *err);

/*
 * store_reader_check() in a child that first switches to uid/gid ((uid_t)-1:
 * stay): data_dir belongs to the worker user, who could plant a symlink where
 * LMDB opens its files, and root must never follow it.  *cleared receives
 * the number of stale reader slots freed.
 */
int daemon_reader_check(const aly_config_t *cfg, uid_t uid, gid_t gid, int *cleared, aly_err_t *err);

#endif
