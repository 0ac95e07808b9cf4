
/*
 * Flux-Gate: the module itself.  Directives and their merging, and the
 * per-process start and stop of the Redis connections and the Kafka
 * producer (the $fluxgate_* variables: ngx_fluxgate_variables.c).
 */


#include "ngx_fluxgate.h"


static void *ngx_fluxgate_create_main_conf(ngx_conf_t *cf);
static char *ngx_fluxgate_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_fluxgate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_fluxgate_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_fluxgate_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fluxgate_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fluxgate_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fluxgate_kafka_option_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_fluxgate_threshold(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fluxgate_sold_out_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_fluxgate_merge_queue(ngx_conf_t *cf,
    ngx_fluxgate_loc_conf_t *prev, ngx_fluxgate_loc_conf_t *conf);
static char *ngx_fluxgate_positive(ngx_conf_t *cf, void *post, void *data);
static char *ngx_fluxgate_positive_msec(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_fluxgate_init_process(ngx_cycle_t *cycle);
static void ngx_fluxgate_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_handler_pt  ngx_fluxgate_positive_p =
    ngx_fluxgate_positive;
static ngx_conf_post_handler_pt  ngx_fluxgate_positive_msec_p =
    ngx_fluxgate_positive_msec;

/* a phone-class browser takes about a second at 18 bits (README) */
static ngx_conf_num_bounds_t  ngx_fluxgate_pow_bounds = {
    ngx_conf_check_num_bounds, 0, 32
};


static ngx_command_t  ngx_fluxgate_commands[] = {

    { ngx_string("fluxgate_order"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_ORDER,
      NULL },

    { ngx_string("fluxgate_stock_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_ADMIN,
      NULL },

    { ngx_string("fluxgate_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_HEALTH,
      NULL },

    { ngx_string("fluxgate_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_METRICS,
      NULL },

    { ngx_string("fluxgate_queue_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_QUEUE_STATUS,
      NULL },

    { ngx_string("fluxgate_queue_stats"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_QUEUE_STATS,
      NULL },

    { ngx_string("fluxgate_queue_control"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_fluxgate_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_FLUXGATE_HANDLER_QUEUE_CONTROL,
      NULL },

    /* fluxgate_queue_zone zone=name:size [refresh=time]: the lines */
    { ngx_string("fluxgate_queue_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_fluxgate_queue_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fluxgate_metrics_products"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_fluxgate_metrics_products,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    /* host:port, unix:/path, or cluster host:port [host:port ...] */
    { ngx_string("fluxgate_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_fluxgate_redis,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    /* fluxgate_redis_wait replicas timeout: WAIT after a reservation */
    { ngx_string("fluxgate_redis_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_fluxgate_redis_wait,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fluxgate_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, redis_timeout),
      &ngx_fluxgate_positive_msec_p },

    { ngx_string("fluxgate_kafka_brokers"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fluxgate_main_conf_t, brokers),
      NULL },

    { ngx_string("fluxgate_kafka_topic"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_fluxgate_main_conf_t, topic),
      NULL },

    { ngx_string("fluxgate_kafka_option"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_fluxgate_kafka_option_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fluxgate_threshold"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_fluxgate_threshold,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fluxgate_waiting_room"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, waiting_room),
      NULL },

    { ngx_string("fluxgate_idempotency_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, idempotency_ttl),
      &ngx_fluxgate_positive_msec_p },

    { ngx_string("fluxgate_max_quantity"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, max_quantity),
      &ngx_fluxgate_positive_p },

    { ngx_string("fluxgate_per_user_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, per_user_limit),
      NULL },

    { ngx_string("fluxgate_sold_out_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_fluxgate_sold_out_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fluxgate_queue_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_fluxgate_queue_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("fluxgate_queue_window"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, queue_window),
      &ngx_fluxgate_positive_msec_p },

    { ngx_string("fluxgate_queue_ticket_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, queue_ticket_ttl),
      &ngx_fluxgate_positive_msec_p },

    /* fluxgate_queue_pow bits: a proof of work before a place, 0: off */
    { ngx_string("fluxgate_queue_pow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_fluxgate_loc_conf_t, queue_pow),
      &ngx_fluxgate_pow_bounds },

    /* fluxgate_queue_per_client N [key=$variable]: live places per client */
    { ngx_string("fluxgate_queue_per_client"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_fluxgate_queue_per_client,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    /* fluxgate_user_token $variable secret=<file> [required] | off */
    { ngx_string("fluxgate_user_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_fluxgate_user_token,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_fluxgate_module_ctx = {
    ngx_fluxgate_add_variables,            /* preconfiguration */
    ngx_fluxgate_http_init,                /* postconfiguration */

    ngx_fluxgate_create_main_conf,         /* create main configuration */
    ngx_fluxgate_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_fluxgate_create_loc_conf,          /* create location configuration */
    ngx_fluxgate_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_fluxgate_module = {
    NGX_MODULE_V1,
    &ngx_fluxgate_module_ctx,              /* module context */
    ngx_fluxgate_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_fluxgate_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_fluxgate_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};






ngx_uint_t  ngx_fluxgate_exiting;
ngx_uint_t  ngx_fluxgate_in_flight;


/* configuration */

static void *
ngx_fluxgate_create_main_conf(ngx_conf_t *cf)
{
    ngx_fluxgate_main_conf_t  *fmcf;

    fmcf = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_main_conf_t));
    if (fmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     fmcf->brokers = { 0, NULL };
     *     fmcf->topic = { 0, NULL };
     *     fmcf->kafka_conf = NULL;
     *     fmcf->sold_out = NULL;
     *     fmcf->metrics = NULL;
     *     fmcf->metrics_locations = 0;
     *     fmcf->handlers = 0;
     */

    fmcf->metrics_products = NGX_CONF_UNSET_UINT;

    if (ngx_array_init(&fmcf->redis, cf->pool, 2,
                       sizeof(ngx_fluxgate_redis_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return fmcf;
}


static char *
ngx_fluxgate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_fluxgate_main_conf_t *fmcf = conf;

    if (fmcf->topic.len == 0) {
        ngx_str_set(&fmcf->topic, "orders");
    }

    ngx_conf_init_uint_value(fmcf->metrics_products, 0);

    /* nothing is counted unless a location serves the counts */

    if (fmcf->metrics_locations) {
        fmcf->metrics = ngx_fluxgate_metrics_zone(cf, fmcf->metrics_products);
        if (fmcf->metrics == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (fmcf->handlers && fmcf->brokers.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"fluxgate_order\" and \"fluxgate_stock_admin\" need "
                      "\"fluxgate_kafka_brokers\" in the http block "
                      "(first used in %V:%ui)",
                      &fmcf->handler_file, fmcf->handler_line);
        return NGX_CONF_ERROR;
    }

    return ngx_fluxgate_kafka_init_conf(cf, fmcf);
}


static void *
ngx_fluxgate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_fluxgate_loc_conf_t  *flcf;

    flcf = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_loc_conf_t));
    if (flcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     flcf->handler = NGX_FLUXGATE_HANDLER_NONE;
     *     flcf->waiting_room = { 0, NULL };
     *     flcf->queue_secret = { 0, NULL };
     *     flcf->queue_zone = NULL;
     *     flcf->queue_client_key = NULL;
     *     flcf->user_secret = { 0, NULL };
     */

    flcf->redis = NGX_CONF_UNSET_PTR;
    flcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    flcf->redis_wait = NGX_CONF_UNSET_UINT;
    flcf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    flcf->rate = NGX_CONF_UNSET_UINT;
    flcf->burst = NGX_CONF_UNSET_UINT;
    flcf->idempotency_ttl = NGX_CONF_UNSET_MSEC;
    flcf->max_quantity = NGX_CONF_UNSET_UINT;
    flcf->per_user_limit = NGX_CONF_UNSET_UINT;
    flcf->sold_out_cache = NGX_CONF_UNSET_MSEC;
    flcf->queue_window = NGX_CONF_UNSET_MSEC;
    flcf->queue_ticket_ttl = NGX_CONF_UNSET_MSEC;
    flcf->queue_pow = NGX_CONF_UNSET_UINT;
    flcf->queue_per_client = NGX_CONF_UNSET_UINT;
    flcf->user_token = NGX_CONF_UNSET_PTR;
    flcf->user_required = NGX_CONF_UNSET;

    return flcf;
}


static char *
ngx_fluxgate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_fluxgate_loc_conf_t *prev = parent;
    ngx_fluxgate_loc_conf_t *conf = child;

    ngx_str_t                  addr;
    ngx_fluxgate_main_conf_t  *fmcf;

    ngx_conf_merge_ptr_value(conf->redis, prev->redis, NULL);
    ngx_conf_merge_msec_value(conf->redis_timeout, prev->redis_timeout, 200);
    ngx_conf_merge_uint_value(conf->redis_wait, prev->redis_wait, 0);
    ngx_conf_merge_msec_value(conf->redis_wait_timeout,
                              prev->redis_wait_timeout, 0);

    /*
     * WAIT holds the reply: a WAIT timeout at or past the deadline turns
     * every missing replica into a 503 of unknown outcome instead of a
     * known "fewer replicas" (and the reservation released at once)
     */

    if (conf->redis_wait
        && conf->redis_wait_timeout >= conf->redis_timeout)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fluxgate_redis_wait\" timeout %Mms must be "
                           "shorter than \"fluxgate_redis_timeout\" %Mms",
                           conf->redis_wait_timeout, conf->redis_timeout);
        return NGX_CONF_ERROR;
    }

    if (conf->rate == NGX_CONF_UNSET_UINT) {
        conf->rate = (prev->rate == NGX_CONF_UNSET_UINT) ? 0 : prev->rate;
        conf->burst = (prev->burst == NGX_CONF_UNSET_UINT) ? 0 : prev->burst;
    }

    ngx_conf_merge_str_value(conf->waiting_room, prev->waiting_room,
                             "/waiting-room/");
    ngx_conf_merge_msec_value(conf->idempotency_ttl, prev->idempotency_ttl,
                              60000);
    ngx_conf_merge_uint_value(conf->max_quantity, prev->max_quantity, 10);
    ngx_conf_merge_uint_value(conf->per_user_limit, prev->per_user_limit, 0);
    ngx_conf_merge_msec_value(conf->sold_out_cache, prev->sold_out_cache, 0);

    if (ngx_fluxgate_merge_queue(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->handler == NGX_FLUXGATE_HANDLER_NONE
        || conf->handler == NGX_FLUXGATE_HANDLER_METRICS)
    {
        return NGX_CONF_OK;
    }

    /*
     * A client told 503 when Kafka's delivery report came too late retries
     * after message.timeout.ms and the finishing grace at the most: its key
     * must still replay then, or the retry would become a second order.
     * (The main configuration is complete here: init_main_conf ran.)
     */

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fluxgate_module);

    if (conf->idempotency_ttl
        < fmcf->kafka_timeout + NGX_FLUXGATE_FINISH_GRACE)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fluxgate_idempotency_ttl\" %Mms is shorter "
                           "than the kafka delivery timeout "
                           "(message.timeout.ms %Mms) plus the %Mms the "
                           "gate may take to finish an order: a retried "
                           "order could be sold twice; make it at least "
                           "%Mms",
                           conf->idempotency_ttl, fmcf->kafka_timeout,
                           (ngx_msec_t) NGX_FLUXGATE_FINISH_GRACE,
                           fmcf->kafka_timeout + NGX_FLUXGATE_FINISH_GRACE);
        return NGX_CONF_ERROR;
    }

    /* only the addresses a handler uses get a connection in the workers */

    if (conf->redis == NULL) {
        ngx_str_set(&addr, NGX_FLUXGATE_REDIS_DEFAULT);

        conf->redis = ngx_fluxgate_redis_add(cf, &addr);
        if (conf->redis == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ngx_fluxgate_redis_use(conf->redis);

    return NGX_CONF_OK;
}


/* the waiting room's directives, merged and checked together */

static char *
ngx_fluxgate_merge_queue(ngx_conf_t *cf, ngx_fluxgate_loc_conf_t *prev,
    ngx_fluxgate_loc_conf_t *conf)
{
    ngx_fluxgate_main_conf_t  *fmcf;

    if (conf->queue_secret.data == NULL) {
        conf->queue_secret = prev->queue_secret;
    }

    ngx_conf_merge_msec_value(conf->queue_window, prev->queue_window, 30000);
    ngx_conf_merge_msec_value(conf->queue_ticket_ttl, prev->queue_ticket_ttl,
                              3600000);
    ngx_conf_merge_uint_value(conf->queue_pow, prev->queue_pow, 0);

    if (conf->queue_per_client == NGX_CONF_UNSET_UINT) {
        conf->queue_per_client = (prev->queue_per_client
                                  == NGX_CONF_UNSET_UINT)
                                 ? 0 : prev->queue_per_client;
        conf->queue_client_key = prev->queue_client_key;
    }

    ngx_conf_merge_ptr_value(conf->user_token, prev->user_token, NULL);

    if (conf->user_secret.data == NULL) {
        conf->user_secret = prev->user_secret;
    }

    ngx_conf_merge_value(conf->user_required, prev->user_required, 0);

    if (conf->queue_ticket_ttl <= conf->queue_window) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fluxgate_queue_ticket_ttl\" %Mms must be "
                           "longer than \"fluxgate_queue_window\" %Mms: "
                           "a ticket would end before its turn",
                           conf->queue_ticket_ttl, conf->queue_window);
        return NGX_CONF_ERROR;
    }

    /*
     * A ticket is spent by the order it admits, whose key replays that
     * order; the key must outlive the ticket's use, or the same key could
     * spend it again as a new order
     */

    if (conf->queue_secret.data != NULL
        && conf->handler == NGX_FLUXGATE_HANDLER_ORDER
        && conf->idempotency_ttl < conf->queue_window)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fluxgate_idempotency_ttl\" %Mms is shorter "
                           "than \"fluxgate_queue_window\" %Mms: a ticket "
                           "would outlive the key that spent it",
                           conf->idempotency_ttl, conf->queue_window);
        return NGX_CONF_ERROR;
    }

    if (conf->queue_secret.data == NULL
        && (conf->handler == NGX_FLUXGATE_HANDLER_QUEUE_STATUS
            || (conf->handler == NGX_FLUXGATE_HANDLER_ORDER
                && (conf->queue_pow || conf->queue_per_client))))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s needs \"fluxgate_queue_secret\" to sign "
                           "tickets and challenges",
                           conf->handler == NGX_FLUXGATE_HANDLER_QUEUE_STATUS
                           ? "\"fluxgate_queue_status\""
                           : "\"fluxgate_queue_pow\" or "
                             "\"fluxgate_queue_per_client\"");
        return NGX_CONF_ERROR;
    }

    /* the lines' zone: the one configured, or a default of 1m */

    if (conf->queue_secret.data != NULL
        || conf->handler == NGX_FLUXGATE_HANDLER_QUEUE_STATS)
    {
        fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fluxgate_module);

        if (fmcf->queue_zone == NULL) {
            fmcf->queue_zone = ngx_fluxgate_line_zone(cf, NULL, 0, 0);
            if (fmcf->queue_zone == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        conf->queue_zone = fmcf->queue_zone;
    }

    return NGX_CONF_OK;
}


static char *
ngx_fluxgate_set_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_http_core_loc_conf_t  *clcf;
    ngx_fluxgate_main_conf_t  *fmcf;

    if (flcf->handler != NGX_FLUXGATE_HANDLER_NONE) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /* the command's offset says which handler it installs */

    flcf->handler = cmd->offset;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fluxgate_module);

    switch (cmd->offset) {

    case NGX_FLUXGATE_HANDLER_ORDER:
        clcf->handler = ngx_fluxgate_order_handler;
        break;

    case NGX_FLUXGATE_HANDLER_ADMIN:
        clcf->handler = ngx_fluxgate_admin_handler;
        break;

    case NGX_FLUXGATE_HANDLER_HEALTH:
        clcf->handler = ngx_fluxgate_health_handler;
        break;

    case NGX_FLUXGATE_HANDLER_QUEUE_STATUS:
        clcf->handler = ngx_fluxgate_queue_status_handler;
        break;

    case NGX_FLUXGATE_HANDLER_QUEUE_STATS:
        clcf->handler = ngx_fluxgate_queue_stats_handler;
        break;

    case NGX_FLUXGATE_HANDLER_QUEUE_CONTROL:
        clcf->handler = ngx_fluxgate_queue_control_handler;
        break;

    default: /* NGX_FLUXGATE_HANDLER_METRICS */
        clcf->handler = ngx_fluxgate_metrics_handler;

        /* it needs neither Redis nor Kafka */
        fmcf->metrics_locations++;
        return NGX_CONF_OK;
    }

    if (fmcf->handlers++ == 0) {
        fmcf->handler_file = cf->conf_file->file.name;
        fmcf->handler_line = cf->conf_file->line;
    }

    return NGX_CONF_OK;
}


static char *
ngx_fluxgate_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_str_t  *value;

    if (flcf->redis != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == sizeof("cluster") - 1
        && ngx_strncmp(value[1].data, "cluster", value[1].len) == 0)
    {
        if (cf->args->nelts < 3) {
            return "takes one address, or \"cluster\" and one or more";
        }

        flcf->redis = ngx_fluxgate_redis_cluster_add(cf, &value[2],
                                                     cf->args->nelts - 2);

    } else if (cf->args->nelts == 2) {
        flcf->redis = ngx_fluxgate_redis_add(cf, &value[1]);

    } else {
        return "takes one address, or \"cluster\" and one or more";
    }

    if (flcf->redis == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * fluxgate_redis_wait N timeout: "off" or N = 0 turns it off.  The
 * timeout is WAIT's own, in milliseconds; an order whose WAIT is still
 * out when fluxgate_redis_timeout passes gets 503 like any other late one.
 */

static char *
ngx_fluxgate_redis_wait(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_int_t   n;
    ngx_msec_t  t;
    ngx_str_t  *value;

    if (flcf->redis_wait != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR) {
        return "wants a number of replicas";
    }

    t = ngx_parse_time(&value[2], 0);
    if (t == (ngx_msec_t) NGX_ERROR || (n > 0 && t == 0)) {
        return "wants a positive timeout";
    }

    flcf->redis_wait = n;
    flcf->redis_wait_timeout = t;

    return NGX_CONF_OK;
}


static char *
ngx_fluxgate_kafka_option_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_fluxgate_main_conf_t *fmcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    return ngx_fluxgate_kafka_option(cf, fmcf, &value[1], &value[2]);
}


static char *
ngx_fluxgate_threshold(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_int_t   rate, burst;
    ngx_str_t  *value;

    if (flcf->rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        rate = 0;

    } else {
        rate = ngx_atoi(value[1].data, value[1].len);
        if (rate == NGX_ERROR || rate > 1000000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\" directive",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    burst = 0;

    if (cf->args->nelts == 3) {
        if (rate == 0
            || ngx_strncmp(value[2].data, "burst=", 6) != 0
            || (burst = ngx_atoi(value[2].data + 6, value[2].len - 6))
               == NGX_ERROR
            || burst > 1000000)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in \"%V\" directive",
                               &value[2], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    flcf->rate = rate;
    flcf->burst = burst;

    return NGX_CONF_OK;
}


static char *
ngx_fluxgate_sold_out_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_loc_conf_t *flcf = conf;

    ngx_int_t                  valid;
    ngx_str_t                 *value;
    ngx_fluxgate_main_conf_t  *fmcf;

    if (flcf->sold_out_cache != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        flcf->sold_out_cache = 0;
        return NGX_CONF_OK;
    }

    valid = ngx_parse_time(&value[1], 0);

    if (valid == NGX_ERROR || valid == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    flcf->sold_out_cache = (ngx_msec_t) valid;

    /* one zone for every location: the admin handler clears it too */

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fluxgate_module);

    if (fmcf->sold_out == NULL) {
        fmcf->sold_out = ngx_fluxgate_sold_out_zone(cf);
        if (fmcf->sold_out == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_fluxgate_positive(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *np = data;

    if (*np == 0) {
        return "must be positive";
    }

    return NGX_CONF_OK;
}


static char *
ngx_fluxgate_positive_msec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *mp = data;

    if (*mp == 0) {
        return "must be positive";
    }

    return NGX_CONF_OK;
}


/* worker processes */

static ngx_int_t
ngx_fluxgate_init_process(ngx_cycle_t *cycle)
{
    ngx_fluxgate_main_conf_t  *fmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_fluxgate_module);

    if (fmcf == NULL) {
        return NGX_OK;
    }

    ngx_fluxgate_metrics_init_process(cycle, fmcf);

    if (fmcf->handlers == 0) {
        return NGX_OK;
    }

    /* Redis and Kafka say when their state changes; the gauges follow */
    ngx_fluxgate_redis_on_change(ngx_fluxgate_metrics_state);
    ngx_fluxgate_kafka_on_change(ngx_fluxgate_metrics_state);

    if (ngx_fluxgate_kafka_init_process(cycle, fmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_fluxgate_redis_init_process(cycle, fmcf);
}


static void
ngx_fluxgate_exit_process(ngx_cycle_t *cycle)
{
    ngx_fluxgate_main_conf_t  *fmcf;

    fmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_fluxgate_module);

    if (fmcf == NULL) {
        return;
    }

    if (fmcf->handlers == 0) {
        ngx_fluxgate_metrics_exit_process(cycle);
        return;
    }

    ngx_fluxgate_exiting = 1;

    /*
     * Kafka first: flushing it runs the delivery reports, which queue the
     * last "done" and "release" scripts that the Redis exit then writes.
     */

    ngx_fluxgate_kafka_exit_process(cycle);
    ngx_fluxgate_redis_exit_process(cycle, fmcf);

    ngx_fluxgate_metrics_exit_process(cycle);

    if (ngx_fluxgate_in_flight) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "fluxgate: %ui orders or stock updates unfinished "
                      "at exit", ngx_fluxgate_in_flight);
    }
}
