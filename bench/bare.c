/*
 * fg-bare: an order the gate's way without the gate.  What the gate's
 * accept path does for POST /order beyond HTTP: one EVALSHA of
 * lua/order.lua (as lua/expand.sh makes it, the same KEYS and ARGV as
 * ngx_fluxgate_order_decide() sends), then, for a reservation, the same
 * message produced to Kafka by a librdkafka producer with the gate's
 * settings (ngx_fluxgate_kafka.c: enable.idempotence, acks=all,
 * message.timeout.ms 5000, linger.ms 5, reconnect.backoff.max.ms 1000),
 * and once Kafka acknowledged it, done.lua (not timed: the gate answers
 * before it too).  One hiredis async connection and one producer on one
 * epoll loop, as one nginx worker has.
 *
 * Open loop, as fg-loadgen -R: order k is due at t0 + k / rate, and its
 * latency runs from that due time to the delivery report, so the gate's
 * p50/p99 (fg-loadgen, due time to the answer's arrival) and this
 * client's compare the same span minus what nginx and HTTP add.
 *
 *   fg-bare --redis 127.0.0.1:6379 --brokers 127.0.0.1:9092 --topic orders
 *           --script order.lua --done done.lua -R 2000 -d 10
 *           --product acc --products 64 [--latencies FILE] [-X k=v ...]
 *           [--rate-limit 1000 --burst 200 --window-ms 30000
 *            --ticket-ttl-ms 3600000 --idem-ttl-ms 60000 --per-user 0
 *            --queue 1 --proof 0]
 *
 * Output: one "key=value" line, as fg-loadgen's: due, sent, reserved (1
 * from order.lua), other (any other reply), delivered, failed (Kafka),
 * unsent (due but never sent: the client fell behind), p50_ms ... max_ms
 * of the delivered, done_errors (done.lua refused); rc 3 when an order
 * failed or was left unsent, or done.lua refused one.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <librdkafka/rdkafka.h>

#include "series.h"


#define KEY_MAX  256

typedef struct {
    uint64_t  due;
    int       product;
    long      n;
    char      order_id[40];
    char      key[96];
    char      user[96];
    char      idem_key[KEY_MAX];
    char      pending_key[KEY_MAX];
} order_t;

static struct {
    const char  *redis;
    const char  *brokers;
    const char  *topic;
    const char  *script;
    const char  *done;
    const char  *product;
    const char  *latencies;
    const char  *run;
    int          products;
    double       rate;
    double       duration;
    long         rate_limit, burst, window_ms, ticket_ttl_ms, idem_ttl_ms;
    long         per_user;
    int          queue, proof;
} opt = { "127.0.0.1:6379", "127.0.0.1:9092", "orders", NULL, NULL, "p",
          NULL, "bare", 1, 1000, 10, 1000, 200, 30000, 3600000, 60000, 0,
          1, 0 };

static redisAsyncContext  *ac;
static rd_kafka_t         *rk;
static rd_kafka_topic_t   *rkt;
static int                 ep;
static int                 ac_events;     /* EPOLLIN | EPOLLOUT wanted */
static char                order_sha[41], done_sha[41];
static uint64_t            t0;
static long                sent, reserved, other, delivered, failed,
                           finished, done_errors;
static series_t            lat;
static const char         *sched_policy = "other";
static char                run_id[64];
static char               *kafka_opts[32];
static int                 nkafka_opts;

/* a UUIDv7, as ngx_fluxgate_uuid7() writes it */
static void
uuid7(char *dst)
{
    static const char  hex[] = "0123456789abcdef";
    unsigned char      b[16];
    struct timespec    ts;
    uint64_t           ms;
    int                i;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
        perror("getrandom");
        exit(1);
    }
    for (i = 0; i < 6; i++) {
        b[i] = (unsigned char) (ms >> (40 - 8 * i));
    }
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *dst++ = '-';
        }
        *dst++ = hex[b[i] >> 4];
        *dst++ = hex[b[i] & 0xf];
    }
    *dst = '\0';
}

