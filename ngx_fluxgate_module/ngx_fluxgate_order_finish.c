
/*
 * Flux-Gate: an order after order.lua reserved it (ngx_fluxgate_order.c
 * brought it here).
 *
 *     -> the message, with its generation, to Kafka
 *                                           (deadline: message.timeout.ms)
 *     -> delivered: the client gets 200, done.lua ends the claim
 *        not delivered: release.lua gives the reservation back, 503
 *        maybe delivered: 503, the claim stays pending (settled later)
 *
 * release.lua only gives back what this order's pending key says it took,
 * so it is safe whenever it is unknown whether order.lua ran (the
 * connection broke with it in flight); done.lua is idempotent too.  Both
 * are retried, across a reconnect and error replies, until
 * NGX_FLUXGATE_FINISH_GRACE passed.  A claim no script could end (nginx
 * killed, Redis away for longer) has no TTL: fluxgate-reconcile settles it
 * against PostgreSQL, so it never expires into a second sale.
 */


#include "ngx_fluxgate_order.h"


static void ngx_fluxgate_order_accept(ngx_fluxgate_order_t *op);
static void ngx_fluxgate_order_finishing(ngx_fluxgate_order_t *op,
    ngx_uint_t release);
static void ngx_fluxgate_order_finish(ngx_fluxgate_order_t *op);
static void ngx_fluxgate_order_finished(redisReply *reply, void *data);
static void ngx_fluxgate_order_settled(ngx_fluxgate_order_t *op,
    long long rc);


ngx_int_t
ngx_fluxgate_order_produce(ngx_fluxgate_order_t *op)
{
    u_char     value[512];
    ngx_str_t  key, msg;

    key.data = (u_char *) op->req.product_id;
    key.len = op->req.product_id_len;

    msg.data = value;
    msg.len = ngx_snprintf(value, sizeof(value),
                           "{\"type\":\"order\",\"orderId\":\"%*s\","
                           "\"productId\":\"%s\",\"userId\":\"%s\","
                           "\"quantity\":%L,\"idempotencyKey\":\"%V\","
                           "\"acceptedAt\":%uL,\"generation\":%L,"
                           "\"generationStock\":%L}",
                           (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                           op->req.product_id, op->req.user_id,
                           op->req.quantity, &op->key,
                           ngx_fluxgate_now_ms(), op->generation,
                           op->generation_stock)
              - value;

    /*
     * $fluxgate_kafka_time counts from here (ngx_fluxgate_order_timed()):
     * the message built above is the gate's own time
     */
    op->sent = ngx_fluxgate_metrics_clock();

    if (ngx_fluxgate_kafka_produce(&key, &msg, &op->op.delivery) != NGX_OK) {
        return NGX_ERROR;
    }

    op->op.log.action = "waiting for the order's delivery report";

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &op->op.log, 0,
                   "fluxgate: reserved in generation %L, producing (%uz "
                   "bytes)", op->generation, msg.len);

    op->state = NGX_FLUXGATE_ORDER_PRODUCING;

    /* a live timer also keeps a gracefully exiting worker until the end */
    ngx_add_timer(&op->op.timer, op->kafka_wait);

    return NGX_OK;
}


void
ngx_fluxgate_order_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err)
{
    ngx_fluxgate_order_t  *op = (ngx_fluxgate_order_t *) dlv;

    if (op->op.timer.timer_set) {
        ngx_del_timer(&op->op.timer);
    }

    ngx_fluxgate_order_timed(op, NGX_FLUXGATE_HISTOGRAM_KAFKA);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &op->op.log, 0,
                   "fluxgate: delivery report %d (%s)", status, err);

    switch (status) {

    case NGX_FLUXGATE_DELIVERED:
        /*
         * The answer first: finishing may end (and free) the order at
         * once, when Redis is gone and the worker is exiting
         */
        ngx_fluxgate_order_accept(op);
        ngx_fluxgate_order_finishing(op, 0);
        return;

    case NGX_FLUXGATE_NOT_DELIVERED:
        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: order not delivered to kafka: %s, "
                      "releasing it", err);

        ngx_fluxgate_op_fail(&op->op, "kafka unavailable");
        ngx_fluxgate_order_release(op);
        return;

    default: /* NGX_FLUXGATE_MAYBE_DELIVERED */

        /*
         * It may be in Kafka, and then the worker records it: giving the
         * stock back could oversell.  The claim stays pending (it has no
         * TTL) until fluxgate-reconcile finds it recorded in PostgreSQL,
         * or not recorded once the worker read past it, and settles it;
         * meanwhile a retry of its key gets in_progress, never a second
         * order.
         */

        if (op->op.answered) {
            /* the client was told at the deadline, and it was logged */
            ngx_log_error(NGX_LOG_INFO, &op->op.log, 0,
                          "fluxgate: delivery report after the deadline: "
                          "%s; its claim stays pending until it is "
                          "settled", err);

        } else {
            ngx_log_error(NGX_LOG_WARN, &op->op.log, 0,
                          "fluxgate: order (quantity %L) possibly "
                          "persisted in kafka: %s; its claim stays pending "
                          "until it is settled", op->req.quantity, err);
        }

        ngx_fluxgate_op_fail(&op->op, "kafka timed out");
        ngx_fluxgate_order_free(op);
        return;
    }
}


