/*
 * consumer.c: the worker's loop.  A librdkafka high-level consumer in a
 * group gathers messages into a batch (bounded by --batch-size and
 * --batch-wait), the store writes the batch in one PostgreSQL transaction,
 * and only then are the batch's offsets committed, synchronously.  A crash
 * between the two commits makes Kafka deliver the batch again, which the
 * store recognises: at-least-once delivery, exactly-once effect.
 *
 * Offsets are never stored or committed by librdkafka on its own
 * (enable.auto.commit and enable.auto.offset.store are off), and a
 * rebalance writes and commits the batch in hand before the partitions go,
 * so their next owner starts where this one stopped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "log.h"
#include "message.h"
#include "metrics.h"
#include "store.h"
#include "worker.h"

#define IDLE_POLL_MS        500     /* how soon an idle worker sees SIGTERM */
#define METADATA_TIMEOUT_MS 10000
#define PING_EVERY_MS       1000    /* how soon /healthz sees PostgreSQL go */

struct consumer {
    const struct fg_config  *cfg;
    rd_kafka_t              *rk;
    struct fg_store         *store;

    /* the batch in hand: messages kept alive for their bytes */
    rd_kafka_message_t     **msgs;
    struct fg_record        *recs;
    size_t                   n;
    long long                deadline;      /* ms; flush then at the latest */
    int                      fatal;
};

static rd_kafka_t *create_kafka(struct consumer *c);
static int check_kafka(struct consumer *c);
static void add_message(struct consumer *c, rd_kafka_message_t *m);
static int flush(struct consumer *c, const char *why);
static void commit_offsets(struct consumer *c, char *summary, size_t size);
static void release_batch(struct consumer *c);
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque);
static void error_cb(rd_kafka_t *rk, int err, const char *reason,
    void *opaque);
static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
    const char *buf);
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);
static void count_assignment(rd_kafka_t *rk);
static void format_partitions(const rd_kafka_topic_partition_list_t *parts,
    char *out, size_t size);

int
fg_consume(const struct fg_config *cfg)
{
    struct consumer                   c;
    rd_kafka_topic_partition_list_t  *topics;
    rd_kafka_message_t               *m;
    rd_kafka_resp_err_t               err;
    long long                         now, pinged = 0;
    int                               timeout, rc = 0;

    memset(&c, 0, sizeof(c));
    c.cfg = cfg;
    c.msgs = calloc(cfg->batch_size, sizeof(*c.msgs));
    c.recs = calloc(cfg->batch_size, sizeof(*c.recs));
    if (c.msgs == NULL || c.recs == NULL) {
        fg_error("out of memory for a batch of %ld messages", cfg->batch_size);
        return 1;
    }

    fg_info("starting: topic %s, group %s, brokers %s, batches of up to %ld"
            " messages or %ld ms%s", cfg->topic, cfg->group, cfg->brokers,
            cfg->batch_size, cfg->batch_wait,
            cfg->per_message ? ", one transaction per message" : "");

    c.store = fg_store_new(cfg->pg, cfg->topic, cfg->per_message);
    if (fg_store_open(c.store, cfg->fail_fast) != 0) {
        fg_store_free(c.store);
        return fg_stop ? 0 : 1;
    }

    c.rk = create_kafka(&c);
    if (c.rk == NULL || (cfg->fail_fast && check_kafka(&c) != 0)) {
        if (c.rk != NULL) {
            rd_kafka_destroy(c.rk);
        }
        fg_store_free(c.store);
        return 1;
    }

    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cfg->topic,
                                      RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c.rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fg_error("Kafka: cannot subscribe to %s: %s", cfg->topic,
                 rd_kafka_err2str(err));
        rc = 1;
        goto out;
    }

    while (!fg_stop && !c.fatal) {
        now = fg_now_ms();
        if (c.n > 0 && ((long) c.n >= cfg->batch_size
                        || (cfg->batch_wait > 0 && now >= c.deadline)))
        {
            flush(&c, NULL);
            continue;
        }

        /* --batch-wait 0: poll without waiting until nothing is at hand */
        timeout = c.n == 0 ? IDLE_POLL_MS
                  : now >= c.deadline ? 0 : (int) (c.deadline - now);
        m = rd_kafka_consumer_poll(c.rk, timeout);
        if (m == NULL) {
            if (c.n > 0 && fg_now_ms() >= c.deadline) {
                flush(&c, NULL);
            } else if (c.n == 0 && fg_now_ms() - pinged >= PING_EVERY_MS) {
                /* idle: batches are what notice an outage otherwise */
                fg_store_ping(c.store);
                pinged = fg_now_ms();
            }
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                fg_warning("Kafka: %s (%s [%d]); carrying on",
                           rd_kafka_message_errstr(m),
                           m->rkt ? rd_kafka_topic_name(m->rkt) : cfg->topic,
                           (int) m->partition);
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        add_message(&c, m);
    }

    if (c.fatal) {
        rc = 1;
    } else {
        fg_info("stop requested: finishing the batch in hand (%zu message%s)",
                c.n, c.n == 1 ? "" : "s");
        flush(&c, "shutdown");
    }

out:
    /* leaves the group; the revoke callback finds the batch empty */
    err = rd_kafka_consumer_close(c.rk);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fg_warning("Kafka: leaving the group: %s", rd_kafka_err2str(err));
    }
    release_batch(&c);
    rd_kafka_destroy(c.rk);
    fg_store_free(c.store);
    free(c.msgs);
    free(c.recs);
    fg_info("stopped (exit status %d)", rc);
    return rc;
}

