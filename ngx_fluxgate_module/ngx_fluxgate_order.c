
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
 *     -> reserved: the message, with its generation, to Kafka
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
 *
 * The order's state is not in r->pool: it is allocated on its own, because
 * it may outlive the request.  When the Redis deadline passes the client
 * gets 503 at once, but the script may still run; its late reply is then
 * undone with release.lua.  A pool cleanup detaches the request when it
 * goes away for any reason, and the order is finished without it.  The
 * state is freed only by the last callback that can reach it (hiredis and
 * librdkafka call each callback exactly once).
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_parse.h"
#include "ngx_fluxgate_jwt.h"
#include <ngx_md5.h>

#include <openssl/rand.h>


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


/* order.lua's replies */
#define NGX_FLUXGATE_ORDER_RESERVED       1
#define NGX_FLUXGATE_ORDER_REPLAY         2
#define NGX_FLUXGATE_ORDER_IN_PROGRESS    3
#define NGX_FLUXGATE_ORDER_MISMATCH       4
#define NGX_FLUXGATE_ORDER_REDIRECT       5
#define NGX_FLUXGATE_ORDER_SOLD_OUT       6
#define NGX_FLUXGATE_ORDER_LIMIT_REACHED  7
#define NGX_FLUXGATE_ORDER_UNKNOWN        8
#define NGX_FLUXGATE_ORDER_QUEUED         9
#define NGX_FLUXGATE_ORDER_BAD_TICKET     10
#define NGX_FLUXGATE_ORDER_QUEUE_FULL     11
#define NGX_FLUXGATE_ORDER_CANCELED       12  /* released before it ran */
#define NGX_FLUXGATE_ORDER_CHALLENGE      13  /* a place, but no proof */
#define NGX_FLUXGATE_ORDER_CLIENT_FULL    14  /* fluxgate_queue_per_client */
#define NGX_FLUXGATE_ORDER_CLOSED         15

/* release.lua's: units given back to the stock of their generation */
#define NGX_FLUXGATE_RELEASE_GIVEN        1
#define NGX_FLUXGATE_RELEASE_OVER         2   /* released, generation over */


typedef enum {
    NGX_FLUXGATE_ORDER_DECIDING = 0,      /* order.lua sent */
    NGX_FLUXGATE_ORDER_PRODUCING,         /* message given to Kafka */
    NGX_FLUXGATE_ORDER_FINISHING          /* done.lua or release.lua sent */
} ngx_fluxgate_order_state_e;


/* a per-client key longer than this is hashed (MD5, hex) */
#define NGX_FLUXGATE_CLIENT_MAX           64


/* what the request says, checked, before anything is allocated */
typedef struct {
    ngx_fluxgate_order_req_t    req;
    ngx_str_t                   key;
    ngx_str_t                   product;
    ngx_str_t                   buyer;        /* req's user_id */
    ngx_fluxgate_ticket_t       ticket;
    u_char                      client[NGX_FLUXGATE_CLIENT_MAX];
    size_t                      client_len;
    u_char                      proof;        /* order.lua's: 0, 1, 2 */
    unsigned                    has_ticket:1;
} ngx_fluxgate_order_in_t;


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


