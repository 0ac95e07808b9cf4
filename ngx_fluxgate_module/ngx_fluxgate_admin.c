
/*
 * Flux-Gate: POST /init, stock administration.
 *
 *   {"productId": "...", "quantity": N [, "ifGeneration": G]} and an
 *   optional X-Idempotency-Key checked (no I/O yet)
 *     -> init.lua: a new generation of the product's stock, N units
 *        (or the replay of the key's first answer, or 409
 *        generation_mismatch, or 422)        (deadline: redis_timeout)
 *     -> the product's sold-out flag cleared (shared memory: every worker
 *        of this nginx)
 *     -> {"type":"stock_set",...,"generation":G} to Kafka, same topic, key
 *        = productId
 *     -> 200 with the generation once Kafka acknowledged it (the flag
 *        cleared once more, in case an order.lua that ran before the set
 *        raised it again), 503 otherwise
 *
 * A retry with the same key replays the first answer and sets nothing; it
 * publishes the event again, so a 503 for a lost delivery report is made
 * whole by retrying (the worker applies a generation's event once).
 * Without a key every call is a new generation.  Once Redis has the new
 * generation the event is published even if the client is gone or was
 * already told 503.  As for orders, the state lives outside r->pool and is
 * freed by its last callback.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_lua.h"


/* as for orders: how long a late reply keeps a reloading worker */
#define NGX_FLUXGATE_ADMIN_GRACE  5000

/* fg:{<productId>}:admin:<key> and shorter */
#define NGX_FLUXGATE_ADMIN_KEY_LEN                                           \
    (sizeof("fg:{}:admin:") - 1 + NGX_FLUXGATE_ID_MAX + NGX_FLUXGATE_KEY_MAX)


typedef struct {
    ngx_fluxgate_op_t           op;           /* first: see ngx_fluxgate.h */

    ngx_msec_t                  kafka_wait;
    ngx_shm_zone_t             *sold_out;
    ngx_fluxgate_redis_t       *node;         /* the product's Redis */

    int64_t                     generation;

    unsigned                    producing:1;
    unsigned                    replayed:1;

    ngx_fluxgate_stock_req_t    req;
} ngx_fluxgate_admin_t;


