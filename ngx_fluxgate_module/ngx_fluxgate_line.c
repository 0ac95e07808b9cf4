
/*
 * Flux-Gate: the gate's picture of each product's line, in one shared
 * memory zone for all worker processes (`fluxgate_queue_zone`), so that
 * the waiting room's polls are answered without Redis.
 *
 * Per product the zone keeps what lua/queue_head.lua last said: the head
 * (h turns admitted at Redis time t, growing at the rate), the turns
 * handed out, the state (scheduled, open, paused, closed), the opening's
 * seed, the stock, and the line's statistics, with the Redis time of the
 * answer and the gate's monotonic time when it came.  Between two answers
 * the head is extrapolated with the gate's own clock from that moment, so
 * the gate's and Redis's clocks never need to agree.  A record older than
 * the refresh interval (100 ms by default) is asked again by the first
 * process that needs it, one ask per product at a time: the others read
 * the record they have.  Most asks are for the head only (four Redis
 * commands); at most once a second one also counts the no-shows and reads
 * the oldest wait, the statistics the metrics show.  A fixed zone holds a
 * bounded number of products: the least recently used is evicted for a
 * new one.
 *
 * The zone also remembers the proofs of work it took (their nonces, until
 * their challenge expires), so a proof is good once per gate.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_lua.h"

#include <openssl/rand.h>


#define NGX_FLUXGATE_LINE_ZONE_SIZE   (1024 * 1024)
#define NGX_FLUXGATE_LINE_REFRESH     100
#define NGX_FLUXGATE_LINE_FULL        1000    /* the statistics: ms */


typedef struct {
    ngx_str_node_t               sn;          /* the product id */
    ngx_queue_t                  queue;       /* most recently used first */
    ngx_msec_t                   asked;       /* an ask is out: since */
    ngx_msec_t                   counted;     /* the last full ask */
    ngx_fluxgate_line_t          line;
    u_char                       data[1];
} ngx_fluxgate_line_node_t;


typedef struct {
    ngx_rbtree_node_t            node;        /* key: crc32 of the nonce */
    ngx_queue_t                  queue;       /* in the order taken */
    time_t                       expires;
    u_char                       nonce[NGX_FLUXGATE_NONCE_LEN];
} ngx_fluxgate_line_proof_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  lru;
    ngx_rbtree_t                 proofs;
    ngx_rbtree_node_t            proofs_sentinel;
    ngx_queue_t                  proofs_queue;
} ngx_fluxgate_line_sh_t;


typedef struct {
    ngx_fluxgate_line_sh_t      *sh;
    ngx_slab_pool_t             *shpool;
    ngx_msec_t                   refresh;
} ngx_fluxgate_line_ctx_t;


/* one ask of queue_head.lua, freed by its reply (hiredis calls it once) */
typedef struct {
    ngx_event_t                  timer;       /* the deadline */
    ngx_shm_zone_t              *zone;
    ngx_fluxgate_redis_t        *node;
    ngx_uint_t                   burst;
    ngx_uint_t                   late;        /* its deadline passed */
    ngx_uint_t                   full;        /* the statistics too */
    size_t                       len;
    u_char                       product[NGX_FLUXGATE_ID_MAX];
} ngx_fluxgate_line_ask_t;


static ngx_int_t ngx_fluxgate_line_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_fluxgate_line_node_t *ngx_fluxgate_line_node(
    ngx_fluxgate_line_ctx_t *ctx, ngx_str_t *product, ngx_uint_t create);
static ngx_int_t ngx_fluxgate_line_ask(ngx_fluxgate_loc_conf_t *flcf,
    ngx_shm_zone_t *zone, ngx_str_t *product, ngx_uint_t full);
static void ngx_fluxgate_line_answered(redisReply *reply, void *data);
static void ngx_fluxgate_line_deadline(ngx_event_t *ev);
static void ngx_fluxgate_line_done(ngx_fluxgate_line_ask_t *ask);
static void ngx_fluxgate_line_proof_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


/* configuration: fluxgate_queue_zone zone=name:size [refresh=time]; */