/* --- hiredis on our epoll ------------------------------------------------ */

static void
ac_update(void)
{
    struct epoll_event  ev;

    ev.events = ac_events;
    ev.data.ptr = &ac;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, ac->c.fd, &ev) != 0) {
        epoll_ctl(ep, EPOLL_CTL_ADD, ac->c.fd, &ev);
    }
}

static void ev_add_read(void *d) { (void) d; ac_events |= EPOLLIN; ac_update(); }
static void ev_del_read(void *d) { (void) d; ac_events &= ~EPOLLIN; ac_update(); }
static void ev_add_write(void *d) { (void) d; ac_events |= EPOLLOUT; ac_update(); }
static void ev_del_write(void *d) { (void) d; ac_events &= ~EPOLLOUT; ac_update(); }

static void
ev_cleanup(void *d)
{
    (void) d;
    epoll_ctl(ep, EPOLL_CTL_DEL, ac->c.fd, NULL);
}

/* --- one order --------------------------------------------------------------- */

static void on_decided(redisAsyncContext *c, void *r, void *data);
static void on_done(redisAsyncContext *c, void *r, void *data);

static void
order_send(long k)
{
    char      keys[5][KEY_MAX], prefix[KEY_MAX], fp[128], nums[8][32];
    char      product[128], seed[33];
    const char *argv[32];
    size_t    argvlen[32];
    unsigned char  raw[16];
    int       argc = 0, i;
    order_t  *o = calloc(1, sizeof(order_t));

    if (o == NULL) {
        perror("calloc");
        exit(1);
    }
    o->due = t0 + (uint64_t) (k * 1e6 / opt.rate);
    o->n = k;
    o->product = (int) (k % opt.products);
    uuid7(o->order_id);
    if (opt.products > 1) {
        snprintf(product, sizeof(product), "%s-%d", opt.product, o->product);
    } else {
        snprintf(product, sizeof(product), "%s", opt.product);
    }
    snprintf(o->key, sizeof(o->key), "k-%s-%ld", run_id, k);
    snprintf(o->user, sizeof(o->user), "u-%s-%ld", run_id, k);

    snprintf(keys[0], KEY_MAX, "fg:{%s}:stock", product);
    snprintf(keys[1], KEY_MAX, "fg:{%s}:q", product);
    snprintf(keys[2], KEY_MAX, "fg:{%s}:buyers", product);
    snprintf(o->idem_key, KEY_MAX, "fg:{%s}:idem:%s", product, o->key);
    snprintf(keys[3], KEY_MAX, "fg:{%s}:gen", product);
    snprintf(o->pending_key, KEY_MAX, "fg:{%s}:pending", product);
    snprintf(prefix, KEY_MAX, "fg:{%s}:q:", product);
    snprintf(fp, sizeof(fp), "%s:1", o->user);
    snprintf(nums[0], 32, "%ld", opt.idem_ttl_ms);
    snprintf(nums[1], 32, "%ld", opt.rate_limit);
    snprintf(nums[2], 32, "%ld", opt.burst);
    snprintf(nums[3], 32, "%ld", opt.per_user);
    snprintf(nums[4], 32, "%lld", (long long) opt.window_ms * 1000);
    snprintf(nums[5], 32, "%lld", (long long) opt.ticket_ttl_ms * 1000);
    if (getrandom(raw, sizeof(raw), 0) != sizeof(raw)) {
        perror("getrandom");
        exit(1);
    }
    for (i = 0; i < 16; i++) {
        sprintf(seed + 2 * i, "%02x", raw[i]);
    }

#define ARG(s)  do { argv[argc] = (s); argvlen[argc] = strlen(s); argc++; } \
                while (0)
    ARG("EVALSHA");
    ARG(order_sha);
    ARG("7");
    ARG(keys[0]);                   /* stock */
    ARG(keys[1]);                   /* the line */
    ARG(keys[2]);                   /* buyers */
    ARG(o->idem_key);
    ARG(keys[3]);                   /* gen */
    ARG(o->pending_key);
    ARG(prefix);
    ARG(o->user);
    ARG("1");                       /* quantity */
    ARG(fp);
    ARG(o->order_id);
    ARG(nums[0]);                   /* idempotency ttl, ms */
    ARG(nums[1]);                   /* rate */
    ARG(nums[2]);                   /* burst */
    ARG(nums[3]);                   /* per-user limit */
    ARG(o->key);
    ARG(opt.queue ? "1" : "0");
    ARG(nums[4]);                   /* window, us */
    ARG(nums[5]);                   /* ticket life, us */
    ARG(o->user);                   /* the buyer */
    ARG("");                        /* client key */
    ARG("0");                       /* places per client */
    ARG(opt.proof ? "1" : "0");
    ARG(seed);
    ARG("");                        /* no ticket */
    ARG("");
    ARG("");
    ARG("");
#undef ARG

    if (redisAsyncCommandArgv(ac, on_decided, o, argc, argv, argvlen)
        != REDIS_OK)
    {
        fprintf(stderr, "fg-bare: redis: %s\n", ac->errstr);
        exit(1);
    }
    sent++;
}

