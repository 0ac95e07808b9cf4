
/*
 * Flux-Gate: the Kafka producer of a worker process.  One idempotent
 * producer (enable.idempotence=true, acks=all) per worker, created after the
 * fork.  Its delivery reports, logs and errors all go to the main queue,
 * and librdkafka writes a byte to a non-blocking pipe whenever that queue
 * becomes non-empty; the pipe is an nginx read event, whose handler drains
 * the queue with rd_kafka_poll(rk, 0).  Nothing here waits, except the
 * bounded flush when the worker exits.
 *
 * While no broker is up (librdkafka's "all brokers down", then its
 * statistics every second), new orders are refused at once instead of each
 * waiting message.timeout.ms for a delivery report that will say no.
 *
 * An idempotent producer that hit a fatal error (a broken sequence, a
 * fenced epoch) refuses every message from then on: it is replaced by a
 * new one at once, after what it still held got its delivery reports.
 *
 * Health asks instead of waiting to be told: "a broker is up" says
 * little (a frozen broker keeps its socket open, a partition may have no
 * leader, too few replicas may be in sync, the topic may be gone), so
 * ngx_fluxgate_kafka_health.c asks for the topic's metadata every second,
 * traffic or not.  And deliveries must succeed: after
 * NGX_FLUXGATE_KAFKA_FAILURES undelivered reports in a row, new orders
 * fail fast, but one order per NGX_FLUXGATE_KAFKA_PROBE ms is let through
 * to find out whether deliveries work again.
 */


#include "ngx_fluxgate.h"

#include <jansson.h>


#define NGX_FLUXGATE_KAFKA_MESSAGE_TIMEOUT  "5000"
#define NGX_FLUXGATE_KAFKA_FLUSH_MAX        10000

/* while down, failing or without statistics: one order tries this often */
#define NGX_FLUXGATE_KAFKA_PROBE            2000

/* undelivered reports in a row before new orders fail fast */
#define NGX_FLUXGATE_KAFKA_FAILURES         3



static rd_kafka_conf_t *ngx_fluxgate_kafka_conf_new(ngx_conf_t *cf);
static void ngx_fluxgate_kafka_conf_cleanup(void *data);
static void ngx_fluxgate_kafka_wakeup(ngx_event_t *ev);
static void ngx_fluxgate_kafka_poll(void);
static void ngx_fluxgate_kafka_delivered(rd_kafka_t *rk,
    const rd_kafka_message_t *msg, void *opaque);
static void ngx_fluxgate_kafka_log(const rd_kafka_t *rk, int level,
    const char *fac, const char *buf);
static void ngx_fluxgate_kafka_error(rd_kafka_t *rk, int err,
    const char *reason, void *opaque);
static int ngx_fluxgate_kafka_stats(rd_kafka_t *rk, char *json,
    size_t json_len, void *opaque);
static ngx_int_t ngx_fluxgate_kafka_create(ngx_log_t *log);
static void ngx_fluxgate_kafka_destroy(void);
static void ngx_fluxgate_kafka_replace(void);
static void ngx_fluxgate_kafka_checked(void);
static ngx_uint_t ngx_fluxgate_kafka_probe(void);
static void ngx_fluxgate_kafka_changed(void);


static rd_kafka_t        *ngx_fluxgate_rk;
static rd_kafka_topic_t  *ngx_fluxgate_rkt;
static rd_kafka_queue_t  *ngx_fluxgate_rkqu;
static ngx_connection_t  *ngx_fluxgate_kafka_wake;
static int                ngx_fluxgate_kafka_wake_fd = -1;
static ngx_msec_t         ngx_fluxgate_kafka_flush_timeout;

static ngx_uint_t         ngx_fluxgate_kafka_down;
static ngx_msec_t         ngx_fluxgate_kafka_down_since;
static ngx_uint_t         ngx_fluxgate_kafka_stats_on;
static ngx_msec_t         ngx_fluxgate_kafka_probed;  /* last order let by */