char *
ngx_fluxgate_queue_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fluxgate_main_conf_t *fmcf = conf;

    u_char      *p;
    ssize_t      size;
    ngx_str_t   *value, name, s;
    ngx_msec_t   refresh;
    ngx_uint_t   i;

    if (fmcf->queue_zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    size = 0;
    refresh = NGX_FLUXGATE_LINE_REFRESH;
    ngx_str_null(&name);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                goto invalid;
            }

            name.len = p - name.data;
            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;
            size = ngx_parse_size(&s);

            if (name.len == 0 || size == NGX_ERROR) {
                goto invalid;
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "zone \"%V\" is too small", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "refresh=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;
            refresh = ngx_parse_time(&s, 0);

            if (refresh == (ngx_msec_t) NGX_ERROR || refresh == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have the \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    fmcf->queue_zone = ngx_fluxgate_line_zone(cf, &name, size, refresh);

    return fmcf->queue_zone ? NGX_CONF_OK : NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive",
                       &value[i], &cmd->name);
    return NGX_CONF_ERROR;
}


/* the zone; size 0: the default one of a queue without the directive */

ngx_shm_zone_t *
ngx_fluxgate_line_zone(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    ngx_msec_t refresh)
{
    ngx_str_t                 dflt = ngx_string("fluxgate_queue");
    ngx_shm_zone_t           *shm_zone;
    ngx_fluxgate_line_ctx_t  *ctx;

    if (name == NULL) {
        name = &dflt;
        size = NGX_FLUXGATE_LINE_ZONE_SIZE;
        refresh = NGX_FLUXGATE_LINE_REFRESH;
    }

    shm_zone = ngx_shared_memory_add(cf, name, size, &ngx_fluxgate_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", name);
        return NULL;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_line_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->refresh = refresh;

    shm_zone->init = ngx_fluxgate_line_init_zone;
    shm_zone->data = ctx;

    return shm_zone;
}


static ngx_int_t
ngx_fluxgate_line_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_fluxgate_line_ctx_t  *octx = data;

    ngx_fluxgate_line_ctx_t  *ctx;

    ctx = shm_zone->data;

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

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_fluxgate_line_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&ctx->sh->lru);
    ngx_rbtree_init(&ctx->sh->proofs, &ctx->sh->proofs_sentinel,
                    ngx_fluxgate_line_proof_insert);
    ngx_queue_init(&ctx->sh->proofs_queue);

    /* a full zone evicts the least recently used: no log line for that */
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * The product's record, copied into line: NGX_OK once one came from
 * Redis, NGX_AGAIN while none has yet or the one there is stale (an ask
 * is out: look again in a moment; line holds the stale one, fetched 0 if
 * none), NGX_ERROR when none can be asked, NGX_DECLINED when there is
 * none and create is 0.  A record older than the refresh interval is
 * asked again in the background, by this process unless another asked
 * already.  Only what proves a product real makes a record: a poll with
 * a ticket we signed, an answer of order.lua about its line; an order's
 * own product id could be anything a script sends.
 */

