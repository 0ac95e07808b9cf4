
/*
 * Flux-Gate: what both content handlers (order, admin) do the same way:
 * accept only a JSON POST, take its body, answer with a JSON body, and tie
 * state that may outlive a request to it.  A header and body filter turn
 * the error pages nginx itself makes in these locations (413 from
 * client_max_body_size, 400 for a broken chunked body, 403, 500) into JSON
 * as well.
 */


#include "ngx_fluxgate.h"


static ngx_int_t ngx_fluxgate_error_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_fluxgate_error_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_fluxgate_op_cleanup(void *data);
static u_char *ngx_fluxgate_op_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


static ngx_str_t  ngx_fluxgate_json_type = ngx_string("application/json");


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_fluxgate_ctx_t *
ngx_fluxgate_get_ctx(ngx_http_request_t *r)
{
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_fluxgate_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_fluxgate_module);
    }

    return ctx;
}


/*
 * The checks that need no body: method, media type, announced length.
 * Then the body is read into one memory buffer and post_handler runs.
 */

ngx_int_t
ngx_fluxgate_read_json_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler)
{
    u_char                    *p, *last;
    ngx_int_t                  rc;
    ngx_str_t                  allow;
    ngx_table_elt_t           *ct;

    if (!(r->method & NGX_HTTP_POST)) {
        ngx_str_set(&allow, "POST");

        if (ngx_http_discard_request_body(r) != NGX_OK
            || ngx_fluxgate_add_header(r, "Allow", &allow) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_fluxgate_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                       NGX_FLUXGATE_INVALID,
                                       "method not allowed, use POST",
                                       "method");
    }

    ct = r->headers_in.content_type;

    if (ct != NULL) {
        p = ct->value.data;
        last = p + ct->value.len;

        if (ct->value.len >= ngx_fluxgate_json_type.len
            && ngx_strncasecmp(p, ngx_fluxgate_json_type.data,
                               ngx_fluxgate_json_type.len) == 0)
        {
            p += ngx_fluxgate_json_type.len;

            while (p < last && (*p == ' ' || *p == '\t')) {
                p++;
            }

            if (p == last || *p == ';') {
                goto json;
            }
        }
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fluxgate_send_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                   NGX_FLUXGATE_INVALID,
                                   "Content-Type must be application/json",
                                   "Content-Type");

json:

    /* client_max_body_size is nginx's own: 413 before we get here */

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, post_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * The body as one string.  NGX_DECLINED: it went to a temporary file,
 * which only a body far larger than any order does.
 */

ngx_int_t
ngx_fluxgate_request_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    if (r->request_body->temp_file) {
        return NGX_DECLINED;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            return NGX_DECLINED;
        }

        len += b->last - b->pos;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL) {
        body->data = cl->buf->pos;
        body->len = len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        /* a chunked body ends with an empty last_buf */
        if (b->last != b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_fluxgate_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


ngx_int_t
ngx_fluxgate_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_fluxgate_outcome_e outcome, ngx_str_t *body)
{
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_fluxgate_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the one place every answer with an outcome passes: counted once */
    if (ctx->outcome == NGX_FLUXGATE_NONE) {
        ngx_fluxgate_metrics_outcome(r, ctx, outcome);
    }

    ctx->outcome = outcome;

    /* nginx's status table has no 422: it would send "HTTP/1.1 422 " */
    if (status == NGX_FLUXGATE_HTTP_UNPROCESSABLE) {
        ngx_str_set(&r->headers_out.status_line,
                    "422 Unprocessable Entity");
    }

    return ngx_fluxgate_send_body(r, status, &ngx_fluxgate_json_type, body);
}


/* the status, the type and the whole body in one buffer */

ngx_int_t
ngx_fluxgate_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = body->len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* error and field are ours: plain text that needs no JSON escaping */

ngx_int_t
ngx_fluxgate_send_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_fluxgate_outcome_e outcome, const char *error, const char *field)
{
    ngx_str_t  body;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"status\":\"error\",\"error\":\""
                                            "\",\"field\":\"\"}") - 1
                                     + ngx_strlen(error)
                                     + (field ? ngx_strlen(field) : 0));
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (field) {
        body.len = ngx_sprintf(body.data,
                               "{\"status\":\"error\",\"error\":\"%s\","
                               "\"field\":\"%s\"}", error, field)
                   - body.data;

    } else {
        body.len = ngx_sprintf(body.data,
                               "{\"status\":\"error\",\"error\":\"%s\"}",
                               error)
                   - body.data;
    }

    return ngx_fluxgate_send(r, status, outcome, &body);
}