/* the deliveries: undelivered reports in a row */
static ngx_uint_t         ngx_fluxgate_kafka_undelivered;

/* the producer's configuration and topic, for a replacement */
static ngx_fluxgate_main_conf_t  *ngx_fluxgate_kafka_fmcf;
static u_char            *ngx_fluxgate_kafka_topic;
static ngx_uint_t         ngx_fluxgate_kafka_fatal;

static ngx_fluxgate_changed_pt  ngx_fluxgate_kafka_change_handler;

#if (NGX_FLUXGATE_TESTING)
/*
 * Test builds only: env FLUXGATE_TEST_KAFKA_FATAL_AFTER=N makes the
 * producer raise a fatal error (rd_kafka_test_fatal_error) after N
 * messages, the way a broken idempotent sequence would
 */
static ngx_int_t          ngx_fluxgate_kafka_fatal_after = -1;
#endif


/* configuration: every property is checked by librdkafka at nginx -t */

static rd_kafka_conf_t *
ngx_fluxgate_kafka_conf_new(ngx_conf_t *cf)
{
    char                 errstr[256];
    ngx_uint_t           i;
    rd_kafka_conf_t     *conf;
    ngx_pool_cleanup_t  *cln;

    static const char  *defaults[][2] = {
        { "enable.idempotence", "true" },
        { "acks", "all" },
        { "message.timeout.ms", NGX_FLUXGATE_KAFKA_MESSAGE_TIMEOUT },
        /*
         * How long a batch waits to fill (librdkafka's own default, set
         * here so a reader sees it).  1 ms gave a lower median on an idle
         * machine, but at half the accept path's maximum on 2 cores each
         * message became its own produce request and the broker's extra
         * work came back as the tail: over 8 and 12 runs 1 ms had p99
         * 27-132 ms (median 67 ms), 5 ms 24-68 ms (median 36 ms), for a
         * p50 of about 5 against 7.5 ms (bench/results/2026-11-26-linger.md).
         */
        { "linger.ms", "5" },
        { "client.id", "fluxgate-nginx" },
        { "log.queue", "true" },
        { "statistics.interval.ms", "1000" },
        /*
         * While no broker is up, orders are refused at once, so nothing
         * makes librdkafka hurry: with its default backoff (up to 10 s) a
         * worker process could go on refusing for seconds after the
         * broker is back.  Retrying every second at most keeps every
         * process within about two seconds of the broker's return.
         */
        { "reconnect.backoff.max.ms", "1000" },
        { NULL, NULL }
    };

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    conf = rd_kafka_conf_new();

    cln->handler = ngx_fluxgate_kafka_conf_cleanup;
    cln->data = conf;

    for (i = 0; defaults[i][0]; i++) {
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1],
                              errstr, sizeof(errstr))
            != RD_KAFKA_CONF_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "fluxgate: kafka: %s", errstr);
            return NULL;
        }
    }

    return conf;
}


static void
ngx_fluxgate_kafka_conf_cleanup(void *data)
{
    rd_kafka_conf_destroy(data);
}


