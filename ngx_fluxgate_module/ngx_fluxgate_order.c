
/*
 * Flux-Gate: POST /order, the whole life of one order.
 *
 *   body read and checked (405, 415, 413, 400: no I/O yet), the buyer
 *   (fluxgate_user_token's verified user: 401, 403; else userId, else
 *   the key), its X-Queue-Ticket (400) or X-Queue-Proof (a bad one, or
 *   none while the line is busy: 302 with a challenge), all before I/O
 *     -> the product's sold-out flag is up: 409 (no I/O either)
 *     -> order.lua, one EVALSHA: idempotency, product known, closed,
 *        stock, the line (the ticket's turn, the buyer's own place, or
 *        the rate; over the rate: a place in the line, 302 with its
 *        ticket; before the opening: a place in the pre-queue), per-user,
 *        and the reservation (a pending claim in the generation of the
 *        stock it took)
 *                                           (deadline: redis_timeout)
 *     -> reserved: ngx_fluxgate_order_finish.c takes it on (the message
 *        to Kafka, the answer, done.lua or release.lua)
 *     -> any other outcome: answered here, from order.lua's reply
 *
 * The order's state is not in r->pool: it is allocated on its own, because
 * it may outlive the request.  When the Redis deadline passes the client
 * gets 503 at once, but the script may still run; its late reply is then
 * undone with release.lua.  A pool cleanup detaches the request when it
 * goes away for any reason, and the order is finished without it.  The
 * state is freed only by the last callback that can reach it (hiredis and
 * librdkafka call each callback exactly once).
 */


#include "ngx_fluxgate_order.h"

#include <openssl/rand.h>


