/*
 * fg-loadgen: the HTTP client of the Flux-Gate benchmarks and crowd tests.
 *
 * wrk measures throughput well but cannot tell the latency of a 200 from the
 * latency of a 409, and cannot give every request its own user and
 * idempotency key without a Lua script that costs more than the request.
 * This client keeps C keep-alive connections on one epoll loop, sends
 * POST /order bodies with a distinct userId and X-Idempotency-Key per
 * request (or the same key everywhere with --same-key), and reports per
 * status: count, p50/p99/p99.9/max latency, and when the last 200 came.
 *
 *   fg-loadgen -u 127.0.0.1:8080 -c 200 -d 10 --product p1
 *   fg-loadgen -u 127.0.0.1:8080 -c 2000 -n 2000 --product p1 --once
 *   fg-loadgen ... -R 10000        open loop: 10,000 requests/s
 *   fg-loadgen ... --expect 200,409   any other answer fails the run
 *
 * Closed loop (no -R): each connection sends its next request when the
 * last one is answered; the throughput mode.  Latency is then timed from
 * the moment a request was written.
 *
 * Open loop (-R rate): request k is DUE at t0 + k / rate whatever happened
 * before, and its latency is timed from that due time, not from when a
 * free connection finally wrote it (as wrk2 does).  A gate that stalls
 * for 100 ms therefore shows the stall in every request that fell due
 * during it, instead of the one request that waited (coordinated
 * omission).  Requests due but never written when the run ends (more than
 * the last two milliseconds' worth) are counted as "unsent" and fail the
 * run: the offered rate was not offered.
 *
 * An answer is timed to when it ARRIVED, not to when this process read
 * it: each socket has SO_TIMESTAMPNS on, and the kernel's receive time of
 * the response's last bytes ends its latency.  On a box the client
 * shares with the stack, the client is one more process waiting for a
 * core; a reply that sits 100 ms in the socket while the client waits is
 * the client's delay, not the gate's (measured on 2 cores against the
 * wire: client-side p99 116-132 ms, wire p99 22-32 ms, in the same runs).
 * How long answers waited to be read is reported as client_lag_* so the
 * instrument's own error is on the page.  In open loop the client also
 * asks for SCHED_FIFO (root or CAP_SYS_NICE), so that it WRITES each
 * request when due and is not itself the cause of a late send; sched=
 * says whether it got it.  The load is bounded by the rate, so a
 * real-time client cannot take the cores from the server; a closed-loop
 * client would, and keeps the normal policy.
 *
 * Errors (the server closed a connection with a request outstanding, a
 * response never came, an unparsable answer) and answers whose status is
 * not in --expect are counted; either makes the run exit non-zero with a
 * line on stderr saying so (rc 3).  Without --expect every status is
 * accepted (and still counted per status).
 *
 *   fg-loadgen -u 127.0.0.1:8080 -u 127.0.0.1:8090 ...
 *                                  a load balancer's view of a fleet: the
 *                                  connections spread over the gates, and
 *                                  one that fails moves to the next gate
 *
 * Output is one "key=value" line per status, easy to read from Perl and sh;
 * the total line's started_at_ms is the wall-clock time (Unix ms) the
 * log's "ms since the start" count from, so a test can place a fault it
 * injected on the same time line;
 * --log FILE writes "<status> <orderId> <body status> <latency ms> <ms
 * since the start>" per response; with --log-errors also
 * "0 - <what> - <ms since the start>" per request that got no answer (the
 * connection failed with it outstanding).
 *
 *   fg-loadgen ... --queue /queue/status
 *                                  a crowd that follows the waiting room
 *                                  (closed loop only): a connection is a
 *                                  shopper, who does what the shipped page
 *                                  does with each 302 of its order (the
 *                                  body says which):
 *                                    "challenge": finds n such that
 *                                    SHA-256(C "." n) has the asked number
 *                                    of leading zero bits (OpenSSL, in
 *                                    slices between the other shoppers'
 *                                    I/O, as a page's worker does), then
 *                                    sends the same order again, same key
 *                                    and body, with X-Queue-Proof: C.n;
 *                                    "queued" and "prequeue": keeps the
 *                                    ticket and polls the status path with
 *                                    it in X-Queue-Ticket (at once, then
 *                                    every max(1, eta/4) s up to 5 s,
 *                                    spread by up to half again, never
 *                                    before Retry-After);
 *                                  when admitted it sends the same order
 *                                  again with X-Queue-Ticket.  Polls are
 *                                  counted apart ("queue ..." line), not
 *                                  as answers to orders.  With --once each
 *                                  connection is one shopper, who stops
 *                                  once bought or told no; the run ends
 *                                  when all have (or -d passes).
 *
 *                                  Admission order: a ticket's turn is in
 *                                  its own payload (kind q: its seq); a
 *                                  shopper notes when it last sent a poll
 *                                  that was answered "waiting" and when an
 *                                  answer "admitted" arrived.  A ticket is
 *                                  out of order when a ticket of a later
 *                                  turn was seen admitted before this one's
 *                                  last "waiting" poll was even sent: the
 *                                  gate let someone in ahead of it, whatever
 *                                  the polls' timing (out_of_order=).
 *                                  --track FILE writes one line per ticket:
 *                                  "<turn> <kind> <started> <booked> <last
 *                                  waiting sent> <admitted seen> <bought>
 *                                  <challenges> <hashes> <solve ms>
 *                                  <status>" (times: ms since the start,
 *                                  -1: never).
 *
 *   fg-loadgen ... --queue /queue/status --watch FILE --once
 *                                  follows the tickets of FILE (one per
 *                                  line; connection i the i-th) until each
 *                                  is seen admitted, without ordering:
 *                                  admission order measured on tickets
 *                                  booked elsewhere.  --poll-min S polls a
 *                                  ticket every max(S, eta/4) s and pays
 *                                  no heed to Retry-After: a measuring
 *                                  instrument, not a page.
 *
 *   fg-loadgen ... --tickets-out FILE
 *                                  (no --queue) writes the ticket of each
 *                                  302 that carries one, one per line: a
 *                                  line booked at full speed.
 *
 *   fg-loadgen ... --header 'X-Queue-Proof: ...'
 *                                  one more header on every new order
 *
 *   fg-loadgen ... -p /queue/status --poll-file FILE
 *                                  every request is GET <path>?productId=
 *                                  <product> with X-Queue-Ticket: the next
 *                                  line of FILE (round robin over the
 *                                  file, mapped, not read into memory;
 *                                  --poll-from B: from the line after byte
 *                                  B, to go on where another run stopped);
 *                                  answers counted as any others.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* SHA256_Init() and friends: the prefix of a challenge is hashed once */
