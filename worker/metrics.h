/*
 * metrics.h: what the worker counts for Prometheus and for /healthz.  The
 * consumer and the store report here (from the consumer's thread); the
 * responder of metrics_http.c reads it from its own thread, so every value
 * is an atomic or sits under the one mutex of metrics.c.
 */
#ifndef FG_METRICS_H
#define FG_METRICS_H

#include <stddef.h>

#include "store.h"

/* a batch of n messages committed in PostgreSQL, with what became of it */
void fg_metrics_batch(size_t n, const struct fg_store_stats *st);

/* a PostgreSQL statement or connection failed; a failed write is redone */
void fg_metrics_db_error(void);
void fg_metrics_db_retry(void);

/* the worker's PostgreSQL connection works (up) or not, and why not */
void fg_metrics_pg_state(int up, const char *error);

/* partitions assigned to this worker now */
void fg_metrics_assigned(int partitions);

/*
 * librdkafka's statistics JSON (statistics.interval.ms): the consumer lag
 * of each partition of topic, and how many brokers are connected.
 */
void fg_metrics_kafka_stats(const char *json, size_t len, const char *topic);

/* the Prometheus text exposition; malloc'ed, the caller frees it */
char *fg_metrics_render(size_t *len);

/* the /healthz body; *ok non-zero when healthy.  malloc'ed */
char *fg_metrics_health(int *ok, size_t *len);

/*
 * --metrics-listen ADDR:PORT: binds now (so a busy port fails at start-up
 * with err set) and answers GET /metrics and GET /healthz from a thread of
 * its own until fg_metrics_http_stop().
 */
int fg_metrics_http_start(const char *listen, char *err, size_t size);
void fg_metrics_http_stop(void);

#endif