/*
 * 302 to where (an address the caller escaped), with Retry-After in
 * seconds when not 0, and a JSON body for the clients that do not follow
 */

ngx_int_t
ngx_fluxgate_send_redirect(ngx_http_request_t *r, ngx_str_t *where,
    ngx_uint_t retry_after, ngx_fluxgate_outcome_e outcome, ngx_str_t *body)
{
    ngx_str_t         retry;
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Location");
    h->value = *where;
    r->headers_out.location = h;

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

    return ngx_fluxgate_send(r, NGX_HTTP_MOVED_TEMPORARILY, outcome, body);
}


/*
 * The waiting room's address for a product: <fluxgate_waiting_room>
 * ?productId=<p>, then extra (a fragment: never sent to a server, so
 * never in an access log)
 */

ngx_int_t
ngx_fluxgate_waiting_room(ngx_http_request_t *r, ngx_str_t *product,
    ngx_str_t *extra, ngx_str_t *where)
{
    u_char                   *p;
    ngx_fluxgate_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    where->data = ngx_pnalloc(r->pool, flcf->waiting_room.len
                                       + sizeof("?productId=")
                                       + 3 * product->len
                                       + (extra ? extra->len : 0));
    if (where->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(where->data, flcf->waiting_room.data,
                   flcf->waiting_room.len);
    *p++ = ngx_strlchr(flcf->waiting_room.data,
                       flcf->waiting_room.data + flcf->waiting_room.len, '?')
           ? '&' : '?';
    p = ngx_cpymem(p, "productId=", sizeof("productId=") - 1);
    p = (u_char *) ngx_escape_uri(p, product->data, product->len,
                                  NGX_ESCAPE_ARGS);

    if (extra) {
        p = ngx_cpymem(p, extra->data, extra->len);
    }

    where->len = p - where->data;

    return NGX_OK;
}


ngx_int_t
ngx_fluxgate_send_unavailable(ngx_http_request_t *r, const char *error)
{
    ngx_str_t  retry;

    ngx_str_set(&retry, NGX_FLUXGATE_RETRY_AFTER);

    if (ngx_fluxgate_add_header(r, "Retry-After", &retry) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fluxgate_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   NGX_FLUXGATE_ERROR, error, NULL);
}


/* finishing a request from a Redis or Kafka event, not from its own */

void
ngx_fluxgate_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_fluxgate_op_start(ngx_fluxgate_op_t *op, ngx_http_request_t *r,
    ngx_fluxgate_describe_pt describe, ngx_fluxgate_delivery_pt delivered,
    ngx_event_handler_pt timeout, void *data)
{
    ngx_connection_t    *c;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_fluxgate_op_cleanup;
    cln->data = op;

    op->request = r;
    op->cleanup = cln;
    op->delivery.handler = delivered;

    /* its own log: it outlives the connection whose log it copies */

    c = r->connection;

    op->log = *c->log;
    op->log.handler = ngx_fluxgate_op_log_error;
    op->log.data = op;
    op->log.action = NULL;
    op->describe = describe;
    op->client_len = ngx_min(c->addr_text.len, NGX_SOCKADDR_STRLEN);
    ngx_memcpy(op->client, c->addr_text.data, op->client_len);

    op->timer.handler = timeout;
    op->timer.data = data;
    op->timer.log = &op->log;

    ngx_fluxgate_in_flight++;
    ngx_fluxgate_metrics_in_flight();

    return NGX_OK;
}


/* " while <action>, client: ..., <what the operation is>" */

static u_char *
ngx_fluxgate_op_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char             *p;
    ngx_fluxgate_op_t  *op;

    p = buf;

    if (log->action) {
        p = ngx_snprintf(buf, len, " while %s", log->action);
        len -= p - buf;
        buf = p;
    }

    op = log->data;

    p = ngx_snprintf(buf, len, ", client: %*s", op->client_len, op->client);
    len -= p - buf;
    buf = p;

    if (op->describe) {
        p = op->describe(op, buf, len);
    }

    return p;
}


/*
 * The request to answer, once: NULL when it is gone or was answered (a
 * 503 already went out).  Either way the tie to the request is cut.
 */

ngx_http_request_t *
ngx_fluxgate_op_answer(ngx_fluxgate_op_t *op)
{
    ngx_http_request_t  *r;

    r = op->request;

    if (r != NULL) {
        op->cleanup->handler = NULL;
        op->request = NULL;
        op->cleanup = NULL;
    }

    if (r == NULL || op->answered) {
        return NULL;
    }

    op->answered = 1;

    return r;
}


