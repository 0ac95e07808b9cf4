
/*
 * Flux-Gate: what the two halves of an order's life share.
 * ngx_fluxgate_order.c takes the request to order.lua's decision and
 * answers every outcome but a reservation; ngx_fluxgate_order_finish.c
 * takes a reservation on: the message to Kafka, the client's answer, and
 * done.lua or release.lua, retried until the claim is ended.
 */


#ifndef _NGX_FLUXGATE_ORDER_H_INCLUDED_
#define _NGX_FLUXGATE_ORDER_H_INCLUDED_


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_lua.h"


/* fg:{<productId>}:idem:<key> and shorter */
#define NGX_FLUXGATE_ORDER_KEY_LEN                                           \
    (sizeof("fg:{}:idem:") - 1 + NGX_FLUXGATE_ID_MAX + NGX_FLUXGATE_KEY_MAX)


/*
 * After the client got its answer, a late reply is still waited for, and
 * done.lua or release.lua retried, with a live timer for
 * NGX_FLUXGATE_FINISH_GRACE: long enough for a Redis restart and for a
 * graceful reload not to cut it off, short enough that a frozen Redis does
 * not hold an old worker for long.  A claim left pending after that is
 * fluxgate-reconcile's to settle.
 */
#define NGX_FLUXGATE_ORDER_RETRY          200


typedef enum {
    NGX_FLUXGATE_ORDER_DECIDING = 0,      /* order.lua sent */
    NGX_FLUXGATE_ORDER_PRODUCING,         /* message given to Kafka */
    NGX_FLUXGATE_ORDER_FINISHING          /* done.lua or release.lua sent */
} ngx_fluxgate_order_state_e;


typedef struct {
    ngx_fluxgate_op_t           op;           /* first: see ngx_fluxgate.h */

    ngx_fluxgate_redis_t       *redis;
    ngx_shm_zone_t             *sold_out;     /* NULL: cache off here */
    ngx_msec_t                  sold_out_cache;
    ngx_fluxgate_order_state_e  state;
    ngx_msec_t                  kafka_wait;
    uint64_t                    sent;         /* usec: order.lua, produce */

    ngx_msec_t                  deadline;     /* of the finishing step */
    ngx_msec_t                  ttl;          /* fluxgate_idempotency_ttl */

    int64_t                     generation;   /* reserved in, order.lua */
    int64_t                     generation_stock;

    unsigned                    releasing:1;  /* release.lua, not done.lua */
    unsigned                    waiting:1;    /* its reply is outstanding */
    unsigned                    has_ticket:1; /* X-Queue-Ticket, checked */
    u_char                      proof;

    ngx_fluxgate_ticket_t       ticket;

    ngx_fluxgate_order_req_t    req;
    ngx_str_t                   key;
    u_char                      order_id[NGX_FLUXGATE_UUID_LEN];
    u_char                      client[NGX_FLUXGATE_CLIENT_MAX];
    size_t                      client_len;

    ngx_str_t                   stock_key;
    ngx_str_t                   line_key;
    ngx_str_t                   buyers_key;
    ngx_str_t                   idem_key;
    ngx_str_t                   gen_key;
    ngx_str_t                   pending_key;
    ngx_str_t                   prefix_key;
    u_char                      keys[7 * NGX_FLUXGATE_ORDER_KEY_LEN
                                     + NGX_FLUXGATE_KEY_MAX];
} ngx_fluxgate_order_t;


/* ngx_fluxgate_order_finish.c */
ngx_int_t ngx_fluxgate_order_produce(ngx_fluxgate_order_t *op);
void ngx_fluxgate_order_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err);
void ngx_fluxgate_order_release(ngx_fluxgate_order_t *op);
void ngx_fluxgate_order_timeout(ngx_event_t *ev);
u_char *ngx_fluxgate_order_describe(ngx_fluxgate_op_t *fop, u_char *buf,
    size_t len);
void ngx_fluxgate_order_timed(ngx_fluxgate_order_t *op,
    ngx_fluxgate_histogram_e histogram);
void ngx_fluxgate_order_waited(ngx_fluxgate_order_t *op);
void ngx_fluxgate_order_free(ngx_fluxgate_order_t *op);


#endif /* _NGX_FLUXGATE_ORDER_H_INCLUDED_ */
