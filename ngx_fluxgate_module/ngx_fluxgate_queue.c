
/*
 * Flux-Gate: the waiting room's side in nginx.  The line itself lives in
 * Redis (lua/order.lua books a place, lua/queue_status.lua reads one);
 * this file owns what nginx adds to it:
 *
 *   fluxgate_queue_secret   the key of the tickets, read at nginx -t
 *   tickets                 signed here, checked here before any I/O: a
 *                           forged, damaged or other product's ticket
 *                           never reaches Redis
 *   the 302 of a queued order, and the 400 of a refused ticket
 *   fluxgate_queue_status   GET ?productId=&ticket=: one EVALSHA
 *
 * A ticket is text that is safe in a URL and a header:
 *
 *   base64url(productId|seq|admit|until|expires|interval) "."
 *   base64url(HMAC-SHA256(secret, the first part as sent))
 *
 * (times in microseconds of Redis TIME, see ngx_fluxgate_ticket_t).  It
 * carries the admission time order.lua booked for it, so where a ticket
 * stands needs no per-ticket state in Redis until it is spent.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_parse.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


#define NGX_FLUXGATE_SECRET_MIN       32
#define NGX_FLUXGATE_SECRET_MAX       4096

/* productId and five 64-bit integers, "|" between them */
#define NGX_FLUXGATE_TICKET_PAYLOAD                                          \
    (NGX_FLUXGATE_ID_MAX + 5 * (NGX_INT64_LEN + 1))
#define NGX_FLUXGATE_TICKET_MAC       32
#define NGX_FLUXGATE_TICKET_MAC_TEXT  43          /* base64url, no padding */
#define NGX_FLUXGATE_TICKET_MAX                                              \
    (ngx_base64_encoded_length(NGX_FLUXGATE_TICKET_PAYLOAD) + 1              \
     + NGX_FLUXGATE_TICKET_MAC_TEXT)

/* the longest Retry-After: a long wait is still polled this often */
#define NGX_FLUXGATE_QUEUE_POLL_MAX   5

/* fg:{<productId>}:q:used:<seq> and shorter */
#define NGX_FLUXGATE_QUEUE_KEY_LEN                                           \
    (sizeof("fg:{}:q:used:") - 1 + NGX_FLUXGATE_ID_MAX + NGX_INT64_LEN)

/* queue_status.lua's replies */
#define NGX_FLUXGATE_QUEUE_PLACE      1
#define NGX_FLUXGATE_QUEUE_REFUSED    10


typedef struct {
    ngx_fluxgate_op_t            op;          /* first: see ngx_fluxgate.h */
    ngx_fluxgate_redis_t        *redis;
    ngx_str_t                    stock_key;
    ngx_str_t                    used_key;
    u_char                       keys[2 * NGX_FLUXGATE_QUEUE_KEY_LEN];
} ngx_fluxgate_queue_poll_t;


static ngx_int_t ngx_fluxgate_queue_sign(ngx_pool_t *pool, ngx_str_t *secret,
    u_char *product, size_t len, ngx_fluxgate_ticket_t *ticket,
    ngx_str_t *text);
static const char *ngx_fluxgate_queue_verify(ngx_str_t *secret,
    ngx_str_t *text, u_char *product, size_t len,
    ngx_fluxgate_ticket_t *ticket);
static ngx_int_t ngx_fluxgate_queue_mac(ngx_str_t *secret, ngx_str_t *text,
    u_char *mac);
static ngx_int_t ngx_fluxgate_queue_arg(ngx_http_request_t *r,
    const char *name, size_t max, ngx_str_t *value);
static ngx_uint_t ngx_fluxgate_queue_retry_after(int64_t wait_ms);
static ngx_int_t ngx_fluxgate_queue_poll(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *product,
    ngx_fluxgate_ticket_t *ticket);
static void ngx_fluxgate_queue_polled(redisReply *reply, void *data);
static ngx_int_t ngx_fluxgate_queue_send_place(ngx_http_request_t *r,
    redisReply *reply);
static void ngx_fluxgate_queue_timeout(ngx_event_t *ev);
static void ngx_fluxgate_queue_free(ngx_fluxgate_queue_poll_t *poll);


static ngx_str_t  ngx_fluxgate_queue_header = ngx_string("X-Queue-Ticket");
static ngx_str_t  ngx_fluxgate_queue_json = ngx_string("application/json");


/* fluxgate_queue_secret <file>; */

