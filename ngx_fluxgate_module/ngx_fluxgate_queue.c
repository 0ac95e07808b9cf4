
/*
 * Flux-Gate: the waiting room's side in nginx.  The line itself lives in
 * Redis (lua/order.lua books places and admits turns); this file owns the
 * answers the gate gives about it:
 *
 *   fluxgate_queue_secret   the key of tickets and challenges (nginx -t)
 *   the 302 of a place      its ticket in the body, in the waiting room's
 *                           address after "#" (a fragment: never sent to
 *                           a server, so in no access log or Referer) and
 *                           in a cookie for pages that let fetch() follow
 *                           the 302 (they cannot read where it went)
 *   the 302 of a challenge  fluxgate_queue_pow: the same three ways
 *   the 400 of a ticket     forged, another buyer's, expired, ...
 *   fluxgate_queue_status   GET: where a ticket stands, answered from the
 *                           gate's shared memory (ngx_fluxgate_line.c):
 *                           no Redis command per poll
 *   fluxgate_queue_stats    GET: the line's figures, from Redis
 *   fluxgate_queue_control  POST: pause, resume, close, rate; logged with
 *                           who asked, counted, idempotent with its key
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_parse.h"

#include <openssl/rand.h>


#define NGX_FLUXGATE_SECRET_MIN       32
#define NGX_FLUXGATE_SECRET_MAX       4096

/* the longest Retry-After: a long wait is still polled this often */
#define NGX_FLUXGATE_QUEUE_POLL_MAX   5

/* how long a challenge may take to solve */
#define NGX_FLUXGATE_CHALLENGE_TTL    120

/* a poll that finds no record yet looks again this often */
#define NGX_FLUXGATE_QUEUE_RECHECK    10

/* the longest ticket or challenge text (ngx_fluxgate_ticket.c's) */
#define NGX_FLUXGATE_QUEUE_TEXT_MAX   512

/* fg:{<productId>}:q:ctl:<key> and shorter */
#define NGX_FLUXGATE_QUEUE_KEY_LEN                                           \
    (sizeof("fg:{}:q:ctl:") - 1 + NGX_FLUXGATE_ID_MAX + NGX_FLUXGATE_KEY_MAX)


/* a poll that waits for the product's first record */
typedef struct {
    ngx_http_request_t          *request;
    ngx_event_t                  timer;
    ngx_msec_t                   deadline;
    ngx_str_t                    product;
    ngx_fluxgate_ticket_t        ticket;
    const char                  *field;
} ngx_fluxgate_queue_wait_t;


/* GET /queue/stats or POST /queue/control: one script each */
typedef struct {
    ngx_fluxgate_op_t            op;          /* first: see ngx_fluxgate.h */
    ngx_fluxgate_redis_t        *node;
    ngx_fluxgate_control_req_t   req;         /* control only */
    ngx_str_t                    key;         /* the request's, for the log */
    u_char                       product[NGX_FLUXGATE_ID_MAX];
    size_t                       product_len;
} ngx_fluxgate_queue_admin_t;


static ngx_uint_t ngx_fluxgate_queue_retry_after(int64_t wait_ms);
static ngx_int_t ngx_fluxgate_queue_cookie(ngx_http_request_t *r,
    const char *name, ngx_str_t *product, ngx_str_t *value, time_t max_age);
static ngx_int_t ngx_fluxgate_queue_arg(ngx_http_request_t *r,
    const char *name, size_t max, ngx_str_t *value);
static ngx_int_t ngx_fluxgate_queue_answer(ngx_http_request_t *r,
    ngx_str_t *product, ngx_fluxgate_ticket_t *ticket, const char *field,
    ngx_fluxgate_line_t *line);
static void ngx_fluxgate_queue_recheck(ngx_event_t *ev);
static void ngx_fluxgate_queue_wait_cleanup(void *data);
static ngx_int_t ngx_fluxgate_queue_get_product(ngx_http_request_t *r,
    ngx_str_t *product);
