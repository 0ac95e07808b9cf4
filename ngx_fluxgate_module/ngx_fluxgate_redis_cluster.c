
/*
 * Flux-Gate: a small Redis Cluster router on the nginx event loop
 * (`fluxgate_redis cluster host:port ...`).  hiredis 0.14 has no cluster
 * support, and Debian packages no C cluster client, so this is ours.
 *
 * Each worker process keeps a slot map (16384 slots -> a node) fetched with
 * CLUSTER SLOTS from any node it can reach, and one hiredis connection per
 * node the map or a redirection names (ngx_fluxgate_redis.c makes them, with
 * its reconnects, stall replacement and SCRIPT LOAD on connect, so every
 * master has the scripts).  A command goes to the node of its first key's
 * slot (include/fluxgate_slot.h: every key of a product shares {productId}).
 *
 * MOVED: the slot is given to the named node at once, the command is sent
 * there, and the whole map is fetched again in the background.  ASK: the
 * command is sent once to the named node, after ASKING, and the map is left
 * alone.  Neither blocks: a resend is one more command on a pipelined
 * connection.  The map is fetched again when a node's connection is lost,
 * and when a command finds its slot's node unknown or down (at most every
 * NGX_FLUXGATE_CLUSTER_REFRESH ms), which is how a promoted replica is
 * found after a failover.  CLUSTER SLOTS has a deadline: a node that does
 * not answer it in time is marked stalled and another node is asked (a
 * late reply is ignored), so one hung node never stops the map's refresh.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_redis_cluster.h"
#include "fluxgate_slot.h"


#define NGX_FLUXGATE_CLUSTER_REFRESH     100    /* ms between two fetches */
#define NGX_FLUXGATE_CLUSTER_REDIRECTS   5      /* per command */
#define NGX_FLUXGATE_CLUSTER_INCOMPLETE  1000   /* ms: refetch a partial map */
#define NGX_FLUXGATE_CLUSTER_DEADLINE    1000   /* ms: CLUSTER SLOTS's reply */


struct ngx_fluxgate_redis_cluster_s {
    ngx_fluxgate_redis_t         **seeds;
    ngx_uint_t                     nseeds;

    /* per worker process, from init_process on */
    ngx_fluxgate_redis_t         **slots;     /* FG_CLUSTER_SLOTS of them */
    ngx_array_t                   *nodes;     /* ngx_fluxgate_redis_t * */
    ngx_pool_t                    *pool;
    ngx_log_t                     *log;
    ngx_event_t                    timer;     /* the next fetch */
    ngx_msec_t                     fetched;   /* when the last one left */
    ngx_uint_t                     next;      /* the node asked next */
    ngx_uint_t                     covered;   /* slots the map has */
    ngx_uint_t                     asks;      /* CLUSTER SLOTS sent */
    ngx_fluxgate_redis_t          *asked;

    unsigned                       loaded:1;  /* a map came once */
    unsigned                       fetching:1;
    unsigned                       exiting:1;
};


static ngx_int_t ngx_fluxgate_redis_cluster_init_process(
    ngx_fluxgate_redis_t *front, ngx_cycle_t *cycle);
static void ngx_fluxgate_redis_cluster_exit_process(
    ngx_fluxgate_redis_t *front);
static ngx_fluxgate_redis_t *ngx_fluxgate_redis_cluster_route(
    ngx_fluxgate_redis_t *front, u_char *key, size_t len);
static ngx_int_t ngx_fluxgate_redis_cluster_redirect(
    ngx_fluxgate_redis_call_t *call, redisReply *reply);
static void ngx_fluxgate_redis_cluster_lost(ngx_fluxgate_redis_t *node);
static ngx_uint_t ngx_fluxgate_redis_cluster_ready(
    ngx_fluxgate_redis_t *front);
