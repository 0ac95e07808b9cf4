/*
 * reconcile_kafka.c: what fluxgate-reconcile asks of Kafka.  How far has
 * the topic been written (the high watermark of each partition), and how
 * far has fluxgate-worker's group committed?  The worker commits only
 * after PostgreSQL committed, so a committed offset at or past a point of
 * a partition means every message below it is in PostgreSQL.
 *
 * Before it settles claims it also writes a marker into every partition
 * (acks=all): once a marker is acknowledged, every message the partition
 * will ever show below it is committed, whatever its high watermark said
 * (a leader whose followers stopped fetching holds messages above it, and
 * shows them later), and whatever reaches the partition afterwards lands
 * above it.
 *
 * The reading handle is a consumer configured with the worker's group.id
 * only so that rd_kafka_committed() can fetch that group's offsets: it
 * never subscribes, assigns or commits, so it never joins the group and
 * never moves the worker's partitions.  The markers go through a producer
 * of their own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "reconcile.h"

#define KAFKA_TIMEOUT_MS 5000
#define MARK_KEY         "fluxgate-reconcile"

/* one marker's delivery report */
struct mark {
    int                  done;
    rd_kafka_resp_err_t  err;
    long long            offset;
};

static rd_kafka_conf_t *make_conf(const struct fg_rc_config *cfg,
    const char *const fixed[][2], size_t nfixed, const char *const last[][2],
    size_t nlast, char *err, size_t size);
static int set_all(rd_kafka_conf_t *conf, const char *const props[][2],
    size_t n, char *err, size_t size);
static int offsets_alloc(struct fg_rc_offsets *off, int n, char *err,
    size_t size);
static int partition_count(rd_kafka_t *rk, const char *topic, int *n,
    char *err, size_t size);
static void marked(rd_kafka_t *rk, const rd_kafka_message_t *msg,
    void *opaque);
static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf);
static void error_cb(rd_kafka_t *rk, int err, const char *reason,
    void *opaque);

/* the reading handle's settings; NULL and err when librdkafka refuses one */
rd_kafka_conf_t *
fg_rc_kafka_conf(const struct fg_rc_config *cfg, char *err, size_t size)
{
    const char *const  fixed[][2] = {
        { "bootstrap.servers", cfg->brokers },
        { "group.id", cfg->group },
        { "client.id", "fluxgate-reconcile" },
        /* belt and braces: nothing is ever assigned, nothing to commit */
        { "enable.auto.commit", "false" },
        { "enable.auto.offset.store", "false" },
    };

    return make_conf(cfg, fixed, sizeof(fixed) / sizeof(fixed[0]), NULL, 0,
                     err, size);
}