static void ngx_fluxgate_order_body(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_order_start(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_order_read(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_order_in_t *in);
static ngx_int_t ngx_fluxgate_order_user(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_order_in_t *in);
static ngx_int_t ngx_fluxgate_order_place(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_order_in_t *in);
static ngx_int_t ngx_fluxgate_order_client(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_order_in_t *in);
static ngx_int_t ngx_fluxgate_order_product(ngx_http_request_t *r,
    ngx_fluxgate_order_req_t *req);
static ngx_fluxgate_order_t *ngx_fluxgate_order_create(ngx_http_request_t *r,
    ngx_fluxgate_order_in_t *in);

static void ngx_fluxgate_order_timed(ngx_fluxgate_order_t *op,
    ngx_fluxgate_histogram_e histogram);
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
static ngx_int_t ngx_fluxgate_order_produce(ngx_fluxgate_order_t *op);
static void ngx_fluxgate_order_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err);
static void ngx_fluxgate_order_accept(ngx_fluxgate_order_t *op);
static void ngx_fluxgate_order_release(ngx_fluxgate_order_t *op);
static void ngx_fluxgate_order_finishing(ngx_fluxgate_order_t *op,
    ngx_uint_t release);
static void ngx_fluxgate_order_finish(ngx_fluxgate_order_t *op);
static void ngx_fluxgate_order_finished(redisReply *reply, void *data);
static void ngx_fluxgate_order_settled(ngx_fluxgate_order_t *op,
    long long rc);
static void ngx_fluxgate_order_timeout(ngx_event_t *ev);
static void ngx_fluxgate_order_free(ngx_fluxgate_order_t *op);


ngx_int_t
ngx_fluxgate_order_handler(ngx_http_request_t *r)
{
    return ngx_fluxgate_read_json_body(r, ngx_fluxgate_order_body);
}


static void
ngx_fluxgate_order_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

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
    ngx_fluxgate_order_in_t     in;
    ngx_fluxgate_loc_conf_t    *flcf;
    ngx_fluxgate_main_conf_t   *fmcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);
    fmcf = ngx_http_get_module_main_conf(r, ngx_fluxgate_module);

    ngx_memzero(&in, sizeof(ngx_fluxgate_order_in_t));

    /* the body, the key, the buyer, a ticket or a proof: no I/O yet */

    rc = ngx_fluxgate_order_read(r, flcf, &in);
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

    rc = ngx_fluxgate_order_place(r, flcf, &in);
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


/*
 * Body, key and buyer: NGX_DECLINED to go on, else what the answer sent
 * (400, 401, 403) returned
 */

static ngx_int_t
ngx_fluxgate_order_read(ngx_http_request_t *r, ngx_fluxgate_loc_conf_t *flcf,
    ngx_fluxgate_order_in_t *in)
{
    ngx_int_t                   rc;
    ngx_str_t                   body;
    ngx_fluxgate_parse_error_t  err;

    rc = ngx_fluxgate_request_body(r, &body);

    if (rc == NGX_DECLINED) {
        return ngx_fluxgate_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       NGX_FLUXGATE_INVALID,
                                       "body too large", "body");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_fluxgate_idempotency_key(r, &in->key) != NGX_OK) {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key given more than once",
                                       "X-Idempotency-Key");
    }

    /* with verified users the body may leave userId out */

    if (ngx_fluxgate_parse_idempotency_key((char *) in->key.data,
                                           in->key.len, &err)
        != 0
        || ngx_fluxgate_parse_order((char *) body.data, body.len,
                                    flcf->max_quantity,
                                    flcf->user_token != NULL, &in->req, &err)
           != 0)
    {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID, err.error,
                                       err.field);
    }

    in->product.data = (u_char *) in->req.product_id;
    in->product.len = in->req.product_id_len;

    rc = ngx_fluxgate_order_user(r, flcf, in);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* the buyer: the verified user, else userId, else the key */

    in->buyer.data = (u_char *) in->req.user_id;
    in->buyer.len = in->req.user_id_len;

    return ngx_fluxgate_order_client(r, flcf, in);
}


/*
 * fluxgate_user_token: the token checked before any Redis call.  A valid
 * one makes its sub the user (a body userId that differs: 403); a missing
 * or bad one is 401 where required, else the request has no verified
 * user (and must name its userId).
 */