char *
ngx_fluxgate_queue_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    u_char           *buf;
    size_t            len;
    ssize_t           n;
    ngx_str_t        *value, name;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    if (flcf->queue_secret.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;

    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": cannot read the secret file \"%V\"",
                           &cmd->name, &name);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    n = -1;

    if (ngx_fd_info(file.fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) <= NGX_FLUXGATE_SECRET_MAX)
    {
        len = (size_t) ngx_file_size(&fi);
        buf = ngx_pnalloc(cf->pool, len + 1);

        if (buf != NULL) {
            n = ngx_read_file(&file, buf, len, 0);
        }
    }

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &name);
    }

    if (buf == NULL || n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": cannot read the secret file \"%V\" "
                           "(at most %d bytes)",
                           &cmd->name, &name, NGX_FLUXGATE_SECRET_MAX);
        return NGX_CONF_ERROR;
    }

    /* "echo secret > file" and "printf secret > file" mean the same */

    len = (size_t) n;

    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        len--;
    }

    if (len < NGX_FLUXGATE_SECRET_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the secret file \"%V\" holds %uz bytes, "
                           "at least %d are needed (for example: "
                           "head -c 48 /dev/urandom | base64 > %V)",
                           &cmd->name, &name, len, NGX_FLUXGATE_SECRET_MIN,
                           &name);
        return NGX_CONF_ERROR;
    }

    flcf->queue_secret.data = buf;
    flcf->queue_secret.len = len;

    return NGX_CONF_OK;
}


/*
 * X-Queue-Ticket of an order: NGX_DECLINED when there is none (or the
 * queue is off here: the header means nothing then), NGX_OK with the
 * ticket filled in, NGX_ERROR with *error saying what is wrong with it
 */

ngx_int_t
ngx_fluxgate_queue_ticket(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, u_char *product, size_t len,
    ngx_fluxgate_ticket_t *ticket, const char **error)
{
    ngx_str_t  text;

    if (flcf->queue_secret.data == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_fluxgate_single_header(r, &ngx_fluxgate_queue_header, &text)
        != NGX_OK)
    {
        *error = "X-Queue-Ticket given more than once";
        return NGX_ERROR;
    }

    if (text.data == NULL) {
        return NGX_DECLINED;
    }

    *error = ngx_fluxgate_queue_verify(&flcf->queue_secret, &text, product,
                                       len, ticket);

    return *error ? NGX_ERROR : NGX_OK;
}


/* 302 to the waiting room with the order's ticket and its place */

ngx_int_t
ngx_fluxgate_queue_send_queued(ngx_http_request_t *r, u_char *product,
    size_t len, ngx_fluxgate_ticket_t *ticket, int64_t position,
    int64_t wait_ms)
{
    u_char                   *p;
    ngx_str_t                 text, location, body, retry;
    ngx_uint_t                retry_after;
    ngx_table_elt_t          *h;
    ngx_fluxgate_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    if (ngx_fluxgate_queue_sign(r->pool, &flcf->queue_secret, product, len,
                                ticket, &text)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    retry_after = ngx_fluxgate_queue_retry_after(wait_ms);

    /* productId and the ticket are URL-safe already; escaped all the same */

    location.data = ngx_pnalloc(r->pool, flcf->waiting_room.len
                                + sizeof("?productId=&ticket=")
                                + 3 * (len + text.len));
    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"queued\","
                                            "\"ticket\":\"\",\"position\":,"
                                            "\"retryAfter\":}")
                                     + text.len + 2 * NGX_INT64_LEN);
    retry.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (location.data == NULL || body.data == NULL || retry.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(location.data, flcf->waiting_room.data,
                   flcf->waiting_room.len);
    *p++ = ngx_strlchr(flcf->waiting_room.data,
                       flcf->waiting_room.data + flcf->waiting_room.len, '?')
           ? '&' : '?';
    p = ngx_cpymem(p, "productId=", sizeof("productId=") - 1);
    p = (u_char *) ngx_escape_uri(p, product, len, NGX_ESCAPE_ARGS);
    p = ngx_cpymem(p, "&ticket=", sizeof("&ticket=") - 1);
    p = (u_char *) ngx_escape_uri(p, text.data, text.len, NGX_ESCAPE_ARGS);
    location.len = p - location.data;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Location");
    h->value = location;
    r->headers_out.location = h;

    retry.len = ngx_sprintf(retry.data, "%ui", retry_after) - retry.data;

    if (ngx_fluxgate_add_header(r, "Retry-After", &retry) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data,
                           "{\"status\":\"queued\",\"ticket\":\"%V\","
                           "\"position\":%L,\"retryAfter\":%ui}",
                           &text, position, retry_after)
               - body.data;

    return ngx_fluxgate_send(r, NGX_HTTP_MOVED_TEMPORARILY,
                             NGX_FLUXGATE_REDIRECTED, &body);
}