static void
ngx_fluxgate_order_accept(ngx_fluxgate_order_t *op)
{
    ngx_int_t            rc;
    ngx_str_t            body;
    ngx_http_request_t  *r;
    ngx_fluxgate_ctx_t  *ctx;

    r = ngx_fluxgate_op_answer(&op->op);

    if (r == NULL) {
        return;
    }

    ctx = ngx_fluxgate_get_ctx(r);
    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"success\","
                                            "\"orderId\":\"\"}") - 1
                                     + NGX_FLUXGATE_UUID_LEN);

    if (ctx == NULL || body.data == NULL) {
        ngx_fluxgate_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(ctx->order_id, op->order_id, NGX_FLUXGATE_UUID_LEN);
    ctx->has_order_id = 1;

    body.len = ngx_sprintf(body.data,
                           "{\"status\":\"success\",\"orderId\":\"%*s\"}",
                           (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id)
               - body.data;

    rc = ngx_fluxgate_send(r, NGX_HTTP_OK, NGX_FLUXGATE_ACCEPTED, &body);

    ngx_fluxgate_finalize(r, rc);
}


void
ngx_fluxgate_order_release(ngx_fluxgate_order_t *op)
{
    ngx_fluxgate_order_finishing(op, 1);
}


/* the last step: done.lua or release.lua, retried until the deadline */

static void
ngx_fluxgate_order_finishing(ngx_fluxgate_order_t *op, ngx_uint_t release)
{
    op->op.log.action = release ? "releasing the reservation (release.lua)"
                                : "ending the claim (done.lua)";

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &op->op.log, 0,
                   "fluxgate: finishing with %s.lua",
                   release ? "release" : "done");

    op->state = NGX_FLUXGATE_ORDER_FINISHING;
    op->releasing = release;
    op->deadline = ngx_current_msec + NGX_FLUXGATE_FINISH_GRACE;

    ngx_fluxgate_order_finish(op);
}


