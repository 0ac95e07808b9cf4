
/*
 * Flux-Gate: the types the files of ngx_fluxgate_module share.
 *
 * ngx_fluxgate_module.c  directives, configuration, processes
 * ngx_fluxgate_variables.c  $fluxgate_outcome and the others
 * ngx_fluxgate_http.c    JSON in, JSON out: what both handlers share
 * ngx_fluxgate_redis.c   one hiredis connection per worker per address,
 *                        and its heartbeat
 * ngx_fluxgate_redis_command.c  commands on them: EVALSHA, WAIT, NOSCRIPT
 * ngx_fluxgate_redis_cluster.c  Redis Cluster: slot map, MOVED and ASK
 * ngx_fluxgate_kafka.c   one librdkafka producer per worker
 * ngx_fluxgate_kafka_health.c  the topic's health, asked by a thread
 * ngx_fluxgate_buyer.c   who is buying: token, buyer, ticket or proof
 * ngx_fluxgate_order.c   POST /order from body to response
 * ngx_fluxgate_admin.c   POST /init (stock administration)
 * ngx_fluxgate_sold_out.c the sold-out flag in shared memory
 * ngx_fluxgate_metrics.c  the counts of every process, and their text
 * ngx_fluxgate_health.c  the fluxgate_health and fluxgate_metrics locations
 * ngx_fluxgate_queue.c   the waiting room's answers: 302s, polls
 * ngx_fluxgate_queue_admin.c  the line's statistics and live controls
 * ngx_fluxgate_ticket.c  tickets, challenges and proofs (signed, checked)
 * ngx_fluxgate_line.c    each product's line in shared memory (polls need
 *                        no Redis), proofs taken
 * ngx_fluxgate_jwt.c     fluxgate_user_token's JWTs (pure C, fuzzable)
 * ngx_fluxgate_parse.c   request bodies and keys (pure C, fuzzable)
 * ngx_fluxgate_uuid.c    order ids (UUIDv7)
 */


#ifndef _NGX_FLUXGATE_H_INCLUDED_
#define _NGX_FLUXGATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_fluxgate_parse.h"

#include <hiredis.h>
#include <async.h>
#include <librdkafka/rdkafka.h>


#define NGX_FLUXGATE_UUID_LEN        36

/* a challenge's random nonce, in bytes */
#define NGX_FLUXGATE_NONCE_LEN       16

/* what a Redis address defaults to, and how long Retry-After says on 503 */
#define NGX_FLUXGATE_REDIS_DEFAULT   "127.0.0.1:6379"
#define NGX_FLUXGATE_RETRY_AFTER     "1"

#define NGX_FLUXGATE_HTTP_UNPROCESSABLE  422

/*
 * After the client got its answer, how long done.lua or release.lua are
 * retried with a live timer (across a Redis restart, a graceful reload);
 * a claim still pending after that is settled by fluxgate-reconcile
 */
#define NGX_FLUXGATE_FINISH_GRACE    10000


/* $fluxgate_outcome */
typedef enum {
    NGX_FLUXGATE_NONE = 0,
    NGX_FLUXGATE_ACCEPTED,
    NGX_FLUXGATE_DUPLICATE,
    NGX_FLUXGATE_IN_PROGRESS,
    NGX_FLUXGATE_REDIRECTED,
    NGX_FLUXGATE_SOLD_OUT,
    NGX_FLUXGATE_LIMIT_REACHED,
    NGX_FLUXGATE_INVALID,
    NGX_FLUXGATE_ERROR,
    NGX_FLUXGATE_UNKNOWN_PRODUCT,
    NGX_FLUXGATE_CHALLENGED,          /* a proof of work asked */
    NGX_FLUXGATE_REFUSED,             /* too many places, closed, 401, 403 */
} ngx_fluxgate_outcome_e;

#define NGX_FLUXGATE_OUTCOMES  (NGX_FLUXGATE_REFUSED + 1)

/* their names (ngx_fluxgate_metrics.c) */
extern ngx_str_t  ngx_fluxgate_outcome_names[NGX_FLUXGATE_OUTCOMES];