static void ngx_fluxgate_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_admin_start(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_admin_set(ngx_fluxgate_admin_t *op,
    ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *key);
static void ngx_fluxgate_admin_decided(redisReply *reply, void *data);
static void ngx_fluxgate_admin_refused(ngx_fluxgate_admin_t *op,
    redisReply *reply);
static void ngx_fluxgate_admin_publish(ngx_fluxgate_admin_t *op);
static void ngx_fluxgate_admin_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err);
static void ngx_fluxgate_admin_timeout(ngx_event_t *ev);
static u_char *ngx_fluxgate_admin_describe(ngx_fluxgate_op_t *fop,
    u_char *buf, size_t len);
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
    ngx_int_t                   rc;
    ngx_str_t                   body, key;
    ngx_fluxgate_admin_t       *op;
    ngx_fluxgate_loc_conf_t    *flcf;
    ngx_fluxgate_main_conf_t   *fmcf;
    ngx_fluxgate_stock_req_t    req;
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

    if (ngx_fluxgate_idempotency_key(r, &key) != NGX_OK) {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key given more than once",
                                       "X-Idempotency-Key");
    }

    /* the key is optional here; given, it follows the orders' rules */

    if ((key.len
         && ngx_fluxgate_parse_idempotency_key((char *) key.data, key.len,
                                               &err)
            != 0)
        || ngx_fluxgate_parse_stock((char *) body.data, body.len, &req, &err)
           != 0)
    {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID, err.error,
                                       err.field);
    }

    if (!ngx_fluxgate_kafka_ready()) {
        return ngx_fluxgate_send_unavailable(r, "kafka unavailable");
    }

    if (!ngx_fluxgate_redis_ready(flcf->redis)) {
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    op = ngx_calloc(sizeof(ngx_fluxgate_admin_t), r->connection->log);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_fluxgate_op_start(&op->op, r, ngx_fluxgate_admin_describe,
                              ngx_fluxgate_admin_delivered,
                              ngx_fluxgate_admin_timeout, op)
        != NGX_OK)
    {
        ngx_free(op);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->kafka_wait = fmcf->kafka_timeout + 1000;
    op->sold_out = fmcf->sold_out;
    op->req = req;

    if (ngx_fluxgate_admin_set(op, flcf, &key) != NGX_OK) {
        ngx_fluxgate_admin_free(op);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    ngx_add_timer(&op->op.timer, flcf->redis_timeout);

    return NGX_DONE;
}


static ngx_int_t
ngx_fluxgate_admin_set(ngx_fluxgate_admin_t *op,
    ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *key)
{
    u_char               keys[5][NGX_FLUXGATE_ADMIN_KEY_LEN];
    u_char               fp[3 * NGX_INT64_LEN + 3];
    char                *p = op->req.product_id;
    ngx_uint_t           nkeys;
    ngx_fluxgate_args_t  a;

    a.n = 0;

    ngx_fluxgate_args_text(&a, keys[0],
                           ngx_sprintf(keys[0], "fg:{%s}:stock", p)
                           - keys[0]);
    ngx_fluxgate_args_text(&a, keys[1],
                           ngx_sprintf(keys[1], "fg:{%s}:gen", p) - keys[1]);

    /* without a key the name is not used, but it keeps the script's slot */
    ngx_fluxgate_args_text(&a, keys[2],
                           ngx_sprintf(keys[2], "fg:{%s}:admin:%V", p, key)
                           - keys[2]);
    /*
     * The line's keys only for a sale announced (they may not exist: a
     * command on a migrating slot naming a missing key gets TRYAGAIN, and
     * a restock must go through a migration as it always did)
     */

    nkeys = NGX_FLUXGATE_LUA_INIT_NKEYS - 2;

    if (op->req.opens_at >= 0) {
        ngx_fluxgate_args_text(&a, keys[3],
                               ngx_sprintf(keys[3], "fg:{%s}:q", p)
                               - keys[3]);
        ngx_fluxgate_args_text(&a, keys[4],
                               ngx_sprintf(keys[4], "fg:{%s}:q:", p)
                               - keys[4]);
        nkeys = NGX_FLUXGATE_LUA_INIT_NKEYS;
    }

    ngx_fluxgate_args_int(&a, op->req.stock);

    if (op->req.if_generation < 0) {
        ngx_fluxgate_args_text(&a, NULL, 0);

    } else {
        ngx_fluxgate_args_int(&a, op->req.if_generation);
    }

    /* the body's fingerprint: the key is per product already */
    ngx_fluxgate_args_text(&a, fp, ngx_sprintf(fp, "%L:%L:%L", op->req.stock,
                                               op->req.if_generation,
                                               op->req.opens_at)
                                   - fp);

    ngx_fluxgate_args_int(&a, flcf->idempotency_ttl);
    ngx_fluxgate_args_text(&a, (u_char *) (key->len ? "1" : "0"), 1);

    /* a sale announced: the line starts anew, opening then (Redis TIME) */
    if (op->req.opens_at < 0) {
        ngx_fluxgate_args_text(&a, NULL, 0);

    } else {
        ngx_fluxgate_args_int(&a, op->req.opens_at * 1000000);
    }

    op->op.log.action = "setting the stock (init.lua)";

    /* a cluster: the product's own node must be up too */

    op->node = ngx_fluxgate_redis_node(flcf->redis, &a.arg[0]);

    if (!ngx_fluxgate_redis_ready(op->node)) {
        return NGX_ERROR;
    }

    /*
     * fluxgate_redis_wait: a generation is published once replicas have
     * it (set now, or replayed: a retry publishes it), or a failover could
     * lose it after its event went out, and the next /init reuse its
     * number for another stock
     */

    return ngx_fluxgate_redis_eval_wait(flcf->redis,
                                        &ngx_fluxgate_script_init,
                                        nkeys, a.n,
                                        a.arg,
                                        flcf->redis_wait,
                                        flcf->redis_wait_timeout,
                                        ngx_fluxgate_redis_wait_code(
                                            NGX_FLUXGATE_LUA_INIT_SET)
                                        | ngx_fluxgate_redis_wait_code(
                                            NGX_FLUXGATE_LUA_INIT_REPLAY),
                                        ngx_fluxgate_admin_decided, op);
}


static void
ngx_fluxgate_admin_decided(redisReply *reply, void *data)
{
    ngx_fluxgate_admin_t  *op = data;

    redisReply  **e;

    if (op->op.timer.timer_set) {
        ngx_del_timer(&op->op.timer);
    }

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: stock of \"%s\" not confirmed by redis "
                      "(%s): its stock_set event is not published; retry "
                      "the same request", op->req.product_id,
                      reply && reply->str ? reply->str : "connection lost");

        ngx_fluxgate_op_fail(&op->op, "redis failed");
        ngx_fluxgate_admin_free(op);
        return;
    }

    e = reply->element;

    switch (e[0]->integer) {

    case NGX_FLUXGATE_LUA_INIT_REPLAY:
        if (reply->elements != 3 || e[2]->type != REDIS_REPLY_INTEGER) {
            break;
        }

        /* what the first request set is what its event must say */
        op->req.stock = e[2]->integer;
        op->replayed = 1;

        /* fall through */

    case NGX_FLUXGATE_LUA_INIT_SET:
        if (reply->elements < 2 || e[1]->type != REDIS_REPLY_INTEGER) {
            break;
        }

        op->generation = e[1]->integer;
        ngx_fluxgate_admin_publish(op);
        return;

    case NGX_FLUXGATE_LUA_INIT_MISMATCH:
    case NGX_FLUXGATE_LUA_INIT_KEY_REUSED:
        ngx_fluxgate_admin_refused(op, reply);
        ngx_fluxgate_admin_free(op);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                  "fluxgate: init.lua: unexpected reply %L", e[0]->integer);

    ngx_fluxgate_op_fail(&op->op, "unexpected redis reply");
    ngx_fluxgate_admin_free(op);
}