static ngx_fluxgate_queue_admin_t *ngx_fluxgate_queue_admin_start(
    ngx_http_request_t *r, ngx_event_handler_pt timeout);
static void ngx_fluxgate_queue_stats_reply(redisReply *reply, void *data);
static void ngx_fluxgate_queue_control_body(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_queue_control_start(ngx_http_request_t *r);
static void ngx_fluxgate_queue_control_reply(redisReply *reply, void *data);
static ngx_int_t ngx_fluxgate_queue_control_done(ngx_http_request_t *r,
    ngx_fluxgate_queue_admin_t *qa, redisReply *reply);
static void ngx_fluxgate_queue_admin_timeout(ngx_event_t *ev);
static void ngx_fluxgate_queue_admin_free(ngx_fluxgate_queue_admin_t *qa);


static ngx_str_t  ngx_fluxgate_queue_header = ngx_string("X-Queue-Ticket");
static ngx_str_t  ngx_fluxgate_queue_json = ngx_string("application/json");

static const char  *ngx_fluxgate_queue_states[] = {
    "open", "scheduled", "paused", "closed"
};


/* fluxgate_queue_secret <file>; */

char *
ngx_fluxgate_queue_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_str_t  *value;

    if (flcf->queue_secret.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_fluxgate_secret_file(cf, &cmd->name, &value[1],
                                    &flcf->queue_secret);
}


/*
 * A secret kept in a file (the queue's, fluxgate_user_token's), read at
 * nginx -t: at least NGX_FLUXGATE_SECRET_MIN bytes, a trailing newline
 * dropped ("echo secret > file" and "printf secret > file" mean the same)
 */

char *
ngx_fluxgate_secret_file(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *path, ngx_str_t *secret)
{
    u_char           *buf;
    size_t            len;
    ssize_t           n;
    ngx_str_t         name;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    name = *path;

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
                           directive, &name);
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
                           directive, &name, NGX_FLUXGATE_SECRET_MAX);
        return NGX_CONF_ERROR;
    }

    len = (size_t) n;

    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        len--;
    }

    if (len < NGX_FLUXGATE_SECRET_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": the secret file \"%V\" holds %uz bytes, "
                           "at least %d are needed (for example: "
                           "head -c 48 /dev/urandom | base64 > %V)",
                           directive, &name, len, NGX_FLUXGATE_SECRET_MIN,
                           &name);
        return NGX_CONF_ERROR;
    }

    secret->data = buf;
    secret->len = len;

    return NGX_CONF_OK;
}


/*
 * X-Queue-Ticket of an order: NGX_DECLINED when there is none (or the
 * queue is off here: the header means nothing then), NGX_OK with the
 * ticket filled in, NGX_ERROR with *error saying what is wrong with it
 */

ngx_int_t
ngx_fluxgate_queue_ticket(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *product, ngx_str_t *buyer,
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

    *error = ngx_fluxgate_ticket_verify(&flcf->queue_secret, &text, product,
                                        buyer, ticket);

    if (*error == NULL) {
        return NGX_OK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fluxgate: X-Queue-Ticket for \"%V\" refused: %s",
                   product, *error);

    return NGX_ERROR;
}


/*
 * 302 to the waiting room with the buyer's place: one booked now, or the
 * one held already (the same ticket, signed again: the same text).  A
 * pre-queue place (kind 'p' before the opening) says when it opens.
 */

