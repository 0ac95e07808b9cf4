
/*
 * Flux-Gate: Redis on the nginx event loop.  Each worker process keeps one
 * hiredis async connection per distinct fluxgate_redis address that a
 * handler uses; every request's command is pipelined on it.  A connection
 * that fails is retried on a cancelable timer with a doubling backoff, and
 * commands meanwhile fail at once (the caller answers 503).
 *
 * The scripts of lua/ are loaded with SCRIPT LOAD when the connection is
 * made and called with EVALSHA (ngx_fluxgate_redis_command.c sends the
 * commands; a NOSCRIPT reply loads the script again).
 *
 * hiredis calls every outstanding callback exactly once, with NULL when the
 * connection went away first; the callers rely on that to free their state.
 *
 * Health asks instead of waiting to be told: each connection sends PING
 * and ROLE every NGX_FLUXGATE_REDIS_HEARTBEAT ms, traffic or not.  A
 * connection is "up" only once a heartbeat was answered since it was
 * (re)made, with PONG and ROLE "master"; a heartbeat still unanswered when
 * the next is due goes through the stall path below, like a request's
 * deadline; and a server that refuses commands (LOADING, READONLY,
 * MASTERDOWN, BUSY, whether a heartbeat or a request learns it) is down
 * until a heartbeat finds it serving again.  New requests are not sent to
 * a refusing server: they fail fast.
 *
 * `fluxgate_redis cluster ...` puts ngx_fluxgate_redis_cluster.c between a
 * caller and these connections: it picks the node of each command's first
 * key and follows MOVED and ASK.  fluxgate_redis_wait pipelines WAIT after
 * a command whose reply reports a write (order.lua's reservation) and
 * hands the reply on only once enough replicas have it.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_redis_adapter.h"
#include "ngx_fluxgate_redis_cluster.h"
#include "ngx_fluxgate_lua.h"


#define NGX_FLUXGATE_REDIS_CONNECT_TIMEOUT  1000
#define NGX_FLUXGATE_REDIS_BACKOFF_MIN      100
#define NGX_FLUXGATE_REDIS_BACKOFF_MAX      5000

/*
 * A connection that let a deadline pass and then stays silent this long is
 * replaced: a peer that vanished without a FIN or RST (a partition, a
 * failover behind a virtual IP) would otherwise hold every order to 503
 * until TCP gives up, minutes later.  Whatever was in flight on it ends
 * with "connection lost", which each caller handles as "unknown outcome".
 */
#define NGX_FLUXGATE_REDIS_STALL_MAX        1000

/* PING and ROLE this often; unanswered when the next is due: a stall */
#define NGX_FLUXGATE_REDIS_HEARTBEAT        1000


static void ngx_fluxgate_redis_connect(ngx_fluxgate_redis_t *rds);
static void ngx_fluxgate_redis_retry(ngx_fluxgate_redis_t *rds,
    const char *reason);