static void
on_decided(redisAsyncContext *c, void *r, void *data)
{
    redisReply  *reply = r;
    order_t     *o = data;
    char         value[512], product[128];
    int          len;
    struct timespec  ts;

    (void) c;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[0]->integer != 1)
    {
        if (other < 5) {
            fprintf(stderr, "fg-bare: order.lua answered %s %lld\n",
                    reply == NULL ? "nothing"
                    : reply->type == REDIS_REPLY_ERROR ? reply->str : "",
                    reply && reply->type == REDIS_REPLY_ARRAY
                    && reply->elements
                    ? reply->element[0]->integer : -1LL);
        }
        other++;
        finished++;
        free(o);
        return;
    }
    reserved++;
    if (opt.products > 1) {
        snprintf(product, sizeof(product), "%s-%d", opt.product, o->product);
    } else {
        snprintf(product, sizeof(product), "%s", opt.product);
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    len = snprintf(value, sizeof(value),
                   "{\"type\":\"order\",\"orderId\":\"%s\","
                   "\"productId\":\"%s\",\"userId\":\"%s\","
                   "\"quantity\":1,\"idempotencyKey\":\"%s\","
                   "\"acceptedAt\":%llu,\"generation\":%lld,"
                   "\"generationStock\":%lld}", o->order_id, product,
                   o->user, o->key,
                   (unsigned long long) ts.tv_sec * 1000
                   + ts.tv_nsec / 1000000,
                   reply->element[2]->integer, reply->element[3]->integer);
    if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                         value, len, product, strlen(product), o)
        == -1)
    {
        fprintf(stderr, "fg-bare: produce: %s\n",
                rd_kafka_err2str(rd_kafka_last_error()));
        failed++;
        finished++;
        free(o);
    }
}

static void
on_delivered(rd_kafka_t *k, const rd_kafka_message_t *m, void *opaque)
{
    order_t     *o = m->_private;
    const char  *argv[10];
    size_t       argvlen[10];
    char         ttl[32];
    int          i;

    (void) k;
    (void) opaque;
    if (m->err) {
        fprintf(stderr, "fg-bare: delivery: %s\n", rd_kafka_err2str(m->err));
        failed++;
        finished++;
        free(o);
        return;
    }
    series_push(&lat, now_us() - o->due);
    delivered++;

    /* the claim ends, as the gate's done.lua (after its answer) */
    snprintf(ttl, sizeof(ttl), "%ld", opt.idem_ttl_ms);
    argv[0] = "EVALSHA";
    argv[1] = done_sha;
    argv[2] = "2";
    argv[3] = o->idem_key;
    argv[4] = o->pending_key;
    argv[5] = o->order_id;
    argv[6] = ttl;
    argv[7] = o->key;
    argv[8] = "200";          /* replayed as 200 success, as the gate's */
    argv[9] = "success";
    for (i = 0; i < 10; i++) {
        argvlen[i] = strlen(argv[i]);
    }
    if (redisAsyncCommandArgv(ac, on_done, o, 10, argv, argvlen) != REDIS_OK) {
        /* not sent: counted as refused, so the run does not wait for it */
        if (done_errors++ == 0) {
            fprintf(stderr, "fg-bare: done.lua not sent: %s\n", ac->errstr);
        }
        free(o);
        finished++;
    }
}