ngx_int_t
ngx_fluxgate_line_get(ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *product,
    ngx_uint_t create, ngx_fluxgate_line_t *line)
{
    ngx_uint_t                 ask, full;
    ngx_shm_zone_t            *zone;
    ngx_fluxgate_line_ctx_t   *ctx;
    ngx_fluxgate_line_node_t  *ln;

    zone = flcf->queue_zone;
    ctx = zone->data;
    ask = 0;
    full = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_fluxgate_line_node(ctx, product, create);

    if (ln == NULL) {
        ngx_shmtx_unlock(&ctx->shpool->mutex);
        return create ? NGX_ERROR : NGX_DECLINED;
    }

    *line = ln->line;

    /*
     * One ask at a time; one stuck past the deadlines is given up.  The
     * times were written by any worker process, whose clock may be a
     * little ahead of this one's: a signed difference, not a wrapped one
     */
    if ((ln->line.fetched == 0
         || (ngx_msec_int_t) (ngx_current_msec - ln->line.fetched)
            >= (ngx_msec_int_t) ctx->refresh)
        && (ln->asked == 0
            || (ngx_msec_int_t) (ngx_current_msec - ln->asked) > 2000))
    {
        ln->asked = ngx_current_msec ? ngx_current_msec : 1;
        ask = 1;

        if (ln->counted == 0
            || (ngx_msec_int_t) (ngx_current_msec - ln->counted)
               >= NGX_FLUXGATE_LINE_FULL)
        {
            ln->counted = ln->asked;
            full = 1;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (ask && ngx_fluxgate_line_ask(flcf, zone, product, full) != NGX_OK) {
        ngx_shmtx_lock(&ctx->shpool->mutex);
        ln = ngx_fluxgate_line_node(ctx, product, 0);
        if (ln != NULL) {
            ln->asked = 0;

            if (full) {
                ln->counted = 0;
            }
        }
        ngx_shmtx_unlock(&ctx->shpool->mutex);

        if (line->fetched == 0) {
            return NGX_ERROR;
        }
    }

    /*
     * A record much older than the refresh (a quiet product, polled again
     * after a while) would answer one poll late: the caller waits for the
     * new one instead, with the old one in hand should it not come
     */

    if (line->fetched == 0
        || (ngx_msec_int_t) (ngx_current_msec - line->fetched)
           > (ngx_msec_int_t) (10 * ctx->refresh))
    {
        return NGX_AGAIN;
    }

    return NGX_OK;
}


/* the product's node, made (evicting the least recently used) if asked */

static ngx_fluxgate_line_node_t *
ngx_fluxgate_line_node(ngx_fluxgate_line_ctx_t *ctx, ngx_str_t *product,
    ngx_uint_t create)
{
    uint32_t                   hash;
    ngx_uint_t                 tries;
    ngx_queue_t               *q;
    ngx_str_node_t            *sn;
    ngx_fluxgate_line_node_t  *ln;

    hash = ngx_crc32_short(product->data, product->len);

    sn = ngx_str_rbtree_lookup(&ctx->sh->rbtree, product, hash);

    if (sn != NULL) {
        ln = (ngx_fluxgate_line_node_t *) sn;

        /*
         * the product polled most is at the head already: no write to
         * the zone, whose cache lines the worker processes then share
         * instead of passing them back and forth on every poll
         */
        if (ngx_queue_head(&ctx->sh->lru) != &ln->queue) {
            ngx_queue_remove(&ln->queue);
            ngx_queue_insert_head(&ctx->sh->lru, &ln->queue);
        }

        return ln;
    }

    if (!create) {
        return NULL;
    }

    for (tries = 0; tries < 16; tries++) {
        ln = ngx_slab_alloc_locked(ctx->shpool,
                                   offsetof(ngx_fluxgate_line_node_t, data)
                                   + product->len);
        if (ln != NULL) {
            break;
        }

        if (ngx_queue_empty(&ctx->sh->lru)) {
            return NULL;
        }

        q = ngx_queue_last(&ctx->sh->lru);
        ngx_queue_remove(q);

        ln = ngx_queue_data(q, ngx_fluxgate_line_node_t, queue);
        ngx_rbtree_delete(&ctx->sh->rbtree, &ln->sn.node);
        ngx_slab_free_locked(ctx->shpool, ln);
        ln = NULL;
    }

    if (ln == NULL) {
        return NULL;
    }

    ngx_memzero(ln, offsetof(ngx_fluxgate_line_node_t, data));
    ngx_memcpy(ln->data, product->data, product->len);

    ln->sn.node.key = hash;
    ln->sn.str.data = ln->data;
    ln->sn.str.len = product->len;

    ngx_rbtree_insert(&ctx->sh->rbtree, &ln->sn.node);
    ngx_queue_insert_head(&ctx->sh->lru, &ln->queue);

    return ln;
}


/* queue_head.lua for one product, from this process */

static ngx_int_t
ngx_fluxgate_line_ask(ngx_fluxgate_loc_conf_t *flcf, ngx_shm_zone_t *zone,
    ngx_str_t *product, ngx_uint_t full)
{
    u_char                    keys[4][NGX_FLUXGATE_ID_MAX + 16];
    u_char                    nums[3][NGX_INT64_LEN];
    u_char                    seed[2 * NGX_FLUXGATE_NONCE_LEN];
    u_char                    raw[NGX_FLUXGATE_NONCE_LEN];
    ngx_str_t                 args[NGX_FLUXGATE_LUA_QUEUE_HEAD_NKEYS
                                   + NGX_FLUXGATE_LUA_QUEUE_HEAD_NARGS];
    ngx_fluxgate_line_ask_t  *ask;

    if (!ngx_fluxgate_redis_ready(flcf->redis)
        || RAND_bytes(raw, sizeof(raw)) != 1)
    {
        return NGX_ERROR;
    }

    args[0].data = keys[0];
    args[0].len = ngx_sprintf(keys[0], "fg:{%V}:stock", product) - keys[0];
    args[1].data = keys[1];
    args[1].len = ngx_sprintf(keys[1], "fg:{%V}:q", product) - keys[1];
    args[2].data = keys[2];
    args[2].len = ngx_sprintf(keys[2], "fg:{%V}:gen", product) - keys[2];
    args[3].data = keys[3];
    args[3].len = ngx_sprintf(keys[3], "fg:{%V}:q:", product) - keys[3];

    args[4].data = nums[0];
    args[4].len = ngx_sprintf(nums[0], "%ui", flcf->rate) - nums[0];
    args[5].data = nums[1];
    args[5].len = ngx_sprintf(nums[1], "%ui", flcf->burst) - nums[1];
    args[6].data = nums[2];
    args[6].len = ngx_sprintf(nums[2], "%M000", flcf->queue_window) - nums[2];

    /* should this ask open the sale: a seed nobody could know before */
    args[7].data = seed;
    args[7].len = ngx_hex_dump(seed, raw, sizeof(raw)) - seed;

    /* the head only, or the statistics too */
    args[8].data = (u_char *) (full ? "1" : "0");
    args[8].len = 1;

    ask = ngx_calloc(sizeof(ngx_fluxgate_line_ask_t), ngx_cycle->log);
    if (ask == NULL) {
        return NGX_ERROR;
    }

    ask->zone = zone;
    ask->node = ngx_fluxgate_redis_node(flcf->redis, &args[0]);
    ask->burst = flcf->burst;
    ask->full = full;
    ask->len = product->len;
    ngx_memcpy(ask->product, product->data, product->len);

    if (ngx_fluxgate_redis_eval(flcf->redis, &ngx_fluxgate_script_queue_head,
                                NGX_FLUXGATE_LUA_QUEUE_HEAD_NKEYS,
                                NGX_FLUXGATE_LUA_QUEUE_HEAD_NKEYS
                                + NGX_FLUXGATE_LUA_QUEUE_HEAD_NARGS,
                                args, ngx_fluxgate_line_answered, ask)
        != NGX_OK)
    {
        ngx_free(ask);
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: line of \"%V\": head asked", product);

    ask->timer.handler = ngx_fluxgate_line_deadline;
    ask->timer.data = ask;
    ask->timer.log = ngx_cycle->log;
    ask->timer.cancelable = 1;

    ngx_add_timer(&ask->timer, flcf->redis_timeout);

    return NGX_OK;
}


static void
ngx_fluxgate_line_answered(redisReply *reply, void *data)
{
    ngx_fluxgate_line_ask_t  *ask = data;

    ngx_str_t                  product;
    ngx_fluxgate_line_t        line;
    ngx_fluxgate_line_ctx_t   *ctx;
    ngx_fluxgate_line_node_t  *ln;

    if (ask->timer.timer_set) {
        ngx_del_timer(&ask->timer);
    }

    product.data = ask->product;
    product.len = ask->len;

    if (ngx_fluxgate_line_parse(reply, &line) != NGX_OK) {
        if (reply != NULL) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "fluxgate: queue_head.lua for \"%V\": "
                          "unexpected reply %*s", &product,
                          (size_t) (reply->str ? ngx_min(reply->len, 200)
                                               : 0),
                          reply->str ? reply->str : "");
        }

        if (!ask->late) {
            ngx_fluxgate_line_done(ask);
        }

        ngx_free(ask);
        return;
    }

    /* a late answer is still the latest news */

    line.burst = ask->burst;
    line.fetched = ngx_current_msec ? ngx_current_msec : 1;

    ctx = ask->zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_fluxgate_line_node(ctx, &product, 1);

    if (ln != NULL) {
        if (!ask->full) {
            /* the head only: the oldest wait as the last full ask read it */
            line.oldest = ln->line.oldest;
        }

        ln->line = line;
        ln->asked = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "fluxgate: line of \"%V\": head %.3f of %L turns, "
                   "state %d", &product, line.h, line.n, line.state);

    ngx_free(ask);
}