ngx_int_t
ngx_fluxgate_queue_send_place(ngx_http_request_t *r, ngx_str_t *product,
    ngx_str_t *buyer, ngx_fluxgate_ticket_t *ticket, int64_t position,
    int64_t wait_ms, int64_t opens_at)
{
    u_char                   *p;
    ngx_str_t                 text, where, extra, body;
    ngx_uint_t                retry_after;
    ngx_fluxgate_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    if (ngx_fluxgate_ticket_sign(r->pool, &flcf->queue_secret, product,
                                 buyer, ticket, &text)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    retry_after = ngx_fluxgate_queue_retry_after(wait_ms);

    extra.data = ngx_pnalloc(r->pool, sizeof("#ticket=") + text.len);
    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"prequeue\","
                                            "\"ticket\":\"\",\"position\":,"
                                            "\"opensAt\":,\"retryAfter\":}")
                                     + text.len + 3 * NGX_INT64_LEN);
    if (extra.data == NULL || body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    extra.len = ngx_sprintf(extra.data, "#ticket=%V", &text) - extra.data;

    if (ticket->kind == 'p' && position < 0) {
        p = ngx_sprintf(body.data, "{\"status\":\"prequeue\",\"ticket\":"
                        "\"%V\",\"opensAt\":%L,\"retryAfter\":%ui}",
                        &text, opens_at, retry_after);

    } else {
        p = ngx_sprintf(body.data, "{\"status\":\"queued\",\"ticket\":"
                        "\"%V\",\"position\":%L,\"retryAfter\":%ui}",
                        &text, position, retry_after);
    }

    body.len = p - body.data;

    if (ngx_fluxgate_waiting_room(r, product, &extra, &where) != NGX_OK
        || ngx_fluxgate_queue_cookie(r, "fluxgate_ticket_", product, &text,
                                     ticket->expires - ngx_time())
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fluxgate: \"%V\": buyer \"%V\" has place %L (%c)",
                   product, buyer, ticket->seq, ticket->kind);

    return ngx_fluxgate_send_redirect(r, &where, retry_after,
                                      NGX_FLUXGATE_REDIRECTED, &body);
}


/* 302 to the waiting room with a proof of work to do first */

ngx_int_t
ngx_fluxgate_queue_send_challenge(ngx_http_request_t *r, ngx_str_t *product,
    ngx_str_t *buyer)
{
    ngx_str_t                 text, where, extra, body, cookie;
    ngx_fluxgate_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    if (ngx_fluxgate_challenge_make(r->pool, &flcf->queue_secret, product,
                                    buyer,
                                    ngx_time() + NGX_FLUXGATE_CHALLENGE_TTL,
                                    &text)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    extra.data = ngx_pnalloc(r->pool, sizeof("#challenge=&bits=")
                                      + text.len + NGX_INT_T_LEN);
    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"challenge\","
                                            "\"challenge\":\"\",\"bits\":}")
                                     + text.len + NGX_INT_T_LEN);
    cookie.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1 + text.len);

    if (extra.data == NULL || body.data == NULL || cookie.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    extra.len = ngx_sprintf(extra.data, "#challenge=%V&bits=%ui", &text,
                            flcf->queue_pow)
                - extra.data;
    body.len = ngx_sprintf(body.data, "{\"status\":\"challenge\","
                           "\"challenge\":\"%V\",\"bits\":%ui}", &text,
                           flcf->queue_pow)
               - body.data;
    cookie.len = ngx_sprintf(cookie.data, "%ui:%V", flcf->queue_pow, &text)
                 - cookie.data;

    if (ngx_fluxgate_waiting_room(r, product, &extra, &where) != NGX_OK
        || ngx_fluxgate_queue_cookie(r, "fluxgate_challenge_", product,
                                     &cookie, NGX_FLUXGATE_CHALLENGE_TTL)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_fluxgate_metrics_count(NGX_FLUXGATE_METRIC_CHALLENGE_ISSUED);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fluxgate: \"%V\": buyer \"%V\" challenged", product,
                   buyer);

    return ngx_fluxgate_send_redirect(r, &where, 0, NGX_FLUXGATE_CHALLENGED,
                                      &body);
}


/* 400 for a ticket that cannot be used; reason and field are ours */

ngx_int_t
ngx_fluxgate_queue_send_refused(ngx_http_request_t *r, const char *reason,
    const char *field)
{
    ngx_str_t  body;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"bad_request\","
                                            "\"error\":\" \",\"field\":\"\"}")
                                     + 2 * ngx_strlen(field)
                                     + ngx_strlen(reason));
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data,
                           "{\"status\":\"bad_request\",\"error\":\"%s %s\","
                           "\"field\":\"%s\"}", field, reason, field)
               - body.data;

    return ngx_fluxgate_send(r, NGX_HTTP_BAD_REQUEST, NGX_FLUXGATE_INVALID,
                             &body);
}