static ngx_uint_t ngx_fluxgate_redis_cluster_up(ngx_fluxgate_redis_t *front);
static void ngx_fluxgate_redis_cluster_fetch(ngx_fluxgate_redis_cluster_t *cl);
static void ngx_fluxgate_redis_cluster_timer(ngx_event_t *ev);
static void ngx_fluxgate_redis_cluster_map(redisReply *reply, void *data);
static ngx_fluxgate_redis_t *ngx_fluxgate_redis_cluster_node(
    ngx_fluxgate_redis_cluster_t *cl, u_char *host, size_t len, int port);


/* one CLUSTER SLOTS: its reply counts only while it is the last one sent */
typedef struct {
    ngx_fluxgate_redis_cluster_t  *cl;
    ngx_uint_t                     ask;
} ngx_fluxgate_redis_cluster_ask_t;


static const ngx_fluxgate_redis_router_t  ngx_fluxgate_redis_cluster_router = {
    ngx_fluxgate_redis_cluster_init_process,
    ngx_fluxgate_redis_cluster_exit_process,
    ngx_fluxgate_redis_cluster_route,
    ngx_fluxgate_redis_cluster_ready,
    ngx_fluxgate_redis_cluster_up,
    ngx_fluxgate_redis_cluster_redirect,
    ngx_fluxgate_redis_cluster_lost
};


/* configuration: `fluxgate_redis cluster host:port [host:port ...]` */

ngx_fluxgate_redis_t *
ngx_fluxgate_redis_cluster_add(ngx_conf_t *cf, ngx_str_t *args,
    ngx_uint_t nargs)
{
    u_char                        *p, *name;
    size_t                         len;
    ngx_uint_t                     i;
    ngx_fluxgate_redis_t          *rds, *seed, **rdsp;
    ngx_fluxgate_main_conf_t      *fmcf;
    ngx_fluxgate_redis_cluster_t  *cl;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fluxgate_module);

    /* the front's name is the directive's words: the same list shares it */

    len = sizeof("cluster") - 1;

    for (i = 0; i < nargs; i++) {
        len += 1 + args[i].len;
    }

    name = ngx_pnalloc(cf->pool, len);
    if (name == NULL) {
        return NULL;
    }

    p = ngx_cpymem(name, "cluster", sizeof("cluster") - 1);

    for (i = 0; i < nargs; i++) {
        *p++ = ' ';
        p = ngx_cpymem(p, args[i].data, args[i].len);
    }

    rdsp = fmcf->redis.elts;

    for (i = 0; i < fmcf->redis.nelts; i++) {
        if (rdsp[i]->name.len == len
            && ngx_strncmp(rdsp[i]->name.data, name, len) == 0)
        {
            return rdsp[i];
        }
    }

    rds = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_redis_t));
    cl = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_redis_cluster_t));
    if (rds == NULL || cl == NULL) {
        return NULL;
    }

    rds->name.data = name;
    rds->name.len = len;
    rds->front = 1;
    rds->cluster = cl;
    rds->router = &ngx_fluxgate_redis_cluster_router;

    cl->seeds = ngx_pcalloc(cf->pool, nargs * sizeof(ngx_fluxgate_redis_t *));
    if (cl->seeds == NULL) {
        return NULL;
    }

    for (i = 0; i < nargs; i++) {
        seed = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_redis_t));
        if (seed == NULL) {
            return NULL;
        }

        if (args[i].len > 5 && ngx_strncmp(args[i].data, "unix:", 5) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "a cluster node is host:port, not \"%V\", in "
                               "the \"fluxgate_redis\" directive", &args[i]);
            return NULL;
        }

        if (ngx_fluxgate_redis_parse(cf, seed, &args[i], "fluxgate_redis")
            != NGX_OK)
        {
            return NULL;
        }

        seed->cluster = cl;
        seed->router = &ngx_fluxgate_redis_cluster_router;
        cl->seeds[i] = seed;
    }

    cl->nseeds = nargs;

    rdsp = ngx_array_push(&fmcf->redis);
    if (rdsp == NULL) {
        return NULL;
    }

    *rdsp = rds;

    return rds;
}