int
fg_check_kafka_options(const struct fg_config *cfg, char *err, size_t size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char             errstr[512];
    size_t           i;
    int              rc = 0;

    for (i = 0; i < cfg->nprops && rc == 0; i++) {
        if (rd_kafka_conf_set(conf, cfg->prop_names[i], cfg->prop_values[i],
                              errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        {
            snprintf(err, size, "-X %s=%s: %s", cfg->prop_names[i],
                     cfg->prop_values[i], errstr);
            rc = -1;
        }
    }
    rd_kafka_conf_destroy(conf);
    return rc;
}

static rd_kafka_t *
create_kafka(struct consumer *c)
{
    const struct fg_config  *cfg = c->cfg;
    rd_kafka_conf_t         *conf;
    rd_kafka_t              *rk;
    char                     errstr[512];
    size_t                   i;
    const char              *defaults[][2] = {
        /* offsets move only when PostgreSQL has committed */
        { "enable.auto.commit", "false" },
        { "enable.auto.offset.store", "false" },
        /* a new group reads the topic from its start: no order is skipped */
        { "auto.offset.reset", "earliest" },
        { "enable.partition.eof", "false" },
        /* a worker killed with -9 holds its partitions until its session
         * expires; supervisord restarts it within seconds, so do not make
         * the restarted one wait the default 45 s for them */
        { "session.timeout.ms", "10000" },
        { "client.id", "fluxgate-worker" },
        /* a fetch waits for 64 KB or 100 ms instead of coming back with
         * each produce batch: at 2,000 orders/s on 2 cores the broker
         * went from 39% to 28% of a core and the worker from 8% to 3%,
         * CPU the acknowledgment path (nginx, Redis, the broker) gets
         * back; an order reaches PostgreSQL up to 100 ms later */
        { "fetch.min.bytes", "65536" },
        { "fetch.wait.max.ms", "100" },
        /* the consumer lag of /metrics; only asked for when it is served */
        { "statistics.interval.ms", c->cfg->metrics_listen ? "1000" : "0" },
    };

    conf = rd_kafka_conf_new();
    for (i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK)
        {
            fg_error("Kafka: %s", errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->brokers, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK
        || rd_kafka_conf_set(conf, "group.id", cfg->group, errstr,
                             sizeof(errstr)) != RD_KAFKA_CONF_OK)
    {
        fg_error("Kafka: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }

    /* -X last, so it can override any of the above */
    for (i = 0; i < cfg->nprops; i++) {
        if (rd_kafka_conf_set(conf, cfg->prop_names[i], cfg->prop_values[i],
                              errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        {
            fg_error("Kafka: -X %s=%s: %s", cfg->prop_names[i],
                     cfg->prop_values[i], errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }

    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);

    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fg_error("Kafka: cannot create the consumer: %s", errstr);
        return NULL;
    }
    /* messages, rebalances and errors all come out of consumer_poll */
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* --fail-fast: the brokers answer and the topic exists, or we give up */
static int
check_kafka(struct consumer *c)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t             err;
    int                             i, found = 0;

    err = rd_kafka_metadata(c->rk, 1, NULL, &md, METADATA_TIMEOUT_MS);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fg_error("Kafka: cannot reach brokers %s: %s; giving up (--fail-fast)",
                 c->cfg->brokers, rd_kafka_err2str(err));
        return -1;
    }
    for (i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, c->cfg->topic) == 0
            && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        {
            found = md->topics[i].partition_cnt;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (found == 0) {
        fg_error("Kafka: topic %s does not exist on %s; giving up"
                 " (--fail-fast)", c->cfg->topic, c->cfg->brokers);
        return -1;
    }
    return 0;
}

static void
add_message(struct consumer *c, rd_kafka_message_t *m)
{
    struct fg_record *r = &c->recs[c->n];

    if (c->n == 0) {
        c->deadline = fg_now_ms() + c->cfg->batch_wait;
    }
    c->msgs[c->n++] = m;

    r->partition = m->partition;
    r->offset = m->offset;
    r->key = m->key;
    r->key_len = m->key_len;
    r->payload = m->payload;
    r->payload_len = m->len;
    r->outcome = FG_OUT_NONE;
    r->valid = fg_message_parse(m->payload, m->len, &r->msg, r->reason) == 0;
}

/*
 * Writes the batch in hand, then commits its offsets.  -1 when it could not
 * be written because a stop came while PostgreSQL was away: then nothing is
 * committed and Kafka will deliver the batch again.
 */
static int
flush(struct consumer *c, const char *why)
{
    struct fg_store_stats  st;
    char                   offsets[512];
    long long              t0 = fg_now_ms();
    size_t                 n = c->n;

    if (n == 0) {
        return 0;
    }

    if (fg_store_write(c->store, c->recs, n, &st) != 0) {
        release_batch(c);
        return -1;
    }
    commit_offsets(c, offsets, sizeof(offsets));
    fg_metrics_batch(n, &st);

    fg_info("batch committed%s%s: messages=%zu accepted=%zu duplicate=%zu"
            " rejected=%zu stock_set=%zu stock_set_skipped=%zu"
            " dead_letter=%zu transactions=%zu ms=%lld offsets=%s",
            why ? " on " : "", why ? why : "", n, st.orders, st.duplicates,
            st.rejected, st.stock_sets, st.skipped_stock_sets,
            st.dead_letters, st.transactions, fg_now_ms() - t0, offsets);
    release_batch(c);
    return 0;
}

/* the next offset to read of each partition in the batch, synchronously */
static void
commit_offsets(struct consumer *c, char *summary, size_t size)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_topic_partition_t      *p;
    rd_kafka_resp_err_t              err;
    size_t                           i;
    int                              j;

    list = rd_kafka_topic_partition_list_new(8);
    for (i = 0; i < c->n; i++) {
        p = rd_kafka_topic_partition_list_find(list, c->cfg->topic,
                                               c->recs[i].partition);
        if (p == NULL) {
            p = rd_kafka_topic_partition_list_add(list, c->cfg->topic,
                                                  c->recs[i].partition);
            p->offset = -1;
        }
        if (c->recs[i].offset + 1 > p->offset) {
            p->offset = c->recs[i].offset + 1;
        }
    }

    err = rd_kafka_commit(c->rk, list, 0);
    for (j = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && j < list->cnt; j++) {
        err = list->elems[j].err;
    }
    format_partitions(list, summary, size);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* the rows are in; redelivered messages will be found there */
        fg_warning("Kafka: committing offsets %s failed: %s; those messages"
                   " may be delivered again and will be skipped as already"
                   " written", summary, rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(list);
}

static void
release_batch(struct consumer *c)
{
    size_t i;

    for (i = 0; i < c->n; i++) {
        rd_kafka_message_destroy(c->msgs[i]);
    }
    c->n = 0;
}

/*
 * Called from rd_kafka_consumer_poll().  Partitions about to go take the
 * batch with them: write and commit it first, so the next owner starts
 * after it.  When the partitions are already lost (the group moved on
 * without us) the write still happens; the commit fails and the new owner
 * finds the rows there.
 */
static void
rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct consumer *c = opaque;
    rd_kafka_error_t *error = NULL;
    char              list[512];
    int               cooperative;

    cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    format_partitions(parts, list, sizeof(list));

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        fg_info("Kafka: assigned %s", list);
        if (cooperative) {
            error = rd_kafka_incremental_assign(rk, parts);
        } else {
            err = rd_kafka_assign(rk, parts);
        }
        break;

    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        fg_info("Kafka: %s %s; writing the batch in hand first",
                rd_kafka_assignment_lost(rk) ? "lost" : "revoked", list);
        flush(c, "rebalance");
        if (cooperative) {
            error = rd_kafka_incremental_unassign(rk, parts);
        } else {
            err = rd_kafka_assign(rk, NULL);
        }
        break;

    default:
        fg_error("Kafka: rebalance failed: %s", rd_kafka_err2str(err));
        flush(c, "rebalance");
        err = rd_kafka_assign(rk, NULL);
        break;
    }

    count_assignment(rk);

    if (error != NULL) {
        fg_error("Kafka: applying the assignment: %s",
                 rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (!cooperative && err != RD_KAFKA_RESP_ERR_NO_ERROR
               && err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
               && err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
    {
        fg_error("Kafka: applying the assignment: %s", rd_kafka_err2str(err));
    }
}

static void
error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct consumer *c = opaque;
    char             fatal[512];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        fg_error("Kafka: fatal: %s; exiting so supervisord restarts us", fatal);
        c->fatal = 1;
        return;
    }
    /* librdkafka reconnects by itself; this only says what it is doing */
    fg_warning("Kafka: %s (%s); librdkafka keeps retrying",
               reason, rd_kafka_err2name(err));
}

static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;
    /* connection failures also reach error_cb, which says it in one line */
    if (strcmp(fac, "FAIL") == 0) {
        return;
    }
    fg_log(level <= 3 ? FG_LOG_ERROR : level == 4 ? FG_LOG_WARNING
           : level <= 6 ? FG_LOG_INFO : FG_LOG_DEBUG,
           "librdkafka %s: %s", fac, buf);
}

/* librdkafka's statistics, from consumer_poll: lag and brokers for /metrics */
static int
stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct consumer *c = opaque;

    (void) rk;
    fg_metrics_kafka_stats(json, len, c->cfg->topic);
    return 0;                   /* librdkafka frees json */
}

static void
count_assignment(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *parts = NULL;

    if (rd_kafka_assignment(rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        fg_metrics_assigned(parts->cnt);
        rd_kafka_topic_partition_list_destroy(parts);
    }
}

/* "orders[0]@120,orders[3]@77" (offsets only where set) */
static void
format_partitions(const rd_kafka_topic_partition_list_t *parts, char *out,
    size_t size)
{
    size_t len = 0;
    int    i, w;

    out[0] = '\0';
    for (i = 0; parts != NULL && i < parts->cnt && len < size; i++) {
        if (parts->elems[i].offset >= 0) {
            w = snprintf(out + len, size - len, "%s%s[%d]@%lld",
                         i ? "," : "", parts->elems[i].topic,
                         (int) parts->elems[i].partition,
                         (long long) parts->elems[i].offset);
        } else {
            w = snprintf(out + len, size - len, "%s%s[%d]", i ? "," : "",
                         parts->elems[i].topic,
                         (int) parts->elems[i].partition);
        }
        if (w < 0) {
            break;
        }
        len += (size_t) w;
    }
    if (parts == NULL || parts->cnt == 0) {
        snprintf(out, size, "(none)");
    }
}