static ngx_int_t
ngx_fluxgate_order_user(ngx_http_request_t *r, ngx_fluxgate_loc_conf_t *flcf,
    ngx_fluxgate_order_in_t *in)
{
    ngx_str_t            token, body, value;
    const char          *why;
    ngx_fluxgate_jwt_t   jwt;

    if (flcf->user_token == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_complex_value(r, flcf->user_token, &token) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    why = NULL;

    if (ngx_fluxgate_jwt_verify(token.data, token.len,
                                flcf->user_secret.data, flcf->user_secret.len,
                                (long long) ngx_time(), &jwt, &why)
        != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fluxgate: user token refused: %s", why);

        if (flcf->user_required) {
            ngx_str_set(&value, "Bearer");

            if (ngx_fluxgate_add_header(r, "WWW-Authenticate", &value)
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_str_set(&body, "{\"status\":\"unauthenticated\"}");
            return ngx_fluxgate_send(r, NGX_HTTP_UNAUTHORIZED,
                                     NGX_FLUXGATE_REFUSED, &body);
        }

        if (in->req.user_id_len == 0) {
            /* anonymous: the key stands for the buyer (its charset fits) */
            ngx_memcpy(in->req.user_id, in->key.data, in->key.len);
            in->req.user_id[in->key.len] = '\0';
            in->req.user_id_len = in->key.len;
        }

        return NGX_DECLINED;
    }

    if (in->req.user_id_len
        && (in->req.user_id_len != jwt.sub_len
            || ngx_strncmp(in->req.user_id, jwt.sub, jwt.sub_len) != 0))
    {
        ngx_str_set(&body, "{\"status\":\"user_mismatch\"}");
        return ngx_fluxgate_send(r, NGX_HTTP_FORBIDDEN, NGX_FLUXGATE_REFUSED,
                                 &body);
    }

    ngx_memcpy(in->req.user_id, jwt.sub, jwt.sub_len + 1);
    in->req.user_id_len = jwt.sub_len;

    return NGX_DECLINED;
}


/* fluxgate_queue_per_client's key: short ones as they are, long ones hashed */

static ngx_int_t
ngx_fluxgate_order_client(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_order_in_t *in)
{
    u_char     md[16];
    ngx_md5_t  md5;
    ngx_str_t  value;

    if (flcf->queue_per_client == 0) {
        return NGX_DECLINED;
    }

    if (ngx_http_complex_value(r, flcf->queue_client_key, &value) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (value.len <= NGX_FLUXGATE_CLIENT_MAX) {
        in->client_len = value.len;
        ngx_memcpy(in->client, value.data, value.len);
        return NGX_DECLINED;
    }

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, value.data, value.len);
    ngx_md5_final(md, &md5);

    in->client_len = ngx_hex_dump(in->client, md, sizeof(md)) - in->client;

    return NGX_DECLINED;
}


/*
 * The waiting room's part before any I/O: an X-Queue-Ticket checked (a
 * bad one: 400), else a proof of work where fluxgate_queue_pow asks one
 * (bad, or none while the line is busy: 302 with a challenge, Redis never
 * asked).  NGX_DECLINED: go on to Redis.
 */

static ngx_int_t
ngx_fluxgate_order_place(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_order_in_t *in)
{
    u_char                 nonce[NGX_FLUXGATE_NONCE_LEN];
    ngx_int_t              rc;
    ngx_str_t              proof, name = ngx_string("X-Queue-Proof");
    const char            *error;
    ngx_fluxgate_proof_e   checked;

    /* a ticket this gate did not sign for this buyer never reaches Redis */

    rc = ngx_fluxgate_queue_ticket(r, flcf, &in->product, &in->buyer,
                                   &in->ticket, &error);

    if (rc == NGX_ERROR) {
        return ngx_fluxgate_queue_send_refused(r, error, "X-Queue-Ticket");
    }

    if (rc == NGX_OK) {
        in->has_ticket = 1;
        in->proof = '0';
        return NGX_DECLINED;
    }

    if (flcf->queue_pow == 0 || flcf->queue_secret.data == NULL) {
        in->proof = '0';
        return NGX_DECLINED;
    }

    if (ngx_fluxgate_single_header(r, &name, &proof) != NGX_OK) {
        return ngx_fluxgate_queue_send_refused(r, "given more than once",
                                               "X-Queue-Proof");
    }

    if (proof.data != NULL) {
        checked = ngx_fluxgate_proof_check(&flcf->queue_secret, &proof,
                                           flcf->queue_pow, &in->product,
                                           &in->buyer, ngx_time(), nonce);

        if (checked == NGX_FLUXGATE_PROOF_OK
            && ngx_fluxgate_line_take_proof(flcf->queue_zone, nonce,
                                            ngx_time() + 3600)
               != NGX_OK)
        {
            checked = NGX_FLUXGATE_PROOF_REUSED;
        }

        if (checked == NGX_FLUXGATE_PROOF_OK) {
            ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_CHALLENGE_SOLVED);
            in->proof = '2';
            return NGX_DECLINED;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fluxgate: X-Queue-Proof for \"%V\" refused (%d), "
                      "challenging again", &in->product, checked);

        ngx_fluxgate_metrics_count(checked == NGX_FLUXGATE_PROOF_REUSED
                                   ? NGX_FLUXGATE_METRIC_CHALLENGE_REUSED
                                   : NGX_FLUXGATE_METRIC_CHALLENGE_FAILED);

        return ngx_fluxgate_queue_send_challenge(r, &in->product,
                                                 &in->buyer);
    }

    /* no proof: while the line is busy a place is due, Redis or not */

    if (ngx_fluxgate_line_busy(flcf, &in->product)) {
        return ngx_fluxgate_queue_send_challenge(r, &in->product,
                                                 &in->buyer);
    }

    in->proof = '1';

    return NGX_DECLINED;
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
ngx_fluxgate_order_create(ngx_http_request_t *r, ngx_fluxgate_order_in_t *in)
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

    if (ngx_fluxgate_op_start(&op->op, r, ngx_fluxgate_order_delivered,
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

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: order %*s: deciding (order.lua)",
                   (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id);

    op->sent = ngx_fluxgate_metrics_clock();

    /* fluxgate_redis_wait: a reservation counts once replicas have it */
    return ngx_fluxgate_redis_eval_wait(op->redis, &ngx_fluxgate_script_order,
                                        7, a.n, a.arg, flcf->redis_wait,
                                        flcf->redis_wait_timeout,
                                        ngx_fluxgate_redis_wait_code(
                                            NGX_FLUXGATE_ORDER_RESERVED),
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

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: order %*s for \"%s\": order.lua refused: "
                      "%*s", (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                      op->req.product_id,
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

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: order %*s for \"%s\": order.lua: %s%*s, "
                      "releasing what it may have reserved",
                      (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                      op->req.product_id,
                      reply ? "unexpected reply " : "connection lost",
                      (size_t) (reply && reply->str ? reply->len : 0),
                      reply && reply->str ? reply->str : "");

        ngx_fluxgate_op_fail(&op->op, "redis failed");
        ngx_fluxgate_order_release(op);
        return;
    }

    if (reply->element[0]->integer == NGX_FLUXGATE_ORDER_RESERVED) {

        if (reply->elements != 4
            || reply->element[2]->type != REDIS_REPLY_INTEGER
            || reply->element[3]->type != REDIS_REPLY_INTEGER)
        {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "fluxgate: order %*s for \"%s\": order.lua "
                          "reserved without a generation (an older "
                          "script?), releasing it",
                          (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                          op->req.product_id);

            ngx_fluxgate_op_fail(&op->op, "unexpected redis reply");
            ngx_fluxgate_order_release(op);
            return;
        }

        op->generation = reply->element[2]->integer;
        op->generation_stock = reply->element[3]->integer;

        if (op->op.answered) {
            /* the client was told 503: what the script took goes back */
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "fluxgate: order %*s for \"%s\" reserved after "
                          "its deadline, releasing it",
                          (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                          op->req.product_id);

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

    if (reply->element[0]->integer == NGX_FLUXGATE_ORDER_SOLD_OUT) {
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

    case NGX_FLUXGATE_ORDER_REPLAY:
        return ngx_fluxgate_order_replay(r, reply);

    case NGX_FLUXGATE_ORDER_IN_PROGRESS:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_IN_PROGRESS,
                                         "in_progress");

    case NGX_FLUXGATE_ORDER_MISMATCH:
        return ngx_fluxgate_send_error(r, NGX_FLUXGATE_HTTP_UNPROCESSABLE,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key was already used "
                                       "with another body",
                                       "X-Idempotency-Key");

    case NGX_FLUXGATE_ORDER_REDIRECT:
        return ngx_fluxgate_order_redirect(r, op, reply);

    case NGX_FLUXGATE_ORDER_SOLD_OUT:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_SOLD_OUT, "sold_out");

    case NGX_FLUXGATE_ORDER_LIMIT_REACHED:
        return ngx_fluxgate_order_status(r, NGX_HTTP_CONFLICT,
                                         NGX_FLUXGATE_LIMIT_REACHED,
                                         "limit_reached");

    case NGX_FLUXGATE_ORDER_UNKNOWN:
        return ngx_fluxgate_order_status(r, NGX_HTTP_NOT_FOUND,
                                         NGX_FLUXGATE_UNKNOWN_PRODUCT,
                                         "unknown_product");

    case NGX_FLUXGATE_ORDER_QUEUED:
        return ngx_fluxgate_order_queued(r, op, reply);

    case NGX_FLUXGATE_ORDER_BAD_TICKET:
        return ngx_fluxgate_order_bad_ticket(r, reply);

    case NGX_FLUXGATE_ORDER_QUEUE_FULL:
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "fluxgate: the line for \"%s\" is longer than a "
                      "ticket lives (fluxgate_queue_ticket_ttl): not "
                      "queueing more", op->req.product_id);

        return ngx_fluxgate_send_unavailable(r, "waiting room full");

    case NGX_FLUXGATE_ORDER_CANCELED:
        /* a release ran first: this late order.lua reserved nothing */
        return ngx_fluxgate_send_unavailable(r, "redis failed");

    case NGX_FLUXGATE_ORDER_CHALLENGE:
        product.data = (u_char *) op->req.product_id;
        product.len = op->req.product_id_len;
        buyer.data = (u_char *) op->req.user_id;
        buyer.len = op->req.user_id_len;

        return ngx_fluxgate_queue_send_challenge(r, &product, &buyer);

    case NGX_FLUXGATE_ORDER_CLIENT_FULL:
        flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fluxgate: \"%s\": the client holds %ui places "
                      "(fluxgate_queue_per_client): no more",
                      op->req.product_id, flcf->queue_per_client);

        return ngx_fluxgate_order_refused(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                          "too_many_places");

    case NGX_FLUXGATE_ORDER_CLOSED:
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


static ngx_int_t
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

    /* op->sent: order.lua's reply, read by ngx_fluxgate_order_timed() */

    if (ngx_fluxgate_kafka_produce(&key, &msg, &op->op.delivery) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: order %*s: reserved, producing",
                   (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id);

    op->state = NGX_FLUXGATE_ORDER_PRODUCING;

    /* a live timer also keeps a gracefully exiting worker until the end */
    ngx_add_timer(&op->op.timer, op->kafka_wait);

    return NGX_OK;
}


static void
ngx_fluxgate_order_delivered(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err)
{
    ngx_fluxgate_order_t  *op = (ngx_fluxgate_order_t *) dlv;

    if (op->op.timer.timer_set) {
        ngx_del_timer(&op->op.timer);
    }

    ngx_fluxgate_order_timed(op, NGX_FLUXGATE_HISTOGRAM_KAFKA);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: order %*s: delivery report %d",
                   (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id, status);

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
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: order %*s for \"%s\" not delivered to "
                      "kafka: %s, releasing it",
                      (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                      op->req.product_id, err);

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

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "fluxgate: order %*s for \"%s\" (user \"%s\", "
                      "quantity %L) possibly persisted in kafka: %s; its "
                      "claim stays pending until it is settled",
                      (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                      op->req.product_id, op->req.user_id,
                      op->req.quantity, err);

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


static void
ngx_fluxgate_order_release(ngx_fluxgate_order_t *op)
{
    ngx_fluxgate_order_finishing(op, 1);
}


/* the last step: done.lua or release.lua, retried until the deadline */

static void
ngx_fluxgate_order_finishing(ngx_fluxgate_order_t *op, ngx_uint_t release)
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: order %*s: finishing with %s.lua",
                   (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                   release ? "release" : "done");

    op->state = NGX_FLUXGATE_ORDER_FINISHING;
    op->releasing = release;
    op->deadline = ngx_current_msec + NGX_FLUXGATE_FINISH_GRACE;

    ngx_fluxgate_order_finish(op);
}


static void
ngx_fluxgate_order_finish(ngx_fluxgate_order_t *op)
{
    ngx_int_t             rc;
    ngx_msec_t            now;
    ngx_fluxgate_args_t   a;

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

        rc = ngx_fluxgate_redis_eval(op->redis, &ngx_fluxgate_script_release,
                                     6, a.n, a.arg,
                                     ngx_fluxgate_order_finished, op);

    } else {
        ngx_fluxgate_args_str(&a, &op->idem_key);
        ngx_fluxgate_args_str(&a, &op->pending_key);
        ngx_fluxgate_args_text(&a, op->order_id, NGX_FLUXGATE_UUID_LEN);
        ngx_fluxgate_args_int(&a, op->ttl);
        ngx_fluxgate_args_str(&a, &op->key);

        rc = ngx_fluxgate_redis_eval(op->redis, &ngx_fluxgate_script_done,
                                     2, a.n, a.arg,
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
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "fluxgate: order %*s: %s.lua: %*s, retrying",
                          (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
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
        && reply->integer == NGX_FLUXGATE_RELEASE_GIVEN)
    {
        ngx_fluxgate_sold_out_clear(op->sold_out,
                                    (u_char *) op->req.product_id,
                                    op->req.product_id_len);
    }

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
        ngx_fluxgate_order_settled(op, reply->integer);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: order %*s: finished, %s",
                   (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                   reply ? "claim ended" : "claim left pending");

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "fluxgate: order %*s: could not %s in redis "
                      "(%s): product \"%s\", user \"%s\", quantity %L, "
                      "key \"%V\"; its claim stays pending until "
                      "fluxgate-reconcile settles it",
                      (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                      op->releasing ? "release the reservation"
                                    : "mark the idempotency key done",
                      reply ? "error reply" : "no connection",
                      op->req.product_id, op->req.user_id,
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

    if (rc == NGX_FLUXGATE_RELEASE_GIVEN) {
        ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_RELEASED);

    } else if (rc == NGX_FLUXGATE_RELEASE_OVER) {
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

static void
ngx_fluxgate_order_timeout(ngx_event_t *ev)
{
    ngx_fluxgate_order_t  *op = ev->data;

    if (op->state == NGX_FLUXGATE_ORDER_FINISHING) {

        if (!op->waiting) {
            ngx_fluxgate_order_finish(op);
            return;
        }

    } else if (!op->op.answered) {

        if (op->state == NGX_FLUXGATE_ORDER_DECIDING) {
            ngx_fluxgate_redis_timed_out(
                ngx_fluxgate_redis_node(op->redis, &op->stock_key));
            ngx_fluxgate_op_fail(&op->op, "redis timed out");

        } else {
            ngx_fluxgate_op_fail(&op->op, "kafka timed out");
        }

        ngx_add_timer(&op->op.timer, NGX_FLUXGATE_FINISH_GRACE);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "fluxgate: order %*s for \"%s\": still no reply from %s",
                  (size_t) NGX_FLUXGATE_UUID_LEN, op->order_id,
                  op->req.product_id,
                  op->state == NGX_FLUXGATE_ORDER_PRODUCING ? "kafka"
                                                            : "redis");
}


/* a round trip ended: the histogram, and the request's variable */

static void
ngx_fluxgate_order_timed(ngx_fluxgate_order_t *op,
    ngx_fluxgate_histogram_e histogram)
{
    uint64_t             usec, now;
    ngx_fluxgate_ctx_t  *ctx;

    now = ngx_fluxgate_metrics_clock();
    usec = (now > op->sent) ? now - op->sent : 0;

    /* the end of order.lua's round trip starts the produce that follows */
    op->sent = now;

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


static void
ngx_fluxgate_order_free(ngx_fluxgate_order_t *op)
{
    ngx_fluxgate_op_end(&op->op);
    ngx_free(op);
}