#define OPENSSL_API_COMPAT 0x10100000L
#include <openssl/sha.h>

#define MAX_STATUS  600
#define BUF_SIZE    8192
#define MAX_TARGETS 16

/* --queue: where a shopper is */
enum {
    SHOPPER_NEW = 0,          /* the next request is a new shopper's order */
    SHOPPER_WAITING,          /* queued: polls when wake_at comes */
    SHOPPER_ADMITTED,         /* sends its order again with its ticket */
    SHOPPER_SOLVING,          /* challenged: looking for n */
    SHOPPER_PROVING,          /* sends its order again with its proof */
    SHOPPER_DONE              /* --once: bought, or told no */
};

#define TICKET_MAX  512
#define POLL_MAX_S  5         /* as conf/waiting-room/waiting-room.js */

/* hashes per look at the sockets, shared by every solving shopper (about
 * a millisecond's worth), and per shopper in one turn */
#define SOLVE_BUDGET  4096
#define SOLVE_SLICE   1024

/* what became of a shopper's ticket, for --track and out_of_order= */
typedef struct {
    int64_t    turn;          /* -1: unknown (a pre-queue place) */
    char       kind;
    int        status;        /* the last answer to its order */
    uint64_t   started;       /* its first request written */
    uint64_t   booked;        /* the 302 with its ticket arrived */
    uint64_t   last_wait;     /* the last request answered "waiting" was
                               * written */
    uint64_t   admitted;      /* the first "admitted" answer arrived */
    uint64_t   bought;        /* its 200 arrived */
    uint64_t   solve_us;      /* from a challenge to its proof found */
    uint64_t   hashes;
    uint32_t   challenges;
} track_t;

typedef struct {
    int        fd;
    int        busy;          /* a request is outstanding */
    int        polling;       /* the outstanding request is a status poll */
    int        shopper;       /* SHOPPER_* */
    long       user;          /* the shopper's number: userId and key */
    uint64_t   wake_at;       /* SHOPPER_WAITING: when to poll */
    int        failures;      /* polls in a row that got no status */
    char       ticket[TICKET_MAX];
    char       challenge[TICKET_MAX];
    int        bits;          /* SHOPPER_SOLVING: zero bits asked */
    char       nonce[24];     /* n, decimal: the next to try */
    int        nonce_len;
    uint64_t   solve_from;    /* when the challenge came */
    SHA256_CTX prefix;        /* "<challenge>." hashed */
    track_t    tr;
    int        target;        /* index into opt.hosts / opt.ports */
    size_t     out_len, out_off;
    char       out[2048];
    size_t     in_len;
    char       in[BUF_SIZE];
    uint64_t   sent_at;       /* when it was due (open loop) or written */
    uint64_t   written_at;    /* when its first byte was written */
    uint64_t   rx_at;         /* the kernel's receive time of the bytes
                               * read last (CLOCK_MONOTONIC us), 0: none */
} conn_t;

typedef struct {
    uint64_t  *lat;           /* microseconds */
    size_t     n, cap;
} series_t;

static struct {
    const char  *host;
    int          port;
    const char  *hosts[MAX_TARGETS];
    int          ports[MAX_TARGETS];
    int          targets;
    int          log_errors;
    const char  *path;
    const char  *product;
    int          products;
    long         users;
    const char  *run;
    int          conns;
    double       duration;
    long         total;
    double       rate;
    int          quantity;
    int          same_key;
    int          once;
    const char  *body;
    const char  *log;
    const char  *expect;
    const char  *queue;
    const char  *track;
    const char  *watch;
    const char  *tickets_out;
    const char  *poll_file;
    const char  *header;
    long         poll_from;
    double       poll_min;
} opt = { "127.0.0.1", 8080, { NULL }, { 0 }, 0, 0, "/order", "p1", 1, 0,
          "r", 50, 5, 0, 0, 1, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, 0, 0 };