/* 409 generation_mismatch or 422: nothing was set */

static void
ngx_fluxgate_admin_refused(ngx_fluxgate_admin_t *op, redisReply *reply)
{
    ngx_int_t            rc;
    ngx_str_t            body;
    ngx_http_request_t  *r;

    r = ngx_fluxgate_op_answer(&op->op);

    if (r == NULL) {
        return;
    }

    if (reply->element[0]->integer == NGX_FLUXGATE_LUA_INIT_KEY_REUSED) {
        rc = ngx_fluxgate_send_error(r, NGX_FLUXGATE_HTTP_UNPROCESSABLE,
                                     NGX_FLUXGATE_INVALID,
                                     "X-Idempotency-Key was already used "
                                     "with another body",
                                     "X-Idempotency-Key");
        ngx_fluxgate_finalize(r, rc);
        return;
    }

    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"generation_"
                                            "mismatch\",\"generation\":}")
                                     + NGX_INT64_LEN);
    if (body.data == NULL) {
        ngx_fluxgate_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body.len = ngx_sprintf(body.data,
                           "{\"status\":\"generation_mismatch\","
                           "\"generation\":%L}",
                           reply->elements > 1
                           && reply->element[1]->type == REDIS_REPLY_INTEGER
                           ? reply->element[1]->integer : (long long) 0)
               - body.data;

    rc = ngx_fluxgate_send(r, NGX_HTTP_CONFLICT, NGX_FLUXGATE_INVALID, &body);

    ngx_fluxgate_finalize(r, rc);
}


/* Redis has the generation: Kafka must get its event, client or not */

