
/*
 * Flux-Gate: the operator's side of the waiting room, on the admin
 * listener.
 *
 *   fluxgate_queue_stats    GET ?productId=: the line's figures, from
 *                           Redis (queue_head.lua): state, opening, rate,
 *                           waiting, admitted, oldest wait, no-shows
 *   fluxgate_queue_control  POST {"productId","action"[,"rate"]}: pause,
 *                           resume, close, rate (queue_control.lua),
 *                           effective at once for orders and within the
 *                           gates' refresh for polls; logged with who
 *                           asked, counted, idempotent with its key
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_lua.h"

#include <openssl/rand.h>


/* fg:{<productId>}:q:ctl:<key> and shorter */
#define NGX_FLUXGATE_QUEUE_KEY_LEN                                           \
    (sizeof("fg:{}:q:ctl:") - 1 + NGX_FLUXGATE_ID_MAX + NGX_FLUXGATE_KEY_MAX)


/* GET /queue/stats or POST /queue/control: one script each */
typedef struct {
    ngx_fluxgate_op_t            op;          /* first: see ngx_fluxgate.h */
    ngx_fluxgate_redis_t        *node;
    ngx_fluxgate_control_req_t   req;         /* control only */
    ngx_str_t                    key;         /* the request's, for the log */
    u_char                       product[NGX_FLUXGATE_ID_MAX];
    size_t                       product_len;
} ngx_fluxgate_queue_admin_t;


static ngx_fluxgate_queue_admin_t *ngx_fluxgate_queue_admin_start(
    ngx_http_request_t *r, ngx_event_handler_pt timeout);
