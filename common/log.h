/*
 * common/log.h: the log of both programs, one line per event on stderr,
 * so supervisord's log (or a terminal) reads as a history of what the
 * program did and why.  Offers the levels and fg_log() with its short
 * forms, --log-format (text or json) and the JSON string escape it uses,
 * the program's name (fg_progname), a monotonic clock in ms and a sleep
 * that a stop request cuts short.
 *
 * Used by every file of fluxgate-worker and fluxgate-reconcile that says
 * something, and by common/pg.c and common/cli.c.
 */
#ifndef FG_LOG_H
#define FG_LOG_H

#include <signal.h>

enum fg_log_level {
    FG_LOG_DEBUG,
    FG_LOG_INFO,
    FG_LOG_WARNING,
    FG_LOG_ERROR
};

extern int fg_log_min_level;

/* --log-format: text (the default) or json, one object per line */
enum fg_log_format {
    FG_LOG_TEXT,
    FG_LOG_JSON
};

extern enum fg_log_format fg_log_format;

/* "text" or "json" into fg_log_format; -1 for anything else */
int fg_log_set_format(const char *name);

/*
 * s (len bytes) as the inside of a JSON string into out, always
 * terminated: quotes, backslashes and control characters escaped, bytes
 * that are not UTF-8 replaced by U+FFFD, cut at a whole character when out
 * is too small.  The length written.
 */
size_t fg_json_escape(const char *s, size_t len, char *out, size_t size);

/* the program's name, in every log line and as PostgreSQL's
 * application_name; each program's main sets its own */
extern const char *fg_progname;

void fg_log(enum fg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define fg_debug(...)   fg_log(FG_LOG_DEBUG, __VA_ARGS__)
#define fg_info(...)    fg_log(FG_LOG_INFO, __VA_ARGS__)
#define fg_warning(...) fg_log(FG_LOG_WARNING, __VA_ARGS__)
#define fg_error(...)   fg_log(FG_LOG_ERROR, __VA_ARGS__)

/* monotonic milliseconds, for batch deadlines and durations */
long long fg_now_ms(void);

/* sleeps, returning early (non-zero) when a stop was requested */
int fg_sleep_ms(long ms, volatile sig_atomic_t *stop);

#endif