/* worker processes */

static ngx_int_t
ngx_fluxgate_redis_cluster_init_process(ngx_fluxgate_redis_t *front,
    ngx_cycle_t *cycle)
{
    ngx_uint_t                     i;
    ngx_fluxgate_redis_t         **node;
    ngx_fluxgate_redis_cluster_t  *cl = front->cluster;

    cl->pool = cycle->pool;
    cl->log = cycle->log;
    cl->loaded = 0;
    cl->fetching = 0;
    cl->exiting = 0;
    cl->next = 0;

    cl->slots = ngx_pcalloc(cycle->pool,
                            FG_CLUSTER_SLOTS * sizeof(ngx_fluxgate_redis_t *));
    if (cl->slots == NULL) {
        return NGX_ERROR;
    }

    cl->nodes = ngx_array_create(cycle->pool, 8,
                                 sizeof(ngx_fluxgate_redis_t *));
    if (cl->nodes == NULL) {
        return NGX_ERROR;
    }

    cl->timer.handler = ngx_fluxgate_redis_cluster_timer;
    cl->timer.data = cl;
    cl->timer.log = cycle->log;
    cl->timer.cancelable = 1;

    for (i = 0; i < cl->nseeds; i++) {
        node = ngx_array_push(cl->nodes);
        if (node == NULL) {
            return NGX_ERROR;
        }

        *node = cl->seeds[i];
        ngx_fluxgate_redis_start(*node, cycle->log);
    }

    /* queued on the first seed's connection, sent once it connects */
    ngx_fluxgate_redis_cluster_fetch(cl);

    return NGX_OK;
}


static void
ngx_fluxgate_redis_cluster_exit_process(ngx_fluxgate_redis_t *front)
{
    ngx_uint_t                     i;
    ngx_fluxgate_redis_t         **node;
    ngx_fluxgate_redis_cluster_t  *cl = front->cluster;

    cl->exiting = 1;

    if (cl->timer.timer_set) {
        ngx_del_timer(&cl->timer);
    }

    if (cl->nodes == NULL) {
        return;
    }

    node = cl->nodes->elts;

    for (i = 0; i < cl->nodes->nelts; i++) {
        ngx_fluxgate_redis_close(node[i]);
    }
}


/* routing */

static ngx_fluxgate_redis_t *
ngx_fluxgate_redis_cluster_route(ngx_fluxgate_redis_t *front, u_char *key,
    size_t len)
{
    ngx_fluxgate_redis_t          *node;
    ngx_fluxgate_redis_cluster_t  *cl = front->cluster;

    if (cl->slots == NULL) {
        return NULL;
    }

    node = cl->slots[fg_key_slot(key, len)];

    if (node == NULL || node->ac == NULL || node->refused || node->stalled) {
        /* not known yet, or down: perhaps failed over since */
        ngx_fluxgate_redis_cluster_fetch(cl);
    }

    return node;
}


/*
 * "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381": NGX_OK when
 * the command went to the named node, NGX_DECLINED when the reply is none
 * of these (or the command was redirected enough), NGX_ERROR when it could
 * not be sent; the caller then hands the reply on as it is.
 */

