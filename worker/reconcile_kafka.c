/*
 * reconcile_kafka.c: the two questions fluxgate-reconcile asks Kafka.
 * How far has the topic been written (the high watermark of each
 * partition), and how far has fluxgate-worker's group committed?  The
 * worker commits only after PostgreSQL committed, so a committed offset at
 * or past a watermark means every message below it is in PostgreSQL.
 *
 * The handle is a consumer configured with the worker's group.id only so
 * that rd_kafka_committed() can fetch that group's offsets: it never
 * subscribes, assigns or commits, so it never joins the group and never
 * moves the worker's partitions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "reconcile.h"

#define KAFKA_TIMEOUT_MS 5000

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf);
static void error_cb(rd_kafka_t *rk, int err, const char *reason,
    void *opaque);

/* the handle's settings; NULL and err when librdkafka refuses one */
rd_kafka_conf_t *
fg_rc_kafka_conf(const struct fg_rc_config *cfg, char *err, size_t size)
{
    rd_kafka_conf_t         *conf = rd_kafka_conf_new();
    char                     errstr[512];
    size_t                   i;
    const char *const        fixed[][2] = {
        { "bootstrap.servers", cfg->brokers },
        { "group.id", cfg->group },
        { "client.id", "fluxgate-reconcile" },
        /* belt and braces: nothing is ever assigned, nothing to commit */
        { "enable.auto.commit", "false" },
        { "enable.auto.offset.store", "false" },
    };

    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK)
        {
            snprintf(err, size, "%s=%s: %s", fixed[i][0], fixed[i][1],
                     errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    /* -X last, so it can override client.id and the like */
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
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    return conf;
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

/* the high (and low) watermark of every partition of the topic */
int
fg_rc_kafka_watermarks(rd_kafka_t *rk, const char *topic,
    struct fg_rc_offsets *off, char *err, size_t size)
{
    const struct rd_kafka_metadata  *md;
    rd_kafka_topic_t                *rkt;
    rd_kafka_resp_err_t              e;
    int64_t                          lo, hi;
    int                              i, n;

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
    n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);

    off->n = n;
    off->high = calloc(n, sizeof(*off->high));
    off->low = calloc(n, sizeof(*off->low));
    if (off->high == NULL || off->low == NULL) {
        snprintf(err, size, "out of memory");
        fg_rc_offsets_free(off);
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