/* the plain counters of fluxgate_metrics */
typedef enum {
    NGX_FLUXGATE_METRIC_SOLD_OUT_HITS = 0,
    NGX_FLUXGATE_METRIC_RELEASED,         /* release.lua: stock given back */
    NGX_FLUXGATE_METRIC_RELEASED_OVER,    /* release.lua: generation over */
    NGX_FLUXGATE_METRIC_SETTLED_DONE,     /* done.lua ended a claim */
    NGX_FLUXGATE_METRIC_SETTLED_RELEASE,  /* release.lua ended a claim */
    NGX_FLUXGATE_METRIC_CHALLENGE_ISSUED, /* fluxgate_queue_pow */
    NGX_FLUXGATE_METRIC_CHALLENGE_SOLVED,
    NGX_FLUXGATE_METRIC_CHALLENGE_FAILED, /* forged, weak, stale, other's */
    NGX_FLUXGATE_METRIC_CHALLENGE_REUSED,
    NGX_FLUXGATE_METRIC_CONTROL_PAUSE,    /* POST /queue/control */
    NGX_FLUXGATE_METRIC_CONTROL_RESUME,
    NGX_FLUXGATE_METRIC_CONTROL_CLOSE,
    NGX_FLUXGATE_METRIC_CONTROL_RATE,
    NGX_FLUXGATE_METRIC_LAST
} ngx_fluxgate_metric_e;


typedef enum {
    NGX_FLUXGATE_HISTOGRAM_REDIS = 0,     /* order.lua's round trip */
    NGX_FLUXGATE_HISTOGRAM_KAFKA,         /* produce to delivery report */
    NGX_FLUXGATE_HISTOGRAM_LAST
} ngx_fluxgate_histogram_e;


typedef struct ngx_fluxgate_redis_s  ngx_fluxgate_redis_t;


/* a script from lua/, compiled in by config */
typedef struct {
    ngx_str_t                    name;
    ngx_str_t                    sha;
    ngx_str_t                    body;
} ngx_fluxgate_script_t;


/* a command's arguments, built one by one (numbers printed in place) */
#define NGX_FLUXGATE_REDIS_MAX_ARGS  32

typedef struct {
    ngx_uint_t                   n;
    ngx_str_t                    arg[NGX_FLUXGATE_REDIS_MAX_ARGS];
    u_char                       num[NGX_FLUXGATE_REDIS_MAX_ARGS]
                                    [NGX_INT64_LEN];
} ngx_fluxgate_args_t;

/* the replies of a script that WAIT follows: their first integers */
#define ngx_fluxgate_redis_wait_code(n)  ((ngx_uint_t) 1 << (n))

/*
 * Called by a lower layer (Redis, Kafka) when its state changed, so that
 * whoever shows that state (the metrics' gauges) can look again: set by
 * ngx_fluxgate_module.c, the lower layers know nothing above them
 */
typedef void (*ngx_fluxgate_changed_pt)(void);

/* reply is NULL when the connection went away before the reply came */
typedef void (*ngx_fluxgate_redis_handler_pt)(redisReply *reply, void *data);


/* what the delivery report said about one message */
typedef enum {
    NGX_FLUXGATE_DELIVERED = 0,
    NGX_FLUXGATE_NOT_DELIVERED,       /* never persisted: safe to undo */
    NGX_FLUXGATE_MAYBE_DELIVERED      /* timed out in flight: unknown */
} ngx_fluxgate_delivery_e;


typedef struct ngx_fluxgate_delivery_s  ngx_fluxgate_delivery_t;

typedef void (*ngx_fluxgate_delivery_pt)(ngx_fluxgate_delivery_t *dlv,
    ngx_fluxgate_delivery_e status, const char *err);

/* embedded in whatever waits for a message's delivery report */
struct ngx_fluxgate_delivery_s {
    ngx_fluxgate_delivery_pt     handler;
};


typedef struct {
    ngx_array_t                  redis;       /* ngx_fluxgate_redis_t * */

    ngx_str_t                    brokers;
    ngx_str_t                    topic;
    rd_kafka_conf_t             *kafka_conf;  /* validated, not yet used */
    ngx_msec_t                   kafka_timeout;   /* message.timeout.ms */

    ngx_shm_zone_t              *sold_out;    /* NULL: no cache anywhere */
    ngx_shm_zone_t              *queue_zone;  /* the lines (and proofs) */

    ngx_shm_zone_t              *metrics;     /* NULL: no fluxgate_metrics */
    ngx_uint_t                   metrics_products;
    ngx_uint_t                   metrics_locations;

    ngx_uint_t                   handlers;    /* locations that use us */
    ngx_str_t                    handler_file;
    ngx_uint_t                   handler_line;
} ngx_fluxgate_main_conf_t;


