
/*
 * Flux-Gate: what the gate tells Prometheus and a load balancer.
 *
 * The counts of all worker processes live in one shared memory zone,
 * "fluxgate_metrics", made when a location has fluxgate_metrics; without
 * one there is no zone and nothing is counted.
 *
 * Each process owns the slot ngx_process_slot of an array in the zone, one
 * cache line aligned slot per process, and is its only writer: the hot path
 * adds to its own slot's counters and histograms with plain stores, no lock
 * prefix, no cache line shared with another process.  The master gives a
 * slot number to one live process at a time, so a process that takes over
 * the slot of one that exited simply goes on adding to its totals: a scrape
 * sums the counters of every slot ever used, and they survive a reload (the
 * zone is kept when its size is the same, fluxgate_metrics_products
 * unchanged) and a worker's crash alike.
 *
 * The gauges in a slot are the process's own: its in-flight count, stored
 * as it changes, and whether its Redis connections and Kafka producer are
 * up and its producer queue depth, once a second.  A scrape sums (or, for
 * "up", takes the minimum over) the slots of the processes still alive.
 *
 * Per-product counts (opt-in) are shared by all processes and added to with
 * ngx_atomic_fetch_add().
 *
 * The text of a scrape is made here; ngx_fluxgate_health.c serves it.
 */


#include "ngx_fluxgate.h"


#define NGX_FLUXGATE_METRICS_BOUNDS    13
#define NGX_FLUXGATE_METRICS_PRODUCTS_MAX  10000
#define NGX_FLUXGATE_METRICS_REFRESH   1000


/* the sum first: in one cache line with the usual buckets */
typedef struct {
    ngx_atomic_t                 sum;         /* microseconds */
    /* not cumulative; the last one is +Inf */
    ngx_atomic_t                 bucket[NGX_FLUXGATE_METRICS_BOUNDS + 1];
} ngx_fluxgate_histogram_t;


/* only ever added to; all ngx_atomic_t, summed as an array by a scrape */
typedef struct {
    ngx_atomic_t                 orders[NGX_FLUXGATE_OUTCOMES];
    ngx_atomic_t                 stock_updates[NGX_FLUXGATE_OUTCOMES];
    ngx_atomic_t                 counters[NGX_FLUXGATE_METRIC_LAST];
    ngx_fluxgate_histogram_t     histograms[NGX_FLUXGATE_HISTOGRAM_LAST];
} ngx_fluxgate_metrics_counts_t;


/* written by one process only, the one with ngx_process_slot */
typedef struct {
    ngx_atomic_t                 pid;         /* 0: free */
    ngx_atomic_t                 in_flight;
    ngx_atomic_t                 kafka_queue;
    ngx_atomic_t                 redis_up;
    ngx_atomic_t                 kafka_up;
    ngx_atomic_t                 serving;     /* has Redis and Kafka */

    /* cumulative over every process that had this slot */
    ngx_fluxgate_metrics_counts_t  counts;
} ngx_fluxgate_metrics_slot_t;


typedef struct {
    uint32_t                     hash;
    ngx_atomic_t                 len;         /* 0: not yet published */
    u_char                       id[NGX_FLUXGATE_ID_MAX];
    ngx_atomic_t                 orders[NGX_FLUXGATE_OUTCOMES];
} ngx_fluxgate_metrics_product_t;


/*
 * The zone: this header, then NGX_MAX_PROCESSES slots of
 * NGX_FLUXGATE_METRICS_SLOT bytes each from NGX_FLUXGATE_METRICS_SLOTS on,
 * then max_products products.
 */

typedef struct {
    ngx_atomic_t                 nslots;      /* slots ever used */
    ngx_atomic_t                 nproducts;   /* published entries */
    ngx_uint_t                   max_products;
    ngx_atomic_t                 products_overflow;
} ngx_fluxgate_metrics_sh_t;


#define NGX_FLUXGATE_METRICS_SLOTS                                            \
    ngx_align(sizeof(ngx_fluxgate_metrics_sh_t), NGX_CPU_CACHE_LINE)

#define NGX_FLUXGATE_METRICS_SLOT                                             \
    ngx_align(sizeof(ngx_fluxgate_metrics_slot_t), NGX_CPU_CACHE_LINE)

