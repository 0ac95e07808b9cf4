/*
 * metrics.c: the worker's counters and gauges, and the two texts made of
 * them: the Prometheus exposition of /metrics and the JSON of /healthz.
 *
 * Writers are the consumer's thread (batches, rebalances, librdkafka's
 * statistics callback) and the store (PostgreSQL errors); the reader is the
 * responder's thread.  Counters are atomics: a scrape may see one batch's
 * counts half added, which the next scrape mends; but the batch count is
 * added before the bucket and read after the buckets, so no bucket ever
 * exceeds +Inf.  What has more
 * than one word (the lag table, the last PostgreSQL error) sits under one
 * mutex.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

#include <jansson.h>

#include "log.h"
#include "metrics.h"

#define MAX_PARTITIONS  1024

typedef atomic_ullong counter_t;

/* fluxgate_worker_batch_size buckets (messages); +Inf is the count */
static const unsigned long  batch_le[] = {
    1, 10, 50, 100, 500, 1000, 5000, 10000
};
#define NBUCKETS  (sizeof(batch_le) / sizeof(batch_le[0]))

static counter_t    orders_accepted, orders_rejected, orders_duplicate;
static counter_t    stock_sets, dead_letters, batches, batch_sum;
static counter_t    batch_buckets[NBUCKETS];
static counter_t    db_errors, db_retries;
static atomic_llong last_commit_ms;         /* unix ms; 0: none yet */
static atomic_int   pg_up, assigned, brokers_up = -1;   /* -1: no stats yet */

struct lag {
    int        partition;
    long long  lag;
};

static pthread_mutex_t  mutex = PTHREAD_MUTEX_INITIALIZER;
static struct lag       lags[MAX_PARTITIONS];
static size_t           nlags;
static char             pg_error[256] = "not connected yet";

struct buf {
    char    *p;
    size_t   len, cap;
};

static void add(counter_t *c, unsigned long long n);
static void bprintf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void help(struct buf *b, const char *name, const char *type,
    const char *text);
static void quoted(struct buf *b, const char *s);

/* --- what the worker reports -------------------------------------------- */