typedef enum {
    NGX_FLUXGATE_HANDLER_NONE = 0,
    NGX_FLUXGATE_HANDLER_ORDER,
    NGX_FLUXGATE_HANDLER_ADMIN,
    NGX_FLUXGATE_HANDLER_HEALTH,
    NGX_FLUXGATE_HANDLER_METRICS,
    NGX_FLUXGATE_HANDLER_QUEUE_STATUS,
    NGX_FLUXGATE_HANDLER_QUEUE_STATS,
    NGX_FLUXGATE_HANDLER_QUEUE_CONTROL
} ngx_fluxgate_handler_e;


typedef struct {
    ngx_uint_t                   handler;     /* not inherited */

    ngx_fluxgate_redis_t        *redis;
    ngx_msec_t                   redis_timeout;
    ngx_uint_t                   redis_wait;  /* replicas, 0: no WAIT */
    ngx_msec_t                   redis_wait_timeout;

    ngx_uint_t                   rate;        /* orders/s, 0: off */
    ngx_uint_t                   burst;
    ngx_str_t                    waiting_room;

    ngx_msec_t                   idempotency_ttl;
    ngx_uint_t                   max_quantity;
    ngx_uint_t                   per_user_limit;
    ngx_msec_t                   sold_out_cache;  /* 0: off */

    ngx_str_t                    queue_secret;    /* no data: no queue */
    ngx_msec_t                   queue_window;
    ngx_msec_t                   queue_ticket_ttl;
    ngx_shm_zone_t              *queue_zone;      /* fmcf's, for handlers */

    ngx_uint_t                   queue_pow;       /* bits, 0: off */
    ngx_uint_t                   queue_per_client;    /* 0: off */
    ngx_http_complex_value_t    *queue_client_key;

    ngx_http_complex_value_t    *user_token;      /* NULL: off */
    ngx_str_t                    user_secret;
    ngx_flag_t                   user_required;
} ngx_fluxgate_loc_conf_t;


/*
 * A place in a product's line (lua/order.lua, ngx_fluxgate_ticket.c): what
 * the signed ticket says.  kind 'q': in line, its turn is seq; 'p': in the
 * pre-queue, its turn is drawn at the opening.
 */
typedef struct {
    int64_t                      epoch;       /* the sale */
    int64_t                      seq;
    int64_t                      expires;     /* unix seconds */
    u_char                       kind;
} ngx_fluxgate_ticket_t;


typedef enum {
    NGX_FLUXGATE_PROOF_OK = 0,
    NGX_FLUXGATE_PROOF_FORGED,
    NGX_FLUXGATE_PROOF_WEAK,              /* too few zero bits */
    NGX_FLUXGATE_PROOF_STALE,
    NGX_FLUXGATE_PROOF_OTHER,             /* another product or buyer */
    NGX_FLUXGATE_PROOF_REUSED
} ngx_fluxgate_proof_e;


typedef enum {
    NGX_FLUXGATE_LINE_OPEN = 0,
    NGX_FLUXGATE_LINE_SCHEDULED,
    NGX_FLUXGATE_LINE_PAUSED,
    NGX_FLUXGATE_LINE_CLOSED
} ngx_fluxgate_line_state_e;


/*
 * A product's line as lua/queue_head.lua last said it (ngx_fluxgate_line.c
 * keeps one per product in shared memory).  Times: microseconds of Redis
 * TIME, but fetched, the gate's ngx_current_msec when it came (0: never).
 */
typedef struct {
    ngx_msec_t                   fetched;
    int64_t                      redis_now;
    int64_t                      stock;
    int64_t                      epoch;
    int64_t                      n;           /* turns handed out */
    double                       h;           /* admitted at t */
    int64_t                      t;
    int64_t                      rate;
    int64_t                      opens_at;    /* 0: none */
    int64_t                      pre;         /* pre-queue size, -1: not yet */
    int64_t                      window;      /* turns, 0: unbounded */
    int64_t                      admitted;
    int64_t                      waiting;
    int64_t                      no_shows;
    int64_t                      oldest;      /* the oldest wait */
    ngx_uint_t                   burst;
    ngx_fluxgate_line_state_e    state;
    size_t                       seed_len;
    u_char                       seed[40];
    unsigned                     known:1;     /* set by /init */
} ngx_fluxgate_line_t;