/* whole seconds until the next look, at least one, at most the poll */

static ngx_uint_t
ngx_fluxgate_queue_retry_after(int64_t wait_ms)
{
    int64_t  s;

    s = (wait_ms + 999) / 1000;

    return (ngx_uint_t) ngx_max(1, ngx_min(s, NGX_FLUXGATE_QUEUE_POLL_MAX));
}


/*
 * For pages that let fetch() follow the 302 (a browser then hides where
 * it went): the same text in a cookie of the product, for the shop's
 * pages only (SameSite=Strict), gone when it would be useless
 */

static ngx_int_t
ngx_fluxgate_queue_cookie(ngx_http_request_t *r, const char *name,
    ngx_str_t *product, ngx_str_t *value, time_t max_age)
{
    ngx_str_t  cookie;

    cookie.data = ngx_pnalloc(r->pool, ngx_strlen(name) + product->len
                                       + value->len + NGX_TIME_T_LEN
                                       + sizeof("=; Path=/; Max-Age=; "
                                                "SameSite=Strict"));
    if (cookie.data == NULL) {
        return NGX_ERROR;
    }

    cookie.len = ngx_sprintf(cookie.data, "%s%V=%V; Path=/; Max-Age=%T; "
                             "SameSite=Strict", name, product, value,
                             ngx_max(max_age, 1))
                 - cookie.data;

    return ngx_fluxgate_add_header(r, "Set-Cookie", &cookie);
}


/*
 * fluxgate_queue_status; GET ?productId=<p> with X-Queue-Ticket (or, from
 * an older page, &ticket=): answered from the gate's record of the line;
 * a product it has no record of yet waits for the first (a few ms)
 */

