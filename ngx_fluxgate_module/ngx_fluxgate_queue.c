
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
 *
 * The operator's side (statistics, live controls) is
 * ngx_fluxgate_queue_admin.c.
 */


#include "ngx_fluxgate.h"



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


/* a poll that waits for the product's first record */
typedef struct {
    ngx_http_request_t          *request;
    ngx_event_t                  timer;
    ngx_msec_t                   deadline;
    ngx_str_t                    product;
    ngx_fluxgate_ticket_t        ticket;
    const char                  *field;
} ngx_fluxgate_queue_wait_t;




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


static ngx_str_t  ngx_fluxgate_queue_header = ngx_string("X-Queue-Ticket");
static ngx_str_t  ngx_fluxgate_queue_json = ngx_string("application/json");



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
        *error = "given more than once";
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

    ngx_fluxgate_line_touch(flcf, product);

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

    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"error\","
                                            "\"error\":\" \",\"field\":\"\"}")
                                     + 2 * ngx_strlen(field)
                                     + ngx_strlen(reason));
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data,
                           "{\"status\":\"error\",\"error\":\"%s %s\","
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

    if (ngx_fluxgate_queue_get_product(r, &product, &rc) != NGX_OK) {
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

    rc = ngx_fluxgate_line_get(flcf, &product, 1, &line);

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

    rc = ngx_fluxgate_line_get(flcf, &qw->product, 1, &line);

    if (rc == NGX_AGAIN
        && (ngx_msec_int_t) (qw->deadline - ngx_current_msec) > 0)
    {
        ngx_add_timer(&qw->timer, NGX_FLUXGATE_QUEUE_RECHECK);
        return;
    }

    if (rc == NGX_OK || (rc == NGX_AGAIN && line.fetched)) {
        /* fresh, or the stale one when no fresh one came in time */
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

    if (st.scheduled && st.state == NGX_FLUXGATE_LINE_CLOSED) {

        /* closed before it opened: it never opens, nothing to wait for */
        p = ngx_sprintf(body.data, "{\"position\":null,\"admitted\":false,"
                        "\"opensAt\":%L,\"etaSeconds\":-1,"
                        "\"soldOut\":false,\"closed\":true}",
                        st.opens_at);

    } else if (st.scheduled) {
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




/*
 * ?productId=, checked: NGX_OK, or NGX_DECLINED with the 400 naming it
 * sent (the caller returns rc then: the request has its answer)
 */

ngx_int_t
ngx_fluxgate_queue_get_product(ngx_http_request_t *r, ngx_str_t *product,
    ngx_int_t *rc)
{
    if (ngx_fluxgate_queue_arg(r, "productId", NGX_FLUXGATE_ID_MAX, product)
        != NGX_OK
        || !fg_id_valid((char *) product->data, product->len))
    {
        *rc = ngx_fluxgate_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      NGX_FLUXGATE_INVALID,
                                      "productId must be 1-64 of "
                                      FG_ID_CHARSET, "productId");
        return NGX_DECLINED;
    }

    return NGX_OK;
}