/* 400 for a ticket that cannot be used; reason and field are ours */

ngx_int_t
ngx_fluxgate_queue_send_refused(ngx_http_request_t *r, const char *reason,
    const char *field)
{
    ngx_str_t  body;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"bad_request\","
                                            "\"error\":\"\",\"field\":\"\"}")
                                     + ngx_strlen(reason)
                                     + ngx_strlen(field));
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data,
                           "{\"status\":\"bad_request\",\"error\":\"%s\","
                           "\"field\":\"%s\"}", reason, field)
               - body.data;

    return ngx_fluxgate_send(r, NGX_HTTP_BAD_REQUEST, NGX_FLUXGATE_INVALID,
                             &body);
}


static ngx_int_t
ngx_fluxgate_queue_sign(ngx_pool_t *pool, ngx_str_t *secret, u_char *product,
    size_t len, ngx_fluxgate_ticket_t *ticket, ngx_str_t *text)
{
    u_char     payload[NGX_FLUXGATE_TICKET_PAYLOAD];
    u_char     mac[NGX_FLUXGATE_TICKET_MAC];
    ngx_str_t  src, enc, sig;

    src.data = payload;
    src.len = ngx_snprintf(payload, sizeof(payload), "%*s|%L|%L|%L|%L|%L",
                           len, product, ticket->seq, ticket->admit,
                           ticket->until, ticket->expires, ticket->interval)
              - payload;

    text->data = ngx_pnalloc(pool, NGX_FLUXGATE_TICKET_MAX);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    enc.data = text->data;
    ngx_encode_base64url(&enc, &src);

    if (ngx_fluxgate_queue_mac(secret, &enc, mac) != NGX_OK) {
        return NGX_ERROR;
    }

    enc.data[enc.len] = '.';

    sig.data = enc.data + enc.len + 1;
    src.data = mac;
    src.len = sizeof(mac);
    ngx_encode_base64url(&sig, &src);

    text->len = enc.len + 1 + sig.len;

    return NGX_OK;
}


/* NULL: the ticket is ours, for this product, and filled in */

static const char *
ngx_fluxgate_queue_verify(ngx_str_t *secret, ngx_str_t *text,
    u_char *product, size_t len, ngx_fluxgate_ticket_t *ticket)
{
    u_char      *p, *last, *dot, *bar;
    u_char       payload[ngx_base64_decoded_length(
                             ngx_base64_encoded_length(
                                 NGX_FLUXGATE_TICKET_PAYLOAD))];
    u_char       sent[ngx_base64_decoded_length(
                          NGX_FLUXGATE_TICKET_MAC_TEXT) + 1];
    u_char       mac[NGX_FLUXGATE_TICKET_MAC];
    int64_t     *fields[5];
    ngx_str_t    enc, sig, dec;
    ngx_uint_t   i;

    if (text->len > NGX_FLUXGATE_TICKET_MAX) {
        return "is not a ticket of this gate";
    }

    dot = ngx_strlchr(text->data, text->data + text->len, '.');

    if (dot == NULL
        || dot == text->data
        || (size_t) (text->data + text->len - dot - 1)
           != NGX_FLUXGATE_TICKET_MAC_TEXT)
    {
        return "is not a ticket of this gate";
    }

    enc.data = text->data;
    enc.len = dot - text->data;
    sig.data = dot + 1;
    sig.len = NGX_FLUXGATE_TICKET_MAC_TEXT;

    dec.data = sent;

    if (ngx_decode_base64url(&dec, &sig) != NGX_OK
        || dec.len != NGX_FLUXGATE_TICKET_MAC)
    {
        return "is not a ticket of this gate";
    }

    if (ngx_fluxgate_queue_mac(secret, &enc, mac) != NGX_OK
        || CRYPTO_memcmp(mac, sent, NGX_FLUXGATE_TICKET_MAC) != 0)
    {
        return "has a signature this gate did not make";
    }

    /* signed by us: the rest can only be well formed */

    dec.data = payload;

    if (enc.len > ngx_base64_encoded_length(NGX_FLUXGATE_TICKET_PAYLOAD)
        || ngx_decode_base64url(&dec, &enc) != NGX_OK)
    {
        return "is not a ticket of this gate";
    }

    p = dec.data;
    last = dec.data + dec.len;

    bar = ngx_strlchr(p, last, '|');

    if (bar == NULL) {
        return "is not a ticket of this gate";
    }

    if ((size_t) (bar - p) != len || ngx_memcmp(p, product, len) != 0) {
        return "is for another product";
    }

    fields[0] = &ticket->seq;
    fields[1] = &ticket->admit;
    fields[2] = &ticket->until;
    fields[3] = &ticket->expires;
    fields[4] = &ticket->interval;

    for (i = 0; i < 5; i++) {
        p = bar + 1;

        bar = ngx_strlchr(p, last, '|');
        if (bar == NULL) {
            bar = last;
        }

        *fields[i] = ngx_atoof(p, bar - p);

        if (*fields[i] == NGX_ERROR || (i < 4) == (bar == last)) {
            return "is not a ticket of this gate";
        }
    }

    if (ticket->interval == 0) {
        return "is not a ticket of this gate";
    }

    return NULL;
}


