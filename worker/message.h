/*
 * message.h: the Kafka message contract (DESIGN.md, "Kafka message", with
 * the v2 fields generation and generationStock, and fluxgate-reconcile's
 * markers) as a C struct, and the worker's parser of it.  Pure:
 * bytes in, a checked message or the reason it is not one out; no Kafka or
 * PostgreSQL types, so the fuzzer links it alone.  The worker's alone:
 * fluxgate-reconcile only writes markers (reconcile_kafka.c), which need
 * no parser.
 */
#ifndef FG_MESSAGE_H
#define FG_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "fluxgate_ids.h"   /* FG_ID_MAX, FG_KEY_MAX and the rules */

#define FG_UUID_LEN        36
#define FG_REASON_MAX      200
#define FG_MESSAGE_MAX     (64 * 1024)  /* larger is not one of ours */

enum fg_message_type {
    FG_MSG_ORDER,
    FG_MSG_STOCK_SET,
    /*
     * {"type":"marker"}: written into a partition by fluxgate-reconcile
     * before it settles claims (README, "How a claim is settled"); it
     * records nothing, its offset is what the worker's commit must pass
     */
    FG_MSG_MARKER
};

struct fg_message {
    enum fg_message_type type;
    char        product_id[FG_ID_MAX + 1];
    int64_t     generation;                     /* >= 1, both types */

    /* type order */
    char        order_id[FG_UUID_LEN + 1];      /* canonical, lower case */
    char        user_id[FG_ID_MAX + 1];
    char        idempotency_key[FG_ID_MAX + 1];
    int32_t     quantity;                       /* >= 1 */
    int64_t     accepted_at;                    /* ms since the epoch */
    int32_t     generation_stock;               /* >= quantity: the stock
                                                   its generation was set to */

    /* type stock_set */
    int32_t     stock;                          /* >= 0 */
    int64_t     at;                             /* ms since the epoch */
};

/*
 * Parses one message value.  0 and *msg filled when it is a valid order,
 * stock_set or marker; -1 and a one-line, printable reason otherwise.  Fields the
 * contract does not name are ignored (newer producers may add some).
 */
int fg_message_parse(const void *buf, size_t len, struct fg_message *msg,
    char reason[FG_REASON_MAX]);

#endif
