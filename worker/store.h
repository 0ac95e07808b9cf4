/*
 * store.h: writing consumed messages into PostgreSQL.  The consumer hands
 * over a batch of records (position, bytes, parsed message or the reason it
 * is not one); the store writes the whole batch in one transaction and says
 * what became of each record.  No Kafka types here.
 */
#ifndef FG_STORE_H
#define FG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "message.h"

enum fg_outcome {
    FG_OUT_NONE,
    FG_OUT_ORDER_NEW,           /* recorded, stock of its generation taken */
    FG_OUT_DUPLICATE,           /* order or dead letter already recorded */
    FG_OUT_ORDER_REJECTED,      /* recorded as rejected; reason says why */
    FG_OUT_STOCK_SET,           /* its generation's stock recorded */
    FG_OUT_STOCK_SET_SKIPPED,   /* its generation was set already: replay */
    FG_OUT_STOCK_SET_CONFLICT,  /* its generation has another stock: kept */
    FG_OUT_DEAD_LETTER          /* into dead_letters; reason says why */
};

struct fg_record {
    int32_t             partition;
    int64_t             offset;
    const void         *key;
    size_t              key_len;
    const void         *payload;
    size_t              payload_len;

    int                 valid;      /* msg holds a checked message */
    struct fg_message   msg;
    char                reason[FG_REASON_MAX];

    enum fg_outcome     outcome;    /* set by fg_store_write */
    int32_t             gen_stock;  /* ... with the stock recorded for the
                                       message's generation */
};

struct fg_store_stats {
    size_t  orders;
    size_t  duplicates;
    size_t  rejected;
    size_t  stock_sets;
    size_t  skipped_stock_sets;     /* replays and conflicts */
    size_t  dead_letters;
    size_t  transactions;
};

struct fg_store;

struct fg_store *fg_store_new(const char *conninfo, const char *topic,
    int per_message);

/*
 * Connects and checks that the schema is there.  Waits (logging, with
 * backoff) until it is, unless fail_fast.  -1: gave up, stop requested, or
 * the schema is older than this worker (it says to run --migrate).
 */
int fg_store_open(struct fg_store *s, int fail_fast);

/*
 * Writes the records: one transaction for the batch (one per record with
 * per_message), waiting out PostgreSQL outages.  A record PostgreSQL
 * refuses goes to dead_letters instead.  0 once everything is committed;
 * -1 when a stop was requested while waiting: then nothing of what is not
 * committed may be acknowledged to Kafka.  Rejected orders, stock sets and
 * dead letters are logged here, after their commit.
 */
int fg_store_write(struct fg_store *s, struct fg_record *recs, size_t n,
    struct fg_store_stats *stats);

/*
 * For an idle worker: checks that the connection still works (reconnecting
 * if it does not), so that /healthz does not wait for the next batch to
 * learn that PostgreSQL went away.
 */
void fg_store_ping(struct fg_store *s);

void fg_store_free(struct fg_store *s);

#endif