#define NGX_FLUXGATE_METRICS_PRODUCTS                                         \
    (NGX_FLUXGATE_METRICS_SLOTS + NGX_MAX_PROCESSES * NGX_FLUXGATE_METRICS_SLOT)

#define ngx_fluxgate_metrics_slot_at(sh, i)                                   \
    ((ngx_fluxgate_metrics_slot_t *) ((u_char *) (sh)                         \
        + NGX_FLUXGATE_METRICS_SLOTS + (i) * NGX_FLUXGATE_METRICS_SLOT))

#define ngx_fluxgate_metrics_product_at(sh, i)                                \
    ((ngx_fluxgate_metrics_product_t *) ((u_char *) (sh)                      \
        + NGX_FLUXGATE_METRICS_PRODUCTS                                       \
        + (i) * sizeof(ngx_fluxgate_metrics_product_t)))


typedef struct {
    ngx_fluxgate_metrics_sh_t   *sh;
    ngx_slab_pool_t             *shpool;
    ngx_uint_t                   max_products;
} ngx_fluxgate_metrics_ctx_t;


static ngx_int_t ngx_fluxgate_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_fluxgate_metrics_product(ngx_fluxgate_ctx_t *ctx,
    ngx_fluxgate_outcome_e outcome);
static void ngx_fluxgate_metrics_refresh(ngx_event_t *ev);
static ngx_int_t ngx_fluxgate_metrics_alive(ngx_fluxgate_metrics_slot_t *s);
static void ngx_fluxgate_metrics_sum(ngx_fluxgate_metrics_sh_t *sh,
    ngx_fluxgate_metrics_counts_t *total);
static u_char *ngx_fluxgate_metrics_counters(u_char *p, u_char *last,
    ngx_fluxgate_metrics_counts_t *c);
static u_char *ngx_fluxgate_metrics_histogram(u_char *p, u_char *last,
    const char *name, const char *help, ngx_fluxgate_histogram_t *h);
static u_char *ngx_fluxgate_metrics_gauges(u_char *p, u_char *last,
    ngx_fluxgate_metrics_sh_t *sh);
static u_char *ngx_fluxgate_metrics_products_text(u_char *p, u_char *last,
    ngx_fluxgate_metrics_sh_t *sh);
static u_char *ngx_fluxgate_metrics_queue(ngx_pool_t *pool, u_char *p,
    u_char *last, ngx_fluxgate_metrics_counts_t *c);


static ngx_str_t  ngx_fluxgate_metrics_zone_name =
    ngx_string("fluxgate_metrics");

/* 0.5 ms .. 5 s */
static ngx_uint_t  ngx_fluxgate_metrics_bounds[NGX_FLUXGATE_METRICS_BOUNDS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000
};

static char  *ngx_fluxgate_metrics_le[NGX_FLUXGATE_METRICS_BOUNDS + 1] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "+Inf"
};

/*
 * $fluxgate_outcome's values, in the order of ngx_fluxgate_outcome_e: the
 * one table of them (the variable shows them, the counters are named so)
 */
ngx_str_t  ngx_fluxgate_outcome_names[NGX_FLUXGATE_OUTCOMES] = {
    ngx_null_string,
    ngx_string("accepted"),
    ngx_string("duplicate"),
    ngx_string("in_progress"),
    ngx_string("redirected"),
    ngx_string("sold_out"),
    ngx_string("limit_reached"),
    ngx_string("invalid"),
    ngx_string("error"),
    ngx_string("unknown_product"),
    ngx_string("challenged"),
    ngx_string("refused")
};


/* this process's view: NULL when no location serves fluxgate_metrics */
static ngx_fluxgate_metrics_sh_t    *ngx_fluxgate_metrics_sh;
static ngx_fluxgate_metrics_ctx_t   *ngx_fluxgate_metrics_zctx;
static ngx_fluxgate_metrics_slot_t  *ngx_fluxgate_metrics_slot;
static ngx_fluxgate_metrics_counts_t  *ngx_fluxgate_metrics_mine;
static ngx_fluxgate_main_conf_t     *ngx_fluxgate_metrics_fmcf;
static ngx_event_t                   ngx_fluxgate_metrics_timer;




/* configuration */