/* a 503 to the client, if it is still there and has no answer yet */

void
ngx_fluxgate_op_fail(ngx_fluxgate_op_t *op, const char *error)
{
    ngx_http_request_t  *r;

    r = ngx_fluxgate_op_answer(op);
    op->answered = 1;

    if (r != NULL) {
        ngx_fluxgate_finalize(r, ngx_fluxgate_send_unavailable(r, error));
    }
}


/* the state lets go of the request and its timer before it is freed */

void
ngx_fluxgate_op_end(ngx_fluxgate_op_t *op)
{
    (void) ngx_fluxgate_op_answer(op);

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    ngx_fluxgate_in_flight--;
    ngx_fluxgate_metrics_in_flight();
}


static void
ngx_fluxgate_op_cleanup(void *data)
{
    ngx_fluxgate_op_t  *op = data;

    op->request = NULL;
    op->cleanup = NULL;
}


static ngx_str_t  ngx_fluxgate_idempotency_header =
    ngx_string("X-Idempotency-Key");


ngx_int_t
ngx_fluxgate_idempotency_key(ngx_http_request_t *r, ngx_str_t *key)
{
    return ngx_fluxgate_single_header(r, &ngx_fluxgate_idempotency_header,
                                      key);
}


/* a header that may be sent once: NGX_DECLINED when it came twice */

ngx_int_t
ngx_fluxgate_single_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_str_null(value);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, h[i].key.len) == 0)
        {
            if (value->data != NULL) {
                return NGX_DECLINED;
            }

            *value = h[i].value;
        }
    }

    return NGX_OK;
}


uint64_t
ngx_fluxgate_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


/* nginx's own error pages, in JSON */

ngx_int_t
ngx_fluxgate_http_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_fluxgate_error_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_fluxgate_error_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_fluxgate_error_header_filter(ngx_http_request_t *r)
{
    u_char                   *p;
    const char               *error, *field;
    ngx_fluxgate_ctx_t       *ctx;
    ngx_fluxgate_loc_conf_t  *flcf;

    if (r != r->main || r->headers_out.status < NGX_HTTP_BAD_REQUEST) {
        return ngx_http_next_header_filter(r);
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    if (flcf->handler != NGX_FLUXGATE_HANDLER_ORDER
        && flcf->handler != NGX_FLUXGATE_HANDLER_ADMIN)
    {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    if (ctx != NULL && ctx->outcome != NGX_FLUXGATE_NONE) {
        /* one of ours, already JSON */
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_fluxgate_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    field = NULL;

    switch (r->headers_out.status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        error = "body too large";
        field = "body";
        break;

    case NGX_HTTP_REQUEST_TIME_OUT:
        error = "body not received in time";
        field = "body";
        break;

    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_LENGTH_REQUIRED:
        error = "malformed request";
        break;

    case NGX_HTTP_FORBIDDEN:
        error = "forbidden";
        break;

    default:
        error = (r->headers_out.status < NGX_HTTP_INTERNAL_SERVER_ERROR)
                ? "request refused" : "internal error";
        break;
    }

    ctx->outcome = (r->headers_out.status < NGX_HTTP_INTERNAL_SERVER_ERROR)
                   ? NGX_FLUXGATE_INVALID : NGX_FLUXGATE_ERROR;

    ngx_fluxgate_metrics_outcome(r, ctx, ctx->outcome);

    p = ngx_pnalloc(r->pool, 128);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->error_body.data = p;

    if (field) {
        p = ngx_sprintf(p, "{\"status\":\"error\",\"error\":\"%s\","
                        "\"field\":\"%s\"}", error, field);

    } else {
        p = ngx_sprintf(p, "{\"status\":\"error\",\"error\":\"%s\"}",
                        error);
    }

    ctx->error_body.len = p - ctx->error_body.data;

    r->headers_out.content_type = ngx_fluxgate_json_type;
    r->headers_out.content_type_len = ngx_fluxgate_json_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    ngx_http_clear_content_length(r);
    r->headers_out.content_length_n = ctx->error_body.len;

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_fluxgate_error_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t           *b;
    ngx_chain_t         *cl, out;
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    if (ctx == NULL || ctx->error_body.len == 0 || in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* nginx's HTML is dropped, ours goes once in its place */

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (ctx->error_sent) {
        return NGX_OK;
    }

    ctx->error_sent = 1;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ctx->error_body.data;
    b->last = ctx->error_body.data + ctx->error_body.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}
