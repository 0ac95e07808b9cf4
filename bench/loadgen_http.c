/*
 * fg-loadgen's connections: keep-alive HTTP/1.1 on one epoll loop, the
 * requests it writes (orders, a shopper's polls and retries, --poll-file's
 * polls), when each may go (closed and open loop), and the answers read
 * back, each timed to the kernel's receive stamp (loadgen.c says why).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"


static void log_response(int status, const char *resp, size_t len,
    uint64_t us, uint64_t wire_us);
static void keep_ticket(const char *resp, size_t len);

/*
 * read() that also keeps the kernel's receive time of what it read in
 * c->rx_at (SO_TIMESTAMPNS: for TCP, the stamp of the last segment read)
 */
static ssize_t
read_stamped(conn_t *c, char *buf, size_t len)
{
    ssize_t          n;
    struct iovec     iov = { buf, len };
    struct msghdr    msg;
    struct cmsghdr  *cm;
    struct timespec  ts;
    union {
        char            buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr  align;
    } ctl;

    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);

    n = recvmsg(c->fd, &msg, 0);
    if (n <= 0) {
        return n;
    }
    c->rx_at = 0;
    for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            c->rx_at = (uint64_t) ((int64_t) ts.tv_sec * 1000000
                                   + ts.tv_nsec / 1000 - real_minus_mono);
        }
    }
    return n;
}

/* when the answer read at `now` arrived: the kernel's stamp when it is
 * one (after the request went out, not after now), else now */
static uint64_t
arrived_at(conn_t *c, uint64_t now)
{
    if (c->rx_at && c->rx_at <= now && c->rx_at >= c->written_at) {
        series_push(&lag, now - c->rx_at);
        return c->rx_at;
    }
    return now;
}

static void
record(int status, uint64_t us)
{
    if (status <= 0 || status >= MAX_STATUS) {
        /* not an HTTP status line: an error, not an answer */
        errors++;
        return;
    }
    series_push(&by_status[status], us);
    series_push(&all, us);
    if (opt.expect && !expected[status]) {
        unexpected++;
    }
}

/* --poll-file: the next ticket of the file, round robin */
void
next_file_ticket(const char **t, int *len)
{
    const char  *nl;

    for ( ;; ) {
        if (pf_next >= pf_end) {
            pf_next = pf_data;
        }
        nl = memchr(pf_next, '\n', pf_end - pf_next);
        if (nl == NULL) {
            nl = pf_end;
        }
        *t = pf_next;
        *len = (int) (nl - pf_next);
        pf_next = nl + 1;
        if (*len > 0 && *len < TICKET_MAX) {
            return;
        }
    }
}

static void
build_request(conn_t *c)
{
    char         body[512], key[128], extra[TICKET_MAX + 64];
    const char  *t;
    long         n;
    long         u;
    int          blen, tlen;

    if (opt.poll_file) {
        next_file_ticket(&t, &tlen);
        c->polling = 0;
        c->out_len = snprintf(c->out, sizeof(c->out),
                              "GET %s?productId=%s HTTP/1.1\r\n"
                              "Host: %s\r\nX-Queue-Ticket: %.*s\r\n\r\n",
                              opt.path, opt.product, opt.hosts[c->target],
                              tlen, t);
        c->out_off = 0;
        return;
    }

    if (c->shopper == SHOPPER_WAITING) {
        c->polling = 1;
        c->out_len = snprintf(c->out, sizeof(c->out),
                              "GET %s?productId=%s HTTP/1.1\r\n"
                              "Host: %s\r\nX-Queue-Ticket: %s\r\n\r\n",
                              opt.queue, opt.product, opt.hosts[c->target],
                              c->ticket);
        c->out_off = 0;
        return;
    }
    c->polling = 0;
    extra[0] = '\0';
    if (c->shopper == SHOPPER_ADMITTED) {
        /* the same shopper, order and key as before the queue */
        n = c->user;
        snprintf(extra, sizeof(extra), "X-Queue-Ticket: %s\r\n",
                 c->ticket);
    } else if (c->shopper == SHOPPER_PROVING) {
        /* the same order again, with the work done */
        n = c->user;
        snprintf(extra, sizeof(extra), "X-Queue-Proof: %s.%.*s\r\n",
                 c->challenge, c->nonce_len, c->nonce);
    } else {
        if (opt.header) {
            /* --header: on every order (a proof a flood replays, say) */
            snprintf(extra, sizeof(extra), "%s\r\n", opt.header);
        }
        n = c->user = seq++;
        if (opt.queue) {
            memset(&c->tr, 0, sizeof(c->tr));
            c->tr.turn = -1;
        }
    }

    /* --same-key: one body for one key, or the gate answers 422 */
    u = opt.same_key ? 0 : opt.users > 0 ? n % opt.users : n;

    if (opt.body) {
        blen = snprintf(body, sizeof(body), "%s", opt.body);
    } else if (opt.products > 1 && !opt.same_key) {
        blen = snprintf(body, sizeof(body),
                        "{\"productId\":\"%s-%ld\",\"userId\":\"u-%s-%ld\","
                        "\"quantity\":%d}", opt.product, n % opt.products,
                        run_id, u, opt.quantity);
    } else {
        blen = snprintf(body, sizeof(body),
                        "{\"productId\":\"%s\",\"userId\":\"u-%s-%ld\","
                        "\"quantity\":%d}", opt.product, run_id, u,
                        opt.quantity);
    }

    if (opt.same_key) {
        snprintf(key, sizeof(key), "k-%s", run_id);
    } else {
        snprintf(key, sizeof(key), "k-%s-%ld", run_id, n);
    }

    c->out_len = snprintf(c->out, sizeof(c->out),
                          "POST %s HTTP/1.1\r\nHost: %s\r\n"
                          "Content-Type: application/json\r\n"
                          "X-Idempotency-Key: %s\r\n%s"
                          "Content-Length: %d\r\n\r\n%s",
                          opt.path, opt.hosts[c->target], key, extra, blen,
                          body);
    c->out_off = 0;
}