static FILE      *log_file;
static series_t   by_status[MAX_STATUS];
static series_t   all;            /* every answer, whatever its status */
static char       expected[MAX_STATUS];
static long       seq, sent, done, errors, unexpected, unsent;
static uint64_t   t0, last_200, max_behind, last_event;
static series_t   polls;          /* --queue: the status polls' latency */
static series_t   lag;            /* answers' wait in the socket for us */
static int64_t    real_minus_mono;    /* us: kernel stamps -> monotonic */
static const char *sched_policy = "other";
static long       queued, admitted, queue_sold_out, queue_lost;
static long       challenged, proofs, prequeued, requeued, shoppers_done;
static char       run_id[64];
static track_t   *tracks;         /* --queue: every ticket's story */
static size_t     ntracks, tracks_cap;
static FILE      *tickets_file;   /* --tickets-out */
static long       tickets_written;
static const char *pf_data, *pf_end, *pf_next;   /* --poll-file, mapped */
static long       pf_lines;

static void push(series_t *s, uint64_t us);
static void log_response(int status, const char *resp, size_t len,
    uint64_t us, uint64_t wire_us);
static void on_order(conn_t *c, int status, size_t len, uint64_t now);
static void on_poll(conn_t *c, int status, size_t len, uint64_t now);
static void shopper_end(conn_t *c, int status);
static int cmp_u64(const void *a, const void *b);
static void keep_ticket(const char *resp, size_t len);

static uint64_t
now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC now, in us: the kernel stamps packets
 * with the first, the schedule runs on the second */
static int64_t
clock_offset_us(void)
{
    struct timespec  r, m;

    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &r);
    return ((int64_t) r.tv_sec - m.tv_sec) * 1000000
           + (r.tv_nsec - m.tv_nsec) / 1000;
}

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
        push(&lag, now - c->rx_at);
        return c->rx_at;
    }
    return now;
}

static void
push(series_t *s, uint64_t us)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->lat = realloc(s->lat, s->cap * sizeof(uint64_t));
        if (s->lat == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    s->lat[s->n++] = us;
}

static void
record(int status, uint64_t us)
{
    if (status <= 0 || status >= MAX_STATUS) {
        /* not an HTTP status line: an error, not an answer */
        errors++;
        return;
    }
    push(&by_status[status], us);
    push(&all, us);
    if (opt.expect && !expected[status]) {
        unexpected++;
    }
}

/* --poll-file: the next ticket of the file, round robin */
static void
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

static int
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

static int
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

static int
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

static void
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

static void
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
                push(&polls, t - c->sent_at);
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
static void
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
static const char *
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
static const char *
json_raw(const char *body, size_t len, const char *name)
{
    char  pat[64];

    snprintf(pat, sizeof(pat), "\"%s\":", name);
    body = memmem(body, len, pat, strlen(pat));
    return body ? body + strlen(pat) : NULL;
}

/* Retry-After of the response in c->in, in seconds, 0 if none */
static double
retry_after(conn_t *c)
{
    const char  *h = strcasestr(c->in, "\r\nRetry-After:");
    const char  *end = strstr(c->in, "\r\n\r\n");

    return h && end && h < end ? atof(h + 15) : 0;
}

/* as the waiting-room page: never sooner than asked, spread by up to
 * half again so shoppers that arrived together do not poll together */
static void
poll_later(conn_t *c, double seconds, double floor, uint64_t now)
{
    double  s = seconds > floor ? seconds : floor;

    if (s < 0.5) {
        s = 0.5;
    }
    s *= 1 + (double) rand() / RAND_MAX * 0.5;
    c->shopper = SHOPPER_WAITING;
    c->wake_at = now + (uint64_t) (s * 1e6);
}

/* a ticket's kind and turn, from its own payload: base64url of
 * "product|buyer|epoch|kind|seq|expires"; a pre-queue place's turn is
 * the opening's secret (-1) */
