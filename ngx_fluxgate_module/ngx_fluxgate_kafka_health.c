
/*
 * Flux-Gate: the Kafka topic's health, asked instead of waited for.  "A
 * broker is up" says little: a frozen broker keeps its socket open, a
 * partition may have no leader, fewer in-sync replicas than
 * min.insync.replicas refuse acks=all, the topic may be gone.  So a
 * thread of each worker process asks the cluster every
 * NGX_FLUXGATE_KAFKA_HEALTH ms, traffic or not, for the topic's metadata
 * (every partition has a leader and enough in-sync replicas, read with
 * DescribeConfigs) with a deadline: rd_kafka_metadata() blocks, which the
 * event loop may not.  The answer comes back through a pipe that is an
 * nginx read event; NGX_FLUXGATE_KAFKA_HEALTH_MISSES failed asks in a row
 * make the topic unfit.  The producer (ngx_fluxgate_kafka.c) hands in its
 * handle and is called back after each answer; nothing here knows more
 * of it.
 */


#include "ngx_fluxgate.h"

#include <pthread.h>


/* the topic's metadata: asked this often, each ask with this deadline */
#define NGX_FLUXGATE_KAFKA_HEALTH           1000
#define NGX_FLUXGATE_KAFKA_HEALTH_TIMEOUT   1500

/* asks that failed in a row before the topic is down (a broker may answer
 * for a frozen one once), and the asks between two reads of the topic's
 * min.insync.replicas */
#define NGX_FLUXGATE_KAFKA_HEALTH_MISSES    2
#define NGX_FLUXGATE_KAFKA_CONFIG_EVERY     60


/*
 * The asking thread and the event loop share this, under the mutex: the
 * loop asks (asked, with the producer to ask with), the thread answers
 * (ok, why) and writes a byte to the pipe.  The thread alone keeps
 * min_isr and asks.
 */
typedef struct {
    pthread_t                    thread;
    pthread_mutex_t              mutex;
    pthread_cond_t               cond;
    rd_kafka_t                  *rk;
    rd_kafka_topic_t            *rkt;
    int                          wake;        /* the pipe's write end */

    unsigned                     asked:1;
    unsigned                     stop:1;
    unsigned                     ok:1;
    char                         why[256];

    int                          min_isr;
    ngx_uint_t                   asks;
} ngx_fluxgate_kafka_health_t;


static void ngx_fluxgate_kafka_health_ask(ngx_event_t *ev);
static void ngx_fluxgate_kafka_health_answered(ngx_event_t *ev);
static void *ngx_fluxgate_kafka_health_thread(void *data);
static void ngx_fluxgate_kafka_health_check(ngx_fluxgate_kafka_health_t *h);
static int ngx_fluxgate_kafka_min_isr(rd_kafka_t *rk, const char *topic);


static ngx_fluxgate_kafka_health_t  *ngx_fluxgate_kafka_health;
static ngx_connection_t  *ngx_fluxgate_kafka_health_conn;
static ngx_event_t        ngx_fluxgate_kafka_health_timer;
static ngx_uint_t         ngx_fluxgate_kafka_health_asking;

/* the producer to ask with, and who to tell after each answer */
static rd_kafka_t        *ngx_fluxgate_kafka_health_rk;
static rd_kafka_topic_t  *ngx_fluxgate_kafka_health_rkt;
static ngx_fluxgate_changed_pt  ngx_fluxgate_kafka_health_checked;

static ngx_fluxgate_topic_e  ngx_fluxgate_kafka_topic;
static ngx_uint_t         ngx_fluxgate_kafka_misses;


/* what the topic was last found to be */

ngx_fluxgate_topic_e
ngx_fluxgate_kafka_topic_state(void)
{
    return ngx_fluxgate_kafka_topic;
}


/* whether the thread uses the producer now (it must not be destroyed) */

ngx_uint_t
ngx_fluxgate_kafka_health_busy(void)
{
    return ngx_fluxgate_kafka_health_asking;
}


/* the producer to ask with from now on; NULL: none (no asks) */

void
ngx_fluxgate_kafka_health_use(rd_kafka_t *rk, rd_kafka_topic_t *rkt)
{
    ngx_fluxgate_kafka_health_rk = rk;
    ngx_fluxgate_kafka_health_rkt = rkt;
}