ngx_shm_zone_t *
ngx_fluxgate_metrics_zone(ngx_conf_t *cf, ngx_uint_t products)
{
    size_t                       size;
    ngx_shm_zone_t              *shm_zone;
    ngx_fluxgate_metrics_ctx_t  *ctx;

    size = NGX_FLUXGATE_METRICS_PRODUCTS
           + products * sizeof(ngx_fluxgate_metrics_product_t);

    /* the slab pool's own pages and headers */
    size = ngx_align(size, ngx_pagesize) + 8 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &ngx_fluxgate_metrics_zone_name,
                                     size, &ngx_fluxgate_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        return shm_zone;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_metrics_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->max_products = products;

    shm_zone->init = ngx_fluxgate_metrics_init_zone;
    shm_zone->data = ctx;

    return shm_zone;
}


char *
ngx_fluxgate_metrics_products(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_main_conf_t *fmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (fmcf->metrics_products != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);

    if (n == NGX_ERROR || n > NGX_FLUXGATE_METRICS_PRODUCTS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be 0 .. %d", &value[1], &cmd->name,
                           NGX_FLUXGATE_METRICS_PRODUCTS_MAX);
        return NGX_CONF_ERROR;
    }

    fmcf->metrics_products = n;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_fluxgate_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_fluxgate_metrics_ctx_t  *octx = data;

    size_t                       size;
    ngx_fluxgate_metrics_ctx_t  *ctx;

    ctx = shm_zone->data;

    /* a reload keeps the counts: same size, same tag */

    if (octx) {
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    size = NGX_FLUXGATE_METRICS_PRODUCTS
           + ctx->max_products * sizeof(ngx_fluxgate_metrics_product_t);

    ctx->sh = ngx_slab_calloc(ctx->shpool, size);
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->sh->max_products = ctx->max_products;
    ctx->shpool->data = ctx->sh;

    return NGX_OK;
}


/* the hot path: this process's own slot, plain stores */

void
ngx_fluxgate_metrics_outcome(ngx_http_request_t *r, ngx_fluxgate_ctx_t *ctx,
    ngx_fluxgate_outcome_e outcome)
{
    ngx_fluxgate_loc_conf_t        *flcf;
    ngx_fluxgate_metrics_counts_t  *c;

    c = ngx_fluxgate_metrics_mine;

    if (c == NULL || outcome >= NGX_FLUXGATE_OUTCOMES) {
        return;
    }

    flcf = ngx_http_get_module_loc_conf(r, ngx_fluxgate_module);

    if (flcf->handler == NGX_FLUXGATE_HANDLER_ADMIN) {
        c->stock_updates[outcome]++;
        return;
    }

    /* a waiting room's poll is not an order */
    if (flcf->handler == NGX_FLUXGATE_HANDLER_QUEUE_STATUS) {
        return;
    }

    c->orders[outcome]++;

    if (ctx->product_id_len) {
        ngx_fluxgate_metrics_product(ctx, outcome);
    }
}


void
ngx_fluxgate_metrics_count(ngx_fluxgate_metric_e metric)
{
    if (ngx_fluxgate_metrics_mine) {
        ngx_fluxgate_metrics_mine->counters[metric]++;
    }
}


void
ngx_fluxgate_metrics_observe(ngx_fluxgate_histogram_e histogram,
    uint64_t usec)
{
    ngx_uint_t                 i;
    ngx_fluxgate_histogram_t  *h;

    if (ngx_fluxgate_metrics_mine == NULL) {
        return;
    }

    h = &ngx_fluxgate_metrics_mine->histograms[histogram];

    for (i = 0; i < NGX_FLUXGATE_METRICS_BOUNDS; i++) {
        if (usec <= ngx_fluxgate_metrics_bounds[i]) {
            break;
        }
    }

    h->sum += usec;
    h->bucket[i]++;
}


/* microseconds of a monotonic clock, for round trips */