char *
ngx_fluxgate_kafka_option(ngx_conf_t *cf, ngx_fluxgate_main_conf_t *fmcf,
    ngx_str_t *name, ngx_str_t *value)
{
    char  errstr[256];

    if (fmcf->kafka_conf == NULL) {
        fmcf->kafka_conf = ngx_fluxgate_kafka_conf_new(cf);
        if (fmcf->kafka_conf == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    /* the arguments of a directive are NUL-terminated */

    if (rd_kafka_conf_set(fmcf->kafka_conf, (char *) name->data,
                          (char *) value->data, errstr, sizeof(errstr))
        != RD_KAFKA_CONF_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s in \"fluxgate_kafka_option\" directive",
                           errstr);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_fluxgate_kafka_init_conf(ngx_conf_t *cf, ngx_fluxgate_main_conf_t *fmcf)
{
    char       errstr[256], buf[32];
    size_t     size;
    ngx_int_t  n;

    if (fmcf->kafka_conf == NULL) {
        fmcf->kafka_conf = ngx_fluxgate_kafka_conf_new(cf);
        if (fmcf->kafka_conf == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (fmcf->brokers.len
        && rd_kafka_conf_set(fmcf->kafka_conf, "bootstrap.servers",
                             (char *) fmcf->brokers.data,
                             errstr, sizeof(errstr))
           != RD_KAFKA_CONF_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "%s in \"fluxgate_kafka_brokers\" directive", errstr);
        return NGX_CONF_ERROR;
    }

    /* how long a delivery report can take: the requests wait that long */

    size = sizeof(buf);

    if (rd_kafka_conf_get(fmcf->kafka_conf, "message.timeout.ms", buf, &size)
        == RD_KAFKA_CONF_OK
        && (n = ngx_atoi((u_char *) buf, ngx_strlen(buf))) > 0)
    {
        fmcf->kafka_timeout = n;

    } else {
        fmcf->kafka_timeout = ngx_atoi((u_char *)
                                       NGX_FLUXGATE_KAFKA_MESSAGE_TIMEOUT,
                              sizeof(NGX_FLUXGATE_KAFKA_MESSAGE_TIMEOUT) - 1);
    }

    return NGX_CONF_OK;
}


/* who looks again at the producer's state when it changes */

void
ngx_fluxgate_kafka_on_change(ngx_fluxgate_changed_pt handler)
{
    ngx_fluxgate_kafka_change_handler = handler;
}


static void
ngx_fluxgate_kafka_changed(void)
{
    if (ngx_fluxgate_kafka_change_handler) {
        ngx_fluxgate_kafka_change_handler();
    }
}


/* worker processes */

ngx_int_t
ngx_fluxgate_kafka_init_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf)
{
    int                fds[2];
    char               buf[32];
    size_t             size;
    ngx_connection_t  *c;
#if (NGX_FLUXGATE_TESTING)
    char              *env;
#endif

    ngx_fluxgate_kafka_fmcf = fmcf;
    ngx_fluxgate_kafka_fatal = 0;
    ngx_fluxgate_kafka_undelivered = 0;
    ngx_fluxgate_kafka_probed = 0;

    /* without statistics, "no broker up" can only time out */

    ngx_fluxgate_kafka_down = 0;
    ngx_fluxgate_kafka_stats_on = 0;
    size = sizeof(buf);

    if (rd_kafka_conf_get(fmcf->kafka_conf, "statistics.interval.ms", buf,
                          &size)
        == RD_KAFKA_CONF_OK
        && ngx_atoi((u_char *) buf, ngx_strlen(buf)) > 0)
    {
        ngx_fluxgate_kafka_stats_on = 1;
    }

    ngx_fluxgate_kafka_flush_timeout = ngx_min(fmcf->kafka_timeout + 1000,
                                               NGX_FLUXGATE_KAFKA_FLUSH_MAX);

    ngx_fluxgate_kafka_topic = ngx_pnalloc(cycle->pool, fmcf->topic.len + 1);
    if (ngx_fluxgate_kafka_topic == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_cpystrn(ngx_fluxgate_kafka_topic, fmcf->topic.data,
                       fmcf->topic.len + 1);

#if (NGX_FLUXGATE_TESTING)
    env = getenv("FLUXGATE_TEST_KAFKA_FATAL_AFTER");
    ngx_fluxgate_kafka_fatal_after = env ? atoi(env) : -1;
#endif

    if (pipe2(fds, O_NONBLOCK|O_CLOEXEC) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "fluxgate: pipe2() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(fds[0], cycle->log);
    if (c == NULL) {
        close(fds[0]);
        close(fds[1]);
        return NGX_ERROR;
    }

    c->read->handler = ngx_fluxgate_kafka_wakeup;
    c->read->log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        close(fds[1]);
        return NGX_ERROR;
    }

    ngx_fluxgate_kafka_wake = c;
    ngx_fluxgate_kafka_wake_fd = fds[1];

    if (ngx_fluxgate_kafka_create(cycle->log) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the topic's checks, with this producer */
    return ngx_fluxgate_kafka_health_start(cycle, ngx_fluxgate_rk,
                                           ngx_fluxgate_rkt,
                                           ngx_fluxgate_kafka_checked);
}


/* a producer, its topic, and its main queue tied to the wake-up pipe */

static ngx_int_t
ngx_fluxgate_kafka_create(ngx_log_t *log)
{
    char              errstr[512];
    rd_kafka_t       *rk;
    rd_kafka_conf_t  *conf;

    conf = rd_kafka_conf_dup(ngx_fluxgate_kafka_fmcf->kafka_conf);

    rd_kafka_conf_set_dr_msg_cb(conf, ngx_fluxgate_kafka_delivered);
    rd_kafka_conf_set_log_cb(conf, ngx_fluxgate_kafka_log);
    rd_kafka_conf_set_error_cb(conf, ngx_fluxgate_kafka_error);
    rd_kafka_conf_set_stats_cb(conf, ngx_fluxgate_kafka_stats);

    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "fluxgate: kafka producer: %s", errstr);
        return NGX_ERROR;
    }

    ngx_fluxgate_rk = rk;

    (void) rd_kafka_set_log_queue(rk, NULL);

    ngx_fluxgate_rkt = rd_kafka_topic_new(rk,
                                          (char *) ngx_fluxgate_kafka_topic,
                                          NULL);
    if (ngx_fluxgate_rkt == NULL) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "fluxgate: kafka topic \"%s\": %s",
                      ngx_fluxgate_kafka_topic,
                      rd_kafka_err2str(rd_kafka_last_error()));
        return NGX_ERROR;
    }

    ngx_fluxgate_rkqu = rd_kafka_queue_get_main(rk);
    rd_kafka_queue_io_event_enable(ngx_fluxgate_rkqu,
                                   ngx_fluxgate_kafka_wake_fd, "1", 1);

    /*
     * librdkafka writes to the pipe only when the queue goes from empty to
     * non-empty; what its threads queued since rd_kafka_new() is served now
     */

    ngx_fluxgate_kafka_poll();

    return NGX_OK;
}


static void
ngx_fluxgate_kafka_destroy(void)
{
    rd_kafka_queue_io_event_enable(ngx_fluxgate_rkqu, -1, NULL, 0);
    rd_kafka_queue_destroy(ngx_fluxgate_rkqu);
    rd_kafka_topic_destroy(ngx_fluxgate_rkt);
    rd_kafka_destroy(ngx_fluxgate_rk);

    ngx_fluxgate_rk = NULL;
    ngx_fluxgate_rkt = NULL;
    ngx_fluxgate_rkqu = NULL;
}


/*
 * After a fatal error: what the old producer held is purged, so that each
 * message's delivery report runs now (not persisted: released; in flight:
 * possibly persisted, its claim is settled later), then a new producer
 * with a new producer id takes the next orders.
 */

static void
ngx_fluxgate_kafka_replace(void)
{
    if (ngx_fluxgate_kafka_health_busy()) {
        /* the thread uses the producer: replaced once it answered */
        return;
    }

    (void) rd_kafka_purge(ngx_fluxgate_rk,
                          RD_KAFKA_PURGE_F_QUEUE|RD_KAFKA_PURGE_F_INFLIGHT);

    while (rd_kafka_poll(ngx_fluxgate_rk, 0) > 0) {
        /* void */
    }

    ngx_fluxgate_kafka_destroy();

    /* only now: the old producer's last errors may have said it again */
    ngx_fluxgate_kafka_fatal = 0;

    if (ngx_fluxgate_kafka_create(ngx_cycle->log) != NGX_OK) {
        ngx_fluxgate_kafka_health_use(NULL, NULL);
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "fluxgate: kafka: no new producer could be made; "
                      "orders get 503 until nginx is reloaded");
        return;
    }

    ngx_fluxgate_kafka_health_use(ngx_fluxgate_rk, ngx_fluxgate_rkt);
    ngx_fluxgate_kafka_changed();

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "fluxgate: kafka: producer replaced after a fatal error");
}