static void
on_done(redisAsyncContext *c, void *r, void *data)
{
    redisReply  *reply = r;

    (void) c;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (done_errors++ == 0) {
            fprintf(stderr, "fg-bare: done.lua: %s\n",
                    reply ? reply->str : "no reply");
        }
    }
    free(data);
    finished++;
}

/* --- setup ------------------------------------------------------------------ */

static char *
slurp(const char *path)
{
    FILE   *f = fopen(path, "r");
    char   *buf;
    long    n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0) {
        perror(path);
        exit(2);
    }
    rewind(f);
    buf = malloc(n + 1);
    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        perror(path);
        exit(2);
    }
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void
load_script(redisContext *c, const char *path, char *sha)
{
    char        *text = slurp(path);
    redisReply  *r = redisCommand(c, "SCRIPT LOAD %s", text);

    if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40) {
        fprintf(stderr, "fg-bare: SCRIPT LOAD %s: %s\n", path,
                r && r->str ? r->str : c->errstr);
        exit(2);
    }
    memcpy(sha, r->str, 41);
    freeReplyObject(r);
    free(text);
}

static void
kafka_start(int wake_fd)
{
    char              err[512];
    rd_kafka_conf_t  *conf = rd_kafka_conf_new();
    rd_kafka_queue_t *q;
    int               i;
    /* ngx_fluxgate_kafka.c's defaults */
    static const char  *defaults[][2] = {
        { "enable.idempotence", "true" },
        { "acks", "all" },
        { "message.timeout.ms", "5000" },
        { "linger.ms", "5" },
        { "client.id", "fg-bare" },
        { "reconnect.backoff.max.ms", "1000" },
        { NULL, NULL }
    };

    for (i = 0; defaults[i][0]; i++) {
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], err,
                              sizeof(err)) != RD_KAFKA_CONF_OK)
        {
            fprintf(stderr, "fg-bare: kafka: %s\n", err);
            exit(2);
        }
    }
    for (i = 0; i < nkafka_opts; i++) {
        char  *eq = strchr(kafka_opts[i], '=');

        if (eq == NULL) {
            fprintf(stderr, "fg-bare: -X %s: not key=value\n", kafka_opts[i]);
            exit(2);
        }
        *eq = '\0';
        if (rd_kafka_conf_set(conf, kafka_opts[i], eq + 1, err, sizeof(err))
            != RD_KAFKA_CONF_OK)
        {
            fprintf(stderr, "fg-bare: kafka: %s\n", err);
            exit(2);
        }
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", opt.brokers, err,
                          sizeof(err)) != RD_KAFKA_CONF_OK)
    {
        fprintf(stderr, "fg-bare: kafka: %s\n", err);
        exit(2);
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivered);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "fg-bare: kafka producer: %s\n", err);
        exit(2);
    }
    rkt = rd_kafka_topic_new(rk, opt.topic, NULL);
    q = rd_kafka_queue_get_main(rk);
    /* the main queue wakes our loop, as the gate's wakes nginx's */
    rd_kafka_queue_io_event_enable(q, wake_fd, "1", 1);
    rd_kafka_queue_destroy(q);
}