uint64_t
ngx_fluxgate_metrics_clock(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_fluxgate_metrics_in_flight(void)
{
    if (ngx_fluxgate_metrics_slot) {
        ngx_fluxgate_metrics_slot->in_flight = ngx_fluxgate_in_flight;
    }
}


/*
 * Per-product counts, opt-in: the first max_products products seen get an
 * entry, found by a lock-free scan; a new one is added under the zone's
 * mutex (once per product), published by its length last.
 */

static void
ngx_fluxgate_metrics_product(ngx_fluxgate_ctx_t *ctx,
    ngx_fluxgate_outcome_e outcome)
{
    size_t                           len;
    uint32_t                         hash;
    ngx_uint_t                       i, n;
    ngx_fluxgate_metrics_sh_t       *sh;
    ngx_fluxgate_metrics_product_t  *pr;

    sh = ngx_fluxgate_metrics_sh;
    len = ctx->product_id_len;
    hash = ngx_crc32_short(ctx->product_id, len);

    for ( ;; ) {
        n = sh->nproducts;
        ngx_memory_barrier();

        for (i = 0; i < n; i++) {
            pr = ngx_fluxgate_metrics_product_at(sh, i);

            if (pr->hash == hash && pr->len == len
                && ngx_memcmp(pr->id, ctx->product_id, len) == 0)
            {
                (void) ngx_atomic_fetch_add(&pr->orders[outcome], 1);
                return;
            }
        }

        if (n >= sh->max_products) {
            (void) ngx_atomic_fetch_add(&sh->products_overflow, 1);
            return;
        }

        ngx_shmtx_lock(&ngx_fluxgate_metrics_zctx->shpool->mutex);

        if (sh->nproducts != n) {
            /* another process added one meanwhile: look again */
            ngx_shmtx_unlock(&ngx_fluxgate_metrics_zctx->shpool->mutex);
            continue;
        }

        pr = ngx_fluxgate_metrics_product_at(sh, n);
        pr->hash = hash;
        ngx_memcpy(pr->id, ctx->product_id, len);
        pr->len = len;
        pr->orders[outcome] = 1;

        ngx_memory_barrier();
        sh->nproducts = n + 1;

        ngx_shmtx_unlock(&ngx_fluxgate_metrics_zctx->shpool->mutex);
        return;
    }
}


/* processes */

void
ngx_fluxgate_metrics_init_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf)
{
    ngx_atomic_uint_t            n;
    ngx_fluxgate_metrics_ctx_t  *ctx;

    if (fmcf->metrics == NULL) {
        return;
    }

    ctx = fmcf->metrics->data;

    ngx_fluxgate_metrics_zctx = ctx;
    ngx_fluxgate_metrics_sh = ctx->sh;
    ngx_fluxgate_metrics_fmcf = fmcf;

    if (ngx_process_slot < 0 || ngx_process_slot >= NGX_MAX_PROCESSES) {
        return;
    }

    ngx_fluxgate_metrics_slot = ngx_fluxgate_metrics_slot_at(ctx->sh,
                                                            ngx_process_slot);

    /* the slots a scrape sums: 0 .. the highest one ever used */

    for ( ;; ) {
        n = ctx->sh->nslots;

        if (n > (ngx_atomic_uint_t) ngx_process_slot
            || ngx_atomic_cmp_set(&ctx->sh->nslots, n, ngx_process_slot + 1))
        {
            break;
        }
    }

    ngx_fluxgate_metrics_slot->in_flight = 0;
    ngx_fluxgate_metrics_slot->kafka_queue = 0;
    ngx_fluxgate_metrics_slot->redis_up = 0;
    ngx_fluxgate_metrics_slot->kafka_up = 0;
    ngx_fluxgate_metrics_slot->serving = fmcf->handlers ? 1 : 0;
    ngx_memory_barrier();
    ngx_fluxgate_metrics_slot->pid = ngx_pid;

    /* counted from here on, onto the totals of the slot's earlier owners */
    ngx_fluxgate_metrics_mine = &ngx_fluxgate_metrics_slot->counts;

    if (fmcf->handlers == 0) {
        return;
    }

    ngx_fluxgate_metrics_timer.handler = ngx_fluxgate_metrics_refresh;
    ngx_fluxgate_metrics_timer.log = cycle->log;
    ngx_fluxgate_metrics_timer.data = fmcf;

    /* it never keeps an exiting worker alive */
    ngx_fluxgate_metrics_timer.cancelable = 1;

    ngx_add_timer(&ngx_fluxgate_metrics_timer, NGX_FLUXGATE_METRICS_REFRESH);
}


void
ngx_fluxgate_metrics_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_fluxgate_metrics_slot) {
        ngx_fluxgate_metrics_slot->pid = 0;
        ngx_fluxgate_metrics_slot = NULL;
    }

    ngx_fluxgate_metrics_mine = NULL;
    ngx_fluxgate_metrics_sh = NULL;
}


