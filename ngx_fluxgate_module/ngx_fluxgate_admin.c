
/*
 * Flux-Gate: POST /init, stock administration.
 *
 *   {"productId": "...", "quantity": N} checked (no I/O yet)
 *     -> SET fg:{p}:stock N                 (deadline: redis_timeout)
 *     -> the product's sold-out flag cleared (shared memory: every worker
 *        of this nginx)
 *     -> {"type":"stock_set",...} to Kafka, same topic, key = productId,
 *        so the worker applies it in order with that product's orders
 *     -> 200 once Kafka acknowledged it (the flag cleared once more,
 *        in case an order.lua that ran before the SET raised it again),
 *        503 otherwise
 *
 * SET is idempotent, so a 503 is safe to retry.  Once Redis has the new
 * stock the event is published even if the client is gone or was already
 * told 503, so that Kafka does not miss a stock Redis already has.  As for
 * orders, the state lives outside r->pool and is freed by its last
 * callback.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_parse.h"


/* as for orders: how long a late reply keeps a reloading worker */
#define NGX_FLUXGATE_ADMIN_GRACE  5000


typedef struct {
    ngx_fluxgate_delivery_t     delivery;     /* Kafka's msg_opaque */

    ngx_fluxgate_link_t         link;         /* to the request */
    ngx_event_t                 timer;
    ngx_msec_t                  kafka_wait;
    ngx_shm_zone_t             *sold_out;

    unsigned                    producing:1;
    unsigned                    answered:1;   /* client already has 503 */

    ngx_fluxgate_stock_req_t    req;
} ngx_fluxgate_admin_t;


static void ngx_fluxgate_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_admin_start(ngx_http_request_t *r);
static void ngx_fluxgate_admin_stored(redisReply *reply, void *data);
static void ngx_fluxgate_admin_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err);
static void ngx_fluxgate_admin_timeout(ngx_event_t *ev);
static void ngx_fluxgate_admin_answer(ngx_fluxgate_admin_t *op,
    const char *error);
static void ngx_fluxgate_admin_free(ngx_fluxgate_admin_t *op);


ngx_int_t
ngx_fluxgate_admin_handler(ngx_http_request_t *r)
{
    return ngx_fluxgate_read_json_body(r, ngx_fluxgate_admin_body);
}


static void
ngx_fluxgate_admin_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_fluxgate_admin_start(r);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_fluxgate_admin_start(ngx_http_request_t *r)
{
    u_char                      key[NGX_FLUXGATE_ID_MAX + sizeof("fg:{}:stock")];
    u_char                      stock[NGX_INT64_LEN];
    ngx_int_t                   rc;
    ngx_str_t                   body, args[3];
    ngx_fluxgate_admin_t       *op;
    ngx_fluxgate_loc_conf_t    *flcf;
    ngx_fluxgate_main_conf_t   *fmcf;
    ngx_fluxgate_parse_error_t  err;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);
    fmcf = ngx_http_get_module_main_conf(r, ngx_fluxgate_module);

    rc = ngx_fluxgate_request_body(r, &body);

    if (rc == NGX_DECLINED) {
        return ngx_fluxgate_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       NGX_FLUXGATE_INVALID,
                                       "body too large", "body");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op = ngx_calloc(sizeof(ngx_fluxgate_admin_t), r->connection->log);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_fluxgate_in_flight++;

    if (ngx_fluxgate_parse_stock((char *) body.data, body.len, &op->req,
                                 &err)
        != 0)
    {
        ngx_fluxgate_in_flight--;
        ngx_free(op);
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID, err.error,
                                       err.field);
    }

    if (ngx_fluxgate_link(&op->link, r) != NGX_OK) {
        ngx_fluxgate_in_flight--;
        ngx_free(op);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->delivery.handler = ngx_fluxgate_admin_delivered;
    op->kafka_wait = fmcf->kafka_timeout + 1000;
    op->sold_out = fmcf->sold_out;
    op->timer.handler = ngx_fluxgate_admin_timeout;
    op->timer.data = op;
    op->timer.log = ngx_cycle->log;

    ngx_str_set(&args[0], "SET");
    args[1].data = key;
    args[1].len = ngx_sprintf(key, "fg:{%s}:stock", op->req.product_id)
                  - key;
    args[2].data = stock;
    args[2].len = ngx_sprintf(stock, "%L", op->req.stock) - stock;

    if (!ngx_fluxgate_kafka_ready()) {
        ngx_fluxgate_admin_free(op);
        return ngx_fluxgate_send_unavailable(r, "kafka unavailable");
    }

    if (!ngx_fluxgate_redis_ready(flcf->redis)
        || ngx_fluxgate_redis_command(flcf->redis, 3, args,
                                      ngx_fluxgate_admin_stored, op)
           != NGX_OK)
    {
        ngx_fluxgate_admin_free(op);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    ngx_add_timer(&op->timer, flcf->redis_timeout);

    return NGX_DONE;
}


static void
ngx_fluxgate_admin_stored(redisReply *reply, void *data)
{
    ngx_fluxgate_admin_t  *op = data;

    u_char     value[256];
    ngx_str_t  key, msg;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: stock of \"%s\" not set in redis: %s",
                      op->req.product_id,
                      reply && reply->str ? reply->str : "connection lost");

        ngx_fluxgate_admin_answer(op, "redis failed");
        ngx_fluxgate_admin_free(op);
        return;
    }

    key.data = (u_char *) op->req.product_id;
    key.len = op->req.product_id_len;

    ngx_fluxgate_sold_out_clear(op->sold_out, key.data, key.len);

    msg.data = value;
    msg.len = ngx_snprintf(value, sizeof(value),
                           "{\"type\":\"stock_set\",\"productId\":\"%s\","
                           "\"stock\":%L,\"at\":%uL}",
                           op->req.product_id, op->req.stock,
                           ngx_fluxgate_now_ms())
              - value;

    if (ngx_fluxgate_kafka_produce(&key, &msg, &op->delivery) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "fluxgate: stock of \"%s\" set to %L in redis, "
                      "but the stock_set event was not published",
                      op->req.product_id, op->req.stock);

        ngx_fluxgate_admin_answer(op, "kafka unavailable");
        ngx_fluxgate_admin_free(op);
        return;
    }

    op->producing = 1;
    ngx_add_timer(&op->timer, op->kafka_wait);
}