int
open_conn(conn_t *c, int ep)
{
    struct sockaddr_in  sa;
    struct epoll_event  ev;
    int                 one = 1;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("socket");
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(opt.ports[c->target]);
    inet_pton(AF_INET, opt.hosts[c->target], &sa.sin_addr);
    if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
        && errno != EINPROGRESS)
    {
        perror("connect");
        close(c->fd);
        return -1;
    }
    c->busy = 0;
    c->in_len = 0;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = c;
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

int
finished(void)
{
    if (opt.queue && opt.once) {
        /* each connection one shopper: until all are done */
        return shoppers_done >= opt.conns
               || (opt.duration > 0
                   && now_us() - t0 >= (uint64_t) (opt.duration * 1e6));
    }
    if (opt.total && sent >= opt.total) {
        return 1;
    }
    return opt.duration > 0 && !opt.total
           && now_us() - t0 >= (uint64_t) (opt.duration * 1e6);
}

/* open loop: when request number k falls due */
static uint64_t
due_at(long k)
{
    return t0 + (uint64_t) (k * 1e6 / opt.rate);
}

int
may_send(uint64_t now)
{
    if (finished()) {
        return 0;
    }
    if (opt.rate > 0 && due_at(sent) > now) {
        return 0;
    }
    return 1;
}

void
try_send(conn_t *c)
{
    ssize_t   n;
    uint64_t  now;

    if (!c->busy) {
        now = now_us();
        if (!may_send(now)) {
            return;
        }
        if (c->shopper == SHOPPER_WAITING && now < c->wake_at) {
            return;
        }
        if (c->shopper == SHOPPER_SOLVING || c->shopper == SHOPPER_DONE) {
            return;
        }
        build_request(c);
        c->busy = 1;
        c->written_at = now;
        if (opt.queue && c->tr.started == 0) {
            c->tr.started = now;
        }
        if (opt.rate > 0) {
            /* timed from when it was due, however late it goes out */
            c->sent_at = due_at(sent);
            if (now - c->sent_at > max_behind) {
                max_behind = now - c->sent_at;
            }
        } else {
            c->sent_at = now;
        }
        sent++;
    }
    while (c->out_off < c->out_len) {
        n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            return;    /* EAGAIN: EPOLLOUT comes back */
        }
        c->out_off += n;
    }
}

/*
 * returns the length of a complete response in c->in, 0 if incomplete;
 * *close says the server will close the connection after it
 */
static size_t
complete_response(conn_t *c, int *status, int *close)
{
    char    *hdr_end, *cl;
    size_t   hlen, blen = 0;

    c->in[c->in_len < BUF_SIZE ? c->in_len : BUF_SIZE - 1] = '\0';
    hdr_end = strstr(c->in, "\r\n\r\n");
    if (hdr_end == NULL) {
        return 0;
    }
    hlen = hdr_end + 4 - c->in;
    *status = atoi(c->in + 9);
    cl = strcasestr(c->in, "\r\nConnection: close");
    *close = (cl != NULL && cl < hdr_end);
    cl = strcasestr(c->in, "\r\nContent-Length:");
    if (cl && cl < hdr_end) {
        blen = strtoul(cl + 17, NULL, 10);
    }
    if (c->in_len < hlen + blen) {
        return 0;
    }
    return hlen + blen;
}