ngx_int_t
ngx_fluxgate_kafka_health_start(ngx_cycle_t *cycle, rd_kafka_t *rk,
    rd_kafka_topic_t *rkt, ngx_fluxgate_changed_pt checked)
{
    int                           fds[2], err;
    ngx_connection_t             *c;
    ngx_fluxgate_kafka_health_t  *h;

    h = ngx_pcalloc(cycle->pool, sizeof(ngx_fluxgate_kafka_health_t));
    if (h == NULL) {
        return NGX_ERROR;
    }

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

    c->read->handler = ngx_fluxgate_kafka_health_answered;
    c->read->log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        close(fds[1]);
        return NGX_ERROR;
    }

    h->wake = fds[1];
    h->min_isr = 1;

    (void) pthread_mutex_init(&h->mutex, NULL);
    (void) pthread_cond_init(&h->cond, NULL);

    err = pthread_create(&h->thread, NULL, ngx_fluxgate_kafka_health_thread,
                         h);
    if (err != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "fluxgate: kafka: pthread_create() failed");
        ngx_close_connection(c);
        close(fds[1]);
        return NGX_ERROR;
    }

    ngx_fluxgate_kafka_health = h;
    ngx_fluxgate_kafka_health_conn = c;
    ngx_fluxgate_kafka_health_asking = 0;
    ngx_fluxgate_kafka_health_use(rk, rkt);
    ngx_fluxgate_kafka_health_checked = checked;
    ngx_fluxgate_kafka_topic = NGX_FLUXGATE_TOPIC_UNKNOWN;
    ngx_fluxgate_kafka_misses = 0;

    ngx_fluxgate_kafka_health_timer.handler = ngx_fluxgate_kafka_health_ask;
    ngx_fluxgate_kafka_health_timer.log = cycle->log;
    /* a connection: what nginx's timer debug lines name an event by */
    ngx_fluxgate_kafka_health_timer.data = c;
    ngx_fluxgate_kafka_health_timer.cancelable = 1;

    /* at once: health is "up" only after the first answer */
    ngx_fluxgate_kafka_health_ask(&ngx_fluxgate_kafka_health_timer);

    return NGX_OK;
}


/* the worker leaves: the thread ends its ask (bounded) and is joined */

void
ngx_fluxgate_kafka_health_stop(void)
{
    ngx_fluxgate_kafka_health_t  *h;

    h = ngx_fluxgate_kafka_health;

    if (h == NULL) {
        return;
    }

    if (ngx_fluxgate_kafka_health_timer.timer_set) {
        ngx_del_timer(&ngx_fluxgate_kafka_health_timer);
    }

    (void) pthread_mutex_lock(&h->mutex);
    h->stop = 1;
    (void) pthread_cond_signal(&h->cond);
    (void) pthread_mutex_unlock(&h->mutex);

    (void) pthread_join(h->thread, NULL);

    ngx_close_connection(ngx_fluxgate_kafka_health_conn);
    close(h->wake);

    (void) pthread_mutex_destroy(&h->mutex);
    (void) pthread_cond_destroy(&h->cond);

    ngx_fluxgate_kafka_health = NULL;
    ngx_fluxgate_kafka_health_conn = NULL;
    ngx_fluxgate_kafka_health_asking = 0;
}


static void
ngx_fluxgate_kafka_health_ask(ngx_event_t *ev)
{
    ngx_fluxgate_kafka_health_t  *h;

    h = ngx_fluxgate_kafka_health;

    if (h == NULL || ngx_fluxgate_kafka_health_rk == NULL
        || ngx_fluxgate_exiting)
    {
        return;
    }

    if (ngx_fluxgate_kafka_health_asking) {
        /* still asking (the thread's deadline bounds it): next time */
        ngx_add_timer(ev, NGX_FLUXGATE_KAFKA_HEALTH);
        return;
    }

    (void) pthread_mutex_lock(&h->mutex);
    h->rk = ngx_fluxgate_kafka_health_rk;
    h->rkt = ngx_fluxgate_kafka_health_rkt;
    h->asked = 1;
    (void) pthread_cond_signal(&h->cond);
    (void) pthread_mutex_unlock(&h->mutex);

    ngx_fluxgate_kafka_health_asking = 1;
}