static void
ngx_fluxgate_admin_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err)
{
    ngx_fluxgate_admin_t  *op = (ngx_fluxgate_admin_t *) dlv;

    ngx_int_t            rc;
    ngx_str_t            body;
    ngx_http_request_t  *r;

    if (status != NGX_FLUXGATE_DELIVERED) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "fluxgate: stock of \"%s\" set to %L in redis, "
                      "but the stock_set event was not delivered: %s",
                      op->req.product_id, op->req.stock, err);

        ngx_fluxgate_admin_answer(op, "kafka unavailable");
        ngx_fluxgate_admin_free(op);
        return;
    }

    ngx_fluxgate_sold_out_clear(op->sold_out, (u_char *) op->req.product_id,
                                op->req.product_id_len);

    r = ngx_fluxgate_unlink(&op->link);

    if (r != NULL && !op->answered) {
        body.data = ngx_pnalloc(r->pool,
                                sizeof("{\"status\":\"success\","
                                       "\"productId\":\"\",\"stock\":}") - 1
                                + NGX_FLUXGATE_ID_MAX + NGX_INT64_LEN);

        if (body.data == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

        } else {
            body.len = ngx_sprintf(body.data,
                                   "{\"status\":\"success\","
                                   "\"productId\":\"%s\",\"stock\":%L}",
                                   op->req.product_id, op->req.stock)
                       - body.data;

            rc = ngx_fluxgate_send(r, NGX_HTTP_OK, NGX_FLUXGATE_ACCEPTED,
                                   &body);
        }

        ngx_fluxgate_finalize(r, rc);
    }

    ngx_fluxgate_admin_free(op);
}


/* 503 now, and a grace period with a live timer for the late reply */

static void
ngx_fluxgate_admin_timeout(ngx_event_t *ev)
{
    ngx_fluxgate_admin_t  *op = ev->data;

    if (op->answered) {
        return;
    }

    ngx_fluxgate_admin_answer(op, op->producing ? "kafka timed out"
                                                : "redis timed out");

    ngx_add_timer(&op->timer, NGX_FLUXGATE_ADMIN_GRACE);
}


static void
ngx_fluxgate_admin_answer(ngx_fluxgate_admin_t *op, const char *error)
{
    if (op->answered) {
        return;
    }

    op->answered = 1;

    ngx_fluxgate_link_fail(&op->link, error);
}


static void
ngx_fluxgate_admin_free(ngx_fluxgate_admin_t *op)
{
    ngx_fluxgate_link_end(&op->link, &op->timer);
    ngx_free(op);
}