void
fg_metrics_batch(size_t n, const struct fg_store_stats *st)
{
    struct timespec ts;
    size_t          i;

    add(&orders_accepted, st->orders);
    add(&orders_rejected, st->rejected);
    add(&orders_duplicate, st->duplicates);
    add(&stock_sets, st->stock_sets);
    add(&dead_letters, st->dead_letters);
    add(&batches, 1);
    add(&batch_sum, n);
    for (i = 0; i < NBUCKETS; i++) {
        if (n <= batch_le[i]) {
            add(&batch_buckets[i], 1);
            break;
        }
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&last_commit_ms,
                 (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void
fg_metrics_db_error(void)
{
    add(&db_errors, 1);
}

void
fg_metrics_db_retry(void)
{
    add(&db_retries, 1);
}

void
fg_metrics_pg_state(int up, const char *error)
{
    atomic_store(&pg_up, up);
    if (!up && error != NULL) {
        pthread_mutex_lock(&mutex);
        snprintf(pg_error, sizeof(pg_error), "%s", error);
        pthread_mutex_unlock(&mutex);
    }
}

void
fg_metrics_assigned(int partitions)
{
    atomic_store(&assigned, partitions);
}

/*
 * {"brokers": {"name": {"state": "UP", ...}, ...},
 *  "topics": {"orders": {"partitions": {"0": {"consumer_lag": 3, ...},
 *                                       "-1": {...}}}}}
 * consumer_lag is -1 where librdkafka does not know it (not assigned, no
 * committed offset yet); those partitions are left out.
 */
void
fg_metrics_kafka_stats(const char *json, size_t len, const char *topic)
{
    json_t       *root, *brokers, *parts, *b, *p, *lag;
    json_error_t  jerr;
    const char   *name;
    struct lag    found[MAX_PARTITIONS];
    size_t        n = 0;
    int           up = 0;
    long          id;
    char         *end;

    root = json_loadb(json, len, 0, &jerr);
    if (root == NULL) {
        fg_warning("Kafka: unreadable statistics: %s", jerr.text);
        return;
    }

    brokers = json_object_get(root, "brokers");
    json_object_foreach(brokers, name, b) {
        if (json_is_string(json_object_get(b, "state"))
            && strcmp(json_string_value(json_object_get(b, "state")), "UP")
               == 0)
        {
            up++;
        }
    }

    parts = json_object_get(json_object_get(json_object_get(root, "topics"),
                                            topic), "partitions");
    json_object_foreach(parts, name, p) {
        id = strtol(name, &end, 10);
        lag = json_object_get(p, "consumer_lag");
        if (*end != '\0' || id < 0 || !json_is_integer(lag)
            || json_integer_value(lag) < 0 || n == MAX_PARTITIONS)
        {
            continue;
        }
        found[n].partition = (int) id;
        found[n].lag = json_integer_value(lag);
        n++;
    }
    json_decref(root);

    atomic_store(&brokers_up, up);
    pthread_mutex_lock(&mutex);
    memcpy(lags, found, n * sizeof(found[0]));
    nlags = n;
    pthread_mutex_unlock(&mutex);
}

/* --- what the responder serves ------------------------------------------ */

#define GET(c)  atomic_load(&(c))

char *
fg_metrics_render(size_t *len)
{
    struct buf          b = { NULL, 0, 0 };
    unsigned long long  cum = 0;
    long long           ms;
    size_t              i;

    help(&b, "fluxgate_worker_orders_total", "counter",
         "Order messages written to PostgreSQL, by what became of them.");
    bprintf(&b, "fluxgate_worker_orders_total{status=\"accepted\"} %llu\n",
            GET(orders_accepted));
    bprintf(&b, "fluxgate_worker_orders_total{status=\"rejected\"} %llu\n",
            GET(orders_rejected));
    bprintf(&b, "fluxgate_worker_orders_total{status=\"duplicate\"} %llu\n",
            GET(orders_duplicate));

    help(&b, "fluxgate_worker_stock_sets_total", "counter",
         "stock_set events recorded (replays not counted).");
    bprintf(&b, "fluxgate_worker_stock_sets_total %llu\n", GET(stock_sets));

    help(&b, "fluxgate_worker_batches_total", "counter",
         "Batches committed to PostgreSQL and then to Kafka.");
    bprintf(&b, "fluxgate_worker_batches_total %llu\n", GET(batches));

    help(&b, "fluxgate_worker_batch_size", "histogram",
         "Messages per committed batch.");
    for (i = 0; i < NBUCKETS; i++) {
        cum += GET(batch_buckets[i]);
        bprintf(&b, "fluxgate_worker_batch_size_bucket{le=\"%lu\"} %llu\n",
                batch_le[i], cum);
    }
    /* +Inf and _count from one read, so that they always agree */
    cum = GET(batches);
    bprintf(&b, "fluxgate_worker_batch_size_bucket{le=\"+Inf\"} %llu\n", cum);
    bprintf(&b, "fluxgate_worker_batch_size_sum %llu\n", GET(batch_sum));
    bprintf(&b, "fluxgate_worker_batch_size_count %llu\n", cum);

    help(&b, "fluxgate_worker_consumer_lag", "gauge",
         "Messages of the partition not yet committed by this worker's"
         " group, from librdkafka's statistics.");
    pthread_mutex_lock(&mutex);
    for (i = 0; i < nlags; i++) {
        bprintf(&b, "fluxgate_worker_consumer_lag{partition=\"%d\"} %lld\n",
                lags[i].partition, lags[i].lag);
    }
    pthread_mutex_unlock(&mutex);

    help(&b, "fluxgate_worker_dead_letters_total", "counter",
         "Messages written to dead_letters instead of orders.");
    bprintf(&b, "fluxgate_worker_dead_letters_total %llu\n",
            GET(dead_letters));

    help(&b, "fluxgate_worker_db_errors_total", "counter",
         "Failed PostgreSQL connections and statements.");
    bprintf(&b, "fluxgate_worker_db_errors_total %llu\n", GET(db_errors));

    help(&b, "fluxgate_worker_db_retries_total", "counter",
         "Batch writes redone after PostgreSQL was unavailable.");
    bprintf(&b, "fluxgate_worker_db_retries_total %llu\n", GET(db_retries));

    help(&b, "fluxgate_worker_last_commit_timestamp_seconds", "gauge",
         "Unix time of the last committed batch; 0 before the first.");
    ms = GET(last_commit_ms);
    bprintf(&b, "fluxgate_worker_last_commit_timestamp_seconds %lld.%03lld\n",
            ms / 1000, ms % 1000);

    help(&b, "fluxgate_worker_postgres_up", "gauge",
         "1 when the worker's PostgreSQL connection works.");
    bprintf(&b, "fluxgate_worker_postgres_up %d\n", atomic_load(&pg_up));

    help(&b, "fluxgate_worker_kafka_brokers_up", "gauge",
         "Kafka brokers the consumer is connected to.");
    bprintf(&b, "fluxgate_worker_kafka_brokers_up %d\n",
            atomic_load(&brokers_up) < 0 ? 0 : atomic_load(&brokers_up));

    help(&b, "fluxgate_worker_assigned_partitions", "gauge",
         "Partitions of the topic assigned to this worker.");
    bprintf(&b, "fluxgate_worker_assigned_partitions %d\n",
            atomic_load(&assigned));

    *len = b.len;
    return b.p;
}

char *
fg_metrics_health(int *ok, size_t *len)
{
    struct buf  b = { NULL, 0, 0 };
    int         pg, parts, up, kafka;
    char        error[sizeof(pg_error)];

    pg = atomic_load(&pg_up);
    parts = atomic_load(&assigned);
    up = atomic_load(&brokers_up);
    kafka = parts > 0 || up > 0;
    pthread_mutex_lock(&mutex);
    memcpy(error, pg_error, sizeof(error));
    pthread_mutex_unlock(&mutex);

    *ok = pg && kafka;
    bprintf(&b, "{\"status\":\"%s\",\"postgres\":\"%s\",\"kafka\":\"%s\"",
            *ok ? "ok" : "down", pg ? "up" : "down", kafka ? "up" : "down");
    if (!pg) {
        bprintf(&b, ",\"postgres_error\":");
        quoted(&b, error);
    }
    if (!kafka) {
        bprintf(&b, ",\"kafka_error\":\"%s\"",
                up < 0 ? "no statistics from librdkafka yet"
                       : "no partition assigned and no broker connected");
    }
    bprintf(&b, ",\"partitions\":%d,\"brokers_up\":%d}\n", parts,
            up < 0 ? 0 : up);

    *len = b.len;
    return b.p;
}

/* --- helpers ------------------------------------------------------------ */

static void
add(counter_t *c, unsigned long long n)
{
    atomic_fetch_add(c, n);
}

static void
bprintf(struct buf *b, const char *fmt, ...)
{
    va_list  ap;
    int      n;
    char    *p;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL,
                      b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            return;
        }
        if (b->p != NULL && b->len + n < b->cap) {
            b->len += n;
            return;
        }
        p = realloc(b->p, b->cap + n + 4096);
        if (p == NULL) {
            fg_error("out of memory for the metrics page");
            exit(1);
        }
        b->p = p;
        b->cap += n + 4096;
    }
}

static void
help(struct buf *b, const char *name, const char *type, const char *text)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void
quoted(struct buf *b, const char *s)
{
    char    out[sizeof(pg_error) * 6 + 3];

    fg_json_escape(s, strlen(s), out, sizeof(out));
    bprintf(b, "\"%s\"", out);
}