static void ngx_fluxgate_order_body(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_order_start(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_order_product(ngx_http_request_t *r,
    ngx_fluxgate_order_req_t *req);
static ngx_fluxgate_order_t *ngx_fluxgate_order_create(ngx_http_request_t *r,
    ngx_fluxgate_buyer_t *in);
static ngx_int_t ngx_fluxgate_order_decide(ngx_fluxgate_order_t *op,
    ngx_fluxgate_loc_conf_t *flcf);
static void ngx_fluxgate_order_decided(redisReply *reply, void *data);
static void ngx_fluxgate_order_sold_out(ngx_fluxgate_order_t *op,
    redisReply *reply);
static ngx_int_t ngx_fluxgate_order_respond(ngx_http_request_t *r,
    ngx_fluxgate_order_t *op, redisReply *reply);
static ngx_int_t ngx_fluxgate_order_status(ngx_http_request_t *r,
    ngx_uint_t code, ngx_fluxgate_outcome_e outcome, const char *status);
static ngx_int_t ngx_fluxgate_order_refused(ngx_http_request_t *r,
    ngx_uint_t code, const char *status);
static ngx_int_t ngx_fluxgate_order_replay(ngx_http_request_t *r,
    redisReply *reply);
static ngx_int_t ngx_fluxgate_order_redirect(ngx_http_request_t *r,
    ngx_fluxgate_order_t *op, redisReply *reply);
static ngx_int_t ngx_fluxgate_order_queued(ngx_http_request_t *r,
    ngx_fluxgate_order_t *op, redisReply *reply);
static ngx_int_t ngx_fluxgate_order_bad_ticket(ngx_http_request_t *r,
    redisReply *reply);


ngx_int_t
ngx_fluxgate_order_handler(ngx_http_request_t *r)
{
    return ngx_fluxgate_read_json_body(r, ngx_fluxgate_order_body);
}


static void
ngx_fluxgate_order_body(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_fluxgate_ctx_t  *ctx;

    /* $fluxgate_gate_time counts from here: the body is in hand */
    ctx = ngx_fluxgate_get_ctx(r);
    if (ctx != NULL) {
        ctx->started = ngx_fluxgate_metrics_clock();
        ctx->has_started = 1;
    }

    rc = ngx_fluxgate_order_start(r);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/* NGX_DONE: the order is on its way; anything else finalizes */

static ngx_int_t
ngx_fluxgate_order_start(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_str_t                   body;
    ngx_fluxgate_order_t       *op;
    ngx_fluxgate_buyer_t     in;
    ngx_fluxgate_loc_conf_t    *flcf;
    ngx_fluxgate_main_conf_t   *fmcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);
    fmcf = ngx_http_get_module_main_conf(r, ngx_fluxgate_module);

    ngx_memzero(&in, sizeof(ngx_fluxgate_buyer_t));

    /* the body, the key, the buyer, a ticket or a proof: no I/O yet */

    rc = ngx_fluxgate_buyer_read(r, flcf, &in);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (fmcf->metrics_products) {
        /* counted by product when the answer goes out */
        if (ngx_fluxgate_order_product(r, &in.req) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /*
     * Redis said "sold out" a moment ago: this answer needs neither Redis
     * nor Kafka (and, while the flag is up, wins over a replay)
     */

    if (flcf->sold_out_cache
        && ngx_fluxgate_sold_out_test(fmcf->sold_out, in.product.data,
                                      in.product.len))
    {
        ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_SOLD_OUT_HITS);

        ngx_str_set(&body, "{\"status\":\"sold_out\"}");
        return ngx_fluxgate_send(r, NGX_HTTP_CONFLICT, NGX_FLUXGATE_SOLD_OUT,
                                 &body);
    }

    rc = ngx_fluxgate_buyer_place(r, flcf, &in);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* nothing is reserved for an order that could not be delivered */

    if (!ngx_fluxgate_kafka_ready()) {
        return ngx_fluxgate_send_unavailable(r, "kafka unavailable");
    }

    if (!ngx_fluxgate_redis_ready(flcf->redis)) {
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    op = ngx_fluxgate_order_create(r, &in);
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a cluster: the product's own node must be up too */
    if (!ngx_fluxgate_redis_ready(ngx_fluxgate_redis_node(op->redis,
                                                          &op->stock_key)))
    {
        ngx_fluxgate_order_free(op);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    if (ngx_fluxgate_order_decide(op, flcf) != NGX_OK) {
        ngx_fluxgate_order_free(op);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    ngx_add_timer(&op->op.timer, flcf->redis_timeout);

    return NGX_DONE;
}


static ngx_int_t
ngx_fluxgate_order_product(ngx_http_request_t *r,
    ngx_fluxgate_order_req_t *req)
{
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_fluxgate_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->product_id = ngx_pnalloc(r->pool, req->product_id_len);
    if (ctx->product_id == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->product_id, req->product_id, req->product_id_len);
    ctx->product_id_len = req->product_id_len;

    return NGX_OK;
}


static ngx_fluxgate_order_t *
ngx_fluxgate_order_create(ngx_http_request_t *r, ngx_fluxgate_buyer_t *in)
{
    u_char                    *p, *id;
    ngx_fluxgate_order_t      *op;
    ngx_fluxgate_loc_conf_t   *flcf;
    ngx_fluxgate_main_conf_t  *fmcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);
    fmcf = ngx_http_get_module_main_conf(r, ngx_fluxgate_module);

    op = ngx_calloc(sizeof(ngx_fluxgate_order_t), r->connection->log);
    if (op == NULL) {
        return NULL;
    }

    if (ngx_fluxgate_op_start(&op->op, r, ngx_fluxgate_order_describe,
                              ngx_fluxgate_order_delivered,
                              ngx_fluxgate_order_timeout, op)
        != NGX_OK)
    {
        ngx_free(op);
        return NULL;
    }

    op->redis = flcf->redis;
    op->sold_out = flcf->sold_out_cache ? fmcf->sold_out : NULL;
    op->sold_out_cache = flcf->sold_out_cache;
    op->state = NGX_FLUXGATE_ORDER_DECIDING;
    op->kafka_wait = fmcf->kafka_timeout + 1000;
    op->ttl = flcf->idempotency_ttl;

    op->req = in->req;
    op->ticket = in->ticket;
    op->has_ticket = in->has_ticket;
    op->proof = in->proof;
    op->client_len = in->client_len;
    ngx_memcpy(op->client, in->client, in->client_len);

    ngx_fluxgate_uuid7(op->order_id, ngx_fluxgate_now_ms());

    id = (u_char *) op->req.product_id;
    p = op->keys;

    op->stock_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:stock", id);
    op->stock_key.len = p - op->stock_key.data;

    op->line_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:q", id);
    op->line_key.len = p - op->line_key.data;

    op->buyers_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:buyers", id);
    op->buyers_key.len = p - op->buyers_key.data;

    op->idem_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:idem:%V", id, &in->key);
    op->idem_key.len = p - op->idem_key.data;

    op->gen_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:gen", id);
    op->gen_key.len = p - op->gen_key.data;

    op->pending_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:pending", id);
    op->pending_key.len = p - op->pending_key.data;

    op->prefix_key.data = p;
    p = ngx_sprintf(p, "fg:{%s}:q:", id);
    op->prefix_key.len = p - op->prefix_key.data;

    op->key.data = p;
    p = ngx_cpymem(p, in->key.data, in->key.len);
    op->key.len = in->key.len;

    return op;
}


/* order.lua: its KEYS and ARGV, in the order its header lists them */

static ngx_int_t
ngx_fluxgate_order_decide(ngx_fluxgate_order_t *op,
    ngx_fluxgate_loc_conf_t *flcf)
{
    u_char                fp[NGX_FLUXGATE_ID_MAX + NGX_INT64_LEN + 2];
    u_char                raw[NGX_FLUXGATE_NONCE_LEN];
    u_char                seed[2 * NGX_FLUXGATE_NONCE_LEN];
    ngx_fluxgate_args_t   a;

    a.n = 0;

    ngx_fluxgate_args_str(&a, &op->stock_key);
    ngx_fluxgate_args_str(&a, &op->line_key);
    ngx_fluxgate_args_str(&a, &op->buyers_key);
    ngx_fluxgate_args_str(&a, &op->idem_key);
    ngx_fluxgate_args_str(&a, &op->gen_key);
    ngx_fluxgate_args_str(&a, &op->pending_key);
    ngx_fluxgate_args_str(&a, &op->prefix_key);

    ngx_fluxgate_args_text(&a, (u_char *) op->req.user_id,
                           op->req.user_id_len);
    ngx_fluxgate_args_int(&a, op->req.quantity);

    /* the body's fingerprint: the key is per product already */
    ngx_fluxgate_args_text(&a, fp, ngx_sprintf(fp, "%s:%L", op->req.user_id,
                                               op->req.quantity)
                                   - fp);

    ngx_fluxgate_args_text(&a, op->order_id, NGX_FLUXGATE_UUID_LEN);
    ngx_fluxgate_args_int(&a, op->ttl);
    ngx_fluxgate_args_int(&a, flcf->rate);
    ngx_fluxgate_args_int(&a, flcf->burst);
    ngx_fluxgate_args_int(&a, flcf->per_user_limit);
    ngx_fluxgate_args_str(&a, &op->key);
    ngx_fluxgate_args_text(&a, (u_char *) (flcf->queue_secret.data ? "1"
                                                                   : "0"),
                           1);

    /* microseconds, as Redis TIME gives them */
    ngx_fluxgate_args_int(&a, (int64_t) flcf->queue_window * 1000);
    ngx_fluxgate_args_int(&a, (int64_t) flcf->queue_ticket_ttl * 1000);

    /* the buyer: the (verified) user */
    ngx_fluxgate_args_text(&a, (u_char *) op->req.user_id,
                           op->req.user_id_len);
    ngx_fluxgate_args_text(&a, op->client, op->client_len);
    ngx_fluxgate_args_int(&a, flcf->queue_per_client);
    ngx_fluxgate_args_text(&a, &op->proof, 1);

    /* should this order open the sale: a seed nobody could know before */
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_ERROR;
    }

    ngx_fluxgate_args_text(&a, seed, ngx_hex_dump(seed, raw, sizeof(raw))
                                     - seed);

    if (op->has_ticket) {
        ngx_fluxgate_args_int(&a, op->ticket.epoch);
        ngx_fluxgate_args_text(&a, &op->ticket.kind, 1);
        ngx_fluxgate_args_int(&a, op->ticket.seq);
        ngx_fluxgate_args_int(&a, op->ticket.expires);

    } else {
        ngx_fluxgate_args_text(&a, NULL, 0);
        ngx_fluxgate_args_text(&a, NULL, 0);
        ngx_fluxgate_args_text(&a, NULL, 0);
        ngx_fluxgate_args_text(&a, NULL, 0);
    }

    op->op.log.action = "deciding the order (order.lua)";

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, &op->op.log, 0,
                   "fluxgate: order.lua sent");

    op->sent = ngx_fluxgate_metrics_clock();

    /* fluxgate_redis_wait: a reservation counts once replicas have it */
    /* the script's own contract (lua/header.sh): a mismatch is a bug */
    if (a.n != NGX_FLUXGATE_LUA_ORDER_NKEYS + NGX_FLUXGATE_LUA_ORDER_NARGS) {
        ngx_log_error(NGX_LOG_ALERT, &op->op.log, 0,
                      "fluxgate: order.lua takes %d arguments, not %ui",
                      NGX_FLUXGATE_LUA_ORDER_NKEYS
                      + NGX_FLUXGATE_LUA_ORDER_NARGS, a.n);
        return NGX_ERROR;
    }

    return ngx_fluxgate_redis_eval_wait(op->redis, &ngx_fluxgate_script_order,
                                        NGX_FLUXGATE_LUA_ORDER_NKEYS, a.n,
                                        a.arg, flcf->redis_wait,
                                        flcf->redis_wait_timeout,
                                        ngx_fluxgate_redis_wait_code(
                                            NGX_FLUXGATE_LUA_ORDER_RESERVED),
                                        ngx_fluxgate_order_decided, op);
}


static void
ngx_fluxgate_order_decided(redisReply *reply, void *data)
{
    ngx_fluxgate_order_t  *op = data;

    ngx_int_t            rc;
    ngx_http_request_t  *r;

    if (op->op.timer.timer_set) {
        ngx_del_timer(&op->op.timer);
    }

    if (reply != NULL) {
        ngx_fluxgate_order_timed(op, NGX_FLUXGATE_HISTOGRAM_REDIS);
    }

    if (ngx_fluxgate_redis_not_run(reply)) {
        /* refused before it ran: nothing to release */

        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: order.lua refused: %*s",
                      (size_t) ngx_min(reply->len, 200), reply->str);

        ngx_fluxgate_op_fail(&op->op, "redis unavailable");
        ngx_fluxgate_order_free(op);
        return;
    }

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        /* whether the script ran is unknown: release what it may hold */

        ngx_log_error(NGX_LOG_ERR, &op->op.log, 0,
                      "fluxgate: order.lua: %s%*s, releasing what it may "
                      "have reserved",
                      reply ? "unexpected reply " : "connection lost",
                      (size_t) (reply && reply->str ? reply->len : 0),
                      reply && reply->str ? reply->str : "");

        ngx_fluxgate_op_fail(&op->op, "redis failed");
        ngx_fluxgate_order_release(op);
        return;
    }

    if (reply->element[0]->integer == NGX_FLUXGATE_LUA_ORDER_RESERVED) {

        if (reply->elements != 4
            || reply->element[2]->type != REDIS_REPLY_INTEGER
            || reply->element[3]->type != REDIS_REPLY_INTEGER)
        {
            ngx_log_error(NGX_LOG_ALERT, &op->op.log, 0,
                          "fluxgate: order.lua reserved without a "
                          "generation (an older script?), releasing it");

            ngx_fluxgate_op_fail(&op->op, "unexpected redis reply");
            ngx_fluxgate_order_release(op);
            return;
        }

        op->generation = reply->element[2]->integer;
        op->generation_stock = reply->element[3]->integer;

        if (op->op.answered) {
            /* the client was told 503: what the script took goes back */
            ngx_log_error(NGX_LOG_WARN, &op->op.log, 0,
                          "fluxgate: reserved after its deadline, "
                          "releasing it");

            ngx_fluxgate_order_release(op);
            return;
        }

        if (ngx_fluxgate_order_produce(op) != NGX_OK) {
            ngx_fluxgate_op_fail(&op->op, "kafka unavailable");
            ngx_fluxgate_order_release(op);
            return;
        }

        return;
    }

    /* every other outcome is final here */

    if (reply->element[0]->integer == NGX_FLUXGATE_LUA_ORDER_SOLD_OUT) {
        ngx_fluxgate_order_sold_out(op, reply);
    }

    r = ngx_fluxgate_op_answer(&op->op);

    if (r != NULL) {
        rc = ngx_fluxgate_order_respond(r, op, reply);
        ngx_fluxgate_finalize(r, rc);
    }

    ngx_fluxgate_order_free(op);
}


/*
 * {6, stock}: only a stock of nothing at all raises the flag; a quantity
 * larger than what is left does not, smaller orders may still fit
 */

static void
ngx_fluxgate_order_sold_out(ngx_fluxgate_order_t *op, redisReply *reply)
{
    if (op->sold_out == NULL
        || reply->elements < 2
        || reply->element[1]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->integer > 0)
    {
        return;
    }

    ngx_fluxgate_sold_out_set(op->sold_out, (u_char *) op->req.product_id,
                              op->req.product_id_len, op->sold_out_cache);
}


/* every outcome but a reservation, from order.lua's reply to the answer */

static ngx_int_t
ngx_fluxgate_order_respond(ngx_http_request_t *r, ngx_fluxgate_order_t *op,
    redisReply *reply)
{
    ngx_str_t                 product, buyer;
    ngx_fluxgate_loc_conf_t  *flcf;

    switch (reply->element[0]->integer) {

    case NGX_FLUXGATE_LUA_ORDER_REPLAY:
        return ngx_fluxgate_order_replay(r, reply);

    case NGX_FLUXGATE_LUA_ORDER_IN_PROGRESS:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_IN_PROGRESS,
                                         "in_progress");

    case NGX_FLUXGATE_LUA_ORDER_MISMATCH:
        return ngx_fluxgate_send_error(r, NGX_FLUXGATE_HTTP_UNPROCESSABLE,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key was already used "
                                       "with another body",
                                       "X-Idempotency-Key");

    case NGX_FLUXGATE_LUA_ORDER_REDIRECT:
        return ngx_fluxgate_order_redirect(r, op, reply);

    case NGX_FLUXGATE_LUA_ORDER_SOLD_OUT:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_SOLD_OUT, "sold_out");

    case NGX_FLUXGATE_LUA_ORDER_LIMIT_REACHED:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_LIMIT_REACHED,
                                         "limit_reached");

    case NGX_FLUXGATE_LUA_ORDER_UNKNOWN:
        return ngx_fluxgate_order_status(r, NGX_HTTP_NOT_FOUND,
                                         NGX_FLUXGATE_UNKNOWN_PRODUCT,
                                         "unknown_product");

    case NGX_FLUXGATE_LUA_ORDER_QUEUED:
        return ngx_fluxgate_order_queued(r, op, reply);

    case NGX_FLUXGATE_LUA_ORDER_BAD_TICKET:
        return ngx_fluxgate_order_bad_ticket(r, reply);

    case NGX_FLUXGATE_LUA_ORDER_QUEUE_FULL:
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "fluxgate: the line for \"%s\" is longer than a "
                      "ticket lives (fluxgate_queue_ticket_ttl): not "
                      "queueing more", op->req.product_id);

        return ngx_fluxgate_send_unavailable(r, "waiting room full");

    case NGX_FLUXGATE_LUA_ORDER_CANCELED:
        /* a release ran first: this late order.lua reserved nothing */
        return ngx_fluxgate_send_unavailable(r, "redis failed");

    case NGX_FLUXGATE_LUA_ORDER_CHALLENGE:
        product.data = (u_char *) op->req.product_id;
        product.len = op->req.product_id_len;
        buyer.data = (u_char *) op->req.user_id;
        buyer.len = op->req.user_id_len;

        /* a line, then: the next proof-less order is answered here */
        flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);
        ngx_fluxgate_line_touch(flcf, &product);

        return ngx_fluxgate_queue_send_challenge(r, &product, &buyer);

    case NGX_FLUXGATE_LUA_ORDER_CLIENT_FULL:
        flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fluxgate: \"%s\": the client holds %ui places "
                      "(fluxgate_queue_per_client): no more",
                      op->req.product_id, flcf->queue_per_client);

        return ngx_fluxgate_order_refused(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                          "too_many_places");

    case NGX_FLUXGATE_LUA_ORDER_CLOSED:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_REFUSED, "closed");
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "fluxgate: order.lua: unexpected reply %L",
                  reply->element[0]->integer);

    return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
}


