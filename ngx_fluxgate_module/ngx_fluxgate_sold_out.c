
/*
 * Flux-Gate: the sold-out flag, one shared memory zone for all workers.
 *
 * Once order.lua said a product has no stock left, the crowd that keeps
 * asking for it is answered 409 here for fluxgate_sold_out_cache, without
 * a Redis round trip.  The zone maps product id -> expiry (ngx_current_msec,
 * a monotonic clock that all processes of the machine share) in an rbtree
 * keyed by the id's CRC32, with a queue of the entries in the order they
 * were last flagged: when the slab allocator is full, the least recently
 * flagged entries go first.  Setting the stock (POST /init) and giving
 * units back (release.lua) clear a product's flag at once.
 */


#include "ngx_fluxgate.h"


#define NGX_FLUXGATE_SOLD_OUT_ZONE_SIZE  (1024 * 1024)


typedef struct {
    ngx_rbtree_node_t            node;        /* key: crc32 of the id */
    ngx_queue_t                  queue;
    ngx_msec_t                   expire;
    u_short                      len;
    u_char                       id[1];
} ngx_fluxgate_sold_out_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  queue;       /* most recently flagged first */
} ngx_fluxgate_sold_out_sh_t;


typedef struct {
    ngx_fluxgate_sold_out_sh_t  *sh;
    ngx_slab_pool_t             *shpool;
} ngx_fluxgate_sold_out_ctx_t;


static ngx_int_t ngx_fluxgate_sold_out_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_fluxgate_sold_out_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_fluxgate_sold_out_node_t *ngx_fluxgate_sold_out_find(
    ngx_fluxgate_sold_out_ctx_t *ctx, u_char *id, size_t len,
    uint32_t hash);
static void ngx_fluxgate_sold_out_delete(ngx_fluxgate_sold_out_ctx_t *ctx,
    ngx_fluxgate_sold_out_node_t *sn);


static ngx_str_t  ngx_fluxgate_sold_out_zone_name =
    ngx_string("fluxgate_sold_out");


/* the zone is added once, by the first directive that is not "off" */

ngx_shm_zone_t *
ngx_fluxgate_sold_out_zone(ngx_conf_t *cf)
{
    ngx_shm_zone_t               *shm_zone;
    ngx_fluxgate_sold_out_ctx_t  *ctx;

    shm_zone = ngx_shared_memory_add(cf, &ngx_fluxgate_sold_out_zone_name,
                                     NGX_FLUXGATE_SOLD_OUT_ZONE_SIZE,
                                     &ngx_fluxgate_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        return shm_zone;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_sold_out_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    shm_zone->init = ngx_fluxgate_sold_out_init_zone;
    shm_zone->data = ctx;

    return shm_zone;
}


static ngx_int_t
ngx_fluxgate_sold_out_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_fluxgate_sold_out_ctx_t  *octx = data;

    ngx_fluxgate_sold_out_ctx_t  *ctx;

    ctx = shm_zone->data;

    /* a reload keeps the flags */

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

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_fluxgate_sold_out_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_fluxgate_sold_out_insert);
    ngx_queue_init(&ctx->sh->queue);

    /* a full zone evicts; it is not worth a log line */
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_fluxgate_sold_out_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t            **p;
    ngx_fluxgate_sold_out_node_t  *sn, *snt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            sn = (ngx_fluxgate_sold_out_node_t *) node;
            snt = (ngx_fluxgate_sold_out_node_t *) temp;

            p = (ngx_memn2cmp(sn->id, snt->id, sn->len, snt->len) < 0)
                ? &temp->left : &temp->right;
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


/* whether the product's flag is up; NULL zone: the cache is off */

ngx_int_t
ngx_fluxgate_sold_out_test(ngx_shm_zone_t *shm_zone, u_char *id, size_t len)
{
    ngx_int_t                      up;
    ngx_fluxgate_sold_out_ctx_t   *ctx;
    ngx_fluxgate_sold_out_node_t  *sn;

    if (shm_zone == NULL) {
        return 0;
    }

    ctx = shm_zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_fluxgate_sold_out_find(ctx, id, len, ngx_crc32_short(id, len));

    up = (sn != NULL
          && (ngx_msec_int_t) (sn->expire - ngx_current_msec) > 0);

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return up;
}


/* order.lua said sold out: the flag is up for "valid" from now */

void
ngx_fluxgate_sold_out_set(ngx_shm_zone_t *shm_zone, u_char *id, size_t len,
    ngx_msec_t valid)
{
    size_t                         size;
    uint32_t                       hash;
    ngx_queue_t                   *q;
    ngx_fluxgate_sold_out_ctx_t   *ctx;
    ngx_fluxgate_sold_out_node_t  *sn;

    if (shm_zone == NULL || valid == 0) {
        return;
    }

    ctx = shm_zone->data;
    hash = ngx_crc32_short(id, len);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_fluxgate_sold_out_find(ctx, id, len, hash);

    if (sn) {
        ngx_queue_remove(&sn->queue);
        goto flag;
    }

    size = offsetof(ngx_fluxgate_sold_out_node_t, id) + len;

    for ( ;; ) {
        sn = ngx_slab_alloc_locked(ctx->shpool, size);
        if (sn) {
            break;
        }

        /* full: the least recently flagged product makes room */

        if (ngx_queue_empty(&ctx->sh->queue)) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            return;
        }

        q = ngx_queue_last(&ctx->sh->queue);

        ngx_fluxgate_sold_out_delete(ctx,
            ngx_queue_data(q, ngx_fluxgate_sold_out_node_t, queue));
    }

    sn->node.key = hash;
    sn->len = (u_short) len;
    ngx_memcpy(sn->id, id, len);

    ngx_rbtree_insert(&ctx->sh->rbtree, &sn->node);

flag:

    sn->expire = ngx_current_msec + valid;
    ngx_queue_insert_head(&ctx->sh->queue, &sn->queue);

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


/* the stock changed: the next order asks Redis again */

void
ngx_fluxgate_sold_out_clear(ngx_shm_zone_t *shm_zone, u_char *id, size_t len)
{
    ngx_fluxgate_sold_out_ctx_t   *ctx;
    ngx_fluxgate_sold_out_node_t  *sn;

    if (shm_zone == NULL) {
        return;
    }

    ctx = shm_zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    sn = ngx_fluxgate_sold_out_find(ctx, id, len, ngx_crc32_short(id, len));

    if (sn) {
        ngx_fluxgate_sold_out_delete(ctx, sn);
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static ngx_fluxgate_sold_out_node_t *
ngx_fluxgate_sold_out_find(ngx_fluxgate_sold_out_ctx_t *ctx, u_char *id,
    size_t len, uint32_t hash)
{
    ngx_int_t                      rc;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_fluxgate_sold_out_node_t  *sn;

    node = ctx->sh->rbtree.root;
    sentinel = ctx->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        sn = (ngx_fluxgate_sold_out_node_t *) node;

        rc = ngx_memn2cmp(id, sn->id, len, sn->len);

        if (rc == 0) {
            return sn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_fluxgate_sold_out_delete(ngx_fluxgate_sold_out_ctx_t *ctx,
    ngx_fluxgate_sold_out_node_t *sn)
{
    ngx_queue_remove(&sn->queue);
    ngx_rbtree_delete(&ctx->sh->rbtree, &sn->node);
    ngx_slab_free_locked(ctx->shpool, sn);
}