rd_kafka_t *
fg_rc_kafka_new(const struct fg_rc_config *cfg, char *err, size_t size)
{
    rd_kafka_conf_t *conf;
    rd_kafka_t      *rk;

    conf = fg_rc_kafka_conf(cfg, err, size);
    if (conf == NULL) {
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, size);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* the markers' producer: -X as for the reading handle, but always acks=all */
rd_kafka_t *
fg_rc_kafka_producer_new(const struct fg_rc_config *cfg, char *err,
    size_t size)
{
    rd_kafka_conf_t   *conf;
    rd_kafka_t        *rk;
    char               timeout[16];
    const char *const  fixed[][2] = {
        { "bootstrap.servers", cfg->brokers },
        { "client.id", "fluxgate-reconcile" },
    };
    const char *const  last[][2] = {
        /* acknowledged by every in-sync replica: committed, not just
         * written on the leader */
        { "acks", "all" },
        /* a partition that cannot take a write in this time is one whose
         * claims wait for the next round */
        { "message.timeout.ms", timeout },
    };

    snprintf(timeout, sizeof(timeout), "%d", KAFKA_TIMEOUT_MS);
    conf = make_conf(cfg, fixed, sizeof(fixed) / sizeof(fixed[0]), last,
                     sizeof(last) / sizeof(last[0]), err, size);
    if (conf == NULL) {
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, marked);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, size);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* fixed, then -X (so it can override client.id and the like), then last */
static rd_kafka_conf_t *
make_conf(const struct fg_rc_config *cfg, const char *const fixed[][2],
    size_t nfixed, const char *const last[][2], size_t nlast, char *err,
    size_t size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char             errstr[512];
    size_t           i;

    if (set_all(conf, fixed, nfixed, err, size) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (i = 0; i < cfg->nprops; i++) {
        if (rd_kafka_conf_set(conf, cfg->prop_names[i], cfg->prop_values[i],
                              errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        {
            snprintf(err, size, "-X %s=%s: %s", cfg->prop_names[i],
                     cfg->prop_values[i], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (set_all(conf, last, nlast, err, size) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    return conf;
}

static int
set_all(rd_kafka_conf_t *conf, const char *const props[][2], size_t n,
    char *err, size_t size)
{
    char    errstr[512];
    size_t  i;

    for (i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK)
        {
            snprintf(err, size, "%s=%s: %s", props[i][0], props[i][1],
                     errstr);
            return -1;
        }
    }
    return 0;
}

/* the high (and low) watermark of every partition of the topic */
int
fg_rc_kafka_watermarks(rd_kafka_t *rk, const char *topic,
    struct fg_rc_offsets *off, char *err, size_t size)
{
    rd_kafka_resp_err_t  e;
    int64_t              lo, hi;
    int                  i, n;

    if (partition_count(rk, topic, &n, err, size) != 0
        || offsets_alloc(off, n, err, size) != 0)
    {
        return -1;
    }
    for (i = 0; i < n; i++) {
        e = rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi,
                                             KAFKA_TIMEOUT_MS);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, size, "watermarks of %s[%d]: %s", topic, i,
                     rd_kafka_err2str(e));
            fg_rc_offsets_free(off);
            return -1;
        }
        off->low[i] = lo;
        off->high[i] = hi;
    }
    return 0;
}

/*
 * Writes a marker into every partition of the topic and waits for each to
 * be acknowledged by the in-sync replicas: 0 and, in `marks`, the offset
 * just past each marker (what the group's commit must reach); -1 and err
 * when a partition did not take its marker in time (no leader, too few
 * replicas in sync, a broker that does not answer).
 */
int
fg_rc_kafka_mark(rd_kafka_t *rk, const char *topic,
    struct fg_rc_offsets *marks, char *err, size_t size)
{
    struct mark          *m;
    struct timespec       ts;
    rd_kafka_resp_err_t   e;
    char                  value[128];
    int                   i, n, len, late = 0;

    if (partition_count(rk, topic, &n, err, size) != 0) {
        return -1;
    }
    m = calloc(n, sizeof(*m));
    if (m == NULL || offsets_alloc(marks, n, err, size) != 0) {
        free(m);
        snprintf(err, size, "out of memory");
        return -1;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    len = snprintf(value, sizeof(value), "{\"type\":\"marker\","
                   "\"by\":\"fluxgate-reconcile\",\"at\":%lld}",
                   (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    for (i = 0; i < n; i++) {
        e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                              RD_KAFKA_V_PARTITION(i),
                              RD_KAFKA_V_KEY(MARK_KEY, sizeof(MARK_KEY) - 1),
                              RD_KAFKA_V_VALUE(value, (size_t) len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_OPAQUE(&m[i]), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            m[i].done = 1;
            m[i].err = e;
        }
    }

    /*
     * Each marker is reported within message.timeout.ms; whatever is not
     * by then is purged, so that no report can come after m is freed.
     */
    rd_kafka_flush(rk, 2 * KAFKA_TIMEOUT_MS);
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk, KAFKA_TIMEOUT_MS);

    for (i = 0; i < n; i++) {
        late += !m[i].done;
    }
    if (late > 0) {
        /* never seen; m stays allocated for the reports still to come */
        snprintf(err, size, "%d marker%s of %s never reported", late,
                 late == 1 ? "" : "s", topic);
        fg_rc_offsets_free(marks);
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (m[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, size, "marker for %s[%d]: %s", topic, i,
                     rd_kafka_err2str(m[i].err));
            fg_rc_offsets_free(marks);
            free(m);
            return -1;
        }
        marks->low[i] = m[i].offset;
        marks->high[i] = m[i].offset + 1;
    }
    free(m);
    return 0;
}

/*
 * 1 when the group's committed offset of every partition reaches `want`
 * (an empty partition needs no commit), 0 when not (why says which
 * partition is behind), -1 when Kafka did not answer (why says so).
 */
int
fg_rc_kafka_caught_up(rd_kafka_t *rk, const char *topic,
    const struct fg_rc_offsets *want, char *why, size_t size)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t              e;
    long long                        done;
    int                              i, rc = 1;

    list = rd_kafka_topic_partition_list_new(want->n);
    for (i = 0; i < want->n; i++) {
        rd_kafka_topic_partition_list_add(list, topic, i);
    }
    e = rd_kafka_committed(rk, list, KAFKA_TIMEOUT_MS);
    for (i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && i < list->cnt; i++) {
        e = list->elems[i].err;
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(why, size, "committed offsets of group: %s",
                 rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(list);
        return -1;
    }

    for (i = 0; i < list->cnt && rc == 1; i++) {
        done = list->elems[i].offset;   /* RD_KAFKA_OFFSET_INVALID: none */
        if (want->high[i] > want->low[i] && done < want->high[i]) {
            snprintf(why, size, "%s[%d] committed up to %lld of %lld",
                     topic, i, done < 0 ? 0 : done,
                     (long long) want->high[i]);
            rc = 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

/* the topic's number of partitions, from a fresh metadata request */
static int
partition_count(rd_kafka_t *rk, const char *topic, int *n, char *err,
    size_t size)
{
    const struct rd_kafka_metadata  *md;
    rd_kafka_topic_t                *rkt;
    rd_kafka_resp_err_t              e;

    rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rkt == NULL) {
        snprintf(err, size, "topic %s: %s", topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    e = rd_kafka_metadata(rk, 0, rkt, &md, KAFKA_TIMEOUT_MS);
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, size, "metadata of topic %s: %s", topic,
                 rd_kafka_err2str(e));
        return -1;
    }
    if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR
        || md->topics[0].partition_cnt == 0)
    {
        snprintf(err, size, "topic %s: %s", topic, md->topic_cnt == 1
                 ? rd_kafka_err2str(md->topics[0].err) : "not found");
        rd_kafka_metadata_destroy(md);
        return -1;
    }
    *n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return 0;
}

static int
offsets_alloc(struct fg_rc_offsets *off, int n, char *err, size_t size)
{
    off->n = n;
    off->high = calloc(n, sizeof(*off->high));
    off->low = calloc(n, sizeof(*off->low));
    if (off->high == NULL || off->low == NULL) {
        snprintf(err, size, "out of memory");
        fg_rc_offsets_free(off);
        return -1;
    }
    return 0;
}

/* a marker's delivery report, served by rd_kafka_flush() */
static void
marked(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    struct mark *m = msg->_private;

    (void) rk;
    (void) opaque;
    m->err = msg->err;
    m->offset = msg->offset;
    m->done = 1;
}

void
fg_rc_offsets_free(struct fg_rc_offsets *off)
{
    free(off->high);
    free(off->low);
    off->high = NULL;
    off->low = NULL;
    off->n = 0;
}

static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;
    /* connection failures fail the call that needed the broker, which
     * says so in one line */
    if (strcmp(fac, "FAIL") == 0) {
        level = 7;
    }
    fg_log(level <= 3 ? FG_LOG_ERROR : level == 4 ? FG_LOG_WARNING
           : FG_LOG_DEBUG, "librdkafka %s: %s", fac, buf);
}

static void
error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void) rk;
    (void) opaque;
    fg_debug("Kafka: %s (%s)", reason, rd_kafka_err2name(err));
}