/* where a ticket stands (ngx_fluxgate_line_standing) */
typedef struct {
    int64_t                      position;    /* 0: admitted */
    int64_t                      eta_ms;      /* -1: not moving (paused) */
    int64_t                      opens_at;    /* unix seconds */
    ngx_fluxgate_line_state_e    state;
    unsigned                     admitted:1;
    unsigned                     scheduled:1;
    unsigned                     sold_out:1;
} ngx_fluxgate_standing_t;


typedef struct ngx_fluxgate_op_s  ngx_fluxgate_op_t;

/* what an operation adds to each of its log lines: ", order: ..." */
typedef u_char *(*ngx_fluxgate_describe_pt)(ngx_fluxgate_op_t *op,
    u_char *buf, size_t len);

/*
 * What an order, a stock update and a queue control share: a life that
 * may outlive its request.  The delivery tie (first: librdkafka's
 * msg_opaque points here), the link to the request (a cleanup in r->pool
 * cuts it when the request goes away for any reason), the deadline timer,
 * whether the client has its answer, and the in-flight count that
 * ngx_fluxgate_op_start() raises and ngx_fluxgate_op_end() lowers.  Its
 * own log, copied from the connection's: each line says what the
 * operation was doing (log.action, set at each step) and which it is (the
 * describe handler), from the client's address on, even once the
 * connection is gone.  Embedded first in each handler's state, so the
 * state is found from the delivery pointer.
 */
struct ngx_fluxgate_op_s {
    ngx_fluxgate_delivery_t      delivery;
    ngx_http_request_t          *request;
    ngx_pool_cleanup_t          *cleanup;
    ngx_event_t                  timer;
    ngx_log_t                    log;
    ngx_fluxgate_describe_pt     describe;
    u_char                       client[NGX_SOCKADDR_STRLEN];
    size_t                       client_len;
    unsigned                     answered:1;
};


/* a per-client key longer than this is hashed (MD5, hex) */
#define NGX_FLUXGATE_CLIENT_MAX           64


/*
 * What an order's request says, checked before anything is allocated
 * (ngx_fluxgate_buyer.c): its body, key, buyer, and ticket or proof
 */
typedef struct {
    ngx_fluxgate_order_req_t    req;
    ngx_str_t                   key;
    ngx_str_t                   product;
    ngx_str_t                   buyer;        /* req's user_id */
    ngx_fluxgate_ticket_t       ticket;
    u_char                      client[NGX_FLUXGATE_CLIENT_MAX];
    size_t                      client_len;
    u_char                      proof;        /* order.lua's: 0, 1, 2 */
    unsigned                    has_ticket:1;
} ngx_fluxgate_buyer_t;


/* per request, in r->pool: what the variables show */
typedef struct {
    ngx_fluxgate_outcome_e       outcome;
    u_char                       order_id[NGX_FLUXGATE_UUID_LEN];
    ngx_str_t                    error_body;  /* replaces nginx's own page */
    u_char                      *product_id;  /* fluxgate_metrics_products */
    size_t                       product_id_len;
    uint64_t                     redis_time;  /* microseconds */
    uint64_t                     kafka_time;
    uint64_t                     started;     /* the body read: monotonic */
    uint64_t                     waited;      /* for a reply, to a deadline */
    unsigned                     has_order_id:1;
    unsigned                     has_started:1;
    unsigned                     has_redis_time:1;
    unsigned                     has_kafka_time:1;
    unsigned                     error_sent:1;
} ngx_fluxgate_ctx_t;


extern ngx_module_t  ngx_fluxgate_module;

/* set when the worker's exit_process runs: no more retries then */
extern ngx_uint_t    ngx_fluxgate_exiting;

/* orders and stock updates whose state is allocated: 0 at a clean exit */
extern ngx_uint_t    ngx_fluxgate_in_flight;

extern ngx_fluxgate_script_t  ngx_fluxgate_script_order;
extern ngx_fluxgate_script_t  ngx_fluxgate_script_release;
extern ngx_fluxgate_script_t  ngx_fluxgate_script_done;
extern ngx_fluxgate_script_t  ngx_fluxgate_script_init;
extern ngx_fluxgate_script_t  ngx_fluxgate_script_queue_head;
extern ngx_fluxgate_script_t  ngx_fluxgate_script_queue_control;


/* ngx_fluxgate_variables.c */
ngx_int_t ngx_fluxgate_add_variables(ngx_conf_t *cf);