static void
ngx_fluxgate_metrics_refresh(ngx_event_t *ev)
{
    ngx_fluxgate_metrics_state();

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(ev, NGX_FLUXGATE_METRICS_REFRESH);
    }
}


/* this process's gauges: on each state change, and once a second */

void
ngx_fluxgate_metrics_state(void)
{
    ngx_fluxgate_metrics_slot_t  *s;

    s = ngx_fluxgate_metrics_slot;

    if (s == NULL || !s->serving) {
        return;
    }

    s->in_flight = ngx_fluxgate_in_flight;
    s->kafka_queue = ngx_fluxgate_kafka_queue_len();
    s->redis_up = ngx_fluxgate_redis_all_up(ngx_fluxgate_metrics_fmcf);
    s->kafka_up = ngx_fluxgate_kafka_up();
}


static ngx_int_t
ngx_fluxgate_metrics_alive(ngx_fluxgate_metrics_slot_t *s)
{
    ngx_pid_t  pid;

    pid = (ngx_pid_t) s->pid;

    if (pid == 0) {
        return 0;
    }

    if (pid == ngx_pid) {
        return 1;
    }

    /* a worker killed with SIGKILL never freed its slot */
    return kill(pid, 0) == 0 || ngx_errno == NGX_EPERM;
}


/*
 * The exposition text of every process together: NGX_DECLINED when no
 * location serves fluxgate_metrics (there is no zone)
 */

ngx_int_t
ngx_fluxgate_metrics_text(ngx_pool_t *pool, ngx_str_t *text)
{
    u_char                         *p, *last;
    size_t                          size;
    ngx_fluxgate_metrics_sh_t      *sh;
    ngx_fluxgate_metrics_counts_t   total;

    sh = ngx_fluxgate_metrics_sh;

    if (sh == NULL) {
        return NGX_DECLINED;
    }

    /* the serving worker's own gauges are as of now */
    ngx_fluxgate_metrics_state();

    size = 16384 + sh->nproducts * NGX_FLUXGATE_OUTCOMES
                   * (NGX_FLUXGATE_ID_MAX + 96)
           + ngx_max(sh->max_products, 1) * 4 * (NGX_FLUXGATE_ID_MAX + 96);

    text->data = ngx_pnalloc(pool, size);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    p = text->data;
    last = text->data + size;

    ngx_fluxgate_metrics_sum(sh, &total);

    p = ngx_fluxgate_metrics_counters(p, last, &total);

    p = ngx_fluxgate_metrics_histogram(p, last,
            "fluxgate_redis_duration_seconds",
            "Round trip of order.lua, from sending it to its reply.",
            &total.histograms[NGX_FLUXGATE_HISTOGRAM_REDIS]);

    p = ngx_fluxgate_metrics_histogram(p, last,
            "fluxgate_kafka_delivery_duration_seconds",
            "From producing an order's message to its delivery report.",
            &total.histograms[NGX_FLUXGATE_HISTOGRAM_KAFKA]);

    p = ngx_fluxgate_metrics_gauges(p, last, sh);

    if (sh->max_products) {
        p = ngx_fluxgate_metrics_products_text(p, last, sh);
    }

    p = ngx_fluxgate_metrics_queue(pool, p, last, &total);

    text->len = p - text->data;

    return NGX_OK;
}


/* the counts of every slot ever used, live or not */

static void
ngx_fluxgate_metrics_sum(ngx_fluxgate_metrics_sh_t *sh,
    ngx_fluxgate_metrics_counts_t *total)
{
    ngx_uint_t     i, j, n;
    ngx_atomic_t  *from, *to;

    ngx_memzero(total, sizeof(ngx_fluxgate_metrics_counts_t));

    to = (ngx_atomic_t *) total;
    n = ngx_min((ngx_uint_t) sh->nslots, NGX_MAX_PROCESSES);

    for (i = 0; i < n; i++) {
        from = (ngx_atomic_t *) &ngx_fluxgate_metrics_slot_at(sh, i)->counts;

        for (j = 0; j < sizeof(ngx_fluxgate_metrics_counts_t)
                        / sizeof(ngx_atomic_t); j++)
        {
            to[j] += from[j];
        }
    }
}


