
/*
 * Flux-Gate: the $fluxgate_* variables, for log_format: what each request
 * of ours came to ($fluxgate_outcome, $fluxgate_order_id) and where its
 * time went ($fluxgate_redis_time, $fluxgate_kafka_time, and the rest,
 * $fluxgate_gate_time).
 */


#include "ngx_fluxgate.h"


static ngx_int_t ngx_fluxgate_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_fluxgate_order_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_fluxgate_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_fluxgate_gate_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_fluxgate_seconds(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uint64_t usec, ngx_uint_t decimals);


static ngx_http_variable_t  ngx_fluxgate_vars[] = {

    { ngx_string("fluxgate_outcome"), NULL, ngx_fluxgate_outcome_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("fluxgate_order_id"), NULL, ngx_fluxgate_order_id_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("fluxgate_redis_time"), NULL, ngx_fluxgate_time_variable,
      NGX_FLUXGATE_HISTOGRAM_REDIS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("fluxgate_kafka_time"), NULL, ngx_fluxgate_time_variable,
      NGX_FLUXGATE_HISTOGRAM_KAFKA, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("fluxgate_gate_time"), NULL, ngx_fluxgate_gate_time_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_fluxgate_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_fluxgate_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_fluxgate_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    if (ctx == NULL || ctx->outcome == NGX_FLUXGATE_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ngx_fluxgate_outcome_names[ctx->outcome].len;
    v->data = ngx_fluxgate_outcome_names[ctx->outcome].data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_fluxgate_order_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    if (ctx == NULL || !ctx->has_order_id) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = NGX_FLUXGATE_UUID_LEN;
    v->data = ctx->order_id;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $fluxgate_redis_time, $fluxgate_kafka_time: seconds with millisecond
 * resolution, as $upstream_response_time; "-" when the order never got
 * that far
 */

static ngx_int_t
ngx_fluxgate_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    uint64_t             usec;
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (ctx == NULL
        || (data == NGX_FLUXGATE_HISTOGRAM_REDIS && !ctx->has_redis_time)
        || (data == NGX_FLUXGATE_HISTOGRAM_KAFKA && !ctx->has_kafka_time))
    {
        v->len = 1;
        v->data = (u_char *) "-";
        return NGX_OK;
    }

    usec = (data == NGX_FLUXGATE_HISTOGRAM_REDIS) ? ctx->redis_time
                                                  : ctx->kafka_time;

    /* milliseconds, truncated, as nginx's own times */
    return ngx_fluxgate_seconds(r, v, usec / 1000 * 1000, 3);
}


/*
 * $fluxgate_gate_time: seconds with microsecond resolution, the order's
 * time inside nginx beyond its Redis and Kafka round trips: from the body
 * in hand to the log line (the answer written), less
 * $fluxgate_redis_time and $fluxgate_kafka_time at full resolution, and
 * less the wait for a reply that did not come by its deadline (the 503's);
 * "-" for a request that never had a body to decide on
 */

static ngx_int_t
ngx_fluxgate_gate_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    uint64_t             now, usec, away;
    ngx_fluxgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_fluxgate_module);

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (ctx == NULL || !ctx->has_started) {
        v->len = 1;
        v->data = (u_char *) "-";
        return NGX_OK;
    }

    now = ngx_fluxgate_metrics_clock();
    usec = (now > ctx->started) ? now - ctx->started : 0;

    away = (ctx->has_redis_time ? ctx->redis_time : 0)
           + (ctx->has_kafka_time ? ctx->kafka_time : 0)
           + ctx->waited;
    usec = (usec > away) ? usec - away : 0;

    return ngx_fluxgate_seconds(r, v, usec, 6);
}


/* microseconds as seconds with 3 or 6 decimals: "0.001", "0.000184" */

static ngx_int_t
ngx_fluxgate_seconds(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uint64_t usec, ngx_uint_t decimals)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    if (decimals == 3) {
        v->len = ngx_sprintf(p, "%uL.%03uL", usec / 1000000,
                             usec % 1000000 / 1000)
                 - p;

    } else {
        v->len = ngx_sprintf(p, "%uL.%06uL", usec / 1000000, usec % 1000000)
                 - p;
    }

    return NGX_OK;
}