static ngx_int_t
ngx_fluxgate_redis_cluster_redirect(ngx_fluxgate_redis_call_t *call,
    redisReply *reply)
{
    u_char                        *p, *last, *host, *colon;
    ngx_int_t                      slot, port;
    ngx_uint_t                     ask;
    ngx_fluxgate_redis_t          *node, *old;
    ngx_fluxgate_redis_cluster_t  *cl;

    p = (u_char *) reply->str;
    last = p + reply->len;

    if (reply->len > 6 && ngx_strncmp(p, "MOVED ", 6) == 0) {
        ask = 0;
        p += 6;

    } else if (reply->len > 4 && ngx_strncmp(p, "ASK ", 4) == 0) {
        ask = 1;
        p += 4;

    } else {
        return NGX_DECLINED;
    }

    cl = call->rds->cluster;

    if (cl == NULL || cl->exiting
        || ++call->redirects > NGX_FLUXGATE_CLUSTER_REDIRECTS)
    {
        return NGX_DECLINED;
    }

    host = ngx_strlchr(p, last, ' ');
    if (host == NULL) {
        return NGX_DECLINED;
    }

    slot = ngx_atoi(p, host - p);
    host++;

    /* the last colon: an IPv6 address has more */
    for (colon = last - 1; colon > host && *colon != ':'; colon--) {
        /* void */
    }

    if (slot == NGX_ERROR || slot >= FG_CLUSTER_SLOTS || colon == host) {
        return NGX_DECLINED;
    }

    port = ngx_atoi(colon + 1, last - colon - 1);
    if (port < 1 || port > 65535) {
        return NGX_DECLINED;
    }

    node = ngx_fluxgate_redis_cluster_node(cl, host, colon - host, port);
    if (node == NULL) {
        return NGX_ERROR;
    }

    /* only while slots move: a few lines per migration */
    ngx_log_error(NGX_LOG_INFO, cl->log, 0,
                  "fluxgate: redis cluster: %s slot %i to %V (from %V)",
                  ask ? "ASK" : "MOVED", slot, &node->name,
                  &call->rds->name);

    if (!ask) {
        old = cl->slots[slot];

        if (old != node) {
            if (old != NULL && old->slots) {
                old->slots--;
            }

            cl->slots[slot] = node;
            node->slots++;
        }

        /* whatever else moved with it comes with the whole map */
        ngx_fluxgate_redis_cluster_fetch(cl);
    }

    call->asking = ask;
    call->rds = node;

    return ngx_fluxgate_redis_call_send(call);
}


/* a node's connection went away: the map may have changed */

static void
ngx_fluxgate_redis_cluster_lost(ngx_fluxgate_redis_t *node)
{
    ngx_fluxgate_redis_cluster_t  *cl = node->cluster;

    if (cl->slots != NULL && !cl->exiting && node->slots) {
        ngx_fluxgate_redis_cluster_fetch(cl);
    }
}


static ngx_uint_t
ngx_fluxgate_redis_cluster_ready(ngx_fluxgate_redis_t *front)
{
    return front->cluster->loaded;
}


/* fluxgate_health: a map, and every node that serves slots answering */

static ngx_uint_t
ngx_fluxgate_redis_cluster_up(ngx_fluxgate_redis_t *front)
{
    ngx_uint_t                     i;
    ngx_fluxgate_redis_t         **node;
    ngx_fluxgate_redis_cluster_t  *cl = front->cluster;

    if (!cl->loaded || cl->nodes == NULL || cl->covered < FG_CLUSTER_SLOTS) {
        return 0;
    }

    node = cl->nodes->elts;

    for (i = 0; i < cl->nodes->nelts; i++) {
        if (node[i]->slots && !ngx_fluxgate_redis_up(node[i])) {
            return 0;
        }
    }

    return 1;
}


/* the slot map */