static void ngx_fluxgate_redis_timer(ngx_event_t *ev);
static void ngx_fluxgate_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_fluxgate_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_fluxgate_redis_heartbeat(ngx_event_t *ev);
static void ngx_fluxgate_redis_probe(ngx_fluxgate_redis_t *rds);
static void ngx_fluxgate_redis_pinged(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_fluxgate_redis_role(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_fluxgate_redis_serving(ngx_fluxgate_redis_t *rds);


ngx_fluxgate_script_t  ngx_fluxgate_script_order = {
    ngx_string("order"),
    ngx_string(NGX_FLUXGATE_LUA_ORDER_SHA),
    ngx_string(NGX_FLUXGATE_LUA_ORDER)
};

ngx_fluxgate_script_t  ngx_fluxgate_script_release = {
    ngx_string("release"),
    ngx_string(NGX_FLUXGATE_LUA_RELEASE_SHA),
    ngx_string(NGX_FLUXGATE_LUA_RELEASE)
};

ngx_fluxgate_script_t  ngx_fluxgate_script_done = {
    ngx_string("done"),
    ngx_string(NGX_FLUXGATE_LUA_DONE_SHA),
    ngx_string(NGX_FLUXGATE_LUA_DONE)
};

ngx_fluxgate_script_t  ngx_fluxgate_script_init = {
    ngx_string("init"),
    ngx_string(NGX_FLUXGATE_LUA_INIT_SHA),
    ngx_string(NGX_FLUXGATE_LUA_INIT)
};


ngx_fluxgate_script_t  ngx_fluxgate_script_queue_head = {
    ngx_string("queue_head"),
    ngx_string(NGX_FLUXGATE_LUA_QUEUE_HEAD_SHA),
    ngx_string(NGX_FLUXGATE_LUA_QUEUE_HEAD)
};

ngx_fluxgate_script_t  ngx_fluxgate_script_queue_control = {
    ngx_string("queue_control"),
    ngx_string(NGX_FLUXGATE_LUA_QUEUE_CONTROL_SHA),
    ngx_string(NGX_FLUXGATE_LUA_QUEUE_CONTROL)
};


static ngx_fluxgate_script_t  *ngx_fluxgate_scripts[] = {
    &ngx_fluxgate_script_order,
    &ngx_fluxgate_script_release,
    &ngx_fluxgate_script_done,
    &ngx_fluxgate_script_init,
    &ngx_fluxgate_script_queue_head,
    &ngx_fluxgate_script_queue_control,
    NULL
};


static ngx_uint_t  ngx_fluxgate_redis_exiting;

static ngx_fluxgate_changed_pt  ngx_fluxgate_redis_change_handler;


/* configuration: an address is parsed and resolved once, at nginx -t */

ngx_fluxgate_redis_t *
ngx_fluxgate_redis_add(ngx_conf_t *cf, ngx_str_t *addr)
{
    ngx_uint_t                 i;
    ngx_fluxgate_redis_t      *rds, **rdsp;
    ngx_fluxgate_main_conf_t  *fmcf;

    fmcf = ngx_http_conf_get_module_main_conf(cf, ngx_fluxgate_module);

    rdsp = fmcf->redis.elts;

    for (i = 0; i < fmcf->redis.nelts; i++) {
        if (rdsp[i]->name.len == addr->len
            && ngx_strncmp(rdsp[i]->name.data, addr->data, addr->len) == 0)
        {
            return rdsp[i];
        }
    }

    rds = ngx_pcalloc(cf->pool, sizeof(ngx_fluxgate_redis_t));
    if (rds == NULL) {
        return NULL;
    }

    if (ngx_fluxgate_redis_parse(cf, rds, addr, "fluxgate_redis") != NGX_OK) {
        return NULL;
    }

    rdsp = ngx_array_push(&fmcf->redis);
    if (rdsp == NULL) {
        return NULL;
    }

    *rdsp = rds;

    return rds;
}


/* an address: host:port (resolved now, once) or unix:/path */

ngx_int_t
ngx_fluxgate_redis_parse(ngx_conf_t *cf, ngx_fluxgate_redis_t *rds,
    ngx_str_t *addr, const char *directive)
{
    u_char     text[NGX_SOCKADDR_STRLEN];
    size_t     len;
    ngx_url_t  u;

    rds->name = *addr;

    if (addr->len > 5 && ngx_strncmp(addr->data, "unix:", 5) == 0) {
        len = addr->len - 5;

        if (len >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "path too long in \"%V\" of the "
                               "\"%s\" directive", addr, directive);
            return NGX_ERROR;
        }

        rds->host = ngx_pcalloc(cf->pool, len + 1);
        if (rds->host == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(rds->host, addr->data + 5, len);
        rds->port = 0;

    } else {
        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = *addr;
        u.default_port = 6379;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in \"%V\" of the \"%s\" directive",
                               u.err ? u.err : "host not found", addr,
                               directive);
            return NGX_ERROR;
        }

        if (u.no_port && u.uri.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%s\" directive",
                               addr, directive);
            return NGX_ERROR;
        }

        len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                            text, NGX_SOCKADDR_STRLEN, 0);

        rds->host = ngx_pcalloc(cf->pool, len + 1);
        if (rds->host == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(rds->host, text, len);
        rds->port = ngx_inet_get_port(u.addrs[0].sockaddr);
    }

    return NGX_OK;
}


void
ngx_fluxgate_redis_use(ngx_fluxgate_redis_t *rds)
{
    rds->used = 1;
}


/* who looks again at the connections' state when it changes */

void
ngx_fluxgate_redis_on_change(ngx_fluxgate_changed_pt handler)
{
    ngx_fluxgate_redis_change_handler = handler;
}


void
ngx_fluxgate_redis_changed(void)
{
    if (ngx_fluxgate_redis_change_handler) {
        ngx_fluxgate_redis_change_handler();
    }
}


/* worker processes */