static u_char *
ngx_fluxgate_metrics_counters(u_char *p, u_char *last,
    ngx_fluxgate_metrics_counts_t *c)
{
    ngx_uint_t  i;

    p = ngx_slprintf(p, last,
            "# HELP fluxgate_orders_total Order requests answered, by "
            "$fluxgate_outcome.\n"
            "# TYPE fluxgate_orders_total counter\n");

    for (i = 1; i < NGX_FLUXGATE_OUTCOMES; i++) {
        p = ngx_slprintf(p, last,
                         "fluxgate_orders_total{outcome=\"%V\"} %uA\n",
                         &ngx_fluxgate_outcome_names[i], c->orders[i]);
    }

    p = ngx_slprintf(p, last,
            "# HELP fluxgate_stock_updates_total POST /init requests "
            "answered, by outcome.\n"
            "# TYPE fluxgate_stock_updates_total counter\n");

    for (i = 1; i < NGX_FLUXGATE_OUTCOMES; i++) {

        /* /init answers these four; any other only once it happened */

        if (i != NGX_FLUXGATE_ACCEPTED && i != NGX_FLUXGATE_DUPLICATE
            && i != NGX_FLUXGATE_INVALID && i != NGX_FLUXGATE_ERROR
            && c->stock_updates[i] == 0)
        {
            continue;
        }

        p = ngx_slprintf(p, last,
                         "fluxgate_stock_updates_total{outcome=\"%V\"} %uA\n",
                         &ngx_fluxgate_outcome_names[i],
                         c->stock_updates[i]);
    }

    return ngx_slprintf(p, last,
            "# HELP fluxgate_sold_out_flag_hits_total Orders answered "
            "sold_out from the shared sold-out flag, without Redis.\n"
            "# TYPE fluxgate_sold_out_flag_hits_total counter\n"
            "fluxgate_sold_out_flag_hits_total %uA\n"
            "# HELP fluxgate_releases_total Reservations release.lua gave "
            "back: to the stock, or dropped because /init began a new "
            "generation since.\n"
            "# TYPE fluxgate_releases_total counter\n"
            "fluxgate_releases_total{result=\"stock_returned\"} %uA\n"
            "fluxgate_releases_total{result=\"generation_over\"} %uA\n"
            "# HELP fluxgate_claims_settled_total Pending claims the gate "
            "ended itself (done.lua after delivery, release.lua after a "
            "failure); fluxgate-reconcile settles the rest and is not "
            "counted here.\n"
            "# TYPE fluxgate_claims_settled_total counter\n"
            "fluxgate_claims_settled_total{by=\"done\"} %uA\n"
            "fluxgate_claims_settled_total{by=\"release\"} %uA\n",
            c->counters[NGX_FLUXGATE_METRIC_SOLD_OUT_HITS],
            c->counters[NGX_FLUXGATE_METRIC_RELEASED],
            c->counters[NGX_FLUXGATE_METRIC_RELEASED_OVER],
            c->counters[NGX_FLUXGATE_METRIC_SETTLED_DONE],
            c->counters[NGX_FLUXGATE_METRIC_SETTLED_RELEASE]);
}


/* gauges: summed over the live processes; "up" only if up in each */