static void
ngx_fluxgate_redis_cluster_fetch(ngx_fluxgate_redis_cluster_t *cl)
{
    ngx_str_t                          args[2];
    ngx_msec_t                         since;
    ngx_uint_t                         i, n;
    ngx_fluxgate_redis_t             **node, *asked;
    ngx_fluxgate_redis_cluster_ask_t  *ask;

    if (cl->fetching || cl->exiting || ngx_fluxgate_exiting) {
        return;
    }

    since = ngx_current_msec - cl->fetched;

    if (cl->loaded && since < NGX_FLUXGATE_CLUSTER_REFRESH) {
        if (!cl->timer.timer_set) {
            ngx_add_timer(&cl->timer, NGX_FLUXGATE_CLUSTER_REFRESH - since);
        }

        return;
    }

    /* any node will do: the next one with a connection, in turn */

    node = cl->nodes->elts;
    n = cl->nodes->nelts;
    asked = NULL;

    for (i = 0; i < n; i++) {
        asked = node[(cl->next + i) % n];

        if (asked->ac != NULL && !asked->stalled) {
            cl->next = (cl->next + i + 1) % n;
            break;
        }

        asked = NULL;
    }

    cl->fetched = ngx_current_msec;

    ngx_str_set(&args[0], "CLUSTER");
    ngx_str_set(&args[1], "SLOTS");

    ask = (asked != NULL) ? ngx_alloc(sizeof(*ask), cl->log) : NULL;

    if (ask != NULL) {
        ask->cl = cl;
        ask->ask = ++cl->asks;
    }

    if (ask == NULL
        || ngx_fluxgate_redis_command(asked, 2, args,
                                      ngx_fluxgate_redis_cluster_map, ask)
           != NGX_OK)
    {
        if (ask != NULL) {
            ngx_free(ask);
        }

        /* nothing reachable now: again soon */
        if (!cl->timer.timer_set) {
            ngx_add_timer(&cl->timer, NGX_FLUXGATE_CLUSTER_REFRESH);
        }

        return;
    }

    cl->fetching = 1;
    cl->asked = asked;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cl->log, 0,
                   "fluxgate: redis cluster: CLUSTER SLOTS to %V",
                   &asked->name);

    /* the timer is now the reply's deadline */
    if (cl->timer.timer_set) {
        ngx_del_timer(&cl->timer);
    }

    ngx_add_timer(&cl->timer, NGX_FLUXGATE_CLUSTER_DEADLINE);
}


static void
ngx_fluxgate_redis_cluster_timer(ngx_event_t *ev)
{
    ngx_fluxgate_redis_cluster_t  *cl = ev->data;

    if (cl->fetching) {
        /* the deadline: whatever that node answers later is ignored */

        ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                      "fluxgate: redis cluster: no reply to CLUSTER SLOTS "
                      "from %V within %dms, asking another node",
                      &cl->asked->name, NGX_FLUXGATE_CLUSTER_DEADLINE);

        cl->fetching = 0;
        cl->asks++;
        ngx_fluxgate_redis_timed_out(cl->asked);
    }

    cl->fetched = ngx_current_msec - NGX_FLUXGATE_CLUSTER_REFRESH;
    ngx_fluxgate_redis_cluster_fetch(cl);
}


/*
 * CLUSTER SLOTS: [[start, end, [ip, port, id], [replica]...], ...]; an
 * empty ip means the node that answered
 */

