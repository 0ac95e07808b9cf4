/*
 * log.c: the worker's only output.  Every line carries a UTC timestamp, the
 * pid and a level, because supervisord copies stderr verbatim and the pid
 * tells one incarnation of the worker from the next after a restart.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int fg_log_min_level = FG_LOG_INFO;
const char *fg_progname = "fluxgate-worker";

static const char *const level_names[] = {
    "debug", "info", "warning", "error"
};

void
fg_log(enum fg_log_level level, const char *fmt, ...)
{
    char            line[4096];
    struct timespec ts;
    struct tm       tm;
    va_list         ap;
    int             n;

    if ((int) level < fg_log_min_level) {
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ"
                 " %s[%d] %s: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, fg_progname,
                 (int) getpid(), level_names[level]);

    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);

    /* one write per line: lines never interleave with librdkafka's threads */
    n = strlen(line);
    while (n > 0 && line[n - 1] == '\n') {
        n--;
    }
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}

long long
fg_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
fg_sleep_ms(long ms, volatile sig_atomic_t *stop)
{
    struct timespec ts;
    long            step;

    /* short naps so SIGTERM is acted on within 100 ms */
    while (ms > 0) {
        if (stop != NULL && *stop) {
            return 1;
        }
        step = ms < 100 ? ms : 100;
        ts.tv_sec = 0;
        ts.tv_nsec = step * 1000000L;
        nanosleep(&ts, NULL);
        ms -= step;
    }
    return stop != NULL && *stop;
}
