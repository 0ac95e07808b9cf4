
/*
 * Flux-Gate: commands on the connections of ngx_fluxgate_redis.c.  A
 * command is written in RESP once (kept for a resend), pipelined on the
 * connection of the node it goes to, and handed its reply (NULL when the
 * connection went away first; hiredis calls each callback exactly once).
 * On the way: NOSCRIPT loads the script again and resends; MOVED and ASK
 * go to the router (ngx_fluxgate_redis_cluster.c); a reply that says the
 * server refuses (LOADING, READONLY, ...) marks its connection; and with
 * fluxgate_redis_wait, a reply that reports a write is held until WAIT
 * says enough replicas have it.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_redis_cluster.h"


static ngx_int_t ngx_fluxgate_redis_send(ngx_fluxgate_redis_t *rds,
    ngx_fluxgate_script_t *script, int argc, const char **argv,
    const size_t *argvlen, ngx_fluxgate_redis_handler_pt handler,
    void *data, ngx_uint_t wait, ngx_msec_t wait_timeout, ngx_uint_t codes);
static void ngx_fluxgate_redis_reply(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_fluxgate_redis_waited(redisAsyncContext *ac, void *r,
    void *data);
static void ngx_fluxgate_redis_deliver(ngx_fluxgate_redis_call_t *call,
    redisReply *reply);
static redisReply *ngx_fluxgate_redis_copy(redisReply *reply);


/* a command's arguments, one by one: the caller keeps a below its size */

void
ngx_fluxgate_args_str(ngx_fluxgate_args_t *a, ngx_str_t *s)
{
    a->arg[a->n++] = *s;
}


void
ngx_fluxgate_args_text(ngx_fluxgate_args_t *a, u_char *data, size_t len)
{
    a->arg[a->n].data = data ? data : (u_char *) "";
    a->arg[a->n].len = len;
    a->n++;
}


void
ngx_fluxgate_args_int(ngx_fluxgate_args_t *a, int64_t v)
{
    a->arg[a->n].data = a->num[a->n];
    a->arg[a->n].len = ngx_sprintf(a->num[a->n], "%L", v) - a->num[a->n];
    a->n++;
}


ngx_int_t
ngx_fluxgate_redis_eval(ngx_fluxgate_redis_t *rds,
    ngx_fluxgate_script_t *script, ngx_uint_t nkeys, ngx_uint_t nargs,
    ngx_str_t *args, ngx_fluxgate_redis_handler_pt handler, void *data)
{
    return ngx_fluxgate_redis_eval_wait(rds, script, nkeys, nargs, args, 0, 0,
                                        0, handler, data);
}


/*
 * EVALSHA; with wait > 0, a reply that reports a write (an array whose
 * first element is an integer among codes: order.lua's reservation,
 * init.lua's generation set or replayed) is followed by
 * "WAIT wait wait_timeout" on the same connection and handed on only when
 * WAIT says that many replicas have it; fewer, and the handler gets an
 * error reply instead ("WAIT: 0 of 1 replicas ..."), which it treats like
 * any failed command whose effect is unknown.  Every other reply is handed
 * on at once: WAIT costs it nothing.
 */