ngx_int_t
ngx_fluxgate_redis_init_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf)
{
    ngx_uint_t             i;
    ngx_fluxgate_redis_t  *rds, **rdsp;

    ngx_fluxgate_redis_exiting = 0;

    rdsp = fmcf->redis.elts;

    for (i = 0; i < fmcf->redis.nelts; i++) {
        rds = rdsp[i];

        if (!rds->used) {
            continue;
        }

        if (rds->front) {
            if (rds->router->init_process(rds, cycle)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        ngx_fluxgate_redis_start(rds, cycle->log);
    }

    return NGX_OK;
}


void
ngx_fluxgate_redis_start(ngx_fluxgate_redis_t *rds, ngx_log_t *log)
{
    rds->log = log;
    rds->timer.handler = ngx_fluxgate_redis_timer;
    rds->timer.data = rds;
    rds->timer.log = log;
    rds->timer.cancelable = 1;

    rds->heartbeat.handler = ngx_fluxgate_redis_heartbeat;
    rds->heartbeat.data = rds;
    rds->heartbeat.log = log;
    rds->heartbeat.cancelable = 1;

    ngx_fluxgate_redis_connect(rds);
}


void
ngx_fluxgate_redis_exit_process(ngx_cycle_t *cycle,
    ngx_fluxgate_main_conf_t *fmcf)
{
    ngx_uint_t             i;
    ngx_fluxgate_redis_t  *rds, **rdsp;

    ngx_fluxgate_redis_exiting = 1;

    rdsp = fmcf->redis.elts;

    for (i = 0; i < fmcf->redis.nelts; i++) {
        rds = rdsp[i];

        if (rds->front) {
            if (rds->used) {
                rds->router->exit_process(rds);
            }

            continue;
        }

        ngx_fluxgate_redis_close(rds);
    }
}


void
ngx_fluxgate_redis_close(ngx_fluxgate_redis_t *rds)
{
    redisAsyncContext  *ac;

    if (rds->timer.timer_set) {
        ngx_del_timer(&rds->timer);
    }

    if (rds->heartbeat.timer_set) {
        ngx_del_timer(&rds->heartbeat);
    }

    ac = rds->ac;

    if (ac == NULL) {
        return;
    }

    /*
     * one last non-blocking write: the "done" and "release" scripts
     * the final delivery reports queued go out if the socket takes them
     */

    if (rds->connected) {
        redisAsyncHandleWrite(ac);
    }

    if (rds->ac != NULL) {
        rds->ac = NULL;
        redisAsyncFree(ac);
    }
}


static void
ngx_fluxgate_redis_connect(ngx_fluxgate_redis_t *rds)
{
    ngx_uint_t              i;
    redisAsyncContext      *ac;
    ngx_fluxgate_script_t  *script;

    if (rds->port) {
        ac = redisAsyncConnect(rds->host, rds->port);

    } else {
        ac = redisAsyncConnectUnix(rds->host);
    }

    if (ac == NULL) {
        ngx_fluxgate_redis_retry(rds, "out of memory");
        return;
    }

    if (ac->err) {
        ngx_fluxgate_redis_retry(rds, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    if (ngx_fluxgate_redis_adapter_attach(ac, rds->log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_fluxgate_redis_retry(rds, "no free connection");
        return;
    }

    ac->data = rds;
    rds->ac = ac;
    rds->connected = 0;
    rds->stalled = 0;
    rds->answered = 0;
    rds->probing = 0;
    rds->refused = NULL;

    (void) redisAsyncSetConnectCallback(ac, ngx_fluxgate_redis_connected);
    (void) redisAsyncSetDisconnectCallback(ac,
                                           ngx_fluxgate_redis_disconnected);

    /* first in the pipeline, so every EVALSHA after them finds them */

    for (i = 0; ngx_fluxgate_scripts[i]; i++) {
        script = ngx_fluxgate_scripts[i];

        (void) redisAsyncCommand(ac, ngx_fluxgate_redis_loaded, script,
                                 "SCRIPT LOAD %b", script->body.data,
                                 script->body.len);
    }

    /* and the first heartbeat: "up" waits for its answer */
    ngx_fluxgate_redis_probe(rds);

    ngx_add_timer(&rds->timer, NGX_FLUXGATE_REDIS_CONNECT_TIMEOUT);
}


/* the context is gone or going: try again later, each time later */

static void
ngx_fluxgate_redis_retry(ngx_fluxgate_redis_t *rds, const char *reason)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rds->log, 0,
                   "fluxgate: redis %V: state down (%s)", &rds->name,
                   reason);

    rds->ac = NULL;
    rds->connected = 0;
    rds->stalled = 0;
    rds->answered = 0;
    rds->probing = 0;
    ngx_fluxgate_redis_changed();

    if (rds->heartbeat.timer_set) {
        ngx_del_timer(&rds->heartbeat);
    }

    if (ngx_fluxgate_redis_exiting) {
        return;
    }

    if (rds->router != NULL) {
        rds->router->lost(rds);
    }

    if (rds->backoff == 0) {
        rds->backoff = NGX_FLUXGATE_REDIS_BACKOFF_MIN;

    } else {
        rds->backoff = ngx_min(rds->backoff * 2,
                               NGX_FLUXGATE_REDIS_BACKOFF_MAX);
    }

    ngx_log_error(NGX_LOG_ERR, rds->log, 0,
                  "fluxgate: redis %V: %s, retrying in %Mms",
                  &rds->name, reason, rds->backoff);

    if (rds->timer.timer_set) {
        ngx_del_timer(&rds->timer);
    }

    ngx_add_timer(&rds->timer, rds->backoff);
}


static void
ngx_fluxgate_redis_timer(ngx_event_t *ev)
{
    ngx_fluxgate_redis_t  *rds = ev->data;

    redisAsyncContext  *ac;

    ac = rds->ac;

    if (ac == NULL) {
        ngx_fluxgate_redis_connect(rds);
        return;
    }

    if (!rds->connected) {
        rds->ac = NULL;
        redisAsyncFree(ac);
        ngx_fluxgate_redis_retry(rds, "connect timed out");
        return;
    }

    if (rds->stalled) {
        ngx_log_error(NGX_LOG_WARN, rds->log, 0,
                      "fluxgate: redis %V: no reply for %Mms after a "
                      "deadline passed, replacing the connection",
                      &rds->name, (ngx_msec_t) NGX_FLUXGATE_REDIS_STALL_MAX);

        /* every callback runs now, with no reply; retry() reconnects */
        rds->ac = NULL;
        redisAsyncFree(ac);
        ngx_fluxgate_redis_retry(rds, "connection stalled");
    }
}


static void
ngx_fluxgate_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_fluxgate_redis_t  *rds = ac->data;

    if (rds->timer.timer_set) {
        ngx_del_timer(&rds->timer);
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        ngx_fluxgate_redis_retry(rds, ac->errstr ? ac->errstr
                                                 : "connect failed");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, rds->log, 0,
                  "fluxgate: redis %V: connected", &rds->name);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rds->log, 0,
                   "fluxgate: redis %V: state connected", &rds->name);

    /* the backoff is reset by the first reply, not by a bare connect */
    rds->connected = 1;
    ngx_fluxgate_redis_changed();

    if (rds->port) {
        /* a peer that vanished without a FIN is found within a minute */
        (void) redisEnableKeepAlive((redisContext *) &ac->c);
    }
}


static void
ngx_fluxgate_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_fluxgate_redis_t  *rds = ac->data;

    if (rds->ac == ac) {
        ngx_fluxgate_redis_retry(rds, ac->errstr ? ac->errstr
                                                 : "connection closed");
    }
}


