
/*
 * Flux-Gate: libFuzzer target over ngx_fluxgate_parse.c, the only code
 * that reads what clients send before anything else looks at it.  Each
 * input is tried as an order body, as a stock body and as an idempotency
 * key, so one corpus of bodies (t/fuzz/fuzz_parse) serves all three.  Not
 * built by config: see the Makefile's fuzzers target.
 *
 * Beyond "no crash, no leak" it checks the promises the module relies on:
 * an accepted id only holds [A-Za-z0-9._-] and is NUL-terminated at its
 * length, a quantity is in range, and every rejection names a field.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_fluxgate_parse.h"


static void
check_id(const char *id, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_FLUXGATE_ID_MAX || id[len] != '\0') {
        abort();
    }

    for (i = 0; i < len; i++) {
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789._-", id[i]) || id[i] == '\0')
        {
            abort();
        }
    }
}


static void
check_error(int rc, ngx_fluxgate_parse_error_t *err)
{
    if (rc != 0 && (err->field == NULL || err->error[0] == '\0'
                    || strchr(err->error, '"') || strchr(err->error, '\\')))
    {
        /* the message goes into JSON unescaped */
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                         rc;
    const char                 *s;
    ngx_fluxgate_order_req_t    order;
    ngx_fluxgate_stock_req_t    stock;
    ngx_fluxgate_control_req_t  control;
    ngx_fluxgate_parse_error_t  err;

    s = (const char *) data;

    rc = ngx_fluxgate_parse_order(s, size, 10, 0, &order, &err);
    check_error(rc, &err);

    if (rc == 0) {
        check_id(order.product_id, order.product_id_len);
        check_id(order.user_id, order.user_id_len);

        if (order.quantity < 1 || order.quantity > 10) {
            abort();
        }
    }

    /* with a verified user, userId may be missing: never half there */
    rc = ngx_fluxgate_parse_order(s, size, 10, 1, &order, &err);
    check_error(rc, &err);

    if (rc == 0) {
        check_id(order.product_id, order.product_id_len);

        if (order.user_id_len) {
            check_id(order.user_id, order.user_id_len);

        } else if (order.user_id[0] != '\0') {
            abort();
        }
    }

    rc = ngx_fluxgate_parse_control(s, size, &control, &err);
    check_error(rc, &err);

    if (rc == 0) {
        check_id(control.product_id, control.product_id_len);

        if ((unsigned) control.action > NGX_FLUXGATE_CONTROL_RATE
            || (control.action == NGX_FLUXGATE_CONTROL_RATE
                && (control.rate < 1
                    || control.rate > NGX_FLUXGATE_RATE_MAX))
            || (control.action != NGX_FLUXGATE_CONTROL_RATE
                && control.rate != 0))
        {
            abort();
        }
    }

    rc = ngx_fluxgate_parse_stock(s, size, &stock, &err);
    check_error(rc, &err);

    if (rc == 0) {
        check_id(stock.product_id, stock.product_id_len);

        if (stock.stock < 0 || stock.stock > NGX_FLUXGATE_STOCK_MAX
            || stock.opens_at < -1
            || stock.opens_at > NGX_FLUXGATE_OPENS_AT_MAX)
        {
            abort();
        }
    }

    rc = ngx_fluxgate_parse_idempotency_key(s, size, &err);
    check_error(rc, &err);

    if (rc == 0 && (size == 0 || size > NGX_FLUXGATE_KEY_MAX
                    || memchr(s, '.', size) || memchr(s, ':', size)
                    || memchr(s, '{', size)))
    {
        abort();
    }

    return 0;
}