ngx_int_t
ngx_fluxgate_redis_eval_wait(ngx_fluxgate_redis_t *rds,
    ngx_fluxgate_script_t *script, ngx_uint_t nkeys, ngx_uint_t nargs,
    ngx_str_t *args, ngx_uint_t wait, ngx_msec_t wait_timeout,
    ngx_uint_t codes, ngx_fluxgate_redis_handler_pt handler, void *data)
{
    u_char       numkeys[NGX_INT_T_LEN];
    size_t       argvlen[NGX_FLUXGATE_REDIS_MAX_ARGS + 3];
    ngx_uint_t   i;
    const char  *argv[NGX_FLUXGATE_REDIS_MAX_ARGS + 3];

    if (nargs > NGX_FLUXGATE_REDIS_MAX_ARGS) {
        return NGX_ERROR;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = sizeof("EVALSHA") - 1;
    argv[1] = (const char *) script->sha.data;
    argvlen[1] = script->sha.len;
    argv[2] = (const char *) numkeys;
    argvlen[2] = ngx_sprintf(numkeys, "%ui", nkeys) - numkeys;

    for (i = 0; i < nargs; i++) {
        argv[i + 3] = (const char *) args[i].data;
        argvlen[i + 3] = args[i].len;
    }

    if (rds->front) {
        /* the node of the first key: all of a product's keys share it */
        if (nkeys == 0) {
            return NGX_ERROR;
        }

        rds = rds->router->route(rds, args[0].data,
                                               args[0].len);
        if (rds == NULL) {
            return NGX_ERROR;
        }
    }

    return ngx_fluxgate_redis_send(rds, script, nargs + 3, argv, argvlen,
                                   handler, data, wait, wait_timeout, codes);
}


ngx_int_t
ngx_fluxgate_redis_command(ngx_fluxgate_redis_t *rds, ngx_uint_t nargs,
    ngx_str_t *args, ngx_fluxgate_redis_handler_pt handler, void *data)
{
    size_t       argvlen[NGX_FLUXGATE_REDIS_MAX_ARGS];
    ngx_uint_t   i;
    const char  *argv[NGX_FLUXGATE_REDIS_MAX_ARGS];

    if (nargs > NGX_FLUXGATE_REDIS_MAX_ARGS || rds->front) {
        return NGX_ERROR;
    }

    for (i = 0; i < nargs; i++) {
        argv[i] = (const char *) args[i].data;
        argvlen[i] = args[i].len;
    }

    return ngx_fluxgate_redis_send(rds, NULL, nargs, argv, argvlen,
                                   handler, data, 0, 0, 0);
}


static ngx_int_t
ngx_fluxgate_redis_send(ngx_fluxgate_redis_t *rds,
    ngx_fluxgate_script_t *script, int argc, const char **argv,
    const size_t *argvlen, ngx_fluxgate_redis_handler_pt handler, void *data,
    ngx_uint_t wait, ngx_msec_t wait_timeout, ngx_uint_t codes)
{
    int                         i;
    u_char                     *p;
    size_t                      len;
    ngx_fluxgate_redis_call_t  *call;

    if (rds->ac == NULL
        || (rds->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING)))
    {
        return NGX_ERROR;
    }

    /*
     * RESP by hand: redisFormatCommandArgv() calls sprintf() for every
     * argument, a tenth of a worker's time on the accept path
     */

    len = 1 + NGX_INT_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        len += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    call = ngx_calloc(sizeof(ngx_fluxgate_redis_call_t) + len, rds->log);
    if (call == NULL) {
        return NGX_ERROR;
    }

    p = (u_char *) call + sizeof(ngx_fluxgate_redis_call_t);

    call->rds = rds;
    call->script = script;
    call->handler = handler;
    call->data = data;
    call->cmd = (char *) p;
    call->wait = wait;
    call->wait_timeout = wait_timeout;
    call->wait_codes = codes;
    call->clustered = (rds->router != NULL);

    p = ngx_sprintf(p, "*%d\r\n", argc);

    for (i = 0; i < argc; i++) {
        p = ngx_sprintf(p, "$%uz\r\n", argvlen[i]);
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR;
        *p++ = LF;
    }

    call->len = p - (u_char *) call->cmd;

    if (ngx_fluxgate_redis_call_send(call) != NGX_OK) {
        ngx_free(call);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the call on call->rds's connection: [ASKING,] the command */

ngx_int_t
ngx_fluxgate_redis_call_send(ngx_fluxgate_redis_call_t *call)
{
    redisAsyncContext  *ac;

    ac = call->rds->ac;

    if (ac == NULL || (ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING))) {
        return NGX_ERROR;
    }

    if (call->asking
        && redisAsyncCommand(ac, NULL, NULL, "ASKING") != REDIS_OK)
    {
        return NGX_ERROR;
    }

    if (redisAsyncFormattedCommand(ac, ngx_fluxgate_redis_reply, call,
                                   call->cmd, call->len)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    call->refs++;

    return NGX_OK;
}


static void
ngx_fluxgate_redis_reply(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                 *reply = r;
    ngx_fluxgate_redis_call_t  *call = data;

    u_char                  buf[64];
    redisReply              err;
    ngx_fluxgate_redis_t   *rds;
    ngx_fluxgate_script_t  *script;

    call->refs--;
    rds = ac->data;

    if (reply != NULL) {
        if (rds->stalled && rds->timer.timer_set) {
            ngx_del_timer(&rds->timer);
        }

        if (rds->stalled) {
            rds->stalled = 0;
            ngx_fluxgate_redis_changed();
        }
        rds->backoff = 0;

        /* an answer, but not service: the heartbeat says when it is back */
        if (ngx_fluxgate_redis_refusal(reply) != NULL) {
            ngx_fluxgate_redis_refusing(rds,
                                        ngx_fluxgate_redis_refusal(reply));
        }
    }

    script = call->script;

    if (reply != NULL
        && reply->type == REDIS_REPLY_ERROR
        && script != NULL
        && !call->reloaded
        && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        ngx_log_error(NGX_LOG_WARN, rds->log, 0,
                      "fluxgate: redis %V: %V.lua was not loaded, "
                      "loading it again", &rds->name, &script->name);

        call->reloaded = 1;

        if (redisAsyncCommand(ac, ngx_fluxgate_redis_loaded, script,
                              "SCRIPT LOAD %b", script->body.data,
                              script->body.len)
            == REDIS_OK
            && ngx_fluxgate_redis_call_send(call) == NGX_OK)
        {
            return;
        }
    }

    if (reply != NULL
        && reply->type == REDIS_REPLY_ERROR
        && call->clustered
        && call->rds->router->redirect(call, reply) == NGX_OK)
    {
        /* on its way to the node named; another script load may be due */
        call->reloaded = 0;
        return;
    }

    if (reply != NULL
        && call->wait
        && reply->type == REDIS_REPLY_ARRAY
        && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[0]->integer >= 0
        && reply->element[0]->integer < (long long) NGX_PTR_SIZE * 8
        && (call->wait_codes
            & ngx_fluxgate_redis_wait_code(reply->element[0]->integer)))
    {
        /*
         * A write: WAIT on the same connection, now that the reply says
         * so, and the reply handed on when WAIT answers.  Not pipelined
         * blindly after every command: the sold-out answers, which write
         * nothing, would pay a second command each, and WAITs sent after
         * replies come in batches, the first one covering the writes of
         * every command answered before it.
         */

        call->saved = ngx_fluxgate_redis_copy(reply);

        if (call->saved != NULL
            && redisAsyncCommand(ac, ngx_fluxgate_redis_waited, call,
                                 "WAIT %u %u", (unsigned) call->wait,
                                 (unsigned) call->wait_timeout)
               == REDIS_OK)
        {
            call->refs++;
            call->confirming = 1;
            return;
        }

        if (call->saved != NULL) {
            freeReplyObject(call->saved);
            call->saved = NULL;
        }

        ngx_memzero(&err, sizeof(redisReply));
        err.type = REDIS_REPLY_ERROR;
        err.str = (char *) buf;
        err.len = ngx_sprintf(buf, "WAIT could not be sent") - buf;

        ngx_fluxgate_redis_deliver(call, &err);

    } else {
        ngx_fluxgate_redis_deliver(call, reply);
    }

    if (call->refs == 0) {
        ngx_free(call);
    }
}


/* WAIT's answer, on the connection that answered the command */

static void
ngx_fluxgate_redis_waited(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                 *reply = r;
    ngx_fluxgate_redis_call_t  *call = data;

    u_char       buf[128];
    redisReply   err;
    redisReply  *saved;

    call->refs--;

    if (call->confirming && !call->delivered) {
        saved = call->saved;
        call->saved = NULL;

        if (reply == NULL) {
            ngx_fluxgate_redis_deliver(call, NULL);

        } else if (reply->type == REDIS_REPLY_INTEGER
                   && reply->integer >= (long long) call->wait)
        {
            ngx_fluxgate_redis_deliver(call, saved);

        } else {
            ngx_memzero(&err, sizeof(redisReply));
            err.type = REDIS_REPLY_ERROR;
            err.str = (char *) buf;

            if (reply->type == REDIS_REPLY_INTEGER) {
                err.len = ngx_sprintf(buf, "WAIT: %L of %ui replicas "
                                      "acknowledged within %Mms",
                                      (int64_t) reply->integer, call->wait,
                                      call->wait_timeout)
                          - buf;

            } else {
                err.len = ngx_snprintf(buf, sizeof(buf), "WAIT: %*s",
                                       (size_t) (reply->str ? reply->len : 0),
                                       reply->str ? reply->str : "")
                          - buf;
            }

            ngx_log_error(NGX_LOG_WARN, call->rds->log, 0,
                          "fluxgate: redis %V: %*s",
                          &call->rds->name, err.len, err.str);

            ngx_fluxgate_redis_deliver(call, &err);
        }

        freeReplyObject(saved);
    }

    if (call->refs == 0) {
        if (call->saved != NULL) {
            freeReplyObject(call->saved);
        }

        ngx_free(call);
    }
}


static void
ngx_fluxgate_redis_deliver(ngx_fluxgate_redis_call_t *call,
    redisReply *reply)
{
    if (call->delivered) {
        return;
    }

    call->delivered = 1;
    call->handler(reply, call->data);
}


/* a reply kept past its callback: hiredis 0.14 frees it on return */

static redisReply *
ngx_fluxgate_redis_copy(redisReply *reply)
{
    size_t       i;
    redisReply  *r;

    r = calloc(1, sizeof(redisReply));
    if (r == NULL) {
        return NULL;
    }

    r->type = reply->type;
    r->integer = reply->integer;

    if (reply->str != NULL) {
        r->str = malloc(reply->len + 1);
        if (r->str == NULL) {
            freeReplyObject(r);
            return NULL;
        }

        memcpy(r->str, reply->str, reply->len);
        r->str[reply->len] = '\0';
        r->len = reply->len;
    }

    if (reply->element != NULL && reply->elements > 0) {
        r->element = calloc(reply->elements, sizeof(redisReply *));
        if (r->element == NULL) {
            freeReplyObject(r);
            return NULL;
        }

        r->elements = reply->elements;

        for (i = 0; i < reply->elements; i++) {
            r->element[i] = ngx_fluxgate_redis_copy(reply->element[i]);
            if (r->element[i] == NULL) {
                freeReplyObject(r);
                return NULL;
            }
        }
    }

    return r;
}