static void
ngx_fluxgate_kafka_health_answered(ngx_event_t *ev)
{
    u_char                        buf[16], why[256];
    ssize_t                       n;
    ngx_uint_t                    ok;
    ngx_connection_t             *c;
    const char                   *topic;
    ngx_fluxgate_topic_e          was;
    ngx_fluxgate_kafka_health_t  *h;

    c = ev->data;
    h = ngx_fluxgate_kafka_health;

    do {
        n = read(c->fd, buf, sizeof(buf));
    } while (n > 0);

    ev->ready = 0;

    if (h == NULL || !ngx_fluxgate_kafka_health_asking) {
        return;
    }

    (void) pthread_mutex_lock(&h->mutex);

    if (h->asked) {
        /* a byte from an earlier answer: this one is still coming */
        (void) pthread_mutex_unlock(&h->mutex);
        return;
    }

    ok = h->ok;
    (void) ngx_cpystrn(why, (u_char *) h->why, sizeof(why));
    (void) pthread_mutex_unlock(&h->mutex);

    ngx_fluxgate_kafka_health_asking = 0;

    topic = ngx_fluxgate_kafka_health_rkt
            ? rd_kafka_topic_name(ngx_fluxgate_kafka_health_rkt) : "";
    was = ngx_fluxgate_kafka_topic;

    if (ok) {
        ngx_fluxgate_kafka_misses = 0;
        ngx_fluxgate_kafka_topic = NGX_FLUXGATE_TOPIC_OK;

        if (was == NGX_FLUXGATE_TOPIC_BAD) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "fluxgate: kafka: topic \"%s\" is fit again",
                          topic);
        }

    } else if (++ngx_fluxgate_kafka_misses
               >= NGX_FLUXGATE_KAFKA_HEALTH_MISSES)
    {
        ngx_fluxgate_kafka_topic = NGX_FLUXGATE_TOPIC_BAD;

        if (was != NGX_FLUXGATE_TOPIC_BAD) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "fluxgate: kafka: topic \"%s\": %s: unfit, new "
                          "orders get 503 until it is fit again", topic, why);
        }

    } else {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "fluxgate: kafka: topic \"%s\": %s",
                      topic, why);
    }

    /* the producer's gauges, and a replacement that waited for us */
    ngx_fluxgate_kafka_health_checked();

    if (!ngx_fluxgate_exiting
        && !ngx_fluxgate_kafka_health_timer.timer_set)
    {
        ngx_add_timer(&ngx_fluxgate_kafka_health_timer,
                      NGX_FLUXGATE_KAFKA_HEALTH);
    }
}


/* the thread: nothing of nginx's here, only librdkafka and the pipe */

static void *
ngx_fluxgate_kafka_health_thread(void *data)
{
    ngx_fluxgate_kafka_health_t  *h = data;

    sigset_t  set;

    /* signals are the event loop's */
    (void) sigfillset(&set);
    (void) pthread_sigmask(SIG_BLOCK, &set, NULL);

    (void) pthread_mutex_lock(&h->mutex);

    for ( ;; ) {
        while (!h->asked && !h->stop) {
            (void) pthread_cond_wait(&h->cond, &h->mutex);
        }

        if (h->stop) {
            break;
        }

        (void) pthread_mutex_unlock(&h->mutex);

        ngx_fluxgate_kafka_health_check(h);

        (void) pthread_mutex_lock(&h->mutex);
        h->asked = 0;

        if (write(h->wake, "1", 1) == -1) {
            /* the pipe is full: a byte is waiting to be read anyway */
        }
    }

    (void) pthread_mutex_unlock(&h->mutex);

    return NULL;
}


/* one ask: sets h->ok and h->why (under the mutex) */