/*
 * The worker leaves: in-flight orders had their own timers, so what is
 * left here is rare.  Wait a bounded time for it; what still is not
 * delivered is purged, so its delivery report still runs (and releases).
 */

void
ngx_fluxgate_kafka_exit_process(ngx_cycle_t *cycle)
{
    int  left;

    ngx_fluxgate_kafka_health_stop();

    if (ngx_fluxgate_rk == NULL) {
        return;
    }

    left = rd_kafka_outq_len(ngx_fluxgate_rk);

    if (left > 0) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "fluxgate: kafka: flushing %d messages", left);

        (void) rd_kafka_flush(ngx_fluxgate_rk,
                              ngx_fluxgate_kafka_flush_timeout);

        left = rd_kafka_outq_len(ngx_fluxgate_rk);

        if (left > 0) {
            /* the brokers' trouble, not ours: error, not alert */
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "fluxgate: kafka: %d messages not delivered "
                          "at exit", left);

            (void) rd_kafka_purge(ngx_fluxgate_rk,
                                  RD_KAFKA_PURGE_F_QUEUE
                                  |RD_KAFKA_PURGE_F_INFLIGHT);
        }
    }

    ngx_fluxgate_kafka_poll();

    ngx_fluxgate_kafka_destroy();

    ngx_close_connection(ngx_fluxgate_kafka_wake);
    ngx_fluxgate_kafka_wake = NULL;

    close(ngx_fluxgate_kafka_wake_fd);
    ngx_fluxgate_kafka_wake_fd = -1;
}


