
/*
 * Flux-Gate: who is buying, and may they, decided before any I/O.
 *
 *   fluxgate_user_token        the buyer's HS256 JWT (ngx_fluxgate_jwt.c):
 *                              its sub is the user; 401 where required,
 *                              403 when the body names someone else
 *   the buyer                  the verified user, else userId, else the
 *                              key (DESIGN.md v3, "The buyer")
 *   fluxgate_queue_per_client  the client's key (a variable, as
 *                              limit_req_zone's): its places are counted
 *   X-Queue-Ticket             signed for this buyer and product, or 400
 *   X-Queue-Proof              fluxgate_queue_pow: one hash checks the
 *                              work; a bad proof, or none while the line
 *                              is busy, gets a challenge (302), Redis
 *                              never asked
 *
 * The order (ngx_fluxgate_order.c) takes what this file found, in an
 * ngx_fluxgate_buyer_t, to Redis.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_jwt.h"

#include <ngx_md5.h>


static ngx_int_t ngx_fluxgate_buyer_user(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_buyer_t *in);
static ngx_int_t ngx_fluxgate_buyer_client(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_buyer_t *in);


/*
 * fluxgate_queue_per_client N [key=$variable]: N live places per client
 * key and product (the key as limit_req_zone's, $binary_remote_addr by
 * default); 0 or off: no cap
 */

char *
ngx_fluxgate_queue_per_client(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_int_t                          n;
    ngx_str_t                         *value, key;
    ngx_http_compile_complex_value_t   ccv;

    if (flcf->queue_per_client != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        n = 0;

    } else {
        n = ngx_atoi(value[1].data, value[1].len);
        if (n == NGX_ERROR || n > 1000000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\" directive",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    ngx_str_set(&key, "$binary_remote_addr");

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "key=", 4) != 0
            || value[2].len == 4)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\" directive",
                               &value[2], &cmd->name);
            return NGX_CONF_ERROR;
        }

        key.data = value[2].data + 4;
        key.len = value[2].len - 4;
    }

    flcf->queue_client_key = ngx_palloc(cf->pool,
                                        sizeof(ngx_http_complex_value_t));
    if (flcf->queue_client_key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &key;
    ccv.complex_value = flcf->queue_client_key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    flcf->queue_per_client = n;

    return NGX_CONF_OK;
}


/*
 * fluxgate_user_token $variable secret=<file> [required]: the buyer is the
 * sub of an HS256 JWT read from the variable; "off" turns it off
 */

char *
ngx_fluxgate_user_token(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_str_t                         *value, path;
    ngx_uint_t                         i;
    ngx_http_compile_complex_value_t   ccv;

    if (flcf->user_token != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        flcf->user_token = NULL;
        flcf->user_required = 0;
        return NGX_CONF_OK;
    }

    ngx_str_null(&path);
    flcf->user_required = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "secret=", 7) == 0
            && value[i].len > 7)
        {
            path.data = value[i].data + 7;
            path.len = value[i].len - 7;
            continue;
        }

        if (ngx_strcmp(value[i].data, "required") == 0) {
            flcf->user_required = 1;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\" directive",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (path.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs secret=<file> (the HS256 key)",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (value[1].data[0] != '$') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" reads the token from a variable, not "
                           "\"%V\" (for example $cookie_shop_session or "
                           "$http_authorization)", &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    flcf->user_token = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (flcf->user_token == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = flcf->user_token;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_fluxgate_secret_file(cf, &cmd->name, &path,
                                    &flcf->user_secret);
}


/*
 * Body, key and buyer: NGX_DECLINED to go on, else what the answer sent
 * (400, 401, 403) returned
 */

ngx_int_t
ngx_fluxgate_buyer_read(ngx_http_request_t *r, ngx_fluxgate_loc_conf_t *flcf,
    ngx_fluxgate_buyer_t *in)
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

    rc = ngx_fluxgate_buyer_user(r, flcf, in);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /* the buyer: the verified user, else userId, else the key */

    in->buyer.data = (u_char *) in->req.user_id;
    in->buyer.len = in->req.user_id_len;

    return ngx_fluxgate_buyer_client(r, flcf, in);
}


/*
 * fluxgate_user_token: the token checked before any Redis call.  A valid
 * one makes its sub the user (a body userId that differs: 403); a missing
 * or bad one is 401 where required, else the request has no verified
 * user (and must name its userId).
 */

static ngx_int_t
ngx_fluxgate_buyer_user(ngx_http_request_t *r, ngx_fluxgate_loc_conf_t *flcf,
    ngx_fluxgate_buyer_t *in)
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
ngx_fluxgate_buyer_client(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_buyer_t *in)
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

ngx_int_t
ngx_fluxgate_buyer_place(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_buyer_t *in)
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