void
ngx_fluxgate_redis_loaded(redisAsyncContext *ac, void *r, void *data)
{
    redisReply             *reply = r;
    ngx_fluxgate_script_t  *script = data;

    ngx_fluxgate_redis_t  *rds;

    rds = ac->data;

    if (reply == NULL) {
        return;
    }

    rds->backoff = 0;

    if (reply->type != REDIS_REPLY_STRING
        || reply->len != script->sha.len
        || ngx_strncmp(reply->str, script->sha.data, reply->len) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, rds->log, 0,
                      "fluxgate: redis %V: SCRIPT LOAD of %V.lua: "
                      "unexpected reply \"%*s\"", &rds->name, &script->name,
                      (size_t) ngx_min(reply->len, 200),
                      reply->str ? reply->str : "");
    }
}


/* the heartbeat */

static void
ngx_fluxgate_redis_heartbeat(ngx_event_t *ev)
{
    ngx_fluxgate_redis_t  *rds = ev->data;

    if (rds->ac == NULL) {
        /* a new connection probes at once and arms the timer again */
        return;
    }

    if (rds->probing) {
        if (!rds->stalled) {
            ngx_log_error(NGX_LOG_WARN, rds->log, 0,
                          "fluxgate: redis %V: no answer to the heartbeat "
                          "within %Mms", &rds->name,
                          (ngx_msec_t) NGX_FLUXGATE_REDIS_HEARTBEAT);
        }

        /* the stall path: failing fast, then a new connection */
        ngx_fluxgate_redis_timed_out(rds);

    } else {
        ngx_fluxgate_redis_probe(rds);
    }

    if (!ngx_fluxgate_redis_exiting && !ev->timer_set) {
        ngx_add_timer(ev, NGX_FLUXGATE_REDIS_HEARTBEAT);
    }
}