/*
 * Whether a new order should be tried at all.  Not while no broker is up,
 * the topic was found unfit, or deliveries keep failing: then one order
 * per NGX_FLUXGATE_KAFKA_PROBE ms finds out whether it works again (the
 * topic's next ask would tell as well).  A topic not asked yet does not
 * hold orders back: only evidence does.
 */

ngx_int_t
ngx_fluxgate_kafka_ready(void)
{
    if (ngx_fluxgate_rkt == NULL) {
        return 0;
    }

    if (ngx_fluxgate_kafka_down) {
        /* with statistics, their next report says when a broker is back */
        return !ngx_fluxgate_kafka_stats_on
               && ngx_current_msec - ngx_fluxgate_kafka_down_since
                  >= NGX_FLUXGATE_KAFKA_PROBE;
    }

    if (ngx_fluxgate_kafka_topic_state() == NGX_FLUXGATE_TOPIC_BAD
        || ngx_fluxgate_kafka_undelivered >= NGX_FLUXGATE_KAFKA_FAILURES)
    {
        return ngx_fluxgate_kafka_probe();
    }

    return 1;
}


/* the topic was asked about: the gauges may change, a replacement wait */

static void
ngx_fluxgate_kafka_checked(void)
{
    ngx_fluxgate_kafka_changed();

    /* a replacement waited for the thread to let go of the producer */
    if (ngx_fluxgate_kafka_fatal && !ngx_fluxgate_exiting) {
        ngx_fluxgate_kafka_replace();
    }
}


static ngx_uint_t
ngx_fluxgate_kafka_probe(void)
{
    if (ngx_fluxgate_kafka_probed != 0
        && ngx_current_msec - ngx_fluxgate_kafka_probed
           < NGX_FLUXGATE_KAFKA_PROBE)
    {
        return 0;
    }

    ngx_fluxgate_kafka_probed = ngx_current_msec;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: kafka: one order let through as a probe");

    return 1;
}


