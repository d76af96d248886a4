/*
 * Error log and access log.
 *
 * Each log is a file descriptor opened O_APPEND (or stderr, or nothing).  An
 * error-log line is formatted into a stack buffer and written with one
 * write(2).  Access-log lines go through a per-process buffer once a worker
 * asks for one (log_access_buffer): they are written when the next line would
 * not fit, when the worker's flush timer calls log_access_flush(), before a
 * reopen, and on the way out (log_fatal, the worker's exit).  Every write
 * carries whole lines only, so lines from several workers never interleave or
 * tear; a process killed outright loses what its buffer held.  log_reopen() is
 * the USR1 path: logrotate moves the file, the process opens the path again.
 *
 * Flood guard: each call site (known by its format string) writes at most
 * LOG_BURST error-log lines per wall-clock second in a process; the rest are
 * counted, and the site's next line after that second is preceded by
 * "suppressed N more lines like "<format>"".  log_fatal() is never dropped.
 */
#ifndef ALY_LOG_H
#define ALY_LOG_H

#include <sys/types.h>

#include "aly/common.h"

#define LOG_BURST 10

typedef enum { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO } log_level_t;

/*
 * Opens the error and access logs ("stderr", "off" or a path).  Failure leaves
 * the previous logs in place.  When uid/gid are not -1 the files are handed to
 * that user, so workers that dropped privileges can reopen them.
 */
int log_open(const char *error_log, const char *access_log, uid_t uid, gid_t gid, aly_err_t *err);
int log_reopen(aly_err_t *err);

/* The role printed in every error-log line: "master" or "worker 3". */
void log_set_role(const char *role);

void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)

/* Logs at error level and exits with status 1. */
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Adds one preformatted access-log line (newline added): into the buffer, or
 * straight to the file when there is no buffer or the line is bigger than it.
 * No-op when the access log is off.
 */
void log_access_line(const char *line, size_t len);
int log_access_enabled(void);

/* Gives this process an access-log buffer of size bytes (0: none, each line written at once). */
void log_access_buffer(size_t size);
int log_access_buffered(void);

/* Writes out whatever lines the buffer holds. */
void log_access_flush(void);

#endif