/* ngx_fluxgate_http.c: what both handlers share */
ngx_int_t ngx_fluxgate_http_init(ngx_conf_t *cf);
ngx_fluxgate_ctx_t *ngx_fluxgate_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_fluxgate_read_json_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler);
ngx_int_t ngx_fluxgate_request_body(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_fluxgate_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);
ngx_int_t ngx_fluxgate_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_fluxgate_outcome_e outcome, ngx_str_t *body);
ngx_int_t ngx_fluxgate_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *body);
ngx_int_t ngx_fluxgate_send_error(ngx_http_request_t *r, ngx_uint_t status,
    ngx_fluxgate_outcome_e outcome, const char *error, const char *field);
ngx_int_t ngx_fluxgate_send_unavailable(ngx_http_request_t *r,
    const char *error);
ngx_int_t ngx_fluxgate_send_redirect(ngx_http_request_t *r, ngx_str_t *where,
    ngx_uint_t retry_after, ngx_fluxgate_outcome_e outcome, ngx_str_t *body);
ngx_int_t ngx_fluxgate_waiting_room(ngx_http_request_t *r, ngx_str_t *product,
    ngx_str_t *extra, ngx_str_t *where);
void ngx_fluxgate_finalize(ngx_http_request_t *r, ngx_int_t rc);
ngx_int_t ngx_fluxgate_op_start(ngx_fluxgate_op_t *op, ngx_http_request_t *r,
    ngx_fluxgate_describe_pt describe, ngx_fluxgate_delivery_pt delivered,
    ngx_event_handler_pt timeout, void *data);
ngx_http_request_t *ngx_fluxgate_op_answer(ngx_fluxgate_op_t *op);
void ngx_fluxgate_op_fail(ngx_fluxgate_op_t *op, const char *error);
void ngx_fluxgate_op_end(ngx_fluxgate_op_t *op);
ngx_int_t ngx_fluxgate_idempotency_key(ngx_http_request_t *r,
    ngx_str_t *key);
ngx_int_t ngx_fluxgate_single_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value);
uint64_t ngx_fluxgate_now_ms(void);

