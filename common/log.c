/*
 * log.c: the programs' only output (see log.h).  Every line carries a UTC
 * timestamp, the pid and a level, because supervisord copies stderr
 * verbatim and the pid tells one incarnation of a program from the next
 * after a restart.  With
 * --log-format json each line is one JSON object with the same fields, for
 * log shippers that would otherwise parse the text with a regex.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int fg_log_min_level = FG_LOG_INFO;
enum fg_log_format fg_log_format = FG_LOG_TEXT;
const char *fg_progname = "fluxgate-worker";

static size_t utf8_length(const unsigned char *p, size_t len);

static const char *const level_names[] = {
    "debug", "info", "warning", "error"
};

int
fg_log_set_format(const char *name)
{
    if (strcmp(name, "text") == 0) {
        fg_log_format = FG_LOG_TEXT;
    } else if (strcmp(name, "json") == 0) {
        fg_log_format = FG_LOG_JSON;
    } else {
        return -1;
    }
    return 0;
}

void
fg_log(enum fg_log_level level, const char *fmt, ...)
{
    char            msg[4096], line[4096 * 6 + 256], ts_text[96];
    struct timespec ts;
    struct tm       tm;
    va_list         ap;
    size_t          len;
    int             n;

    if ((int) level < fg_log_min_level) {
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(ts_text, sizeof(ts_text), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n') {
        msg[--len] = '\0';
    }

    if (fg_log_format == FG_LOG_JSON) {
        n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"level\":\"%s\",\"program\":\"%s\","
                     "\"pid\":%d,\"msg\":\"", ts_text, level_names[level],
                     fg_progname, (int) getpid());
        n += fg_json_escape(msg, len, line + n, sizeof(line) - n - 3);
        n += snprintf(line + n, sizeof(line) - n, "\"}");
    } else {
        n = snprintf(line, sizeof(line), "%s %s[%d] %s: %s", ts_text,
                     fg_progname, (int) getpid(), level_names[level], msg);
    }

    /* one write per line: lines never interleave with librdkafka's threads */
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to report it */
    }
}

size_t
fg_json_escape(const char *s, size_t len, char *out, size_t size)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t               i = 0, o = 0, w;
    char                 esc[8];
    const char          *put;

    while (i < len) {
        w = 1;
        put = esc;
        if (p[i] == '"' || p[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char) p[i];
            esc[2] = '\0';
        } else if (p[i] == '\n') {
            put = "\\n";
        } else if (p[i] == '\t') {
            put = "\\t";
        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", p[i]);
        } else if (p[i] < 0x80) {
            esc[0] = (char) p[i];
            esc[1] = '\0';
        } else if ((w = utf8_length(p + i, len - i)) == 0) {
            put = "\\ufffd";
            w = 1;
        } else {
            memcpy(esc, p + i, w);
            esc[w] = '\0';
        }

        if (o + strlen(put) >= size) {
            break;
        }
        memcpy(out + o, put, strlen(put));
        o += strlen(put);
        i += w;
    }
    if (size > 0) {
        out[o] = '\0';
    }
    return o;
}

/* the length of the well-formed UTF-8 character at p, 0 if it is not one */
static size_t
utf8_length(const unsigned char *p, size_t len)
{
    size_t        n, i;
    unsigned int  c;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        c = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        c = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        c = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        c = (c << 6) | (p[i] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff))
        || (c >= 0xd800 && c <= 0xdfff))
    {
        return 0;
    }
    return n;
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