static ngx_int_t
ngx_fluxgate_queue_mac(ngx_str_t *secret, ngx_str_t *text, u_char *mac)
{
    unsigned int  len;

    len = NGX_FLUXGATE_TICKET_MAC;

    if (HMAC(EVP_sha256(), secret->data, (int) secret->len, text->data,
             text->len, mac, &len)
        == NULL
        || len != NGX_FLUXGATE_TICKET_MAC)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* whole seconds until the next look, at least one, at most the poll */

static ngx_uint_t
ngx_fluxgate_queue_retry_after(int64_t wait_ms)
{
    int64_t  s;

    s = (wait_ms + 999) / 1000;

    return (ngx_uint_t) ngx_max(1, ngx_min(s, NGX_FLUXGATE_QUEUE_POLL_MAX));
}


/* fluxgate_queue_status; GET ?productId=<p>&ticket=<T> */

ngx_int_t
ngx_fluxgate_queue_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_str_t                 product, text, allow;
    const char               *error;
    ngx_fluxgate_ticket_t     ticket;
    ngx_fluxgate_loc_conf_t  *flcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        ngx_str_set(&allow, "GET, HEAD");

        if (ngx_fluxgate_add_header(r, "Allow", &allow) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_fluxgate_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                       NGX_FLUXGATE_INVALID,
                                       "method not allowed, use GET",
                                       "method");
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    if (ngx_fluxgate_queue_arg(r, "productId", NGX_FLUXGATE_ID_MAX, &product)
        != NGX_OK
        || !fg_id_valid((char *) product.data, product.len))
    {
        return ngx_fluxgate_queue_send_refused(r, "productId must be 1-64 "
                                               "of " FG_ID_CHARSET,
                                               "productId");
    }

    if (ngx_fluxgate_queue_arg(r, "ticket", NGX_FLUXGATE_TICKET_MAX, &text)
        != NGX_OK)
    {
        return ngx_fluxgate_queue_send_refused(r, "ticket is missing",
                                               "ticket");
    }

    error = ngx_fluxgate_queue_verify(&flcf->queue_secret, &text,
                                      product.data, product.len, &ticket);
    if (error) {
        return ngx_fluxgate_queue_send_refused(r, error, "ticket");
    }

    if (!ngx_fluxgate_redis_ready(flcf->redis)) {
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    return ngx_fluxgate_queue_poll(r, flcf, &product, &ticket);
}


/* ?name=, unescaped, 1..max bytes */

static ngx_int_t
ngx_fluxgate_queue_arg(ngx_http_request_t *r, const char *name, size_t max,
    ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0
        || raw.len > 3 * max)
    {
        return NGX_DECLINED;
    }

    value->data = ngx_pnalloc(r->pool, raw.len);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    dst = value->data;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, NGX_UNESCAPE_URI);

    value->len = dst - value->data;

    return (value->len && value->len <= max) ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_fluxgate_queue_poll(ngx_http_request_t *r, ngx_fluxgate_loc_conf_t *flcf,
    ngx_str_t *product, ngx_fluxgate_ticket_t *ticket)
{
    u_char                      nums[4][NGX_INT64_LEN];
    u_char                     *p;
    ngx_str_t                   args[6];
    ngx_fluxgate_queue_poll_t  *poll;

    poll = ngx_calloc(sizeof(ngx_fluxgate_queue_poll_t), r->connection->log);
    if (poll == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_fluxgate_op_start(&poll->op, r, NULL, ngx_fluxgate_queue_timeout,
                              poll)
        != NGX_OK)
    {
        ngx_free(poll);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    poll->redis = flcf->redis;

    p = poll->keys;

    poll->stock_key.data = p;
    p = ngx_sprintf(p, "fg:{%V}:stock", product);
    poll->stock_key.len = p - poll->stock_key.data;

    poll->used_key.data = p;
    p = ngx_sprintf(p, "fg:{%V}:q:used:%L", product, ticket->seq);
    poll->used_key.len = p - poll->used_key.data;

    args[0] = poll->stock_key;
    args[1] = poll->used_key;

    args[2].data = nums[0];
    args[2].len = ngx_sprintf(nums[0], "%L", ticket->admit) - nums[0];
    args[3].data = nums[1];
    args[3].len = ngx_sprintf(nums[1], "%L", ticket->until) - nums[1];
    args[4].data = nums[2];
    args[4].len = ngx_sprintf(nums[2], "%L", ticket->expires) - nums[2];
    args[5].data = nums[3];
    args[5].len = ngx_sprintf(nums[3], "%L", ticket->interval) - nums[3];

    if (ngx_fluxgate_redis_eval(poll->redis,
                                &ngx_fluxgate_script_queue_status, 2, 6,
                                args, ngx_fluxgate_queue_polled, poll)
        != NGX_OK)
    {
        ngx_fluxgate_queue_free(poll);
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    ngx_add_timer(&poll->op.timer, flcf->redis_timeout);

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_fluxgate_queue_polled(redisReply *reply, void *data)
{
    ngx_fluxgate_queue_poll_t  *poll = data;

    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ngx_fluxgate_op_answer(&poll->op);

    if (r != NULL) {
        rc = ngx_fluxgate_queue_send_place(r, reply);
        ngx_fluxgate_finalize(r, rc);
    }

    ngx_fluxgate_queue_free(poll);
}


/* {1, position, admitted, eta_ms, sold out} or {10, reason} */

static ngx_int_t
ngx_fluxgate_queue_send_place(ngx_http_request_t *r, redisReply *reply)
{
    size_t       i;
    ngx_str_t    body, retry;
    redisReply **e;

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fluxgate: queue_status.lua: %s",
                      reply ? "unexpected reply" : "connection lost");

        return ngx_fluxgate_send_unavailable(r, "redis failed");
    }

    e = reply->element;

    if (e[0]->integer == NGX_FLUXGATE_QUEUE_REFUSED
        && e[1]->type == REDIS_REPLY_STRING)
    {
        if (e[1]->len == sizeof("spent") - 1
            && ngx_strncmp(e[1]->str, "spent", e[1]->len) == 0)
        {
            return ngx_fluxgate_queue_send_refused(r, "ticket was used "
                                                   "for an order",
                                                   "ticket");
        }

        if (e[1]->len == sizeof("window") - 1
            && ngx_strncmp(e[1]->str, "window", e[1]->len) == 0)
        {
            return ngx_fluxgate_queue_send_refused(r, "ticket's admission "
                                                   "window has passed",
                                                   "ticket");
        }

        return ngx_fluxgate_queue_send_refused(r, "ticket has expired",
                                               "ticket");
    }

    if (e[0]->integer != NGX_FLUXGATE_QUEUE_PLACE || reply->elements != 5) {
        return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
    }

    for (i = 1; i < 5; i++) {
        if (e[i]->type != REDIS_REPLY_INTEGER) {
            return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
        }
    }

    body.data = ngx_pnalloc(r->pool, sizeof("{\"position\":,\"admitted\":false,"
                                            "\"etaSeconds\":,"
                                            "\"soldOut\":false}")
                                     + 2 * NGX_INT64_LEN);
    retry.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (body.data == NULL || retry.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data,
                           "{\"position\":%L,\"admitted\":%s,"
                           "\"etaSeconds\":%L,\"soldOut\":%s}",
                           e[1]->integer, e[2]->integer ? "true" : "false",
                           (e[3]->integer + 999) / 1000,
                           e[4]->integer ? "true" : "false")
               - body.data;

    /* when to look again: nothing to wait for once admitted or sold out */

    if (!e[2]->integer && !e[4]->integer) {
        retry.len = ngx_sprintf(retry.data, "%ui",
                                ngx_fluxgate_queue_retry_after(e[3]->integer))
                    - retry.data;

        if (ngx_fluxgate_add_header(r, "Retry-After", &retry) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_fluxgate_send_body(r, NGX_HTTP_OK, &ngx_fluxgate_queue_json,
                                  &body);
}


static void
ngx_fluxgate_queue_timeout(ngx_event_t *ev)
{
    ngx_fluxgate_queue_poll_t  *poll = ev->data;

    /* the reply still comes (or the connection's end): it frees the poll */

    ngx_fluxgate_redis_timed_out(ngx_fluxgate_redis_node(poll->redis,
                                                         &poll->stock_key));
    ngx_fluxgate_op_fail(&poll->op, "redis timed out");
}


static void
ngx_fluxgate_queue_free(ngx_fluxgate_queue_poll_t *poll)
{
    ngx_fluxgate_op_end(&poll->op);
    ngx_free(poll);
}
