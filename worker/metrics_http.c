/*
 * metrics_http.c: the worker's one-page HTTP responder (--metrics-listen).
 * A thread accepts one connection at a time on a blocking socket, reads one
 * bounded request, answers GET /metrics or GET /healthz (404 anything else)
 * and closes: HTTP/1.0 manners, which is all a Prometheus scrape or a
 * health probe needs, and no event library for it.  A slow or silent
 * client is cut off after IO_TIMEOUT_S, so it cannot stall the next scrape
 * for long.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#define REQUEST_MAX   4096      /* request line and headers, at most */
#define IO_TIMEOUT_S  2

static int        listen_fd = -1;
static pthread_t  thread;

static void *serve(void *arg);
static void handle(int fd);
static void respond(int fd, int status, const char *type, const char *body,
    size_t len);
static void write_all(int fd, const char *p, size_t len);

int
fg_metrics_http_start(const char *listen_on, char *err, size_t size)
{
    struct addrinfo  hints, *ai;
    char             host[256];
    const char      *colon;
    int              rc, one = 1;

    colon = strrchr(listen_on, ':');
    if (colon == NULL || colon == listen_on || colon[1] == '\0'
        || (size_t) (colon - listen_on) >= sizeof(host))
    {
        snprintf(err, size, "--metrics-listen wants ADDR:PORT, not \"%s\"",
                 listen_on);
        return -1;
    }
    /* [::1]:9100 as well as 127.0.0.1:9100 */
    if (listen_on[0] == '[' && colon[-1] == ']') {
        snprintf(host, sizeof(host), "%.*s", (int) (colon - listen_on - 2),
                 listen_on + 1);
    } else {
        snprintf(host, sizeof(host), "%.*s", (int) (colon - listen_on),
                 listen_on);
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0) {
        snprintf(err, size, "--metrics-listen %s: %s", listen_on,
                 gai_strerror(rc));
        return -1;
    }

    listen_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0
        || setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one,
                      sizeof(one)) != 0
        || bind(listen_fd, ai->ai_addr, ai->ai_addrlen) != 0
        || listen(listen_fd, 16) != 0)
    {
        snprintf(err, size, "--metrics-listen %s: %s", listen_on,
                 strerror(errno));
        freeaddrinfo(ai);
        if (listen_fd >= 0) {
            close(listen_fd);
            listen_fd = -1;
        }
        return -1;
    }
    freeaddrinfo(ai);

    rc = pthread_create(&thread, NULL, serve, NULL);
    if (rc != 0) {
        snprintf(err, size, "--metrics-listen: no thread: %s", strerror(rc));
        close(listen_fd);
        listen_fd = -1;
        return -1;
    }
    fg_info("metrics: serving /metrics and /healthz on %s", listen_on);
    return 0;
}

void
fg_metrics_http_stop(void)
{
    if (listen_fd < 0) {
        return;
    }
    /* wakes the blocked accept(), which then fails and ends the thread */
    shutdown(listen_fd, SHUT_RDWR);
    pthread_join(thread, NULL);
    close(listen_fd);
    listen_fd = -1;
}

static void *
serve(void *arg)
{
    struct timeval  tv = { IO_TIMEOUT_S, 0 };
    int             fd;

    (void) arg;
    for (;;) {
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE
                || errno == ENFILE)
            {
                if (errno == EMFILE || errno == ENFILE) {
                    usleep(100000);
                }
                continue;
            }
            return NULL;        /* shut down by fg_metrics_http_stop */
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        handle(fd);
        close(fd);
    }
}

static void
handle(int fd)
{
    char     req[REQUEST_MAX + 1], *body, *sp, *path, *end;
    size_t   len = 0, blen;
    ssize_t  n;
    int      ok, complete = 0;

    /* up to the blank line that ends the headers; a body is not wanted */
    while (!complete && len < REQUEST_MAX) {
        n = recv(fd, req + len, REQUEST_MAX - len, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            break;
        }
        len += n;
        req[len] = '\0';
        complete = strstr(req, "\r\n\r\n") != NULL
                   || strstr(req, "\n\n") != NULL;
    }
    req[len] = '\0';
    if (!complete) {
        /* too long, cut short, or silent past the timeout */
        if (len == REQUEST_MAX) {
            respond(fd, 431, "text/plain", "request too large\n", 18);
        } else if (len > 0) {
            respond(fd, 400, "text/plain", "bad request\n", 12);
        }
        return;
    }

    /* "GET /metrics?x HTTP/1.1" */
    sp = strchr(req, ' ');
    if (sp == NULL) {
        respond(fd, 400, "text/plain", "bad request\n", 12);
        return;
    }
    *sp = '\0';
    path = sp + 1;
    end = path + strcspn(path, " ?\r\n");
    *end = '\0';
    if (strcmp(req, "GET") != 0) {
        respond(fd, 405, "text/plain", "only GET\n", 9);
        return;
    }

    if (strcmp(path, "/metrics") == 0) {
        body = fg_metrics_render(&blen);
        respond(fd, 200, "text/plain; version=0.0.4; charset=utf-8", body,
                blen);
        free(body);
    } else if (strcmp(path, "/healthz") == 0) {
        body = fg_metrics_health(&ok, &blen);
        respond(fd, ok ? 200 : 503, "application/json", body, blen);
        free(body);
    } else {
        respond(fd, 404, "text/plain", "not found: /metrics or /healthz\n",
                32);
    }
}

static void
respond(int fd, int status, const char *type, const char *body, size_t len)
{
    char        head[256];
    const char *reason;
    int         n;

    switch (status) {
    case 200: reason = "OK"; break;
    case 400: reason = "Bad Request"; break;
    case 404: reason = "Not Found"; break;
    case 405: reason = "Method Not Allowed"; break;
    case 431: reason = "Request Header Fields Too Large"; break;
    default:  reason = "Service Unavailable"; break;
    }
    n = snprintf(head, sizeof(head),
                 "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 status, reason, type, len);
    write_all(fd, head, n);
    write_all(fd, body, len);
}

static void
write_all(int fd, const char *p, size_t len)
{
    ssize_t n;

    while (len > 0) {
        n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;             /* the client went away: nothing to do */
        }
        p += n;
        len -= n;
    }
}
