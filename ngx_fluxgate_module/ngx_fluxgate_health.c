
/*
 * Flux-Gate: the locations an operator's tools call.
 *
 *   fluxgate_health   200 {"status":"ok","redis":"up","kafka":"up"}, or
 *                     503 naming what is down, from the serving worker's
 *                     own state (which asks: ngx_fluxgate_redis.c's
 *                     heartbeat, ngx_fluxgate_kafka.c's topic checks)
 *   fluxgate_metrics  Prometheus's text, every worker process together
 *                     (ngx_fluxgate_metrics.c keeps the counts and makes
 *                     the text)
 */


#include "ngx_fluxgate.h"


static ngx_str_t  ngx_fluxgate_metrics_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");
static ngx_str_t  ngx_fluxgate_health_type = ngx_string("application/json");


/* fluxgate_metrics; */

ngx_int_t
ngx_fluxgate_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;
    ngx_str_t  body;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_fluxgate_metrics_text(r->pool, &body);

    if (rc == NGX_DECLINED) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_fluxgate_send_body(r, NGX_HTTP_OK, &ngx_fluxgate_metrics_type,
                                  &body);
}


/* fluxgate_health; */

ngx_int_t
ngx_fluxgate_health_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_str_t                 body;
    ngx_uint_t                redis_up, kafka_up;
    ngx_fluxgate_loc_conf_t  *flcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    redis_up = ngx_fluxgate_redis_up(flcf->redis);
    kafka_up = ngx_fluxgate_kafka_up();

    body.data = ngx_pnalloc(r->pool, 128);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data, "{\"status\":\"%s\",\"redis\":\"%s\","
                           "\"kafka\":\"%s\"}",
                           (redis_up && kafka_up) ? "ok" : "unavailable",
                           redis_up ? "up" : "down",
                           kafka_up ? "up" : "down")
               - body.data;

    return ngx_fluxgate_send_body(r, (redis_up && kafka_up)
                                     ? NGX_HTTP_OK
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  &ngx_fluxgate_health_type, &body);
}