static void
usage(int rc)
{
    fprintf(rc ? stderr : stdout,
        "usage: fg-bare --redis host:port --brokers list --topic t\n"
        "               --script order.lua --done done.lua -R rate -d secs\n"
        "               [--product p] [--products N] [--run id]\n"
        "               [--latencies file] [-X kafka.key=value ...]\n"
        "               [--rate-limit N] [--burst N] [--window-ms N]\n"
        "               [--ticket-ttl-ms N] [--idem-ttl-ms N] [--per-user N]\n"
        "               [--queue 0|1] [--proof 0|1]\n");
    exit(rc);
}

/* the command line into opt; a bad one exits 2 with the usage */
static void
parse_args(int argc, char **argv)
{
    static struct option  longopts[] = {
        { "redis", required_argument, NULL, 'r' },
        { "brokers", required_argument, NULL, 'b' },
        { "topic", required_argument, NULL, 't' },
        { "script", required_argument, NULL, 's' },
        { "done", required_argument, NULL, 'D' },
        { "product", required_argument, NULL, 'P' },
        { "products", required_argument, NULL, 'N' },
        { "latencies", required_argument, NULL, 'L' },
        { "run", required_argument, NULL, 'u' },
        { "rate-limit", required_argument, NULL, 1 },
        { "burst", required_argument, NULL, 2 },
        { "window-ms", required_argument, NULL, 3 },
        { "ticket-ttl-ms", required_argument, NULL, 4 },
        { "idem-ttl-ms", required_argument, NULL, 5 },
        { "per-user", required_argument, NULL, 6 },
        { "queue", required_argument, NULL, 7 },
        { "proof", required_argument, NULL, 8 },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int  ch;

    while ((ch = getopt_long(argc, argv, "R:d:X:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'r': opt.redis = optarg; break;
        case 'b': opt.brokers = optarg; break;
        case 't': opt.topic = optarg; break;
        case 's': opt.script = optarg; break;
        case 'D': opt.done = optarg; break;
        case 'P': opt.product = optarg; break;
        case 'N': opt.products = atoi(optarg); break;
        case 'L': opt.latencies = optarg; break;
        case 'u': opt.run = optarg; break;
        case 'R': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'X':
            if (nkafka_opts == 32) {
                usage(2);
            }
            kafka_opts[nkafka_opts++] = optarg;
            break;
        case 1: opt.rate_limit = atol(optarg); break;
        case 2: opt.burst = atol(optarg); break;
        case 3: opt.window_ms = atol(optarg); break;
        case 4: opt.ticket_ttl_ms = atol(optarg); break;
        case 5: opt.idem_ttl_ms = atol(optarg); break;
        case 6: opt.per_user = atol(optarg); break;
        case 7: opt.queue = atoi(optarg); break;
        case 8: opt.proof = atoi(optarg); break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (opt.script == NULL || opt.done == NULL || opt.rate <= 0
        || opt.duration <= 0 || opt.products < 1)
    {
        usage(2);
    }
}

/* order.lua and done.lua loaded, the async connection on our epoll */
static int
redis_start(const char *host, int port)
{
    struct epoll_event   ev;
    redisContext        *sc;

    sc = redisConnect(host, port);
    if (sc == NULL || sc->err) {
        fprintf(stderr, "fg-bare: redis %s: %s\n", opt.redis,
                sc ? sc->errstr : "no memory");
        return 2;
    }
    load_script(sc, opt.script, order_sha);
    load_script(sc, opt.done, done_sha);
    redisFree(sc);

    ac = redisAsyncConnect(host, port);
    if (ac == NULL || ac->err) {
        fprintf(stderr, "fg-bare: redis: %s\n", ac ? ac->errstr : "no memory");
        return 2;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = NULL;
    ev.events = 0;
    ev.data.ptr = &ac;
    epoll_ctl(ep, EPOLL_CTL_ADD, ac->c.fd, &ev);
    return 0;
}

/* Redis, Kafka and the epoll loop that waits on both, before the clock
 * starts; returns 0, or 2 with a line on stderr */
static int
start(int wake[2])
{
    struct epoll_event   ev;
    struct sched_param   sp = { .sched_priority = 10 };
    char                 host[256], *colon;
    int                  port;

    signal(SIGPIPE, SIG_IGN);
    snprintf(run_id, sizeof(run_id), "%s%ld", opt.run, (long) getpid());

    snprintf(host, sizeof(host), "%s", opt.redis);
    colon = strrchr(host, ':');
    if (colon == NULL) {
        usage(2);
    }
    *colon = '\0';
    port = atoi(colon + 1);

    ep = epoll_create1(0);
    if (ep < 0 || pipe2(wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        perror("setup");
        return 2;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, wake[0], &ev);
    kafka_start(wake[1]);

    if (redis_start(host, port) != 0) {
        return 2;
    }

    if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) {
        sched_policy = "fifo";
    }

    /* the producer connected and knows the topic before the clock starts */
    {
        const struct rd_kafka_metadata  *md;

        if (rd_kafka_metadata(rk, 0, rkt, &md, 10000)
            != RD_KAFKA_RESP_ERR_NO_ERROR)
        {
            fprintf(stderr, "fg-bare: kafka metadata: no answer\n");
            return 2;
        }
        rd_kafka_metadata_destroy(md);
    }
    return 0;
}

/* sends each order when due and waits for every answer and delivery, or
 * 30 s after the run */
static void
run(int wake_fd, long due)
{
    struct epoll_event   evs[64];
    uint64_t             end, deadline, now;
    char                 buf[256];
    int                  n, i;

    end = t0 + (uint64_t) (opt.duration * 1e6);
    deadline = end + 30000000;
    for ( ;; ) {
        now = now_us();
        /* whatever fell due */
        while (sent < due && t0 + (uint64_t) (sent * 1e6 / opt.rate) <= now) {
            order_send(sent);
        }
        if (sent >= due && finished >= sent) {
            break;
        }
        if (now > deadline) {
            fprintf(stderr, "fg-bare: %ld orders unfinished after the run\n",
                    sent - finished);
            failed += sent - finished;
            break;
        }
        n = epoll_wait(ep, evs, 64, now < end ? 1 : 10);
        for (i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                while (read(wake_fd, buf, sizeof(buf)) > 0) {
                    /* drained */
                }
                rd_kafka_poll(rk, 0);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                redisAsyncHandleRead(ac);
            }
            if (evs[i].events & EPOLLOUT) {
                redisAsyncHandleWrite(ac);
            }
        }
        rd_kafka_poll(rk, 0);
    }
}

/* --latencies, then the bare line; returns the exit code */
static int
report(long due, double secs)
{
    long  unsent = due - sent;

    series_sort(&lat);
    if (opt.latencies) {
        FILE  *f = fopen(opt.latencies, "w");

        if (f == NULL) {
            perror(opt.latencies);
        } else {
            for (size_t k = 0; k < lat.n; k++) {
                fprintf(f, "%llu\n", (unsigned long long) lat.v[k]);
            }
            fclose(f);
        }
    }
    printf("bare due=%ld sent=%ld reserved=%ld other=%ld delivered=%ld"
           " failed=%ld unsent=%ld seconds=%.3f rate=%.0f p50_ms=%.3f"
           " p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f sched=%s"
           " done_errors=%ld\n",
           due, sent, reserved, other, delivered, failed, unsent, secs,
           opt.rate, series_pct(&lat, 0.50), series_pct(&lat, 0.90),
           series_pct(&lat, 0.99), series_pct(&lat, 0.999),
           series_max_ms(&lat), sched_policy, done_errors);

    return failed || unsent || other || done_errors ? 3 : 0;
}

int
main(int argc, char **argv)
{
    int     wake[2], rc;
    long    due;
    double  secs;

    parse_args(argc, argv);
    if (start(wake) != 0) {
        return 2;
    }

    t0 = now_us();
    due = (long) (opt.duration * opt.rate);
    run(wake[0], due);
    secs = (now_us() - t0) / 1e6;
    rc = report(due, secs);

    rd_kafka_flush(rk, 5000);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    redisAsyncFree(ac);
    return rc;
}