/*
 * PING proves the server serves commands (it answers LOADING or BUSY when
 * it does not), ROLE that it is a master: both on the connection every
 * request uses, so a reply means the requests' replies can come too
 */

static void
ngx_fluxgate_redis_probe(ngx_fluxgate_redis_t *rds)
{
    redisAsyncContext  *ac;

    ac = rds->ac;

    if (ac == NULL
        || (ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING))
        || redisAsyncCommand(ac, ngx_fluxgate_redis_pinged, rds, "PING")
           != REDIS_OK
        || redisAsyncCommand(ac, ngx_fluxgate_redis_role, rds, "ROLE")
           != REDIS_OK)
    {
        return;
    }

    rds->probing = 1;
    rds->pong = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rds->log, 0,
                   "fluxgate: redis %V: heartbeat sent", &rds->name);

    if (!ngx_fluxgate_redis_exiting && !rds->heartbeat.timer_set) {
        ngx_add_timer(&rds->heartbeat, NGX_FLUXGATE_REDIS_HEARTBEAT);
    }
}


static void
ngx_fluxgate_redis_pinged(redisAsyncContext *ac, void *r, void *data)
{
    redisReply            *reply = r;
    ngx_fluxgate_redis_t  *rds = data;

    const char  *why;

    if (reply == NULL || ac->data != rds || rds->ac != ac) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        why = ngx_fluxgate_redis_refusal(reply);
        ngx_fluxgate_redis_refusing(rds, why ? why : "PING failed");
        return;
    }

    rds->pong = 1;
}


/* ROLE: ["master", offset, [replicas]] or ["slave", ...]: the verdict */

static void
ngx_fluxgate_redis_role(redisAsyncContext *ac, void *r, void *data)
{
    redisReply            *reply = r;
    ngx_fluxgate_redis_t  *rds = data;

    redisReply  *role;

    if (reply == NULL || rds->ac != ac) {
        return;
    }

    rds->probing = 0;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_fluxgate_redis_refusing(rds, "ROLE failed");
        return;
    }

    role = reply->element[0];

    if (role->len != sizeof("master") - 1
        || ngx_strncmp(role->str, "master", role->len) != 0)
    {
        ngx_fluxgate_redis_refusing(rds, "not a master (ROLE)");
        return;
    }

    /* PING's error, a moment ago on the same connection, stands */
    if (!rds->pong) {
        return;
    }

    ngx_fluxgate_redis_serving(rds);
}


/*
 * The server answers but does not serve: down for health, and new
 * requests fail fast, until a heartbeat finds it serving.  In a cluster a
 * node that refuses may have lost its slots: the map is fetched again.
 */

void
ngx_fluxgate_redis_refusing(ngx_fluxgate_redis_t *rds, const char *why)
{
    if (rds->refused != why) {
        ngx_log_error(NGX_LOG_WARN, rds->log, 0,
                      "fluxgate: redis %V: refusing commands (%s): "
                      "down until a heartbeat finds it serving",
                      &rds->name, why);
    }

    rds->refused = why;
    rds->answered = 0;
    ngx_fluxgate_redis_changed();

    if (rds->router != NULL && !rds->front) {
        rds->router->lost(rds);
    }
}


static void
ngx_fluxgate_redis_serving(ngx_fluxgate_redis_t *rds)
{
    if (rds->answered && rds->refused == NULL) {
        return;
    }

    if (rds->refused != NULL) {
        ngx_log_error(NGX_LOG_NOTICE, rds->log, 0,
                      "fluxgate: redis %V: serving again", &rds->name);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rds->log, 0,
                   "fluxgate: redis %V: state up (heartbeat answered)",
                   &rds->name);

    rds->refused = NULL;
    rds->answered = 1;
    ngx_fluxgate_redis_changed();
}


