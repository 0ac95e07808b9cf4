/*
 * reconcile.h: fluxgate-reconcile's settings (resolved once by
 * reconcile.c from flags and FLUXGATE_* variables), the books of one
 * product as read from Redis and PostgreSQL, and the calls between its
 * files: Redis (reconcile_redis.c), Kafka (reconcile_kafka.c), PostgreSQL
 * (reconcile_db.c) and the round that settles and checks (reconcile_books.c).
 */
#ifndef FG_RECONCILE_H
#define FG_RECONCILE_H

#include <signal.h>
#include <stddef.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "strmap.h"

#define FG_RC_VERSION       "0.1.0"
#define FG_RC_MAX_PROPS     64
#define FG_RC_UUID_LEN      36

/* exit statuses, also the outcome of one round */
enum fg_rc_status {
    FG_RC_BALANCED = 0,
    FG_RC_DRIFT = 1,
    FG_RC_USAGE = 2,
    FG_RC_UNREACHABLE = 3
};

struct fg_rc_config {
    const char  *redis;             /* host:port or unix:/path */
    const char  *pg;                /* libpq conninfo; "" = PG* environment */
    const char  *brokers;
    const char  *topic;
    const char  *group;             /* the worker's consumer group */
    const char **products;          /* --product; NULL: every known one */
    size_t       nproducts;
    long         claim_deadline;    /* ms after reserved-at: overdue */
    long         idempotency_ttl;   /* ms a settled key replays 200 */
    long         settle_wait;       /* ms to wait for the worker to catch up */
    long         watch;             /* seconds between rounds; 0: one round */
    int          repair;
    int          json;
    size_t       nprops;
    const char  *prop_names[FG_RC_MAX_PROPS];     /* -X name=value */
    const char  *prop_values[FG_RC_MAX_PROPS];
};

/* one pending claim: a member of fg:{p}:pending and its idem hash */
struct fg_rc_claim {
    char        *key;               /* idempotency key (the zset member) */
    char         order_id[FG_RC_UUID_LEN + 1];
    char        *user;
    long long    generation;
    long long    quantity;
    long long    reserved_at;       /* ms, Redis TIME */
    int          pending;           /* the hash still says s=pending */
    int          recorded;          /* orders.id has it */
    int          rejected;          /* ... with status rejected */
};

/* what one product's books say, in Redis and PostgreSQL */
struct fg_rc_product {
    char               *id;
    int                 known;          /* fg:{p}:gen exists */
    long long           generation;
    long long           stock_set;      /* the generation's initial stock */
    long long           stock;          /* Redis, current generation */
    struct fg_rc_claim *claims;         /* every pending claim */
    size_t              nclaims;
    long long           recorded_units; /* accepted rows of the generation */

    /* derived by reconcile_books.c */
    size_t              overdue;
    long long           pending_units;  /* current generation, not recorded */
    long long           drift;
    const char         *state;          /* balanced, drift, in-flight or
                                           unknown */
    long                verdict;        /* 0 fine; else the drift, LONG_MIN
                                           for unknown */

    /* settled in this round */
    size_t              settled_done;
    size_t              settled_released;
};

/*
 * A point in each partition of the topic: the high watermarks, or the
 * offsets just past fluxgate-reconcile's markers.  A partition with high
 * above low needs the group's commit to reach high.
 */
struct fg_rc_offsets {
    int          n;
    long long   *high;
    long long   *low;
};

/* the connections of one round; NULL until opened */
struct fg_rc_conns {
    redisContext   *redis;
    PGconn         *pg;
    rd_kafka_t     *kafka;          /* reads offsets */
    rd_kafka_t     *producer;       /* writes the markers */
};

/*
 * --watch: the previous round's verdict per product, so that a round
 * prints a product only when its verdict changed or claims were settled
 * (a lasting drift is said once, not every few seconds)
 */
struct fg_rc_memory {
    struct fg_strmap        seen;   /* product id -> verdict */
    struct fg_rc_product   *prods;  /* the round that owns seen's keys */
    size_t                  n;
};

extern volatile sig_atomic_t fg_rc_stop;

/* reconcile_redis.c */
redisContext *fg_rc_redis_connect(const char *addr, const char **err);
int fg_rc_redis_products(redisContext *c, char ***ids, size_t *n,
    const char **err);
int fg_rc_redis_now(redisContext *c, long long *ms, const char **err);
int fg_rc_redis_read(redisContext *c, struct fg_rc_product *p,
    const char **err);
int fg_rc_redis_overdue(redisContext *c, struct fg_rc_product *p,
    long long before_ms, const char **err);
int fg_rc_redis_done(redisContext *c, const struct fg_rc_product *p,
    const struct fg_rc_claim *cl, long ttl, long long *res,
    const char **err);
int fg_rc_redis_release(redisContext *c, const struct fg_rc_product *p,
    const struct fg_rc_claim *cl, long long *res, const char **err);
void fg_rc_product_clear(struct fg_rc_product *p);

/* reconcile_kafka.c */
rd_kafka_conf_t *fg_rc_kafka_conf(const struct fg_rc_config *cfg, char *err,
    size_t size);
rd_kafka_t *fg_rc_kafka_new(const struct fg_rc_config *cfg, char *err,
    size_t size);
rd_kafka_t *fg_rc_kafka_producer_new(const struct fg_rc_config *cfg,
    char *err, size_t size);
int fg_rc_kafka_watermarks(rd_kafka_t *rk, const char *topic,
    struct fg_rc_offsets *off, char *err, size_t size);
int fg_rc_kafka_mark(rd_kafka_t *rk, const char *topic,
    struct fg_rc_offsets *marks, char *err, size_t size);
int fg_rc_kafka_caught_up(rd_kafka_t *rk, const char *topic,
    const struct fg_rc_offsets *want, char *why, size_t size);
void fg_rc_offsets_free(struct fg_rc_offsets *off);

/* reconcile_db.c */
int fg_rc_db_recorded_units(PGconn *conn, struct fg_rc_product *p,
    const char **err);
int fg_rc_db_mark_recorded(PGconn *conn, struct fg_rc_claim *claims,
    size_t n, const char **err);

/* reconcile_books.c: one round and its status; memory NULL: print all */
enum fg_rc_status fg_rc_round(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns, struct fg_rc_memory *memory);
void fg_rc_close(struct fg_rc_conns *conns);
void fg_rc_forget(struct fg_rc_memory *memory);

#endif
