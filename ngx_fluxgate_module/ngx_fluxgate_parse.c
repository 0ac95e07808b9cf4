
/*
 * Flux-Gate: parsing and validation of the order body, the stock body and
 * the idempotency key.  Pure C over jansson: no nginx types, no I/O, no
 * globals, so the libFuzzer target in fuzz_parse.c links this file alone.
 *
 * Ids are what ends up inside Redis key names (fg:{<productId>}:...), so
 * their alphabet leaves no way to reach another key: no braces, no colons,
 * no spaces, nothing outside [A-Za-z0-9._-] (and no '.' in keys).
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "ngx_fluxgate_parse.h"


static json_t *ngx_fluxgate_parse_object(const char *body, size_t len,
    ngx_fluxgate_parse_error_t *err);
static int ngx_fluxgate_parse_id(json_t *root, const char *field, char *dst,
    size_t *dst_len, ngx_fluxgate_parse_error_t *err);
static int ngx_fluxgate_parse_int(json_t *root, const char *field,
    int required, long long dflt, long long min, long long max,
    long long *out, ngx_fluxgate_parse_error_t *err);
static int ngx_fluxgate_parse_fail(ngx_fluxgate_parse_error_t *err,
    const char *field, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;


const char  *ngx_fluxgate_control_names[] = {
    "pause", "resume", "close", "rate", NULL
};


int
ngx_fluxgate_parse_order(const char *body, size_t len, long long max_quantity,
    int user_optional, ngx_fluxgate_order_req_t *req,
    ngx_fluxgate_parse_error_t *err)
{
    int      rc;
    json_t  *root;

    root = ngx_fluxgate_parse_object(body, len, err);
    if (root == NULL) {
        return -1;
    }

    rc = ngx_fluxgate_parse_id(root, "productId", req->product_id,
                               &req->product_id_len, err);

    if (rc == 0) {
        if (user_optional && json_object_get(root, "userId") == NULL) {
            req->user_id[0] = '\0';
            req->user_id_len = 0;

        } else {
            rc = ngx_fluxgate_parse_id(root, "userId", req->user_id,
                                       &req->user_id_len, err);
        }
    }

    if (rc == 0) {
        rc = ngx_fluxgate_parse_int(root, "quantity", 0, 1, 1, max_quantity,
                                    &req->quantity, err);
    }

    json_decref(root);

    return rc;
}


int
ngx_fluxgate_parse_stock(const char *body, size_t len,
    ngx_fluxgate_stock_req_t *req, ngx_fluxgate_parse_error_t *err)
{
    int      rc;
    json_t  *root;

    root = ngx_fluxgate_parse_object(body, len, err);
    if (root == NULL) {
        return -1;
    }

    rc = ngx_fluxgate_parse_id(root, "productId", req->product_id,
                               &req->product_id_len, err);

    if (rc == 0) {
        rc = ngx_fluxgate_parse_int(root, "quantity", 1, 0, 0,
                                    NGX_FLUXGATE_STOCK_MAX, &req->stock, err);
    }

    /* -1: set whatever the current generation is */
    if (rc == 0) {
        rc = ngx_fluxgate_parse_int(root, "ifGeneration", 0, -1, 0,
                                    NGX_FLUXGATE_GENERATION_MAX,
                                    &req->if_generation, err);
    }

    /* a sale announced: unix seconds */
    if (rc == 0) {
        rc = ngx_fluxgate_parse_int(root, "opensAt", 0, -1, 0,
                                    NGX_FLUXGATE_OPENS_AT_MAX,
                                    &req->opens_at, err);
    }

    json_decref(root);

    return rc;
}


int
ngx_fluxgate_parse_control(const char *body, size_t len,
    ngx_fluxgate_control_req_t *req, ngx_fluxgate_parse_error_t *err)
{
    int          rc, i;
    json_t      *root, *v;
    const char  *action;

    root = ngx_fluxgate_parse_object(body, len, err);
    if (root == NULL) {
        return -1;
    }

    rc = ngx_fluxgate_parse_id(root, "productId", req->product_id,
                               &req->product_id_len, err);

    if (rc == 0) {
        v = json_object_get(root, "action");

        if (v == NULL || !json_is_string(v)) {
            rc = ngx_fluxgate_parse_fail(err, "action", "action must be one "
                                         "of pause, resume, close, rate");

        } else {
            action = json_string_value(v);
            rc = -1;

            for (i = 0; ngx_fluxgate_control_names[i]; i++) {
                if (strcmp(action, ngx_fluxgate_control_names[i]) == 0
                    && strlen(action) == json_string_length(v))
                {
                    req->action = (ngx_fluxgate_control_e) i;
                    rc = 0;
                }
            }

            if (rc != 0) {
                (void) ngx_fluxgate_parse_fail(err, "action",
                                               "action must be one of "
                                               "pause, resume, close, rate");
            }
        }
    }

    if (rc == 0) {
        rc = ngx_fluxgate_parse_int(root, "rate",
                                    req->action == NGX_FLUXGATE_CONTROL_RATE,
                                    0, 1, NGX_FLUXGATE_RATE_MAX, &req->rate,
                                    err);
    }

    if (rc == 0 && req->action != NGX_FLUXGATE_CONTROL_RATE
        && req->rate != 0)
    {
        rc = ngx_fluxgate_parse_fail(err, "rate", "rate goes with the "
                                     "action rate only");
    }

    json_decref(root);

    return rc;
}