/*
 * An error reply that says the server refuses to serve (so a script sent
 * with the command never ran): the static name of the refusal, else NULL
 */

const char *
ngx_fluxgate_redis_refusal(redisReply *reply)
{
    ngx_uint_t   i;

    static const char  *refusals[] = {
        "LOADING", "READONLY", "MASTERDOWN", "BUSY", NULL
    };

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return NULL;
    }

    for (i = 0; refusals[i]; i++) {
        if (ngx_fluxgate_redis_error_is(reply, refusals[i])) {
            return refusals[i];
        }
    }

    return NULL;
}


/* an error reply whose first word is this error code */

ngx_uint_t
ngx_fluxgate_redis_error_is(redisReply *reply, const char *code)
{
    size_t  len;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return 0;
    }

    len = ngx_strlen(code);

    return reply->len >= len
           && ngx_strncmp(reply->str, code, len) == 0
           && (reply->len == len || reply->str[len] == ' ');
}


/*
 * Errors that prove a command was refused before it ran (nothing it would
 * write was written): the refusals above, and OOM (a script is refused
 * before its first write), TRYAGAIN, CLUSTERDOWN, NOSCRIPT, and MOVED or
 * ASK left over when the redirections ran out
 */

ngx_uint_t
ngx_fluxgate_redis_not_run(redisReply *reply)
{
    ngx_uint_t   i;

    static const char  *codes[] = {
        "OOM", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", "MOVED", "ASK", NULL
    };

    if (ngx_fluxgate_redis_refusal(reply) != NULL) {
        return 1;
    }

    for (i = 0; codes[i]; i++) {
        if (ngx_fluxgate_redis_error_is(reply, codes[i])) {
            return 1;
        }
    }

    return 0;
}


/* commands */

/*
 * Whether a new request should try this Redis at all.  After a deadline
 * passed without a reply ("stalled"), new requests fail fast until the next
 * reply arrives, instead of piling commands onto a frozen server.  A
 * cluster is ready once it has a slot map; ngx_fluxgate_redis_node() gives
 * the node of a key, to ask the same of it.
 */


ngx_int_t
ngx_fluxgate_redis_ready(ngx_fluxgate_redis_t *rds)
{
    if (rds == NULL) {
        return 0;
    }

    if (rds->front) {
        return rds->router->ready(rds);
    }

    return rds->ac != NULL && !rds->stalled && rds->refused == NULL;
}


/* the connection a command on this key goes to: NULL when none is known */

ngx_fluxgate_redis_t *
ngx_fluxgate_redis_node(ngx_fluxgate_redis_t *rds, ngx_str_t *key)
{
    if (!rds->front) {
        return rds;
    }

    return rds->router->route(rds, key->data, key->len);
}


/*
 * For fluxgate_health and fluxgate_redis_up: connected, a heartbeat
 * answered since, no deadline passed unanswered, and not refusing
 */

ngx_uint_t
ngx_fluxgate_redis_up(ngx_fluxgate_redis_t *rds)
{
    if (rds->front) {
        return rds->router->up(rds);
    }

    return rds->ac != NULL && rds->connected && rds->answered
           && !rds->stalled && rds->refused == NULL;
}


ngx_uint_t
ngx_fluxgate_redis_all_up(ngx_fluxgate_main_conf_t *fmcf)
{
    ngx_uint_t              i;
    ngx_fluxgate_redis_t  **rdsp;

    rdsp = fmcf->redis.elts;

    for (i = 0; i < fmcf->redis.nelts; i++) {
        if (rdsp[i]->used && !ngx_fluxgate_redis_up(rdsp[i])) {
            return 0;
        }
    }

    return 1;
}


void
ngx_fluxgate_redis_timed_out(ngx_fluxgate_redis_t *rds)
{
    if (rds == NULL || rds->front) {
        return;
    }

    if (rds->ac != NULL && !rds->stalled) {
        ngx_log_error(NGX_LOG_WARN, rds->log, 0,
                      "fluxgate: redis %V: no reply within the deadline, "
                      "failing fast until it answers", &rds->name);
        rds->stalled = 1;
        ngx_fluxgate_redis_changed();

        /* connected, the timer is free: it now bounds the silence */
        if (rds->connected && !rds->timer.timer_set) {
            ngx_add_timer(&rds->timer, NGX_FLUXGATE_REDIS_STALL_MAX);
        }
    }
}