static void ngx_fluxgate_queue_stats_reply(redisReply *reply, void *data);
static void ngx_fluxgate_queue_control_body(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_queue_control_start(ngx_http_request_t *r);
static void ngx_fluxgate_queue_control_reply(redisReply *reply, void *data);
static ngx_int_t ngx_fluxgate_queue_control_done(ngx_http_request_t *r,
    ngx_fluxgate_queue_admin_t *qa, redisReply *reply);
static void ngx_fluxgate_queue_admin_timeout(ngx_event_t *ev);
static u_char *ngx_fluxgate_queue_describe(ngx_fluxgate_op_t *op,
    u_char *buf, size_t len);
static void ngx_fluxgate_queue_admin_free(ngx_fluxgate_queue_admin_t *qa);


static ngx_str_t  ngx_fluxgate_queue_json = ngx_string("application/json");

static const char  *ngx_fluxgate_queue_states[] = {
    "open", "scheduled", "paused", "closed"
};


/* the life both admin handlers share: a script, its deadline */

static ngx_fluxgate_queue_admin_t *
ngx_fluxgate_queue_admin_start(ngx_http_request_t *r,
    ngx_event_handler_pt timeout)
{
    ngx_fluxgate_queue_admin_t  *qa;

    qa = ngx_calloc(sizeof(ngx_fluxgate_queue_admin_t), r->connection->log);
    if (qa == NULL) {
        return NULL;
    }

    if (ngx_fluxgate_op_start(&qa->op, r, ngx_fluxgate_queue_describe, NULL,
                              timeout, qa)
        != NGX_OK)
    {
        ngx_free(qa);
        return NULL;
    }

    return qa;
}


static void
ngx_fluxgate_queue_admin_timeout(ngx_event_t *ev)
{
    ngx_fluxgate_queue_admin_t  *qa = ev->data;

    /* the reply still comes (or the connection's end): it frees qa */

    ngx_fluxgate_redis_timed_out(qa->node);
    ngx_fluxgate_op_fail(&qa->op, "redis timed out");
}


static u_char *
ngx_fluxgate_queue_describe(ngx_fluxgate_op_t *op, u_char *buf, size_t len)
{
    ngx_fluxgate_queue_admin_t  *qa = (ngx_fluxgate_queue_admin_t *) op;

    return ngx_snprintf(buf, len, ", line of \"%*s\"", qa->product_len,
                        qa->product);
}


static void
ngx_fluxgate_queue_admin_free(ngx_fluxgate_queue_admin_t *qa)
{
    ngx_fluxgate_op_end(&qa->op);
    ngx_free(qa);
}


/* fluxgate_queue_stats; GET ?productId=<p> */

ngx_int_t
ngx_fluxgate_queue_stats_handler(ngx_http_request_t *r)
{
    u_char                       keys[4][NGX_FLUXGATE_ID_MAX + 16];
    u_char                       nums[3][NGX_INT64_LEN];
    u_char                       seed[2 * NGX_FLUXGATE_NONCE_LEN];
    u_char                       raw[NGX_FLUXGATE_NONCE_LEN];
    ngx_int_t                    rc;
    ngx_str_t                    product;
    ngx_str_t                    args[NGX_FLUXGATE_LUA_QUEUE_HEAD_NKEYS
                                      + NGX_FLUXGATE_LUA_QUEUE_HEAD_NARGS];
    ngx_fluxgate_loc_conf_t     *flcf;
    ngx_fluxgate_queue_admin_t  *qa;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (ngx_fluxgate_queue_get_product(r, &product, &rc) != NGX_OK) {
        return rc;
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    args[0].data = keys[0];
    args[0].len = ngx_sprintf(keys[0], "fg:{%V}:stock", &product) - keys[0];
    args[1].data = keys[1];
    args[1].len = ngx_sprintf(keys[1], "fg:{%V}:q", &product) - keys[1];
    args[2].data = keys[2];
    args[2].len = ngx_sprintf(keys[2], "fg:{%V}:gen", &product) - keys[2];
    args[3].data = keys[3];
    args[3].len = ngx_sprintf(keys[3], "fg:{%V}:q:", &product) - keys[3];
    args[4].data = nums[0];
    args[4].len = ngx_sprintf(nums[0], "%ui", flcf->rate) - nums[0];
    args[5].data = nums[1];
    args[5].len = ngx_sprintf(nums[1], "%ui", flcf->burst) - nums[1];
    args[6].data = nums[2];
    args[6].len = ngx_sprintf(nums[2], "%M000", flcf->queue_window) - nums[2];

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[7].data = seed;
    args[7].len = ngx_hex_dump(seed, raw, sizeof(raw)) - seed;

    /* the statistics are what is asked: counted now */
    ngx_str_set(&args[8], "1");

    qa = ngx_fluxgate_queue_admin_start(r, ngx_fluxgate_queue_admin_timeout);
    if (qa == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    qa->node = ngx_fluxgate_redis_node(flcf->redis, &args[0]);
    qa->product_len = product.len;
    ngx_memcpy(qa->product, product.data, product.len);
    qa->op.log.action = "reading the line (queue_head.lua)";

    if (!ngx_fluxgate_redis_ready(qa->node)
        || ngx_fluxgate_redis_eval(flcf->redis,
                                   &ngx_fluxgate_script_queue_head,
                                   NGX_FLUXGATE_LUA_QUEUE_HEAD_NKEYS,
                                   NGX_FLUXGATE_LUA_QUEUE_HEAD_NKEYS
                                   + NGX_FLUXGATE_LUA_QUEUE_HEAD_NARGS,
                                   args, ngx_fluxgate_queue_stats_reply, qa)
           != NGX_OK)
    {
        ngx_fluxgate_queue_admin_free(qa);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    ngx_add_timer(&qa->op.timer, flcf->redis_timeout);

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_fluxgate_queue_stats_reply(redisReply *reply, void *data)
{
    ngx_fluxgate_queue_admin_t  *qa = data;

    u_char               *p;
    ngx_int_t             rc;
    ngx_str_t             body;
    ngx_http_request_t   *r;
    ngx_fluxgate_line_t   line;

    r = ngx_fluxgate_op_answer(&qa->op);

    if (r == NULL) {
        ngx_fluxgate_queue_admin_free(qa);
        return;
    }

    if (ngx_fluxgate_line_parse(reply, &line) != NGX_OK) {
        rc = ngx_fluxgate_send_unavailable(r, reply ? "unexpected redis reply"
                                                    : "redis failed");
        goto done;
    }

    if (!line.known) {
        ngx_str_set(&body, "{\"status\":\"unknown_product\"}");
        rc = ngx_fluxgate_send_body(r, NGX_HTTP_NOT_FOUND,
                                    &ngx_fluxgate_queue_json, &body);
        goto done;
    }

    body.data = ngx_pnalloc(r->pool, 256);
    if (body.data == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    p = ngx_sprintf(body.data, "{\"state\":\"%s\",\"opensAt\":",
                    ngx_fluxgate_queue_states[line.state]);

    if (line.opens_at) {
        p = ngx_sprintf(p, "%L", line.opens_at / 1000000);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_sprintf(p, ",\"rate\":%L,\"waiting\":%L,\"admitted\":%L,"
                    "\"oldestWaitSeconds\":%L,\"noShows\":%L}",
                    line.rate, line.waiting, line.admitted,
                    line.oldest / 1000000, line.no_shows);

    body.len = p - body.data;

    rc = ngx_fluxgate_send_body(r, NGX_HTTP_OK, &ngx_fluxgate_queue_json,
                                &body);

done:

    ngx_fluxgate_finalize(r, rc);
    ngx_fluxgate_queue_admin_free(qa);
}


/* fluxgate_queue_control; POST {"productId","action"[,"rate"]} */

ngx_int_t
ngx_fluxgate_queue_control_handler(ngx_http_request_t *r)
{
    return ngx_fluxgate_read_json_body(r, ngx_fluxgate_queue_control_body);
}


static void
ngx_fluxgate_queue_control_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_fluxgate_queue_control_start(r);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_fluxgate_queue_control_start(ngx_http_request_t *r)
{
    u_char                       ctl[NGX_FLUXGATE_QUEUE_KEY_LEN];
    u_char                       keys[2][NGX_FLUXGATE_ID_MAX + 16];
    u_char                       nums[4][NGX_INT64_LEN];
    u_char                       seed[2 * NGX_FLUXGATE_NONCE_LEN];
    u_char                       raw[NGX_FLUXGATE_NONCE_LEN];
    u_char                      *p;
    ngx_int_t                    rc;
    ngx_str_t                    body, key, product, args[10];
    ngx_fluxgate_loc_conf_t     *flcf;
    ngx_fluxgate_queue_admin_t  *qa;
    ngx_fluxgate_control_req_t   req;
    ngx_fluxgate_parse_error_t   err;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    rc = ngx_fluxgate_request_body(r, &body);

    if (rc == NGX_DECLINED) {
        return ngx_fluxgate_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       NGX_FLUXGATE_INVALID,
                                       "body too large", "body");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a control is repeated safely only with its key: it is required */

    if (ngx_fluxgate_idempotency_key(r, &key) != NGX_OK) {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key given more than once",
                                       "X-Idempotency-Key");
    }

    if (ngx_fluxgate_parse_idempotency_key((char *) key.data, key.len, &err)
        != 0
        || ngx_fluxgate_parse_control((char *) body.data, body.len, &req,
                                      &err)
           != 0)
    {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID, err.error,
                                       err.field);
    }

    product.data = (u_char *) req.product_id;
    product.len = req.product_id_len;

    args[0].data = keys[0];
    args[0].len = ngx_sprintf(keys[0], "fg:{%V}:q", &product) - keys[0];
    args[1].data = keys[1];
    args[1].len = ngx_sprintf(keys[1], "fg:{%V}:gen", &product) - keys[1];
    args[2].data = ctl;
    args[2].len = ngx_sprintf(ctl, "fg:{%V}:q:ctl:%V", &product, &key) - ctl;

    args[3].data = (u_char *) ngx_fluxgate_control_names[req.action];
    args[3].len = ngx_strlen(ngx_fluxgate_control_names[req.action]);
    args[4].data = nums[0];
    args[4].len = ngx_sprintf(nums[0], "%L", req.rate) - nums[0];

    /* the body's fingerprint: the key is per product already */
    args[5].data = nums[1];
    args[5].len = ngx_sprintf(nums[1], "%s:%L", args[3].data, req.rate)
                  - nums[1];

    args[6].data = nums[2];
    args[6].len = ngx_sprintf(nums[2], "%M", flcf->idempotency_ttl) - nums[2];
    args[7].data = nums[3];
    args[7].len = ngx_sprintf(nums[3], "%ui", flcf->rate) - nums[3];

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL || RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[8].data = p;
    args[8].len = ngx_sprintf(p, "%ui", flcf->burst) - p;
    args[9].data = seed;
    args[9].len = ngx_hex_dump(seed, raw, sizeof(raw)) - seed;

    qa = ngx_fluxgate_queue_admin_start(r, ngx_fluxgate_queue_admin_timeout);
    if (qa == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    qa->req = req;
    qa->key = key;
    qa->node = ngx_fluxgate_redis_node(flcf->redis, &args[0]);
    qa->product_len = product.len;
    ngx_memcpy(qa->product, product.data, product.len);
    qa->op.log.action = "changing the line (queue_control.lua)";

    if (!ngx_fluxgate_redis_ready(qa->node)
        || ngx_fluxgate_redis_eval(flcf->redis,
                                   &ngx_fluxgate_script_queue_control,
                                   NGX_FLUXGATE_LUA_QUEUE_CONTROL_NKEYS, 10,
                                   args, ngx_fluxgate_queue_control_reply, qa)
           != NGX_OK)
    {
        ngx_fluxgate_queue_admin_free(qa);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    ngx_add_timer(&qa->op.timer, flcf->redis_timeout);

    return NGX_DONE;
}


static void
ngx_fluxgate_queue_control_reply(redisReply *reply, void *data)
{
    ngx_fluxgate_queue_admin_t  *qa = data;

    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ngx_fluxgate_op_answer(&qa->op);

    if (r != NULL) {
        rc = ngx_fluxgate_queue_control_done(r, qa, reply);
        ngx_fluxgate_finalize(r, rc);
    }

    ngx_fluxgate_queue_admin_free(qa);
}


/*
 * {1, state, rate}: done, logged with who asked (the address, and the
 * user of basic auth when the location has it) and counted; {2, ...} a
 * replay; {4} the key with another body; {8} an unknown product
 */

static ngx_int_t
ngx_fluxgate_queue_control_done(ngx_http_request_t *r,
    ngx_fluxgate_queue_admin_t *qa, redisReply *reply)
{
    u_char        rate[1 + NGX_INT64_LEN];
    ngx_str_t     body, value, product, rate_text;
    redisReply  **e;

    product.data = qa->product;
    product.len = qa->product_len;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fluxgate: queue control of \"%V\" not confirmed by "
                      "redis: %s", &product,
                      reply && reply->str ? reply->str : "no reply");

        return ngx_fluxgate_send_unavailable(r, "redis failed");
    }

    e = reply->element;

    switch (e[0]->integer) {

    case NGX_FLUXGATE_LUA_QUEUE_CONTROL_KEY_REUSED:
        return ngx_fluxgate_send_error(r, NGX_FLUXGATE_HTTP_UNPROCESSABLE,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key was already used "
                                       "with another body",
                                       "X-Idempotency-Key");

    case NGX_FLUXGATE_LUA_QUEUE_CONTROL_UNKNOWN:
        ngx_str_set(&body, "{\"status\":\"unknown_product\"}");
        return ngx_fluxgate_send(r, NGX_HTTP_NOT_FOUND,
                                 NGX_FLUXGATE_UNKNOWN_PRODUCT, &body);

    case NGX_FLUXGATE_LUA_QUEUE_CONTROL_DONE:
    case NGX_FLUXGATE_LUA_QUEUE_CONTROL_REPLAY:
        if (reply->elements != 3
            || e[1]->type != REDIS_REPLY_STRING
            || e[2]->type != REDIS_REPLY_INTEGER)
        {
            break;
        }

        if (e[0]->integer == NGX_FLUXGATE_LUA_QUEUE_CONTROL_DONE) {

            /* "rate 20", "pause": the rate only for the action that has one */
            rate_text.data = rate;
            rate_text.len = 0;

            if (qa->req.action == NGX_FLUXGATE_CONTROL_RATE) {
                rate_text.len = ngx_sprintf(rate, " %L", (int64_t) qa->req.rate)
                               - rate;
            }

            ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                          "fluxgate: queue control: \"%V\" %s%V by %V%s%V "
                          "(key \"%V\"): the line is now %s at %L/s",
                          &product,
                          ngx_fluxgate_control_names[qa->req.action],
                          &rate_text, &r->connection->addr_text,
                          r->headers_in.user.len ? ", user " : "",
                          &r->headers_in.user, &qa->key,
                          e[1]->len ? e[1]->str : "open",
                          (int64_t) e[2]->integer);

            ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_CONTROL_PAUSE
                                       + qa->req.action);

        } else {
            ngx_str_set(&value, "true");

            if (ngx_fluxgate_add_header(r, "Idempotent-Replayed", &value)
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        body.data = ngx_pnalloc(r->pool, 128 + NGX_FLUXGATE_ID_MAX
                                         + e[1]->len);
        if (body.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        body.len = ngx_sprintf(body.data, "{\"status\":\"success\","
                               "\"productId\":\"%V\",\"action\":\"%s\","
                               "\"state\":\"%*s\",\"rate\":%L}",
                               &product,
                               ngx_fluxgate_control_names[qa->req.action],
                               (size_t) (e[1]->len ? e[1]->len : 4),
                               e[1]->len ? e[1]->str : "open",
                               (int64_t) e[2]->integer)
                   - body.data;

        return ngx_fluxgate_send(r, NGX_HTTP_OK,
                                 e[0]->integer
                                 == NGX_FLUXGATE_LUA_QUEUE_CONTROL_DONE
                                 ? NGX_FLUXGATE_ACCEPTED
                                                    : NGX_FLUXGATE_DUPLICATE,
                                 &body);
    }

    return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
}