/* ngx_fluxgate_buyer.c */
char *ngx_fluxgate_user_token(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_fluxgate_queue_per_client(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_fluxgate_buyer_read(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_buyer_t *in);
ngx_int_t ngx_fluxgate_buyer_place(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_fluxgate_buyer_t *in);

/* ngx_fluxgate_order.c, ngx_fluxgate_admin.c */
ngx_int_t ngx_fluxgate_order_handler(ngx_http_request_t *r);
ngx_int_t ngx_fluxgate_admin_handler(ngx_http_request_t *r);

/* ngx_fluxgate_queue.c */
char *ngx_fluxgate_queue_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_fluxgate_secret_file(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *path, ngx_str_t *secret);
ngx_int_t ngx_fluxgate_queue_ticket(ngx_http_request_t *r,
    ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *product, ngx_str_t *buyer,
    ngx_fluxgate_ticket_t *ticket, const char **error);
ngx_int_t ngx_fluxgate_queue_send_place(ngx_http_request_t *r,
    ngx_str_t *product, ngx_str_t *buyer, ngx_fluxgate_ticket_t *ticket,
    int64_t position, int64_t wait_ms, int64_t opens_at);
ngx_int_t ngx_fluxgate_queue_send_challenge(ngx_http_request_t *r,
    ngx_str_t *product, ngx_str_t *buyer);
ngx_int_t ngx_fluxgate_queue_send_refused(ngx_http_request_t *r,
    const char *reason, const char *field);
ngx_int_t ngx_fluxgate_queue_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_fluxgate_queue_get_product(ngx_http_request_t *r,
    ngx_str_t *product, ngx_int_t *rc);

/* ngx_fluxgate_queue_admin.c */
ngx_int_t ngx_fluxgate_queue_stats_handler(ngx_http_request_t *r);
ngx_int_t ngx_fluxgate_queue_control_handler(ngx_http_request_t *r);

/* ngx_fluxgate_ticket.c */
ngx_int_t ngx_fluxgate_ticket_sign(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_str_t *product, ngx_str_t *buyer, ngx_fluxgate_ticket_t *t,
    ngx_str_t *text);
const char *ngx_fluxgate_ticket_verify(ngx_str_t *secret, ngx_str_t *text,
    ngx_str_t *product, ngx_str_t *buyer, ngx_fluxgate_ticket_t *t);
ngx_int_t ngx_fluxgate_challenge_make(ngx_pool_t *pool, ngx_str_t *secret,
    ngx_str_t *product, ngx_str_t *buyer, time_t expires, ngx_str_t *text);
ngx_fluxgate_proof_e ngx_fluxgate_proof_check(ngx_str_t *secret,
    ngx_str_t *proof, ngx_uint_t bits, ngx_str_t *product, ngx_str_t *buyer,
    time_t now, u_char *nonce);

/* ngx_fluxgate_line.c */
char *ngx_fluxgate_queue_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_shm_zone_t *ngx_fluxgate_line_zone(ngx_conf_t *cf, ngx_str_t *name,
    size_t size, ngx_msec_t refresh);
ngx_int_t ngx_fluxgate_line_get(ngx_fluxgate_loc_conf_t *flcf,
    ngx_str_t *product, ngx_uint_t create, ngx_fluxgate_line_t *line);
void ngx_fluxgate_line_touch(ngx_fluxgate_loc_conf_t *flcf,
    ngx_str_t *product);
ngx_int_t ngx_fluxgate_line_parse(redisReply *reply,
    ngx_fluxgate_line_t *line);
int64_t ngx_fluxgate_line_now(ngx_fluxgate_line_t *line);
double ngx_fluxgate_line_head(ngx_fluxgate_line_t *line, int64_t now);
const char *ngx_fluxgate_line_standing(ngx_fluxgate_line_t *line,
    ngx_fluxgate_ticket_t *ticket, ngx_fluxgate_standing_t *st);
ngx_uint_t ngx_fluxgate_line_busy(ngx_fluxgate_loc_conf_t *flcf,
    ngx_str_t *product);
ngx_int_t ngx_fluxgate_line_take_proof(ngx_shm_zone_t *zone, u_char *nonce,
    time_t expires);
ngx_uint_t ngx_fluxgate_line_each(ngx_shm_zone_t *zone,
    ngx_fluxgate_line_t *lines, ngx_str_t *products, u_char *ids,
    ngx_uint_t max);
void ngx_fluxgate_line_sum(ngx_shm_zone_t *zone, ngx_fluxgate_line_t *sum);

/* ngx_fluxgate_redis.c */
ngx_fluxgate_redis_t *ngx_fluxgate_redis_add(ngx_conf_t *cf, ngx_str_t *addr);
ngx_fluxgate_redis_t *ngx_fluxgate_redis_cluster_add(ngx_conf_t *cf,
    ngx_str_t *args, ngx_uint_t nargs);
ngx_fluxgate_redis_t *ngx_fluxgate_redis_node(ngx_fluxgate_redis_t *rds,
    ngx_str_t *key);
void ngx_fluxgate_redis_use(ngx_fluxgate_redis_t *rds);
ngx_int_t ngx_fluxgate_redis_init_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf);
void ngx_fluxgate_redis_exit_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf);
ngx_int_t ngx_fluxgate_redis_eval(ngx_fluxgate_redis_t *rds,
    ngx_fluxgate_script_t *script, ngx_uint_t nkeys, ngx_uint_t nargs,
    ngx_str_t *args, ngx_fluxgate_redis_handler_pt handler, void *data);
ngx_int_t ngx_fluxgate_redis_eval_wait(ngx_fluxgate_redis_t *rds,
    ngx_fluxgate_script_t *script, ngx_uint_t nkeys, ngx_uint_t nargs,
    ngx_str_t *args, ngx_uint_t wait, ngx_msec_t wait_timeout,
    ngx_uint_t codes, ngx_fluxgate_redis_handler_pt handler, void *data);
ngx_int_t ngx_fluxgate_redis_command(ngx_fluxgate_redis_t *rds,
    ngx_uint_t nargs, ngx_str_t *args, ngx_fluxgate_redis_handler_pt handler,
    void *data);
ngx_int_t ngx_fluxgate_redis_ready(ngx_fluxgate_redis_t *rds);
void ngx_fluxgate_args_str(ngx_fluxgate_args_t *a, ngx_str_t *s);
void ngx_fluxgate_args_text(ngx_fluxgate_args_t *a, u_char *data,
    size_t len);