static void
ngx_fluxgate_order_finish(ngx_fluxgate_order_t *op)
{
    ngx_int_t               rc;
    ngx_uint_t              nkeys, nargs;
    ngx_msec_t              now;
    ngx_fluxgate_args_t     a;
    ngx_fluxgate_script_t  *script;

    if (op->op.timer.timer_set) {
        ngx_del_timer(&op->op.timer);
    }

    a.n = 0;

    if (op->releasing) {
        ngx_fluxgate_args_str(&a, &op->stock_key);
        ngx_fluxgate_args_str(&a, &op->buyers_key);
        ngx_fluxgate_args_str(&a, &op->idem_key);
        ngx_fluxgate_args_str(&a, &op->gen_key);
        ngx_fluxgate_args_str(&a, &op->pending_key);
        ngx_fluxgate_args_str(&a, &op->prefix_key);
        ngx_fluxgate_args_text(&a, op->order_id, NGX_FLUXGATE_UUID_LEN);
        ngx_fluxgate_args_str(&a, &op->key);

        /* the tombstone's life, should order.lua still be on its way */
        ngx_fluxgate_args_int(&a, op->ttl);

        script = &ngx_fluxgate_script_release;
        nkeys = NGX_FLUXGATE_LUA_RELEASE_NKEYS;
        nargs = NGX_FLUXGATE_LUA_RELEASE_NARGS;

    } else {
        ngx_fluxgate_args_str(&a, &op->idem_key);
        ngx_fluxgate_args_str(&a, &op->pending_key);
        ngx_fluxgate_args_text(&a, op->order_id, NGX_FLUXGATE_UUID_LEN);
        ngx_fluxgate_args_int(&a, op->ttl);
        ngx_fluxgate_args_str(&a, &op->key);
        ngx_fluxgate_args_int(&a, NGX_HTTP_OK);
        ngx_fluxgate_args_text(&a, (u_char *) "success", 7);

        script = &ngx_fluxgate_script_done;
        nkeys = NGX_FLUXGATE_LUA_DONE_NKEYS;
        nargs = NGX_FLUXGATE_LUA_DONE_NARGS;
    }

    /* the script's own contract (lua/header.sh): a mismatch is a bug */
    if (a.n != nkeys + nargs) {
        ngx_log_error(NGX_LOG_ALERT, &op->op.log, 0,
                      "fluxgate: %s takes %ui arguments, not %ui",
                      op->releasing ? "release.lua" : "done.lua",
                      nkeys + nargs, a.n);
        rc = NGX_ERROR;

    } else {
        rc = ngx_fluxgate_redis_eval(op->redis, script, nkeys, a.n, a.arg,
                                     ngx_fluxgate_order_finished, op);
    }

    now = ngx_current_msec;

    if (rc == NGX_OK) {
        op->waiting = 1;
        ngx_add_timer(&op->op.timer, op->deadline > now ? op->deadline - now
                                                     : 1);
        return;
    }

    if (now >= op->deadline || ngx_fluxgate_exiting) {
        ngx_fluxgate_order_finished(NULL, op);
        return;
    }

    /* no connection now: try again when it may be back */
    ngx_add_timer(&op->op.timer, NGX_FLUXGATE_ORDER_RETRY);
}


/* done.lua or release.lua answered, or could not be run: the end */

static void
ngx_fluxgate_order_finished(redisReply *reply, void *data)
{
    ngx_fluxgate_order_t  *op = data;

    op->waiting = 0;

    /*
     * No reply (the connection went with the script), or an error reply
     * (LOADING after a restart, READONLY during a failover, BUSY, OOM):
     * both scripts can repeat, so try again while the grace lasts
     */

    if ((reply == NULL || reply->type == REDIS_REPLY_ERROR)
        && ngx_current_msec < op->deadline
        && !ngx_fluxgate_exiting)
    {
        if (reply != NULL) {
            ngx_log_error(NGX_LOG_WARN, &op->op.log, 0,
                          "fluxgate: %s.lua: %*s, retrying",
                          op->releasing ? "release" : "done",
                          (size_t) ngx_min(reply->len, 200), reply->str);
        }

        if (op->op.timer.timer_set) {
            ngx_del_timer(&op->op.timer);
        }

        ngx_add_timer(&op->op.timer, NGX_FLUXGATE_ORDER_RETRY);
        return;
    }

    /* units given back: whoever the flag turns away could have them */

    if (op->releasing
        && reply != NULL
        && reply->type == REDIS_REPLY_INTEGER
        && reply->integer == NGX_FLUXGATE_LUA_RELEASE_GIVEN)
    {
        ngx_fluxgate_sold_out_clear(op->sold_out,
                                    (u_char *) op->req.product_id,
                                    op->req.product_id_len);
    }

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        ngx_fluxgate_order_settled(op, reply->integer);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &op->op.log, 0,
                   "fluxgate: finished, %s",
                   reply ? "claim ended" : "claim left pending");

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: could not %s in redis (%s): quantity %L, "
                      "key \"%V\"; its claim stays pending until "
                      "fluxgate-reconcile settles it",
                      op->releasing ? "release the reservation"
                                    : "mark the idempotency key done",
                      reply ? "error reply" : "no connection",
                      op->req.quantity, &op->key);
    }

    ngx_fluxgate_order_free(op);
}


/* done.lua's 1, release.lua's 1 and 2: this order's claim ended here */