/* no answer in time: its node is stalled, another ask may go out */

static void
ngx_fluxgate_line_deadline(ngx_event_t *ev)
{
    ngx_fluxgate_line_ask_t  *ask = ev->data;

    ngx_fluxgate_redis_timed_out(ask->node);
    ngx_fluxgate_line_done(ask);

    /* the reply (or the connection's end) still comes: it frees the ask */
    ask->late = 1;
}


/* the ask ended without a record: another may go out at once */

static void
ngx_fluxgate_line_done(ngx_fluxgate_line_ask_t *ask)
{
    ngx_str_t                  product;
    ngx_fluxgate_line_ctx_t   *ctx;
    ngx_fluxgate_line_node_t  *ln;

    product.data = ask->product;
    product.len = ask->len;
    ctx = ask->zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    ln = ngx_fluxgate_line_node(ctx, &product, 0);

    if (ln != NULL) {
        ln->asked = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/*
 * Whether the line of a product is busy now, from the record alone: a
 * proof of work is asked before anything else then (fluxgate_queue_pow).
 * 0 also when the gate has no record yet.
 */

ngx_uint_t
ngx_fluxgate_line_busy(ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *product)
{
    double               H;
    ngx_fluxgate_line_t  line;

    if (ngx_fluxgate_line_get(flcf, product, 0, &line) != NGX_OK
        || !line.known)
    {
        return 0;
    }

    if (line.state != NGX_FLUXGATE_LINE_OPEN) {
        /* scheduled, paused: places only; closed: Redis answers 409 */
        return line.state != NGX_FLUXGATE_LINE_CLOSED;
    }

    H = ngx_fluxgate_line_head(&line, ngx_fluxgate_line_now(&line));

    return H < (double) line.n + 1;
}


/* order.lua said the product has a line: the gate follows it from now */

void
ngx_fluxgate_line_touch(ngx_fluxgate_loc_conf_t *flcf, ngx_str_t *product)
{
    ngx_fluxgate_line_t  line;

    if (flcf->queue_zone != NULL) {
        (void) ngx_fluxgate_line_get(flcf, product, 1, &line);
    }
}


/* a proof's nonce, taken once per gate: NGX_DECLINED the second time */

ngx_int_t
ngx_fluxgate_line_take_proof(ngx_shm_zone_t *zone, u_char *nonce,
    time_t expires)
{
    uint32_t                    hash;
    ngx_queue_t                *q;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_fluxgate_line_ctx_t    *ctx;
    ngx_fluxgate_line_proof_t  *pr;

    ctx = zone->data;
    hash = ngx_crc32_short(nonce, NGX_FLUXGATE_NONCE_LEN);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /* the expired ones go first, a few at a time */
    while (!ngx_queue_empty(&ctx->sh->proofs_queue)) {
        q = ngx_queue_head(&ctx->sh->proofs_queue);
        pr = ngx_queue_data(q, ngx_fluxgate_line_proof_t, queue);

        if (pr->expires > ngx_time()) {
            break;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&ctx->sh->proofs, &pr->node);
        ngx_slab_free_locked(ctx->shpool, pr);
    }

    node = ctx->sh->proofs.root;
    sentinel = ctx->sh->proofs.sentinel;

    while (node != sentinel) {
        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        pr = (ngx_fluxgate_line_proof_t *) node;

        if (ngx_memcmp(pr->nonce, nonce, NGX_FLUXGATE_NONCE_LEN) == 0) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return NGX_DECLINED;
        }

        node = (ngx_memcmp(nonce, pr->nonce, NGX_FLUXGATE_NONCE_LEN) < 0)
               ? node->left : node->right;
    }

    pr = ngx_slab_alloc_locked(ctx->shpool,
                               sizeof(ngx_fluxgate_line_proof_t));

    if (pr == NULL && !ngx_queue_empty(&ctx->sh->proofs_queue)) {
        /* full: the oldest taken is forgotten (its proof cost its work) */
        q = ngx_queue_head(&ctx->sh->proofs_queue);
        pr = ngx_queue_data(q, ngx_fluxgate_line_proof_t, queue);
        ngx_queue_remove(q);
        ngx_rbtree_delete(&ctx->sh->proofs, &pr->node);
    }

    if (pr != NULL) {
        pr->node.key = hash;
        pr->expires = expires;
        ngx_memcpy(pr->nonce, nonce, NGX_FLUXGATE_NONCE_LEN);
        ngx_rbtree_insert(&ctx->sh->proofs, &pr->node);
        ngx_queue_insert_tail(&ctx->sh->proofs_queue, &pr->queue);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


static void
ngx_fluxgate_line_proof_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_fluxgate_line_proof_t   *pn, *pt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            pn = (ngx_fluxgate_line_proof_t *) node;
            pt = (ngx_fluxgate_line_proof_t *) temp;

            p = (ngx_memcmp(pn->nonce, pt->nonce, NGX_FLUXGATE_NONCE_LEN)
                 < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* every product's record, for the metrics: up to max of them */

ngx_uint_t
ngx_fluxgate_line_each(ngx_shm_zone_t *zone, ngx_fluxgate_line_t *lines,
    ngx_str_t *products, u_char *ids, ngx_uint_t max)
{
    ngx_uint_t                 n;
    ngx_queue_t               *q;
    ngx_fluxgate_line_ctx_t   *ctx;
    ngx_fluxgate_line_node_t  *ln;

    if (zone == NULL) {
        return 0;
    }

    ctx = zone->data;
    n = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (q = ngx_queue_head(&ctx->sh->lru);
         q != ngx_queue_sentinel(&ctx->sh->lru) && n < max;
         q = ngx_queue_next(q))
    {
        ln = ngx_queue_data(q, ngx_fluxgate_line_node_t, queue);

        if (!ln->line.known) {
            continue;
        }

        lines[n] = ln->line;
        products[n].data = ids + n * NGX_FLUXGATE_ID_MAX;
        products[n].len = ln->sn.str.len;
        ngx_memcpy(products[n].data, ln->sn.str.data, ln->sn.str.len);
        n++;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return n;
}


/* every product's record summed, for the metrics without product labels */

void
ngx_fluxgate_line_sum(ngx_shm_zone_t *zone, ngx_fluxgate_line_t *sum)
{
    ngx_queue_t               *q;
    ngx_fluxgate_line_ctx_t   *ctx;
    ngx_fluxgate_line_node_t  *ln;

    ngx_memzero(sum, sizeof(ngx_fluxgate_line_t));

    if (zone == NULL) {
        return;
    }

    ctx = zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (q = ngx_queue_head(&ctx->sh->lru);
         q != ngx_queue_sentinel(&ctx->sh->lru);
         q = ngx_queue_next(q))
    {
        ln = ngx_queue_data(q, ngx_fluxgate_line_node_t, queue);

        if (!ln->line.known) {
            continue;
        }

        sum->waiting += ln->line.waiting;
        sum->oldest = ngx_max(sum->oldest, ln->line.oldest);
        sum->admitted += ln->line.admitted;
        sum->no_shows += ln->line.no_shows;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}
