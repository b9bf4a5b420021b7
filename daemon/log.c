/* log.c: hymbad's log sink (sd_journal when JOURNAL_STREAM says stderr goes to the journal). */
#include "daemon/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

static bool log_to_journal;
static int log_max_priority = LOG_INFO;

/* systemd sets JOURNAL_STREAM=DEV:INODE of the stream it connected stderr to;
 * if stderr is still that stream, native journal messages are the better way. */
static bool stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(int max_priority)
{
    log_to_journal = stderr_is_journal();
    log_max_priority = max_priority;
}

static void log_write(int priority, const char *text)
{
    if (!log_to_journal || sd_journal_print(priority, "%s", text) < 0)
        fprintf(stderr, "hymbad: %s\n", text);
}

void log_full(int priority, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    if (priority > log_max_priority)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_write(priority, buf);
}

int log_full_errno(int priority, int r, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    int saved = errno;

    if (priority <= log_max_priority) {
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        size_t n = strlen(buf);
        snprintf(buf + n, sizeof(buf) - n, ": %s", strerror(r < 0 ? -r : r));
        log_write(priority, buf);
    }
    errno = saved;
    return r < 0 ? r : -r;
}