static void
ngx_fluxgate_order_settled(ngx_fluxgate_order_t *op, long long rc)
{
    if (!op->releasing) {
        if (rc == 1) {
            ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_SETTLED_DONE);
        }

        return;
    }

    if (rc == NGX_FLUXGATE_LUA_RELEASE_GIVEN) {
        ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_RELEASED);

    } else if (rc == NGX_FLUXGATE_LUA_RELEASE_OVER) {
        ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_RELEASED_OVER);

    } else {
        return;
    }

    ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_SETTLED_RELEASE);
}


/*
 * The deadline of the step under way: the client gets 503 now, and the
 * step is given a grace period to end with a live timer.  After that the
 * order still ends when its callback comes, but nothing waits for it.
 * While finishing, the timer is the retry of done.lua or release.lua.
 */

void
ngx_fluxgate_order_timeout(ngx_event_t *ev)
{
    ngx_fluxgate_order_t  *op = ev->data;

    if (op->state == NGX_FLUXGATE_ORDER_FINISHING) {

        if (!op->waiting) {
            ngx_fluxgate_order_finish(op);
            return;
        }

    } else if (!op->op.answered) {

        /* the wait for the reply that did not come is not the gate's */
        ngx_fluxgate_order_waited(op);

        if (op->state == NGX_FLUXGATE_ORDER_DECIDING) {
            ngx_fluxgate_redis_timed_out(
                ngx_fluxgate_redis_node(op->redis, &op->stock_key));
            ngx_fluxgate_op_fail(&op->op, "redis timed out");

        } else {
            /*
             * The client learns nothing more: whatever the report says
             * later, delivered included, this order's outcome was unknown
             * to it (a retry of its key replays what it came to)
             */
            ngx_log_error(NGX_LOG_WARN, &op->op.log, 0,
                          "fluxgate: order (quantity %L) possibly persisted "
                          "in kafka: no delivery report within %Mms, the "
                          "client was told 503", op->req.quantity,
                          op->kafka_wait);

            ngx_fluxgate_op_fail(&op->op, "kafka timed out");
        }

        ngx_add_timer(&op->op.timer, NGX_FLUXGATE_FINISH_GRACE);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, &op->op.log, 0,
                  "fluxgate: still no reply from %s",
                  op->state == NGX_FLUXGATE_ORDER_PRODUCING ? "kafka"
                                                            : "redis");
}


/* a round trip ended: the histogram, and the request's variable */

void
ngx_fluxgate_order_timed(ngx_fluxgate_order_t *op,
    ngx_fluxgate_histogram_e histogram)
{
    uint64_t             usec, now;
    ngx_fluxgate_ctx_t  *ctx;

    now = ngx_fluxgate_metrics_clock();
    usec = (now > op->sent) ? now - op->sent : 0;

    ngx_fluxgate_metrics_observe(histogram, usec);

    if (op->op.request == NULL) {
        return;
    }

    ctx = ngx_fluxgate_get_ctx(op->op.request);
    if (ctx == NULL) {
        return;
    }

    if (histogram == NGX_FLUXGATE_HISTOGRAM_REDIS) {
        ctx->redis_time = usec;
        ctx->has_redis_time = 1;

    } else {
        ctx->kafka_time = usec;
        ctx->has_kafka_time = 1;
    }
}


/* a deadline passed: the time waited for Redis or Kafka, for the variable */

void
ngx_fluxgate_order_waited(ngx_fluxgate_order_t *op)
{
    uint64_t             now;
    ngx_fluxgate_ctx_t  *ctx;

    if (op->op.request == NULL) {
        return;
    }

    ctx = ngx_fluxgate_get_ctx(op->op.request);
    if (ctx == NULL) {
        return;
    }

    now = ngx_fluxgate_metrics_clock();
    ctx->waited += (now > op->sent) ? now - op->sent : 0;
}


/* ", order: <orderId>, product: "<p>", user: "<u>"" on each log line */

u_char *
ngx_fluxgate_order_describe(ngx_fluxgate_op_t *fop, u_char *buf, size_t len)
{
    ngx_fluxgate_order_t  *op = (ngx_fluxgate_order_t *) fop;

    return ngx_snprintf(buf, len, ", order: %*s, product: \"%s\", "
                        "user: \"%s\"", (size_t) NGX_FLUXGATE_UUID_LEN,
                        op->order_id, op->req.product_id, op->req.user_id);
}


void
ngx_fluxgate_order_free(ngx_fluxgate_order_t *op)
{
    ngx_fluxgate_op_end(&op->op);
    ngx_free(op);
}
