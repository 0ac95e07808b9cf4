/*
 * worker.h: the worker's settings, as main.c resolved them from flags and
 * FLUXGATE_* environment variables, and the stop flag the signal handlers
 * set.  Everything else reads these; nothing else parses options.
 */
#ifndef FG_WORKER_H
#define FG_WORKER_H

#include <signal.h>
#include <stddef.h>

#define FG_VERSION "0.1.0"

#define FG_MAX_KAFKA_PROPS 64

struct fg_config {
    const char  *brokers;
    const char  *topic;
    const char  *group;
    const char  *pg;            /* libpq conninfo; "" = PG* environment */
    const char  *sql_dir;
    const char  *metrics_listen;    /* ADDR:PORT of /metrics; NULL: none */
    long         batch_size;    /* messages per transaction, at most */
    long         batch_wait;    /* ms from a batch's first message to commit */
    int          migrate;
    int          fail_fast;
    int          per_message;
    size_t       nprops;
    const char  *prop_names[FG_MAX_KAFKA_PROPS];  /* -X name=value */
    const char  *prop_values[FG_MAX_KAFKA_PROPS];
};

/* set by SIGTERM/SIGINT; acted on between batches */
extern volatile sig_atomic_t fg_stop;

/* consumer.c: consume until stopped; the process's exit status */
int fg_consume(const struct fg_config *cfg);

/* consumer.c: 0 when librdkafka takes every -X property, else err says */
int fg_check_kafka_options(const struct fg_config *cfg, char *err,
    size_t size);

#endif