static u_char *
ngx_fluxgate_metrics_gauges(u_char *p, u_char *last,
    ngx_fluxgate_metrics_sh_t *sh)
{
    ngx_uint_t                    i, n, live, redis_up, kafka_up;
    ngx_atomic_uint_t             in_flight, queue;
    ngx_fluxgate_metrics_slot_t  *s;

    live = 0;
    in_flight = 0;
    queue = 0;
    redis_up = 1;
    kafka_up = 1;

    n = ngx_min((ngx_uint_t) sh->nslots, NGX_MAX_PROCESSES);

    for (i = 0; i < n; i++) {
        s = ngx_fluxgate_metrics_slot_at(sh, i);

        if (!ngx_fluxgate_metrics_alive(s)) {
            continue;
        }

        in_flight += s->in_flight;

        if (!s->serving) {
            continue;
        }

        live++;
        queue += s->kafka_queue;
        redis_up = redis_up && s->redis_up;
        kafka_up = kafka_up && s->kafka_up;
    }

    if (live == 0) {
        redis_up = 0;
        kafka_up = 0;
    }

    return ngx_slprintf(p, last,
            "# HELP fluxgate_in_flight Orders and stock updates under way, "
            "summed over the worker processes.\n"
            "# TYPE fluxgate_in_flight gauge\n"
            "fluxgate_in_flight %uA\n"
            "# HELP fluxgate_kafka_queue_messages Messages in the Kafka "
            "producers' queues, not yet delivered, summed over the worker "
            "processes.\n"
            "# TYPE fluxgate_kafka_queue_messages gauge\n"
            "fluxgate_kafka_queue_messages %uA\n"
            "# HELP fluxgate_redis_up 1 when every worker process has all "
            "its Redis connections up and answering.\n"
            "# TYPE fluxgate_redis_up gauge\n"
            "fluxgate_redis_up %ui\n"
            "# HELP fluxgate_kafka_up 1 when every worker process's Kafka "
            "producer has a broker up and no fatal error.\n"
            "# TYPE fluxgate_kafka_up gauge\n"
            "fluxgate_kafka_up %ui\n"
            "# HELP fluxgate_worker_processes Worker processes that serve "
            "orders and report to this zone.\n"
            "# TYPE fluxgate_worker_processes gauge\n"
            "fluxgate_worker_processes %ui\n",
            in_flight, queue, redis_up, kafka_up, live);
}


/* fluxgate_metrics_products: the entries published so far */

static u_char *
ngx_fluxgate_metrics_products_text(u_char *p, u_char *last,
    ngx_fluxgate_metrics_sh_t *sh)
{
    ngx_uint_t                       i, j, n;
    ngx_fluxgate_metrics_product_t  *pr;

    p = ngx_slprintf(p, last,
            "# HELP fluxgate_product_orders_total Order requests answered, "
            "by product (the first fluxgate_metrics_products products "
            "seen) and outcome.\n"
            "# TYPE fluxgate_product_orders_total counter\n");

    n = sh->nproducts;
    ngx_memory_barrier();

    for (i = 0; i < n; i++) {
        pr = ngx_fluxgate_metrics_product_at(sh, i);

        for (j = 1; j < NGX_FLUXGATE_OUTCOMES; j++) {
            if (pr->orders[j] == 0) {
                continue;
            }

            p = ngx_slprintf(p, last,
                             "fluxgate_product_orders_total{product=\"%*s\","
                             "outcome=\"%V\"} %uA\n",
                             (size_t) pr->len, pr->id,
                             &ngx_fluxgate_outcome_names[j], pr->orders[j]);
        }
    }

    return ngx_slprintf(p, last,
            "# HELP fluxgate_product_overflow_total Order requests of "
            "products beyond the fluxgate_metrics_products cap, not "
            "counted by product.\n"
            "# TYPE fluxgate_product_overflow_total counter\n"
            "fluxgate_product_overflow_total %uA\n",
            sh->products_overflow);
}


static u_char *
ngx_fluxgate_metrics_histogram(u_char *p, u_char *last, const char *name,
    const char *help, ngx_fluxgate_histogram_t *h)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  n, sum;

    sum = h->sum;

    p = ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s histogram\n",
                     name, help, name);

    n = 0;

    for (i = 0; i <= NGX_FLUXGATE_METRICS_BOUNDS; i++) {
        n += h->bucket[i];

        p = ngx_slprintf(p, last, "%s_bucket{le=\"%s\"} %uA\n",
                         name, ngx_fluxgate_metrics_le[i], n);
    }

    return ngx_slprintf(p, last, "%s_sum %uA.%06uA\n%s_count %uA\n",
                        name, sum / 1000000, sum % 1000000, name, n);
}


/*
 * The waiting room: its challenges and controls (counted per process), and
 * each product's line as the gate last saw it (ngx_fluxgate_line.c keeps
 * it while the line is polled or ordered from): labelled by product for
 * the first fluxgate_metrics_products, summed otherwise
 */