static void
ngx_fluxgate_kafka_health_check(ngx_fluxgate_kafka_health_t *h)
{
    int                                   i, min_isr;
    char                                  why[256];
    const char                           *topic;
    rd_kafka_resp_err_t                   err;
    const struct rd_kafka_metadata       *md;
    const struct rd_kafka_metadata_topic *t;
    const struct rd_kafka_metadata_partition  *pt;

    topic = rd_kafka_topic_name(h->rkt);

    why[0] = '\0';

    err = rd_kafka_metadata(h->rk, 0, h->rkt, &md,
                            NGX_FLUXGATE_KAFKA_HEALTH_TIMEOUT);

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        (void) snprintf(why, sizeof(why), "no metadata within %dms: %s",
                        NGX_FLUXGATE_KAFKA_HEALTH_TIMEOUT,
                        rd_kafka_err2str(err));
        goto done;
    }

    if (md->topic_cnt != 1) {
        (void) snprintf(why, sizeof(why), "not in the metadata");
        goto destroy;
    }

    t = &md->topics[0];

    if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        (void) snprintf(why, sizeof(why), "%s", rd_kafka_err2str(t->err));
        goto destroy;
    }

    if (t->partition_cnt == 0) {
        (void) snprintf(why, sizeof(why), "has no partitions");
        goto destroy;
    }

    /*
     * The brokers answer: now (and once a minute) the topic's
     * min.insync.replicas too.  Not before: each call may block for its
     * deadline, and a worker process that exits waits for the thread.
     */

    if (h->asks++ % NGX_FLUXGATE_KAFKA_CONFIG_EVERY == 0) {
        min_isr = ngx_fluxgate_kafka_min_isr(h->rk, topic);

        if (min_isr > 0) {
            h->min_isr = min_isr;

        } else {
            /* not known: asked again next time */
            h->asks = 0;
        }
    }

    for (i = 0; i < t->partition_cnt; i++) {
        pt = &t->partitions[i];

        if (pt->leader < 0) {
            (void) snprintf(why, sizeof(why), "partition %d has no leader",
                            (int) pt->id);
            goto destroy;
        }

        if (pt->isr_cnt < h->min_isr) {
            (void) snprintf(why, sizeof(why),
                            "partition %d has %d in-sync replicas, "
                            "min.insync.replicas is %d",
                            (int) pt->id, pt->isr_cnt, h->min_isr);
            goto destroy;
        }
    }

destroy:

    rd_kafka_metadata_destroy(md);

done:

    (void) pthread_mutex_lock(&h->mutex);
    h->ok = (why[0] == '\0');
    (void) snprintf(h->why, sizeof(h->why), "%s", why);
    (void) pthread_mutex_unlock(&h->mutex);
}


/* the topic's min.insync.replicas (its own, or the brokers'), 0: unknown */

static int
ngx_fluxgate_kafka_min_isr(rd_kafka_t *rk, const char *topic)
{
    int                                  min_isr;
    char                                 errstr[256];
    size_t                               i, n;
    rd_kafka_event_t                    *ev;
    rd_kafka_queue_t                    *q;
    rd_kafka_AdminOptions_t             *options;
    rd_kafka_ConfigResource_t           *resource;
    const rd_kafka_ConfigEntry_t       **entries;
    const rd_kafka_ConfigResource_t    **resources;
    const rd_kafka_DescribeConfigs_result_t  *result;

    min_isr = 0;

    q = rd_kafka_queue_new(rk);
    options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);

    if (q == NULL || options == NULL || resource == NULL
        || rd_kafka_AdminOptions_set_request_timeout(options,
                                  NGX_FLUXGATE_KAFKA_HEALTH_TIMEOUT,
                                  errstr, sizeof(errstr))
           != RD_KAFKA_RESP_ERR_NO_ERROR)
    {
        goto free;
    }

    rd_kafka_DescribeConfigs(rk, &resource, 1, options, q);

    ev = rd_kafka_queue_poll(q, NGX_FLUXGATE_KAFKA_HEALTH_TIMEOUT + 500);

    if (ev == NULL) {
        goto free;
    }

    result = rd_kafka_event_DescribeConfigs_result(ev);

    if (result != NULL && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        resources = rd_kafka_DescribeConfigs_result_resources(result, &n);

        if (n == 1
            && rd_kafka_ConfigResource_error(resources[0])
               == RD_KAFKA_RESP_ERR_NO_ERROR)
        {
            entries = rd_kafka_ConfigResource_configs(resources[0], &n);

            for (i = 0; i < n; i++) {
                if (strcmp(rd_kafka_ConfigEntry_name(entries[i]),
                           "min.insync.replicas") == 0
                    && rd_kafka_ConfigEntry_value(entries[i]) != NULL)
                {
                    min_isr = atoi(rd_kafka_ConfigEntry_value(entries[i]));
                }
            }
        }
    }

    rd_kafka_event_destroy(ev);

free:

    if (resource != NULL) {
        rd_kafka_ConfigResource_destroy(resource);
    }

    if (options != NULL) {
        rd_kafka_AdminOptions_destroy(options);
    }

    if (q != NULL) {
        rd_kafka_queue_destroy(q);
    }

    return min_isr;
}