/* {"status":"<status>"} */

static ngx_int_t
ngx_fluxgate_order_status(ngx_http_request_t *r, ngx_uint_t code,
    ngx_fluxgate_outcome_e outcome, const char *status)
{
    ngx_str_t  body;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"\"}")
                                     + ngx_strlen(status));
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data, "{\"status\":\"%s\"}", status)
               - body.data;

    return ngx_fluxgate_send(r, code, outcome, &body);
}


/* 429: come back when a place of this client may have ended */

static ngx_int_t
ngx_fluxgate_order_refused(ngx_http_request_t *r, ngx_uint_t code,
    const char *status)
{
    ngx_str_t  retry;

    ngx_str_set(&retry, "60");

    if (ngx_fluxgate_add_header(r, "Retry-After", &retry) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fluxgate_order_status(r, code, NGX_FLUXGATE_REFUSED, status);
}


/* {2, status, outcome, orderId}: what the key's first request was told */

static ngx_int_t
ngx_fluxgate_order_replay(ngx_http_request_t *r, redisReply *reply)
{
    u_char               *p;
    ngx_str_t             body, value;
    ngx_uint_t            status;
    redisReply          **e;
    ngx_fluxgate_ctx_t   *ctx;

    e = reply->element;

    if (reply->elements != 4
        || e[1]->type != REDIS_REPLY_INTEGER
        || e[2]->type != REDIS_REPLY_STRING
        || e[3]->type != REDIS_REPLY_STRING
        || e[1]->integer < NGX_HTTP_OK
        || e[1]->integer > 599
        || e[2]->len > 32
        || (e[3]->len != 0 && e[3]->len != NGX_FLUXGATE_UUID_LEN))
    {
        return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
    }

    status = (ngx_uint_t) e[1]->integer;

    ctx = ngx_fluxgate_get_ctx(r);
    body.data = ngx_pnalloc(r->pool, 128);

    if (ctx == NULL || body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the outcome and the orderId are what order.lua stored */
    p = ngx_sprintf(body.data, "{\"status\":\"ignored\",\"outcome\":\"%*s\"",
                    e[2]->len, e[2]->str);

    if (e[3]->len) {
        ngx_memcpy(ctx->order_id, e[3]->str, NGX_FLUXGATE_UUID_LEN);
        ctx->has_order_id = 1;

        p = ngx_sprintf(p, ",\"orderId\":\"%*s\"", e[3]->len, e[3]->str);
    }

    *p++ = '}';
    body.len = p - body.data;

    ngx_str_set(&value, "true");

    if (ngx_fluxgate_add_header(r, "Idempotent-Replayed", &value) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fluxgate_send(r, status, NGX_FLUXGATE_DUPLICATE, &body);
}


/* {5, retry_after_ms}: over the rate with no waiting room line: 302 */

static ngx_int_t
ngx_fluxgate_order_redirect(ngx_http_request_t *r, ngx_fluxgate_order_t *op,
    redisReply *reply)
{
    ngx_str_t   product, extra, where, body;
    ngx_uint_t  retry_after;

    if (reply->elements != 2
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
    }

    /* whole seconds, at least one */
    retry_after = (ngx_uint_t) (reply->element[1]->integer + 999) / 1000;
    retry_after = ngx_max(retry_after, 1);

    product.data = (u_char *) op->req.product_id;
    product.len = op->req.product_id_len;

    extra.data = ngx_pnalloc(r->pool, sizeof("&retryAfter=") + NGX_INT_T_LEN);
    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"redirected\","
                                            "\"retryAfter\":}")
                                     + NGX_INT_T_LEN);
    if (extra.data == NULL || body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    extra.len = ngx_sprintf(extra.data, "&retryAfter=%ui", retry_after)
                - extra.data;
    body.len = ngx_sprintf(body.data, "{\"status\":\"redirected\","
                           "\"retryAfter\":%ui}", retry_after)
               - body.data;

    if (ngx_fluxgate_waiting_room(r, &product, &extra, &where) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fluxgate_send_redirect(r, &where, retry_after,
                                      NGX_FLUXGATE_REDIRECTED, &body);
}


/* {9, epoch, kind, seq, expires_s, position, wait_ms, opens_at_s} */

static ngx_int_t
ngx_fluxgate_order_queued(ngx_http_request_t *r, ngx_fluxgate_order_t *op,
    redisReply *reply)
{
    ngx_str_t               product, buyer;
    ngx_uint_t              i;
    redisReply            **e;
    ngx_fluxgate_ticket_t   ticket;

    e = reply->element;

    if (reply->elements != 8
        || e[2]->type != REDIS_REPLY_STRING
        || e[2]->len != 1)
    {
        return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
    }

    for (i = 1; i < 8; i++) {
        if (i != 2 && e[i]->type != REDIS_REPLY_INTEGER) {
            return ngx_fluxgate_send_unavailable(r,
                                                 "unexpected redis reply");
        }
    }

    ticket.epoch = e[1]->integer;
    ticket.kind = (u_char) e[2]->str[0];
    ticket.seq = e[3]->integer;
    ticket.expires = e[4]->integer;

    product.data = (u_char *) op->req.product_id;
    product.len = op->req.product_id_len;
    buyer.data = (u_char *) op->req.user_id;
    buyer.len = op->req.user_id_len;

    return ngx_fluxgate_queue_send_place(r, &product, &buyer, &ticket,
                                         e[5]->integer, e[6]->integer,
                                         e[7]->integer);
}


/* {10, reason}: the ticket was signed by us, but cannot be used now */

static ngx_int_t
ngx_fluxgate_order_bad_ticket(ngx_http_request_t *r, redisReply *reply)
{
    const char  *error;
    redisReply  *why;

    error = "has expired";

    if (reply->elements == 2
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        why = reply->element[1];

        if (why->len == sizeof("spent") - 1
            && ngx_strncmp(why->str, "spent", why->len) == 0)
        {
            error = "was used for another order";

        } else if (why->len == sizeof("window") - 1
                   && ngx_strncmp(why->str, "window", why->len) == 0)
        {
            error = "admission window has passed";
        }
    }

    return ngx_fluxgate_queue_send_refused(r, error, "X-Queue-Ticket");
}