static void
ngx_fluxgate_redis_cluster_map(redisReply *reply, void *data)
{
    ngx_fluxgate_redis_cluster_ask_t  *ask = data;

    u_char                         *host;
    size_t                          len;
    ngx_uint_t                      i, n, covered, last;
    long long                       start, end, s;
    redisReply                     *range, *master;
    ngx_fluxgate_redis_t          **node, *owner;
    ngx_fluxgate_redis_cluster_t   *cl;

    cl = ask->cl;
    last = (ask->ask == cl->asks);
    ngx_free(ask);

    if (!last || !cl->fetching) {
        /* its deadline passed: another node was asked since */
        return;
    }

    cl->fetching = 0;

    if (cl->timer.timer_set) {
        ngx_del_timer(&cl->timer);
    }

    if (cl->exiting || cl->slots == NULL) {
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                      "fluxgate: redis cluster: CLUSTER SLOTS from %V: %*s",
                      &cl->asked->name,
                      (size_t) (reply && reply->str ? reply->len : 0),
                      reply && reply->str ? reply->str : "no reply");

        if (!cl->timer.timer_set) {
            ngx_add_timer(&cl->timer, NGX_FLUXGATE_CLUSTER_REFRESH);
        }

        return;
    }

    /* a new map over the old one: all in this one event */

    ngx_memzero(cl->slots, FG_CLUSTER_SLOTS * sizeof(ngx_fluxgate_redis_t *));

    node = cl->nodes->elts;
    n = cl->nodes->nelts;

    for (i = 0; i < n; i++) {
        node[i]->slots = 0;
    }

    covered = 0;

    for (i = 0; i < reply->elements; i++) {
        range = reply->element[i];

        if (range->type != REDIS_REPLY_ARRAY
            || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER
            || range->element[1]->type != REDIS_REPLY_INTEGER
            || range->element[2]->type != REDIS_REPLY_ARRAY
            || range->element[2]->elements < 2
            || range->element[2]->element[0]->type != REDIS_REPLY_STRING
            || range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        {
            continue;
        }

        start = range->element[0]->integer;
        end = range->element[1]->integer;
        master = range->element[2];

        if (start < 0 || end >= FG_CLUSTER_SLOTS || start > end) {
            continue;
        }

        host = (u_char *) master->element[0]->str;
        len = master->element[0]->len;

        if (len == 0 || (len == 1 && host[0] == '?')) {
            host = (u_char *) cl->asked->host;
            len = ngx_strlen(cl->asked->host);
        }

        owner = ngx_fluxgate_redis_cluster_node(cl, host, len,
                                               (int) master->element[1]
                                                            ->integer);
        if (owner == NULL) {
            continue;
        }

        for (s = start; s <= end; s++) {
            cl->slots[s] = owner;
        }

        owner->slots += end - start + 1;
        covered += end - start + 1;
    }

    if (!cl->loaded || covered != cl->covered) {
        ngx_log_error(NGX_LOG_INFO, cl->log, 0,
                      "fluxgate: redis cluster: %ui of %d slots mapped "
                      "(from %V)", covered, FG_CLUSTER_SLOTS,
                      &cl->asked->name);
    }

    cl->loaded = 1;
    cl->covered = covered;

    /* a cluster still being made (or missing slots): look again soon */
    if (covered < FG_CLUSTER_SLOTS && !cl->timer.timer_set) {
        ngx_add_timer(&cl->timer, NGX_FLUXGATE_CLUSTER_INCOMPLETE);
    }

    ngx_fluxgate_redis_changed();
}


/* the node of an address, connected at once if it is new */

static ngx_fluxgate_redis_t *
ngx_fluxgate_redis_cluster_node(ngx_fluxgate_redis_cluster_t *cl,
    u_char *host, size_t len, int port)
{
    u_char                 *p;
    ngx_uint_t              i;
    ngx_fluxgate_redis_t  **node, *rds;

    node = cl->nodes->elts;

    for (i = 0; i < cl->nodes->nelts; i++) {
        if (node[i]->port == port
            && ngx_strlen(node[i]->host) == len
            && ngx_strncmp(node[i]->host, host, len) == 0)
        {
            return node[i];
        }
    }

    if (len == 0 || len > NGX_SOCKADDR_STRLEN) {
        return NULL;
    }

    rds = ngx_pcalloc(cl->pool, sizeof(ngx_fluxgate_redis_t));
    p = ngx_pnalloc(cl->pool, 2 * len + NGX_INT_T_LEN + 3);
    node = ngx_array_push(cl->nodes);

    if (rds == NULL || p == NULL || node == NULL) {
        return NULL;
    }

    rds->host = (char *) p;
    p = ngx_cpymem(p, host, len);
    *p++ = '\0';

    rds->name.data = p;
    rds->name.len = ngx_sprintf(p, "%*s:%d", len, host, port) - p;

    rds->port = port;
    rds->cluster = cl;
    rds->router = &ngx_fluxgate_redis_cluster_router;
    rds->used = 1;

    *node = rds;

    ngx_log_error(NGX_LOG_INFO, cl->log, 0,
                  "fluxgate: redis cluster: new node %V", &rds->name);

    ngx_fluxgate_redis_start(rds, cl->log);

    return rds;
}