/*
 * For fluxgate_health and fluxgate_kafka_up: a broker up, no fatal error,
 * the topic asked and fit, and deliveries not failing
 */

ngx_uint_t
ngx_fluxgate_kafka_up(void)
{
    return ngx_fluxgate_rkt != NULL
           && !ngx_fluxgate_kafka_down
           && !ngx_fluxgate_kafka_fatal
           && ngx_fluxgate_kafka_topic_state() == NGX_FLUXGATE_TOPIC_OK
           && ngx_fluxgate_kafka_undelivered < NGX_FLUXGATE_KAFKA_FAILURES;
}


ngx_uint_t
ngx_fluxgate_kafka_queue_len(void)
{
    int  n;

    if (ngx_fluxgate_rk == NULL) {
        return 0;
    }

    n = rd_kafka_outq_len(ngx_fluxgate_rk);

    return n > 0 ? (ngx_uint_t) n : 0;
}


ngx_int_t
ngx_fluxgate_kafka_produce(ngx_str_t *key, ngx_str_t *value,
    ngx_fluxgate_delivery_t *dlv)
{
    if (ngx_fluxgate_rkt == NULL) {
        return NGX_ERROR;
    }

    if (rd_kafka_produce(ngx_fluxgate_rkt, RD_KAFKA_PARTITION_UA,
                         RD_KAFKA_MSG_F_COPY, value->data, value->len,
                         key->data, key->len, dlv)
        == -1)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: kafka produce failed: %s",
                      rd_kafka_err2str(rd_kafka_last_error()));
        return NGX_ERROR;
    }

#if (NGX_FLUXGATE_TESTING)
    if (ngx_fluxgate_kafka_fatal_after > 0
        && --ngx_fluxgate_kafka_fatal_after == 0)
    {
        (void) rd_kafka_test_fatal_error(ngx_fluxgate_rk,
                             RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                             "injected by FLUXGATE_TEST_KAFKA_FATAL_AFTER");
    }
#endif

    return NGX_OK;
}


static void
ngx_fluxgate_kafka_wakeup(ngx_event_t *ev)
{
    u_char             buf[64];
    ssize_t            n;
    ngx_connection_t  *c;

    c = ev->data;

    /* drain first: a byte written after this wakes us again */

    do {
        n = read(c->fd, buf, sizeof(buf));
    } while (n > 0);

    ev->ready = 0;

    ngx_fluxgate_kafka_poll();
}


static void
ngx_fluxgate_kafka_poll(void)
{
    while (rd_kafka_poll(ngx_fluxgate_rk, 0) > 0) {
        /* void */
    }

    /* not from inside a callback: rd_kafka_destroy() may not run there */

    if (ngx_fluxgate_kafka_fatal && !ngx_fluxgate_exiting
        && !ngx_fluxgate_kafka_health_busy())
    {
        ngx_fluxgate_kafka_replace();
    }
}


static void
ngx_fluxgate_kafka_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg,
    void *opaque)
{
    ngx_fluxgate_delivery_t  *dlv = msg->_private;

    ngx_fluxgate_delivery_e  status;

    if (dlv == NULL) {
        return;
    }

    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        status = NGX_FLUXGATE_DELIVERED;

        if (ngx_fluxgate_kafka_undelivered >= NGX_FLUXGATE_KAFKA_FAILURES) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "fluxgate: kafka: deliveries succeed again");
        }

        ngx_fluxgate_kafka_undelivered = 0;

        if (ngx_fluxgate_kafka_down) {
            ngx_fluxgate_kafka_down = 0;
        }

        ngx_fluxgate_kafka_changed();

    } else {
        status = (rd_kafka_message_status(msg)
                  == RD_KAFKA_MSG_STATUS_NOT_PERSISTED)
                 ? NGX_FLUXGATE_NOT_DELIVERED : NGX_FLUXGATE_MAYBE_DELIVERED;

        if (++ngx_fluxgate_kafka_undelivered
            == NGX_FLUXGATE_KAFKA_FAILURES)
        {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "fluxgate: kafka: %d deliveries in a row failed "
                          "(%s): new orders get 503, one every %dms tries",
                          NGX_FLUXGATE_KAFKA_FAILURES,
                          rd_kafka_err2str(msg->err),
                          NGX_FLUXGATE_KAFKA_PROBE);
            ngx_fluxgate_kafka_changed();
        }
    }

    dlv->handler(dlv, status, rd_kafka_err2str(msg->err));
}