static void
ngx_fluxgate_admin_publish(ngx_fluxgate_admin_t *op)
{
    u_char     value[256];
    ngx_str_t  key, msg;

    key.data = (u_char *) op->req.product_id;
    key.len = op->req.product_id_len;

    ngx_fluxgate_sold_out_clear(op->sold_out, key.data, key.len);

    msg.data = value;
    msg.len = ngx_snprintf(value, sizeof(value),
                           "{\"type\":\"stock_set\",\"productId\":\"%s\","
                           "\"stock\":%L,\"generation\":%L,\"at\":%uL",
                           op->req.product_id, op->req.stock,
                           op->generation, ngx_fluxgate_now_ms())
              - value;

    /* the announced opening travels with it, for whoever reads the topic */
    if (op->req.opens_at >= 0) {
        msg.len = ngx_snprintf(value + msg.len, sizeof(value) - msg.len,
                               ",\"opensAt\":%L", op->req.opens_at)
                  - value;
    }

    value[msg.len++] = '}';

    if (ngx_fluxgate_kafka_produce(&key, &msg, &op->op.delivery) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: generation %L of \"%s\" (stock %L) set in "
                      "redis, but its stock_set event was not published; "
                      "retry the same request to publish it",
                      op->generation, op->req.product_id, op->req.stock);

        ngx_fluxgate_op_fail(&op->op, "kafka unavailable");
        ngx_fluxgate_admin_free(op);
        return;
    }

    op->producing = 1;
    op->op.log.action = "publishing the stock_set event";

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, &op->op.log, 0,
                   "fluxgate: generation %L set, publishing", op->generation);

    ngx_add_timer(&op->op.timer, op->kafka_wait);
}


static void
ngx_fluxgate_admin_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err)
{
    ngx_fluxgate_admin_t  *op = (ngx_fluxgate_admin_t *) dlv;

    ngx_int_t            rc;
    u_char              *p;
    ngx_str_t            body, value;
    ngx_http_request_t  *r;

    if (status != NGX_FLUXGATE_DELIVERED) {
        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: generation %L of \"%s\" (stock %L) set in "
                      "redis, but its stock_set event was not delivered: "
                      "%s; retry the same request to publish it",
                      op->generation, op->req.product_id, op->req.stock,
                      err);

        ngx_fluxgate_op_fail(&op->op, "kafka unavailable");
        ngx_fluxgate_admin_free(op);
        return;
    }

    ngx_fluxgate_sold_out_clear(op->sold_out, (u_char *) op->req.product_id,
                                op->req.product_id_len);

    r = ngx_fluxgate_op_answer(&op->op);

    if (r != NULL) {
        body.data = ngx_pnalloc(r->pool,
                                sizeof("{\"status\":\"success\","
                                       "\"productId\":\"\",\"stock\":,"
                                       "\"generation\":,\"opensAt\":}") - 1
                                + NGX_FLUXGATE_ID_MAX + 3 * NGX_INT64_LEN);

        ngx_str_set(&value, "true");

        if (body.data == NULL
            || (op->replayed
                && ngx_fluxgate_add_header(r, "Idempotent-Replayed", &value)
                   != NGX_OK))
        {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

        } else {
            p = ngx_sprintf(body.data,
                            "{\"status\":\"success\","
                            "\"productId\":\"%s\",\"stock\":%L,"
                            "\"generation\":%L",
                            op->req.product_id, op->req.stock,
                            op->generation);

            if (op->req.opens_at >= 0) {
                p = ngx_sprintf(p, ",\"opensAt\":%L", op->req.opens_at);
            }

            *p++ = '}';
            body.len = p - body.data;

            rc = ngx_fluxgate_send(r, NGX_HTTP_OK,
                                   op->replayed ? NGX_FLUXGATE_DUPLICATE
                                                : NGX_FLUXGATE_ACCEPTED,
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

    if (op->op.answered) {
        return;
    }

    if (!op->producing) {
        ngx_fluxgate_redis_timed_out(op->node);
    }

    ngx_fluxgate_op_fail(&op->op, op->producing ? "kafka timed out"
                                                : "redis timed out");

    ngx_add_timer(&op->op.timer, NGX_FLUXGATE_ADMIN_GRACE);
}


static u_char *
ngx_fluxgate_admin_describe(ngx_fluxgate_op_t *fop, u_char *buf, size_t len)
{
    ngx_fluxgate_admin_t  *op = (ngx_fluxgate_admin_t *) fop;

    return ngx_snprintf(buf, len, ", stock update of \"%s\"",
                        op->req.product_id);
}


static void
ngx_fluxgate_admin_free(ngx_fluxgate_admin_t *op)
{
    ngx_fluxgate_op_end(&op->op);
    ngx_free(op);
}
