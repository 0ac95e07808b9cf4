
/*
 * Flux-Gate: what a client may send, checked before any I/O.  Pure C
 * (jansson and libc only, no nginx headers) so that fuzz_parse.c can link
 * it alone.  Every error names the field it is about.
 */


#ifndef _NGX_FLUXGATE_PARSE_H_INCLUDED_
#define _NGX_FLUXGATE_PARSE_H_INCLUDED_


#include <stddef.h>

#include "fluxgate_ids.h"


#define NGX_FLUXGATE_ID_MAX      FG_ID_MAX
#define NGX_FLUXGATE_KEY_MAX     FG_KEY_MAX
#define NGX_FLUXGATE_STOCK_MAX   1000000000LL
#define NGX_FLUXGATE_GENERATION_MAX  9007199254740991LL   /* 2^53 - 1 */
#define NGX_FLUXGATE_OPENS_AT_MAX    32503680000LL        /* year 3000 */
#define NGX_FLUXGATE_RATE_MAX        1000000


typedef struct {
    char         product_id[NGX_FLUXGATE_ID_MAX + 1];
    size_t       product_id_len;
    char         user_id[NGX_FLUXGATE_ID_MAX + 1];
    size_t       user_id_len;     /* 0: not given (a verified user only) */
    long long    quantity;
} ngx_fluxgate_order_req_t;


typedef struct {
    char         product_id[NGX_FLUXGATE_ID_MAX + 1];
    size_t       product_id_len;
    long long    stock;
    long long    if_generation;   /* -1: not given */
    long long    opens_at;        /* unix seconds, -1: not given */
} ngx_fluxgate_stock_req_t;


typedef enum {
    NGX_FLUXGATE_CONTROL_PAUSE = 0,
    NGX_FLUXGATE_CONTROL_RESUME,
    NGX_FLUXGATE_CONTROL_CLOSE,
    NGX_FLUXGATE_CONTROL_RATE
} ngx_fluxgate_control_e;


/* POST /queue/control */
typedef struct {
    char                     product_id[NGX_FLUXGATE_ID_MAX + 1];
    size_t                   product_id_len;
    ngx_fluxgate_control_e   action;
    long long                rate;            /* 0: not given */
} ngx_fluxgate_control_req_t;


/* the names of ngx_fluxgate_control_e, in its order */
extern const char  *ngx_fluxgate_control_names[];


typedef struct {
    const char  *field;
    char         error[128];
} ngx_fluxgate_parse_error_t;


/*
 * 0: valid, -1: not, with err filled in.  user_optional: userId may be
 * left out (the request has a verified user)
 */
int ngx_fluxgate_parse_order(const char *body, size_t len,
    long long max_quantity, int user_optional, ngx_fluxgate_order_req_t *req,
    ngx_fluxgate_parse_error_t *err);
int ngx_fluxgate_parse_control(const char *body, size_t len,
    ngx_fluxgate_control_req_t *req, ngx_fluxgate_parse_error_t *err);
int ngx_fluxgate_parse_stock(const char *body, size_t len,
    ngx_fluxgate_stock_req_t *req, ngx_fluxgate_parse_error_t *err);
int ngx_fluxgate_parse_idempotency_key(const char *key, size_t len,
    ngx_fluxgate_parse_error_t *err);


#endif /* _NGX_FLUXGATE_PARSE_H_INCLUDED_ */