void ngx_fluxgate_args_int(ngx_fluxgate_args_t *a, int64_t v);
ngx_uint_t ngx_fluxgate_redis_up(ngx_fluxgate_redis_t *rds);
ngx_uint_t ngx_fluxgate_redis_all_up(ngx_fluxgate_main_conf_t *fmcf);
void ngx_fluxgate_redis_timed_out(ngx_fluxgate_redis_t *rds);
void ngx_fluxgate_redis_on_change(ngx_fluxgate_changed_pt handler);
const char *ngx_fluxgate_redis_refusal(redisReply *reply);
ngx_uint_t ngx_fluxgate_redis_error_is(redisReply *reply, const char *code);
ngx_uint_t ngx_fluxgate_redis_not_run(redisReply *reply);

/* ngx_fluxgate_kafka.c */
char *ngx_fluxgate_kafka_option(ngx_conf_t *cf, ngx_fluxgate_main_conf_t *fmcf,
    ngx_str_t *name, ngx_str_t *value);
char *ngx_fluxgate_kafka_init_conf(ngx_conf_t *cf,
    ngx_fluxgate_main_conf_t *fmcf);
ngx_int_t ngx_fluxgate_kafka_init_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf);
void ngx_fluxgate_kafka_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_fluxgate_kafka_ready(void);
ngx_uint_t ngx_fluxgate_kafka_up(void);
ngx_uint_t ngx_fluxgate_kafka_queue_len(void);
void ngx_fluxgate_kafka_on_change(ngx_fluxgate_changed_pt handler);
ngx_int_t ngx_fluxgate_kafka_produce(ngx_str_t *key, ngx_str_t *value,
    ngx_fluxgate_delivery_t *dlv);

/* ngx_fluxgate_kafka_health.c */
typedef enum {
    NGX_FLUXGATE_TOPIC_UNKNOWN = 0,       /* not asked yet */
    NGX_FLUXGATE_TOPIC_OK,
    NGX_FLUXGATE_TOPIC_BAD
} ngx_fluxgate_topic_e;

ngx_int_t ngx_fluxgate_kafka_health_start(ngx_cycle_t *cycle, rd_kafka_t *rk,
    rd_kafka_topic_t *rkt, ngx_fluxgate_changed_pt checked);
void ngx_fluxgate_kafka_health_stop(void);
void ngx_fluxgate_kafka_health_use(rd_kafka_t *rk, rd_kafka_topic_t *rkt);
ngx_uint_t ngx_fluxgate_kafka_health_busy(void);
ngx_fluxgate_topic_e ngx_fluxgate_kafka_topic_state(void);

/* ngx_fluxgate_sold_out.c */
ngx_shm_zone_t *ngx_fluxgate_sold_out_zone(ngx_conf_t *cf);
ngx_int_t ngx_fluxgate_sold_out_test(ngx_shm_zone_t *shm_zone, u_char *id,
    size_t len);
void ngx_fluxgate_sold_out_set(ngx_shm_zone_t *shm_zone, u_char *id,
    size_t len, ngx_msec_t valid);
void ngx_fluxgate_sold_out_clear(ngx_shm_zone_t *shm_zone, u_char *id,
    size_t len);

/* ngx_fluxgate_metrics.c */
ngx_shm_zone_t *ngx_fluxgate_metrics_zone(ngx_conf_t *cf,
    ngx_uint_t products);
char *ngx_fluxgate_metrics_products(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_fluxgate_metrics_init_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf);
void ngx_fluxgate_metrics_exit_process(ngx_cycle_t *cycle);
void ngx_fluxgate_metrics_outcome(ngx_http_request_t *r,
    ngx_fluxgate_ctx_t *ctx, ngx_fluxgate_outcome_e outcome);
void ngx_fluxgate_metrics_count(ngx_fluxgate_metric_e metric);
void ngx_fluxgate_metrics_observe(ngx_fluxgate_histogram_e histogram,
    uint64_t usec);
uint64_t ngx_fluxgate_metrics_clock(void);
void ngx_fluxgate_metrics_in_flight(void);
void ngx_fluxgate_metrics_state(void);
ngx_int_t ngx_fluxgate_metrics_text(ngx_pool_t *pool, ngx_str_t *text);

/* ngx_fluxgate_health.c */
ngx_int_t ngx_fluxgate_metrics_handler(ngx_http_request_t *r);
ngx_int_t ngx_fluxgate_health_handler(ngx_http_request_t *r);

/* ngx_fluxgate_uuid.c */
void ngx_fluxgate_uuid7(u_char *dst, uint64_t now_ms);


#endif /* _NGX_FLUXGATE_H_INCLUDED_ */