void
on_readable(conn_t *c, int ep)
{
    ssize_t  n;
    size_t   len;
    int      status, close_after;

    for ( ;; ) {
        n = read_stamped(c, c->in + c->in_len, BUF_SIZE - 1 - c->in_len);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            /* server closed: count an outstanding request as an error */
            if (c->busy) {
                errors++;
                done++;
                if (log_file && opt.log_errors) {
                    fprintf(log_file, "0 - %s - %.1f\n",
                            n == 0 ? "closed" : strerrorname_np(errno),
                            (now_us() - t0) / 1000.0);
                }
            }
            /* refused, reset or closed with a request outstanding: the
             * gate is gone, the connection goes to the next one */
            if (n < 0 || c->busy) {
                c->target = (c->target + 1) % opt.targets;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            if (open_conn(c, ep) == 0) {
                try_send(c);
            }
            return;
        }
        if (n < 0) {
            return;
        }
        c->in_len += n;

        while ((len = complete_response(c, &status, &close_after)) > 0) {
            uint64_t  t = arrived_at(c, now_us());

            if (c->polling) {
                series_push(&polls, t - c->sent_at);
                on_poll(c, status, len, t);
            } else {
                record(status, t - c->sent_at);
                log_response(status, c->in, len, t - c->sent_at,
                             t - c->written_at);
                if (status == 200) {
                    last_200 = t - t0;
                }
                if (tickets_file && status == 302) {
                    keep_ticket(c->in, len);
                }
                if (opt.queue) {
                    on_order(c, status, len, t);
                }
            }
            done++;
            c->busy = 0;
            memmove(c->in, c->in + len, c->in_len - len);
            c->in_len -= len;
            if (close_after) {
                /* keepalive_requests reached: a new connection, no error */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                if (open_conn(c, ep) == 0 && (!opt.once || opt.queue)) {
                    try_send(c);
                }
                return;
            }
            if (!opt.once || opt.queue) {
                try_send(c);
            }
        }
    }
}

/* copies the string value of "name" in a JSON body, or "-" */
void
json_field(const char *body, size_t len, const char *name, char *out,
    size_t size)
{
    char         pat[64];
    const char  *p, *end;
    size_t       n;

    snprintf(pat, sizeof(pat), "\"%s\":\"", name);
    p = memmem(body, len, pat, strlen(pat));
    if (p == NULL) {
        snprintf(out, size, "-");
        return;
    }
    p += strlen(pat);
    end = memchr(p, '"', body + len - p);
    n = end ? (size_t) (end - p) : 0;
    if (n == 0 || n >= size) {
        snprintf(out, size, "-");
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

/* the body of a complete response of len bytes */
const char *
body_of(const char *resp, size_t len, size_t *blen)
{
    const char  *b = memmem(resp, len, "\r\n\r\n", 4);

    b = b ? b + 4 : resp + len;
    *blen = resp + len - b;
    return b;
}

/* --log: "<status> <orderId> <body status> <latency ms> <ms since start>
 * <wire ms>": the last from when the request was written to when its
 * answer arrived (the latency's start is the due time in open loop) */
static void
log_response(int status, const char *resp, size_t len, uint64_t us,
    uint64_t wire_us)
{
    const char  *body;
    size_t       blen;
    char         id[80], st[40];

    if (log_file == NULL) {
        return;
    }
    body = body_of(resp, len, &blen);
    json_field(body, blen, "orderId", id, sizeof(id));
    json_field(body, blen, "status", st, sizeof(st));
    fprintf(log_file, "%d %s %s %.3f %.1f %.3f\n", status, id, st,
            us / 1000.0, (now_us() - t0) / 1000.0, wire_us / 1000.0);
}

/* the value of "name" in a JSON body when it is a number or true/false */
const char *
json_raw(const char *body, size_t len, const char *name)
{
    char  pat[64];

    snprintf(pat, sizeof(pat), "\"%s\":", name);
    body = memmem(body, len, pat, strlen(pat));
    return body ? body + strlen(pat) : NULL;
}

/* --tickets-out: the ticket of a 302, one per line */
static void
keep_ticket(const char *resp, size_t len)
{
    const char  *b;
    size_t       blen;
    char         t[TICKET_MAX];

    b = body_of(resp, len, &blen);
    json_field(b, blen, "ticket", t, sizeof(t));
    if (strcmp(t, "-") != 0) {
        fprintf(tickets_file, "%s\n", t);
        tickets_written++;
    }
}