static u_char *
ngx_fluxgate_metrics_queue(ngx_pool_t *pool, u_char *p, u_char *last,
    ngx_fluxgate_metrics_counts_t *c)
{
    u_char                    *ids;
    ngx_str_t                 *products;
    ngx_uint_t                 i, n, max;
    ngx_fluxgate_line_t       *lines;
    ngx_fluxgate_metrics_sh_t *sh;

    static const char  *names[] = {
        "fluxgate_queue_waiting", "gauge",
        "Places in line not admitted yet.",
        "fluxgate_queue_oldest_wait_seconds", "gauge",
        "How long the first place still waiting has waited.",
        "fluxgate_queue_admitted_total", "counter",
        "Turns admitted in the current sale (a new sale starts at 0).",
        "fluxgate_queue_no_shows_total", "counter",
        "Admitted turns whose window closed unused, in the current sale."
    };

    p = ngx_slprintf(p, last,
            "# HELP fluxgate_queue_challenges_total Proofs of work asked "
            "(issued) and checked: solved, failed (forged, too weak, stale, "
            "another buyer's), reused.\n"
            "# TYPE fluxgate_queue_challenges_total counter\n"
            "fluxgate_queue_challenges_total{result=\"issued\"} %uA\n"
            "fluxgate_queue_challenges_total{result=\"solved\"} %uA\n"
            "fluxgate_queue_challenges_total{result=\"failed\"} %uA\n"
            "fluxgate_queue_challenges_total{result=\"reused\"} %uA\n"
            "# HELP fluxgate_queue_controls_total Live controls applied "
            "(POST /queue/control), by action.\n"
            "# TYPE fluxgate_queue_controls_total counter\n"
            "fluxgate_queue_controls_total{action=\"pause\"} %uA\n"
            "fluxgate_queue_controls_total{action=\"resume\"} %uA\n"
            "fluxgate_queue_controls_total{action=\"close\"} %uA\n"
            "fluxgate_queue_controls_total{action=\"rate\"} %uA\n",
            c->counters[NGX_FLUXGATE_METRIC_CHALLENGE_ISSUED],
            c->counters[NGX_FLUXGATE_METRIC_CHALLENGE_SOLVED],
            c->counters[NGX_FLUXGATE_METRIC_CHALLENGE_FAILED],
            c->counters[NGX_FLUXGATE_METRIC_CHALLENGE_REUSED],
            c->counters[NGX_FLUXGATE_METRIC_CONTROL_PAUSE],
            c->counters[NGX_FLUXGATE_METRIC_CONTROL_RESUME],
            c->counters[NGX_FLUXGATE_METRIC_CONTROL_CLOSE],
            c->counters[NGX_FLUXGATE_METRIC_CONTROL_RATE]);

    if (ngx_fluxgate_metrics_fmcf == NULL
        || ngx_fluxgate_metrics_fmcf->queue_zone == NULL)
    {
        return p;
    }

    sh = ngx_fluxgate_metrics_sh;
    max = ngx_max(sh->max_products, 1);

    lines = ngx_palloc(pool, max * sizeof(ngx_fluxgate_line_t));
    if (lines == NULL) {
        return p;
    }

    products = NULL;

    if (sh->max_products == 0) {
        /* one line for all: every product's summed */
        ngx_fluxgate_line_sum(ngx_fluxgate_metrics_fmcf->queue_zone, &lines[0]);
        n = 1;

    } else {
        products = ngx_palloc(pool, max * sizeof(ngx_str_t));
        ids = ngx_pnalloc(pool, max * NGX_FLUXGATE_ID_MAX);

        if (products == NULL || ids == NULL) {
            return p;
        }

        n = ngx_fluxgate_line_each(ngx_fluxgate_metrics_fmcf->queue_zone,
                                   lines, products, ids, max);
    }

    for (i = 0; i < 4; i++) {
        p = ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                         names[3 * i], names[3 * i + 2], names[3 * i],
                         names[3 * i + 1]);

        for (max = 0; max < n; max++) {
            if (sh->max_products) {
                p = ngx_slprintf(p, last, "%s{product=\"%V\"} ",
                                 names[3 * i], &products[max]);

            } else {
                p = ngx_slprintf(p, last, "%s ", names[3 * i]);
            }

            switch (i) {
            case 0:
                p = ngx_slprintf(p, last, "%L\n", lines[max].waiting);
                break;
            case 1:
                p = ngx_slprintf(p, last, "%L.%06L\n",
                                 lines[max].oldest / 1000000,
                                 lines[max].oldest % 1000000);
                break;
            case 2:
                p = ngx_slprintf(p, last, "%L\n", lines[max].admitted);
                break;
            default:
                p = ngx_slprintf(p, last, "%L\n", lines[max].no_shows);
                break;
            }
        }
    }

    return p;
}