static void
ticket_turn(const char *t, char *kind, int64_t *turn)
{
    static const char  b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                               "0123456789-_";
    char         payload[TICKET_MAX], *f[6], *save = NULL;
    const char  *p, *dot = strchr(t, '.');
    uint32_t     acc = 0;
    int          bits = 0, i;
    size_t       n = 0;

    *kind = '?';
    *turn = -1;
    for (p = t; dot && p < dot && n < sizeof(payload) - 1; p++) {
        const char  *v = memchr(b64, *p, 64);

        if (v == NULL) {
            return;
        }
        acc = (acc << 6) | (uint32_t) (v - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            payload[n++] = (char) (acc >> bits);
        }
    }
    payload[n] = '\0';
    for (i = 0; i < 6; i++) {
        f[i] = strtok_r(i ? NULL : payload, "|", &save);
        if (f[i] == NULL) {
            return;
        }
    }
    *kind = f[3][0];
    if (*kind == 'q') {
        *turn = atoll(f[4]);
    }
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

static void
push_track(track_t *t)
{
    if (ntracks == tracks_cap) {
        tracks_cap = tracks_cap ? tracks_cap * 2 : 1024;
        tracks = realloc(tracks, tracks_cap * sizeof(track_t));
        if (tracks == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    tracks[ntracks++] = *t;
}

/* the shopper leaves (status: its last order's answer, 0: a lost
 * ticket, -1: the run ended first); --once: it is done */
static void
shopper_end(conn_t *c, int status)
{
    if (c->tr.started || c->tr.booked) {
        c->tr.status = status;
        push_track(&c->tr);
    }
    memset(&c->tr, 0, sizeof(c->tr));
    c->tr.turn = -1;
    if (opt.once) {
        c->shopper = SHOPPER_DONE;
        shoppers_done++;
    } else {
        c->shopper = SHOPPER_NEW;
    }
}

/* a ticket came (booked, or held already): keep it, poll at once */
static void
take_ticket(conn_t *c, const char *ticket, uint64_t now)
{
    if (strcmp(c->ticket, ticket) != 0 || !c->tr.booked) {
        snprintf(c->ticket, sizeof(c->ticket), "%s", ticket);
        ticket_turn(c->ticket, &c->tr.kind, &c->tr.turn);
        if (!c->tr.booked) {
            c->tr.booked = now;
        }
    }
    /* it was waiting when that order was sent */
    c->tr.last_wait = c->written_at;
    c->failures = 0;
    /* the page polls as soon as it opens */
    c->shopper = SHOPPER_WAITING;
    c->wake_at = now;
}

/* --queue: the answer to an order */
static void
on_order(conn_t *c, int status, size_t len, uint64_t now)
{
    const char  *b, *v;
    size_t       blen;
    char         st[32], text[TICKET_MAX];

    c->tr.status = status;
    if (status == 200) {
        c->tr.bought = now;
        shopper_end(c, status);
        return;
    }
    if (status != 302) {
        /* sold out, refused, or an error: the shopper goes */
        shopper_end(c, status);
        return;
    }
    b = body_of(c->in, len, &blen);
    json_field(b, blen, "status", st, sizeof(st));

    if (strcmp(st, "challenge") == 0) {
        json_field(b, blen, "challenge", text, sizeof(text));
        v = json_raw(b, blen, "bits");
        if (strcmp(text, "-") == 0 || v == NULL) {
            shopper_end(c, status);
            return;
        }
        challenged++;
        c->tr.challenges++;
        snprintf(c->challenge, sizeof(c->challenge), "%s", text);
        c->bits = atoi(v);
        c->nonce[0] = '0';
        c->nonce_len = 1;
        c->solve_from = now;
        SHA256_Init(&c->prefix);
        SHA256_Update(&c->prefix, c->challenge, strlen(c->challenge));
        SHA256_Update(&c->prefix, ".", 1);
        c->shopper = SHOPPER_SOLVING;
        return;
    }

    json_field(b, blen, "ticket", text, sizeof(text));
    if (strcmp(text, "-") == 0) {
        /* a plain 302: no line to wait in */
        shopper_end(c, status);
        return;
    }
    if (c->shopper == SHOPPER_ADMITTED) {
        /* the gate's record ran ahead of Redis: not yet after all */
        requeued++;
    } else {
        queued++;
        if (strcmp(st, "prequeue") == 0) {
            prequeued++;
        }
    }
    take_ticket(c, text, now);
}

/* n + 1, in decimal, in place */
static void
nonce_next(conn_t *c)
{
    int  i;

    for (i = c->nonce_len - 1; i >= 0; i--) {
        if (c->nonce[i] != '9') {
            c->nonce[i]++;
            return;
        }
        c->nonce[i] = '0';
    }
    memmove(c->nonce + 1, c->nonce, c->nonce_len);
    c->nonce[0] = '1';
    c->nonce_len++;
}

static int
zero_bits(const unsigned char *md)
{
    int            n = 0, i;
    unsigned char  b;

    for (i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        if (md[i] == 0) {
            n += 8;
            continue;
        }
        for (b = md[i]; !(b & 0x80); b <<= 1) {
            n++;
        }
        break;
    }
    return n;
}

/* up to `slice` tries of one shopper's challenge; 1 when solved */
static int
solve_slice(conn_t *c, int slice)
{
    SHA256_CTX     x;
    unsigned char  md[SHA256_DIGEST_LENGTH];
    int            i;

    for (i = 0; i < slice; i++) {
        x = c->prefix;
        SHA256_Update(&x, c->nonce, c->nonce_len);
        SHA256_Final(md, &x);
        c->tr.hashes++;
        if (zero_bits(md) >= c->bits) {
            return 1;
        }
        nonce_next(c);
    }
    return 0;
}

/* the solving shoppers' share of this turn of the loop; returns how many
 * still solve */
static int
solve_some(conn_t *conns)
{
    static int  next;
    int         i, k, budget = SOLVE_BUDGET, solving = 0;
    uint64_t    now;

    for (k = 0; k < opt.conns && budget > 0; k++) {
        conn_t  *c = &conns[(next + k) % opt.conns];

        if (c->shopper != SHOPPER_SOLVING) {
            continue;
        }
        budget -= SOLVE_SLICE;
        if (solve_slice(c, SOLVE_SLICE)) {
            now = now_us();
            proofs++;
            c->tr.solve_us += now - c->solve_from;
            c->shopper = SHOPPER_PROVING;
            try_send(c);
        }
    }
    next = (next + k) % opt.conns;
    for (i = 0; i < opt.conns; i++) {
        solving += conns[i].shopper == SHOPPER_SOLVING;
    }
    return solving;
}

/* --queue: the answer to a status poll */
static void
on_poll(conn_t *c, int status, size_t len, uint64_t now)
{
    const char  *b, *v;
    size_t       blen;
    double       ra = retry_after(c), eta, wait;

    if (opt.poll_min > 0) {
        ra = 0;     /* an instrument: its own schedule */
    }
    if (status == 400) {
        /* the gate no longer knows the ticket: the shopper leaves */
        queue_lost++;
        shopper_end(c, 0);
        return;
    }
    if (status != 200) {
        c->failures++;
        poll_later(c, ra > 0 ? ra : c->failures < POLL_MAX_S
                   ? c->failures : POLL_MAX_S, ra, now);
        return;
    }
    c->failures = 0;
    b = body_of(c->in, len, &blen);
    v = json_raw(b, blen, "soldOut");
    if (v && strncmp(v, "true", 4) == 0) {
        queue_sold_out++;
        shopper_end(c, 409);
        return;
    }
    v = json_raw(b, blen, "admitted");
    if (v && strncmp(v, "true", 4) == 0) {
        admitted++;
        if (c->tr.admitted == 0) {
            c->tr.admitted = now;
        }
        if (opt.watch) {
            /* watching only: seen admitted is the end */
            shopper_end(c, 200);
            return;
        }
        c->shopper = SHOPPER_ADMITTED;
        return;
    }
    c->tr.last_wait = c->written_at;
    v = json_raw(b, blen, "etaSeconds");
    eta = v ? atof(v) : 0;
    wait = eta / 4 > 1 ? eta / 4 : 1;
    if (opt.poll_min > 0) {
        wait = eta / 4 > opt.poll_min ? eta / 4 : opt.poll_min;
    }
    poll_later(c, wait < POLL_MAX_S ? wait : POLL_MAX_S, ra, now);
}

/*
 * Tickets of a later turn seen admitted before a ticket's last "waiting"
 * poll was sent: that ticket was overtaken.  Sorted by turn, swept from
 * the last turn down with the earliest admission seen behind.
 */
static int
cmp_turn(const void *a, const void *b)
{
    int64_t  x = ((const track_t *) a)->turn, y = ((const track_t *) b)->turn;

    return x < y ? -1 : x > y;
}

static long
out_of_order(long *known, double *rate, double *worst_ms)
{
    size_t    i, n = 0;
    track_t  *t = malloc((ntracks + 1) * sizeof(track_t));
    uint64_t  min_adm = UINT64_MAX;
    long      bad = 0;
    size_t    first = SIZE_MAX, last = 0;

    *rate = 0;
    *worst_ms = 0;
    *known = 0;
    if (t == NULL) {
        return -1;
    }
    for (i = 0; i < ntracks; i++) {
        if (tracks[i].turn >= 0) {
            t[n++] = tracks[i];
        }
    }
    *known = (long) n;
    qsort(t, n, sizeof(track_t), cmp_turn);
    for (i = n; i-- > 0; ) {
        if (min_adm < t[i].last_wait) {
            bad++;
            if ((t[i].last_wait - min_adm) / 1000.0 > *worst_ms) {
                *worst_ms = (t[i].last_wait - min_adm) / 1000.0;
            }
        }
        if (t[i].admitted && t[i].admitted < min_adm) {
            min_adm = t[i].admitted;
        }
    }
    /* the pace of admission as the polls saw it: first and last turns
     * seen admitted */
    for (i = 0; i < n; i++) {
        if (t[i].admitted) {
            if (first == SIZE_MAX) {
                first = i;
            }
            last = i;
        }
    }
    if (first != SIZE_MAX && last > first
        && t[last].admitted > t[first].admitted)
    {
        *rate = (t[last].turn - t[first].turn) * 1e6
                / (double) (t[last].admitted - t[first].admitted);
    }
    free(t);
    return bad;
}

static double
ms_since(uint64_t at)
{
    return at ? (double) (at - t0) / 1000.0 : -1;
}

/* --track: one line per ticket */
static void
write_tracks(void)
{
    FILE    *f = fopen(opt.track, "w");
    size_t   i;

    if (f == NULL) {
        perror(opt.track);
        return;
    }
    for (i = 0; i < ntracks; i++) {
        track_t  *t = &tracks[i];

        fprintf(f, "%lld %c %.1f %.1f %.1f %.1f %.1f %u %llu %.1f %d\n",
                (long long) t->turn, t->kind ? t->kind : '?',
                ms_since(t->started), ms_since(t->booked),
                ms_since(t->last_wait), ms_since(t->admitted),
                ms_since(t->bought), t->challenges,
                (unsigned long long) t->hashes, t->solve_us / 1000.0,
                t->status);
    }
    fclose(f);
}

/* p-th percentile of the ms between two of a track's times */
static double
track_pct(size_t off_from, size_t off_to, double p, long *count)
{
    series_t  s = { NULL, 0, 0 };
    size_t    i;
    double    v = -1;

    for (i = 0; i < ntracks; i++) {
        uint64_t  a = *(uint64_t *) ((char *) &tracks[i] + off_from);
        uint64_t  b = *(uint64_t *) ((char *) &tracks[i] + off_to);

        if (a && b && b >= a) {
            push(&s, b - a);
        }
    }
    *count = (long) s.n;
    if (s.n) {
        qsort(s.lat, s.n, sizeof(uint64_t), cmp_u64);
        v = s.lat[(size_t) (p * (s.n - 1) + 0.5)] / 1000.0;
    }
    free(s.lat);
    return v;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}

static double
pct(series_t *s, double p)
{
    size_t  i = (size_t) (p * (s->n - 1) + 0.5);

    return s->lat[i] / 1000.0;
}

static void
usage(int rc)
{
    fprintf(rc ? stderr : stdout,
        "usage: fg-loadgen [-u host:port ...] [-p path] [-c conns] [-d secs]\n"
        "                  [-n total] [-R rate] [--product id]\n"
        "                  [--products N] [--users N] [--quantity N] [--same-key]\n"
        "                  [--once] [--body json] [--run id] [--log file]\n"
        "                  [--expect 200,409,...] [--log-errors]\n"
        "                  [--queue /queue/status [--track file] [--watch file]\n"
        "                  [--poll-min secs]] [--tickets-out file]\n"
        "                  [--poll-file file [--poll-from byte]]\n"
        "                  [--header 'Name: value']\n"
        "  -R rate: open loop, latency from each request's due time\n");
    exit(rc);
}

int
main(int argc, char **argv)
{
    static struct option  longopts[] = {
        { "product", required_argument, NULL, 'P' },
        { "products", required_argument, NULL, 'N' },
        { "quantity", required_argument, NULL, 'q' },
        { "users", required_argument, NULL, 'U' },
        { "same-key", no_argument, NULL, 'K' },
        { "once", no_argument, NULL, 'O' },
        { "body", required_argument, NULL, 'B' },
        { "run", required_argument, NULL, 'r' },
        { "log", required_argument, NULL, 'L' },
        { "expect", required_argument, NULL, 'E' },
        { "log-errors", no_argument, NULL, 'X' },
        { "queue", required_argument, NULL, 'Q' },
        { "track", required_argument, NULL, 'T' },
        { "watch", required_argument, NULL, 'W' },
        { "poll-min", required_argument, NULL, 'M' },
        { "tickets-out", required_argument, NULL, 'o' },
        { "poll-file", required_argument, NULL, 'F' },
        { "poll-from", required_argument, NULL, 'S' },
        { "header", required_argument, NULL, 'H' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct epoll_event    evs[256];
    struct rlimit         rl;
    conn_t               *conns;
    char                 *colon;
    double                secs;
    long                  total_ok = 0;
    int                   ch, ep, i, n, s;

    while ((ch = getopt_long(argc, argv, "u:p:c:d:n:R:h", longopts, NULL))
           != -1)
    {
        switch (ch) {
        case 'u':
            if (opt.targets == MAX_TARGETS) {
                usage(2);
            }
            opt.host = strdup(optarg);
            colon = strchr(opt.host, ':');
            if (colon) {
                *colon = '\0';
                opt.port = atoi(colon + 1);
            }
            opt.hosts[opt.targets] = opt.host;
            opt.ports[opt.targets++] = opt.port;
            break;
        case 'p': opt.path = optarg; break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'n': opt.total = atol(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'P': opt.product = optarg; break;
        case 'N': opt.products = atoi(optarg); break;
        case 'q': opt.quantity = atoi(optarg); break;
        case 'U': opt.users = atol(optarg); break;
        case 'K': opt.same_key = 1; break;
        case 'O': opt.once = 1; break;
        case 'B': opt.body = optarg; break;
        case 'r': opt.run = optarg; break;
        case 'L': opt.log = optarg; break;
        case 'E': opt.expect = optarg; break;
        case 'X': opt.log_errors = 1; break;
        case 'Q': opt.queue = optarg; break;
        case 'T': opt.track = optarg; break;
        case 'W': opt.watch = optarg; break;
        case 'M': opt.poll_min = atof(optarg); break;
        case 'o': opt.tickets_out = optarg; break;
        case 'F': opt.poll_file = optarg; break;
        case 'S': opt.poll_from = atol(optarg); break;
        case 'H': opt.header = optarg; break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (opt.targets == 0) {
        opt.hosts[0] = opt.host;
        opt.ports[0] = opt.port;
        opt.targets = 1;
    }
    for (i = 0; i < opt.targets; i++) {
        if (opt.ports[i] < 1) {
            usage(2);
        }
    }
    if (opt.conns < 1) {
        usage(2);
    }
    if (opt.queue && (opt.rate > 0 || opt.total || opt.same_key)) {
        fprintf(stderr, "fg-loadgen: --queue follows shoppers in a closed "
                "loop: not with -R, -n or --same-key\n");
        return 2;
    }
    if ((opt.watch || opt.track || opt.poll_min > 0) && !opt.queue) {
        fprintf(stderr, "fg-loadgen: --watch, --track and --poll-min "
                "follow shoppers: with --queue only\n");
        return 2;
    }
    if (opt.watch && !opt.once) {
        fprintf(stderr, "fg-loadgen: --watch follows each ticket once: "
                "with --once\n");
        return 2;
    }
    if (opt.poll_file && (opt.queue || opt.tickets_out)) {
        fprintf(stderr, "fg-loadgen: --poll-file polls, it does not "
                "shop: not with --queue or --tickets-out\n");
        return 2;
    }
    if (opt.poll_file || opt.watch) {
        const char  *name = opt.poll_file ? opt.poll_file : opt.watch;
        struct stat  st;
        int          fd = open(name, O_RDONLY);

        if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
            fprintf(stderr, "fg-loadgen: %s: %s\n", name,
                    fd < 0 ? strerror(errno) : "empty");
            return 2;
        }
        pf_data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (pf_data == MAP_FAILED) {
            perror("mmap");
            return 2;
        }
        pf_end = pf_data + st.st_size;
        pf_next = pf_data;
        if (opt.poll_from > 0 && opt.poll_from < st.st_size) {
            /* --poll-from: the line after that byte, where a run before
             * this one stopped */
            const char  *nl = memchr(pf_data + opt.poll_from - 1, '\n',
                                     pf_end - (pf_data + opt.poll_from - 1));

            pf_next = nl && nl + 1 < pf_end ? nl + 1 : pf_data;
        }
        for (const char *q = pf_data; q < pf_end; q++) {
            pf_lines += *q == '\n';
        }
        if (pf_end[-1] != '\n') {
            pf_lines++;
        }
        if (opt.watch && opt.conns > pf_lines) {
            fprintf(stderr, "fg-loadgen: --watch: %d connections, %ld "
                    "tickets in %s\n", opt.conns, pf_lines, name);
            return 2;
        }
    }
    if (opt.tickets_out) {
        tickets_file = fopen(opt.tickets_out, "w");
        if (tickets_file == NULL) {
            perror(opt.tickets_out);
            return 2;
        }
        setvbuf(tickets_file, NULL, _IOFBF, 1 << 20);
    }
    /* a gate killed under us: write() to its socket fails, not kills */
    signal(SIGPIPE, SIG_IGN);
    if (opt.once && !opt.total && !opt.queue) {
        opt.total = opt.conns;
    }
    if (opt.expect) {
        char  *list = strdup(opt.expect), *tok, *save = NULL;

        for (tok = strtok_r(list, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save))
        {
            s = atoi(tok);
            if (s < 100 || s >= MAX_STATUS) {
                fprintf(stderr, "fg-loadgen: --expect: bad status \"%s\"\n",
                        tok);
                return 2;
            }
            expected[s] = 1;
        }
        free(list);
    }

    /* a server that resets a connection is an error counted, not a kill */
    signal(SIGPIPE, SIG_IGN);

    if (opt.log) {
        log_file = fopen(opt.log, "w");
        if (log_file == NULL) {
            perror(opt.log);
            return 2;
        }
    }

    snprintf(run_id, sizeof(run_id), "%s%ld", opt.run, (long) getpid());

    if (opt.rate > 0) {
        struct sched_param  sp = { .sched_priority = 10 };

        if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) {
            sched_policy = "fifo";
        } else {
            fprintf(stderr, "fg-loadgen: SCHED_FIFO refused (%s): waits of "
                    "this client for a core can make requests late\n",
                    strerror(errno));
        }
    }
    real_minus_mono = clock_offset_us();

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0
        && rl.rlim_cur < (rlim_t) opt.conns + 64)
    {
        rl.rlim_cur = opt.conns + 64;
        if (rl.rlim_max < rl.rlim_cur) {
            rl.rlim_max = rl.rlim_cur;   /* root only; fails loudly below */
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("fg-loadgen: setrlimit(RLIMIT_NOFILE)");
        }
    }

    conns = calloc(opt.conns, sizeof(conn_t));
    ep = epoll_create1(0);
    if (conns == NULL || ep < 0) {
        perror("setup");
        return 1;
    }

    t0 = now_us();
    for (i = 0; i < opt.conns; i++) {
        conns[i].target = i % opt.targets;
        conns[i].tr.turn = -1;
        if (opt.watch) {
            const char  *t;
            int          len;

            /* a ticket booked elsewhere, first polled within a second */
            next_file_ticket(&t, &len);
            snprintf(conns[i].ticket, sizeof(conns[i].ticket), "%.*s", len,
                     t);
            ticket_turn(conns[i].ticket, &conns[i].tr.kind,
                        &conns[i].tr.turn);
            conns[i].tr.booked = t0;
            conns[i].shopper = SHOPPER_WAITING;
            conns[i].wake_at = t0 + (uint64_t) i * 1000000 / opt.conns;
        }
        if (open_conn(&conns[i], ep) != 0) {
            return 1;
        }
    }

    last_event = now_us();
    for ( ;; ) {
        int  solving = 0;

        if (finished() && done >= sent) {
            break;
        }
        if (opt.queue) {
            solving = solve_some(conns);
        }
        n = epoll_wait(ep, evs, 256, solving ? 0 : opt.rate > 0 ? 1
                                     : opt.queue ? 5 : 100);
        for (i = 0; i < n; i++) {
            conn_t  *c = evs[i].data.ptr;

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(c, ep);
            }
            if (evs[i].events & EPOLLOUT) {
                try_send(c);
            }
        }
        if (opt.rate > 0) {
            /* whatever fell due, on the free connections */
            for (i = 0; i < opt.conns && may_send(now_us()); i++) {
                if (!conns[i].busy) {
                    try_send(&conns[i]);
                }
            }
        } else if (n == 0 || opt.queue) {
            /* an idle connection, or a queued shopper whose poll is due */
            for (i = 0; i < opt.conns; i++) {
                if (!conns[i].busy
                    && !(opt.once && !opt.queue && sent >= opt.total))
                {
                    try_send(&conns[i]);
                }
            }
        }
        if (n > 0) {
            last_event = now_us();
        }
        /* a run of -n requests lasts as long as they take: it gives up
         * only when nothing came for 30 s; a timed run 30 s after its end */
        if ((opt.total && !opt.queue)
            ? sent > done && now_us() - last_event > 30000000
            : opt.duration > 0
              && now_us() - t0 > (uint64_t) ((opt.duration + 30) * 1e6))
        {
            fprintf(stderr, "fg-loadgen: %ld responses missing after "
                    "the run; giving up\n", sent - done);
            errors += sent - done;
            break;
        }
    }

    secs = (now_us() - t0) / 1e6;
    if (opt.rate > 0 && opt.duration > 0 && !opt.total) {
        /* due before the end but never written: the client fell behind */
        long  due = (long) (opt.duration * opt.rate);

        unsent = due > sent ? due - sent : 0;
        /* the loop wakes every millisecond: what fell due in the last
         * two of them is not the server's fault */
        if (unsent <= (long) (opt.rate * 0.002) + 1) {
            unsent = 0;
        }
    }
    total_ok = all.n;
    if (all.n) {
        qsort(all.lat, all.n, sizeof(uint64_t), cmp_u64);
    }
    if (lag.n) {
        qsort(lag.lat, lag.n, sizeof(uint64_t), cmp_u64);
    }
    printf("total requests=%ld responses=%ld errors=%ld unexpected=%ld"
           " unsent=%ld seconds=%.3f rps=%.0f last_200_ms=%.1f mode=%s"
           " rate=%.0f max_behind_ms=%.1f p50_ms=%.3f p90_ms=%.3f"
           " p99_ms=%.3f p999_ms=%.3f max_ms=%.3f sched=%s stamped=%zu"
           " client_lag_p50_ms=%.3f client_lag_p99_ms=%.3f"
           " client_lag_max_ms=%.3f started_at_ms=%.1f\n",
           sent, total_ok, errors, unexpected, unsent, secs, total_ok / secs,
           last_200 / 1000.0, opt.rate > 0 ? "open" : "closed", opt.rate,
           max_behind / 1000.0,
           all.n ? pct(&all, 0.50) : 0, all.n ? pct(&all, 0.90) : 0,
           all.n ? pct(&all, 0.99) : 0,
           all.n ? pct(&all, 0.999) : 0,
           all.n ? all.lat[all.n - 1] / 1000.0 : 0,
           sched_policy, lag.n, lag.n ? pct(&lag, 0.50) : 0,
           lag.n ? pct(&lag, 0.99) : 0,
           lag.n ? lag.lat[lag.n - 1] / 1000.0 : 0,
           (double) ((int64_t) t0 + real_minus_mono) / 1000.0);
    if (opt.queue) {
        long    known = 0, n_wait, n_buy, n_solve, bad;
        double  rate, worst, w50, w99, b50, b99, s50, s99;

        for (i = 0; i < opt.conns; i++) {
            if (conns[i].shopper != SHOPPER_DONE
                && (conns[i].tr.started || conns[i].tr.booked))
            {
                conns[i].tr.status = -1;
                push_track(&conns[i].tr);
            }
        }
        if (polls.n) {
            qsort(polls.lat, polls.n, sizeof(uint64_t), cmp_u64);
        }
        bad = out_of_order(&known, &rate, &worst);
        w50 = track_pct(offsetof(track_t, booked),
                        offsetof(track_t, admitted), 0.5, &n_wait);
        w99 = track_pct(offsetof(track_t, booked),
                        offsetof(track_t, admitted), 0.99, &n_wait);
        b50 = track_pct(offsetof(track_t, started),
                        offsetof(track_t, bought), 0.5, &n_buy);
        b99 = track_pct(offsetof(track_t, started),
                        offsetof(track_t, bought), 0.99, &n_buy);
        {
            series_t  sv = { NULL, 0, 0 };

            for (size_t k = 0; k < ntracks; k++) {
                if (tracks[k].challenges) {
                    push(&sv, tracks[k].solve_us);
                }
            }
            n_solve = (long) sv.n;
            if (sv.n) {
                qsort(sv.lat, sv.n, sizeof(uint64_t), cmp_u64);
            }
            s50 = sv.n ? pct(&sv, 0.50) : 0;
            s99 = sv.n ? pct(&sv, 0.99) : 0;
            free(sv.lat);
        }
        printf("queue queued=%ld polls=%zu admitted=%ld sold_out=%ld lost=%ld"
               " p50_ms=%.3f p99_ms=%.3f challenged=%ld proofs=%ld"
               " prequeued=%ld requeued=%ld done=%ld tickets=%zu"
               " turns_known=%ld out_of_order=%ld out_of_order_worst_ms=%.1f"
               " admit_rate=%.1f wait_n=%ld wait_p50_ms=%.1f"
               " wait_p99_ms=%.1f bought=%ld buy_p50_ms=%.1f"
               " buy_p99_ms=%.1f solved=%ld solve_p50_ms=%.1f"
               " solve_p99_ms=%.1f\n", queued, polls.n, admitted,
               queue_sold_out, queue_lost, polls.n ? pct(&polls, 0.50) : 0,
               polls.n ? pct(&polls, 0.99) : 0, challenged, proofs,
               prequeued, requeued, shoppers_done, ntracks, known, bad, worst,
               rate, n_wait, w50, w99, n_buy, b50, b99, n_solve, s50, s99);
        if (opt.track) {
            write_tracks();
        }
    }
    if (tickets_file) {
        fclose(tickets_file);
        printf("tickets written=%ld\n", tickets_written);
    }
    for (s = 0; s < MAX_STATUS; s++) {
        series_t  *ser = &by_status[s];

        if (ser->n == 0) {
            continue;
        }
        qsort(ser->lat, ser->n, sizeof(uint64_t), cmp_u64);
        printf("status=%d count=%zu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f"
               " p999_ms=%.3f max_ms=%.3f\n", s, ser->n, pct(ser, 0.50),
               pct(ser, 0.90), pct(ser, 0.99),
               pct(ser, 0.999), ser->lat[ser->n - 1] / 1000.0);
    }
    if (log_file) {
        fclose(log_file);
    }
    if (errors || unexpected || unsent) {
        fprintf(stderr, "fg-loadgen: FAILED: %ld errors, %ld answers not in"
                " --expect %s, %ld requests due but never sent\n", errors,
                unexpected, opt.expect ? opt.expect : "(any)", unsent);
        return 3;
    }
    return 0;
}