static void
ngx_fluxgate_kafka_log(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf)
{
    ngx_uint_t  nlevel;

    /* syslog levels */

    if (level <= 3) {
        nlevel = NGX_LOG_ERR;

    } else if (level == 4) {
        nlevel = NGX_LOG_WARN;

    } else if (level == 5) {
        nlevel = NGX_LOG_NOTICE;

    } else if (level == 6) {
        nlevel = NGX_LOG_INFO;

    } else {
        nlevel = NGX_LOG_DEBUG;
    }

    ngx_log_error(nlevel, ngx_cycle->log, 0, "fluxgate: kafka: %s: %s",
                  fac, buf);
}


static void
ngx_fluxgate_kafka_error(rd_kafka_t *rk, int err, const char *reason,
    void *opaque)
{
    char  errstr[512];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        (void) rd_kafka_fatal_error(rk, errstr, sizeof(errstr));

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: kafka: fatal producer error: %s; "
                      "replacing the producer", errstr);

        ngx_fluxgate_kafka_fatal = 1;
        ngx_fluxgate_kafka_changed();
        return;
    }

    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
        && !ngx_fluxgate_kafka_down)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: kafka: no broker is up: orders get 503 "
                      "until one is");

        ngx_fluxgate_kafka_down = 1;
        ngx_fluxgate_kafka_changed();
        ngx_fluxgate_kafka_down_since = ngx_current_msec;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "fluxgate: kafka: %s: %s", rd_kafka_err2name(err), reason);
}


/*
 * The statistics (every statistics.interval.ms) say which brokers are up:
 * {"brokers": {"<name>": {"state": "UP", "nodeid": 1, ...}, ...}, ...}.
 * Bootstrap entries (nodeid -1) and the internal one do not count.
 */

static int
ngx_fluxgate_kafka_stats(rd_kafka_t *rk, char *json, size_t json_len,
    void *opaque)
{
    json_t       *root, *brokers, *b, *state, *nodeid;
    const char   *name;
    ngx_uint_t    up;

    root = json_loadb(json, json_len, 0, NULL);
    if (root == NULL) {
        return 0;
    }

    up = 0;
    brokers = json_object_get(root, "brokers");

    json_object_foreach(brokers, name, b) {
        state = json_object_get(b, "state");
        nodeid = json_object_get(b, "nodeid");

        if (json_is_string(state)
            && ngx_strcmp(json_string_value(state), "UP") == 0
            && json_is_integer(nodeid)
            && json_integer_value(nodeid) >= 0)
        {
            up++;
        }
    }

    json_decref(root);

    if (up && ngx_fluxgate_kafka_down) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "fluxgate: kafka: %ui broker(s) up again", up);
        ngx_fluxgate_kafka_down = 0;
        ngx_fluxgate_kafka_changed();

    } else if (up == 0 && !ngx_fluxgate_kafka_down) {
        ngx_fluxgate_kafka_down = 1;
        ngx_fluxgate_kafka_changed();
        ngx_fluxgate_kafka_down_since = ngx_current_msec;
    }

    /* 0: librdkafka frees the JSON */
    return 0;
}