int
ngx_fluxgate_parse_idempotency_key(const char *key, size_t len,
    ngx_fluxgate_parse_error_t *err)
{
    if (key == NULL || len == 0) {
        return ngx_fluxgate_parse_fail(err, "X-Idempotency-Key",
                                       "X-Idempotency-Key header is "
                                       "required");
    }

    if (fg_key_valid(key, len)) {
        return 0;
    }

    return ngx_fluxgate_parse_fail(err, "X-Idempotency-Key",
                                   "X-Idempotency-Key must be 1-%d "
                                   "characters of A-Z a-z 0-9 _ -",
                                   NGX_FLUXGATE_KEY_MAX);
}


static json_t *
ngx_fluxgate_parse_object(const char *body, size_t len,
    ngx_fluxgate_parse_error_t *err)
{
    json_t        *root;
    json_error_t   jerr;

    if (len == 0) {
        (void) ngx_fluxgate_parse_fail(err, "body", "body is empty");
        return NULL;
    }

    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_duplicate_key) {
            (void) ngx_fluxgate_parse_fail(err, "body",
                                           "duplicate key in body "
                                           "(at offset %d)", jerr.position);

        } else {
            (void) ngx_fluxgate_parse_fail(err, "body",
                                           "body is not valid JSON "
                                           "(at offset %d)", jerr.position);
        }

        return NULL;
    }

    if (!json_is_object(root)) {
        json_decref(root);
        (void) ngx_fluxgate_parse_fail(err, "body",
                                       "body must be a JSON object");
        return NULL;
    }

    return root;
}


static int
ngx_fluxgate_parse_id(json_t *root, const char *field, char *dst,
    size_t *dst_len, ngx_fluxgate_parse_error_t *err)
{
    size_t      len;
    json_t     *v;
    const char *s;

    v = json_object_get(root, field);

    if (v == NULL) {
        return ngx_fluxgate_parse_fail(err, field, "%s is required", field);
    }

    if (!json_is_string(v)) {
        return ngx_fluxgate_parse_fail(err, field, "%s must be a string",
                                       field);
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (fg_id_valid(s, len)) {
        memcpy(dst, s, len);
        dst[len] = '\0';
        *dst_len = len;

        return 0;
    }

    return ngx_fluxgate_parse_fail(err, field,
                                   "%s must be 1-%d characters of "
                                   "A-Z a-z 0-9 . _ -",
                                   field, NGX_FLUXGATE_ID_MAX);
}


static int
ngx_fluxgate_parse_int(json_t *root, const char *field, int required,
    long long dflt, long long min, long long max, long long *out,
    ngx_fluxgate_parse_error_t *err)
{
    json_t     *v;
    json_int_t  n;

    v = json_object_get(root, field);

    if (v == NULL) {
        if (required) {
            return ngx_fluxgate_parse_fail(err, field, "%s is required",
                                           field);
        }

        *out = dflt;
        return 0;
    }

    if (!json_is_integer(v)) {
        return ngx_fluxgate_parse_fail(err, field, "%s must be an integer",
                                       field);
    }

    n = json_integer_value(v);

    if (n < min || n > max) {
        return ngx_fluxgate_parse_fail(err, field,
                                       "%s must be between %lld and %lld",
                                       field, min, max);
    }

    *out = n;

    return 0;
}


static int
ngx_fluxgate_parse_fail(ngx_fluxgate_parse_error_t *err, const char *field,
    const char *fmt, ...)
{
    va_list  args;

    err->field = field;

    va_start(args, fmt);
    (void) vsnprintf(err->error, sizeof(err->error), fmt, args);
    va_end(args);

    return -1;
}
