
/*
 * Flux-Gate: what ngx_fluxgate_redis.c (the connections),
 * ngx_fluxgate_redis_command.c (the commands on them) and
 * ngx_fluxgate_redis_cluster.c (the Redis Cluster router) share.  Nothing
 * else includes this file: the other files see ngx_fluxgate_redis_t as an
 * opaque type through ngx_fluxgate.h.
 *
 * A plain `fluxgate_redis host:port` is one ngx_fluxgate_redis_t with a
 * connection.  `fluxgate_redis cluster host:port ...` is a "front": an
 * ngx_fluxgate_redis_t without a connection of its own, whose commands the
 * router sends to "nodes", ngx_fluxgate_redis_t's with a connection each,
 * made in each worker process for the seeds and for every master the slot
 * map or a MOVED/ASK names.
 */


#ifndef _NGX_FLUXGATE_REDIS_CLUSTER_H_INCLUDED_
#define _NGX_FLUXGATE_REDIS_CLUSTER_H_INCLUDED_


#include "ngx_fluxgate.h"


typedef struct ngx_fluxgate_redis_cluster_s  ngx_fluxgate_redis_cluster_t;
typedef struct ngx_fluxgate_redis_call_s     ngx_fluxgate_redis_call_t;


/*
 * What a front (and each node of its cluster) asks of the router:
 * ngx_fluxgate_redis_cluster.c sets it, ngx_fluxgate_redis.c calls it, so
 * the connections know nothing of the cluster above them
 */
typedef struct {
    ngx_int_t                    (*init_process)(ngx_fluxgate_redis_t *front,
                                                 ngx_cycle_t *cycle);
    void                         (*exit_process)(ngx_fluxgate_redis_t *front);
    ngx_fluxgate_redis_t        *(*route)(ngx_fluxgate_redis_t *front,
                                          u_char *key, size_t len);
    ngx_uint_t                   (*ready)(ngx_fluxgate_redis_t *front);
    ngx_uint_t                   (*up)(ngx_fluxgate_redis_t *front);
    ngx_int_t                    (*redirect)(ngx_fluxgate_redis_call_t *call,
                                             redisReply *reply);
    void                         (*lost)(ngx_fluxgate_redis_t *node);
} ngx_fluxgate_redis_router_t;


struct ngx_fluxgate_redis_s {
    ngx_str_t                      name;
    char                          *host;      /* an address, or a path */
    int                            port;      /* 0: a unix socket */

    redisAsyncContext             *ac;
    ngx_event_t                    timer;     /* connect or backoff */
    ngx_event_t                    heartbeat; /* PING and ROLE, each second */
    ngx_msec_t                     backoff;
    ngx_log_t                     *log;
    const char                    *refused;   /* why it refuses: LOADING.. */

    /* a front: the cluster it routes to; a node: the cluster it is in */
    ngx_fluxgate_redis_cluster_t  *cluster;
    const ngx_fluxgate_redis_router_t  *router;
    ngx_uint_t                     slots;     /* a node: its slots now */

    unsigned                       used:1;
    unsigned                       connected:1;
    unsigned                       stalled:1;
    unsigned                       front:1;

    /* a heartbeat answered since (re)connect: PONG, and ROLE "master" */
    unsigned                       answered:1;
    unsigned                       probing:1;     /* its replies are due */
    unsigned                       pong:1;        /* this one's PING: PONG */
};


/*
 * One command on its way: what to call with the reply, and the command in
 * RESP, kept for a resend after NOSCRIPT, MOVED or ASK; both in one
 * allocation.  refs counts the hiredis callbacks that still point here
 * (the command's, and then its WAIT's): freed when the last one ran.
 */
struct ngx_fluxgate_redis_call_s {
    ngx_fluxgate_redis_t          *rds;       /* where it was last sent */
    ngx_fluxgate_script_t         *script;
    ngx_fluxgate_redis_handler_pt  handler;
    void                          *data;
    char                          *cmd;
    size_t                         len;

    redisReply                    *saved;     /* held until WAIT answers */
    ngx_uint_t                     refs;
    ngx_uint_t                     wait;      /* WAIT: replicas, 0: none */
    ngx_msec_t                     wait_timeout;
    ngx_uint_t                     wait_codes;
    ngx_uint_t                     redirects;

    unsigned                       reloaded:1;
    unsigned                       clustered:1;   /* follows MOVED, ASK */
    unsigned                       asking:1;      /* ASKING first */
    unsigned                       confirming:1;  /* saved, WAIT sent */
    unsigned                       delivered:1;
};


/* ngx_fluxgate_redis.c, for the router */
ngx_int_t ngx_fluxgate_redis_parse(ngx_conf_t *cf, ngx_fluxgate_redis_t *rds,
    ngx_str_t *addr, const char *directive);
void ngx_fluxgate_redis_start(ngx_fluxgate_redis_t *rds, ngx_log_t *log);
void ngx_fluxgate_redis_close(ngx_fluxgate_redis_t *rds);
void ngx_fluxgate_redis_changed(void);
void ngx_fluxgate_redis_loaded(redisAsyncContext *ac, void *r, void *data);
void ngx_fluxgate_redis_refusing(ngx_fluxgate_redis_t *rds, const char *why);

/* ngx_fluxgate_redis_command.c, for the router */
ngx_int_t ngx_fluxgate_redis_call_send(ngx_fluxgate_redis_call_t *call);



#endif /* _NGX_FLUXGATE_REDIS_CLUSTER_H_INCLUDED_ */
