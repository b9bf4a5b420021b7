/* log.h: hymbad's logging: the journal when started by systemd, stderr otherwise. */
#ifndef HYMBA_DAEMON_LOG_H
#define HYMBA_DAEMON_LOG_H

#include <syslog.h>

/* Decide the sink once (the journal when stderr is systemd's journal stream) and the lowest priority shown. */
void log_setup(int max_priority);

void log_full(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs "<message>: <strerror(-r)>" and returns r (a negative errno), so a caller
 * can write: if (r < 0) return log_error_errno(r, "Failed to ...");  */
int log_full_errno(int priority, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(...)   log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, __VA_ARGS__)
#define log_error_errno(r, ...)   log_full_errno(LOG_ERR, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_full_errno(LOG_WARNING, (r), __VA_ARGS__)

#endif