ngx_int_t
ngx_fluxgate_queue_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_str_t                   product, text, allow;
    const char                 *error, *field;
    ngx_pool_cleanup_t         *cln;
    ngx_fluxgate_line_t         line;
    ngx_fluxgate_ticket_t       ticket;
    ngx_fluxgate_loc_conf_t    *flcf;
    ngx_fluxgate_queue_wait_t  *qw;

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

    rc = ngx_fluxgate_queue_get_product(r, &product);
    if (rc != NGX_OK) {
        return rc;
    }

    field = "X-Queue-Ticket";

    if (ngx_fluxgate_single_header(r, &ngx_fluxgate_queue_header, &text)
        != NGX_OK)
    {
        return ngx_fluxgate_queue_send_refused(r, "given more than once",
                                               field);
    }

    if (text.data == NULL) {
        field = "ticket";

        if (ngx_fluxgate_queue_arg(r, "ticket", NGX_FLUXGATE_QUEUE_TEXT_MAX,
                                   &text)
            != NGX_OK)
        {
            return ngx_fluxgate_queue_send_refused(r, "is missing",
                                                   "X-Queue-Ticket");
        }
    }

    /* a poll grants nothing: any holder may ask where a ticket stands */

    error = ngx_fluxgate_ticket_verify(&flcf->queue_secret, &text, &product,
                                       NULL, &ticket);
    if (error) {
        return ngx_fluxgate_queue_send_refused(r, error, field);
    }

    rc = ngx_fluxgate_line_get(flcf, &product, &line);

    if (rc == NGX_OK) {
        return ngx_fluxgate_queue_answer(r, &product, &ticket, field, &line);
    }

    if (rc == NGX_ERROR) {
        return ngx_fluxgate_send_unavailable(r, "redis unavailable");
    }

    /* NGX_AGAIN: the first record of this product is on its way */

    qw = ngx_pcalloc(r->pool, sizeof(ngx_fluxgate_queue_wait_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (qw == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    qw->request = r;
    qw->product = product;
    qw->ticket = ticket;
    qw->field = field;
    qw->deadline = ngx_current_msec + flcf->redis_timeout;

    qw->timer.handler = ngx_fluxgate_queue_recheck;
    qw->timer.data = qw;
    qw->timer.log = r->connection->log;

    cln->handler = ngx_fluxgate_queue_wait_cleanup;
    cln->data = qw;

    ngx_add_timer(&qw->timer, NGX_FLUXGATE_QUEUE_RECHECK);

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_fluxgate_queue_recheck(ngx_event_t *ev)
{
    ngx_fluxgate_queue_wait_t  *qw = ev->data;

    ngx_int_t                 rc;
    ngx_http_request_t       *r;
    ngx_fluxgate_line_t       line;
    ngx_fluxgate_loc_conf_t  *flcf;

    r = qw->request;
    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    rc = ngx_fluxgate_line_get(flcf, &qw->product, &line);

    if (rc == NGX_AGAIN
        && (ngx_msec_int_t) (qw->deadline - ngx_current_msec) > 0)
    {
        ngx_add_timer(&qw->timer, NGX_FLUXGATE_QUEUE_RECHECK);
        return;
    }

    if (rc == NGX_OK) {
        rc = ngx_fluxgate_queue_answer(r, &qw->product, &qw->ticket,
                                       qw->field, &line);

    } else {
        rc = ngx_fluxgate_send_unavailable(r, rc == NGX_AGAIN
                                              ? "redis timed out"
                                              : "redis unavailable");
    }

    ngx_fluxgate_finalize(r, rc);
}


static void
ngx_fluxgate_queue_wait_cleanup(void *data)
{
    ngx_fluxgate_queue_wait_t  *qw = data;

    if (qw->timer.timer_set) {
        ngx_del_timer(&qw->timer);
    }
}


/* where the ticket stands, as JSON */

static ngx_int_t
ngx_fluxgate_queue_answer(ngx_http_request_t *r, ngx_str_t *product,
    ngx_fluxgate_ticket_t *ticket, const char *field,
    ngx_fluxgate_line_t *line)
{
    u_char                   *p;
    ngx_str_t                 body, retry;
    const char               *error;
    ngx_uint_t                retry_after;
    ngx_fluxgate_standing_t   st;

    if (!line->known) {
        ngx_str_set(&body, "{\"status\":\"unknown_product\"}");
        return ngx_fluxgate_send_body(r, NGX_HTTP_NOT_FOUND,
                                      &ngx_fluxgate_queue_json, &body);
    }

    error = ngx_fluxgate_line_standing(line, ticket, &st);
    if (error) {
        return ngx_fluxgate_queue_send_refused(r, error, field);
    }

    body.data = ngx_pnalloc(r->pool, sizeof("{\"position\":,\"admitted\":"
                                            "false,\"opensAt\":,"
                                            "\"etaSeconds\":,\"soldOut\":"
                                            "false,\"paused\":true,"
                                            "\"closed\":true}")
                                     + 3 * NGX_INT64_LEN);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    retry_after = 0;

    if (st.scheduled) {
        p = ngx_sprintf(body.data, "{\"position\":null,\"admitted\":false,"
                        "\"opensAt\":%L,\"etaSeconds\":%L,"
                        "\"soldOut\":false}",
                        st.opens_at, (st.eta_ms + 999) / 1000);
        retry_after = ngx_fluxgate_queue_retry_after(st.eta_ms);

    } else {
        p = ngx_sprintf(body.data, "{\"position\":%L,\"admitted\":%s,"
                        "\"etaSeconds\":%L,\"soldOut\":%s",
                        st.position, st.admitted ? "true" : "false",
                        st.eta_ms < 0 ? (int64_t) -1
                                      : (st.eta_ms + 999) / 1000,
                        st.sold_out ? "true" : "false");

        if (st.state == NGX_FLUXGATE_LINE_PAUSED) {
            p = ngx_cpymem(p, ",\"paused\":true", 14);

        } else if (st.state == NGX_FLUXGATE_LINE_CLOSED) {
            p = ngx_cpymem(p, ",\"closed\":true", 14);
        }

        *p++ = '}';

        /* nothing to wait for once admitted, sold out or closed */
        if (!st.admitted && !st.sold_out
            && st.state != NGX_FLUXGATE_LINE_CLOSED)
        {
            retry_after = ngx_fluxgate_queue_retry_after(
                              st.eta_ms < 0 ? NGX_FLUXGATE_QUEUE_POLL_MAX
                                              * 1000
                                            : st.eta_ms);
        }
    }

    body.len = p - body.data;

    if (retry_after) {
        retry.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (retry.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        retry.len = ngx_sprintf(retry.data, "%ui", retry_after) - retry.data;

        if (ngx_fluxgate_add_header(r, "Retry-After", &retry) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_fluxgate_send_body(r, NGX_HTTP_OK, &ngx_fluxgate_queue_json,
                                  &body);
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




/* ?productId=, checked; anything else is the answer to send */

static ngx_int_t
ngx_fluxgate_queue_get_product(ngx_http_request_t *r, ngx_str_t *product)
{
    if (ngx_fluxgate_queue_arg(r, "productId", NGX_FLUXGATE_ID_MAX, product)
        != NGX_OK
        || !fg_id_valid((char *) product->data, product->len))
    {
        return ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       NGX_FLUXGATE_INVALID,
                                       "productId must be 1-64 of "
                                       FG_ID_CHARSET, "productId");
    }

    return NGX_OK;
}


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

    if (ngx_fluxgate_op_start(&qa->op, r, NULL, timeout, qa) != NGX_OK) {
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
    ngx_str_t                    product, args[8];
    ngx_fluxgate_loc_conf_t     *flcf;
    ngx_fluxgate_queue_admin_t  *qa;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_fluxgate_queue_get_product(r, &product);
    if (rc != NGX_OK) {
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

    qa = ngx_fluxgate_queue_admin_start(r, ngx_fluxgate_queue_admin_timeout);
    if (qa == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    qa->node = ngx_fluxgate_redis_node(flcf->redis, &args[0]);

    if (!ngx_fluxgate_redis_ready(qa->node)
        || ngx_fluxgate_redis_eval(flcf->redis,
                                   &ngx_fluxgate_script_queue_head, 4, 8,
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

    if (!ngx_fluxgate_redis_ready(qa->node)
        || ngx_fluxgate_redis_eval(flcf->redis,
                                   &ngx_fluxgate_script_queue_control, 3, 10,
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
    ngx_str_t     body, value, product;
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

    case 4:
        return ngx_fluxgate_send_error(r, NGX_FLUXGATE_HTTP_UNPROCESSABLE,
                                       NGX_FLUXGATE_INVALID,
                                       "X-Idempotency-Key was already used "
                                       "with another body",
                                       "X-Idempotency-Key");

    case 8:
        ngx_str_set(&body, "{\"status\":\"unknown_product\"}");
        return ngx_fluxgate_send(r, NGX_HTTP_NOT_FOUND,
                                 NGX_FLUXGATE_UNKNOWN_PRODUCT, &body);

    case 1:
    case 2:
        if (reply->elements != 3
            || e[1]->type != REDIS_REPLY_STRING
            || e[2]->type != REDIS_REPLY_INTEGER)
        {
            break;
        }

        if (e[0]->integer == 1) {
            ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                          "fluxgate: queue control: \"%V\" %s%s%L by %V%s%V "
                          "(key \"%V\"): the line is now %s at %L/s",
                          &product,
                          ngx_fluxgate_control_names[qa->req.action],
                          qa->req.action == NGX_FLUXGATE_CONTROL_RATE
                          ? " " : "",
                          qa->req.rate, &r->connection->addr_text,
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
                                 e[0]->integer == 1 ? NGX_FLUXGATE_ACCEPTED
                                                    : NGX_FLUXGATE_DUPLICATE,
                                 &body);
    }

    return ngx_fluxgate_send_unavailable(r, "unexpected redis reply");
}
