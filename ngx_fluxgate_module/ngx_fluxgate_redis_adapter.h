
/*
 * Flux-Gate: drives a hiredis redisAsyncContext from nginx's event loop,
 * the way hiredis's own adapters/libevent.h does from libevent's.  The
 * socket gets an ngx_connection_t; its read and write events are added
 * level-triggered, because hiredis reads at most 16K per call and expects
 * to be called again while data is waiting.
 */


#ifndef _NGX_FLUXGATE_REDIS_ADAPTER_H_INCLUDED_
#define _NGX_FLUXGATE_REDIS_ADAPTER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <hiredis.h>
#include <async.h>


static void
ngx_fluxgate_redis_adapter_read(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleRead(c->data);
}


static void
ngx_fluxgate_redis_adapter_write(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleWrite(c->data);
}


static void
ngx_fluxgate_redis_adapter_add(ngx_event_t *ev, ngx_int_t event)
{
    if (!ev->active) {
        (void) ngx_add_event(ev, event, NGX_LEVEL_EVENT);
    }
}


static void
ngx_fluxgate_redis_adapter_del(ngx_event_t *ev, ngx_int_t event)
{
    if (ev->active) {
        (void) ngx_del_event(ev, event, 0);
    }
}


static void
ngx_fluxgate_redis_adapter_add_read(void *data)
{
    ngx_connection_t  *c = data;

    ngx_fluxgate_redis_adapter_add(c->read, NGX_READ_EVENT);
}


static void
ngx_fluxgate_redis_adapter_del_read(void *data)
{
    ngx_connection_t  *c = data;

    ngx_fluxgate_redis_adapter_del(c->read, NGX_READ_EVENT);
}


static void
ngx_fluxgate_redis_adapter_add_write(void *data)
{
    ngx_connection_t  *c = data;

    ngx_fluxgate_redis_adapter_add(c->write, NGX_WRITE_EVENT);
}


static void
ngx_fluxgate_redis_adapter_del_write(void *data)
{
    ngx_connection_t  *c = data;

    ngx_fluxgate_redis_adapter_del(c->write, NGX_WRITE_EVENT);
}


/* hiredis closes the socket right after this: no epoll_ctl() needed */

static void
ngx_fluxgate_redis_adapter_cleanup(void *data)
{
    ngx_connection_t  *c = data;

    redisAsyncContext  *ac;

    if (c == NULL) {
        return;
    }

    ac = c->data;
    ac->ev.data = NULL;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;

    ngx_free_connection(c);
}


static ngx_int_t
ngx_fluxgate_redis_adapter_attach(redisAsyncContext *ac, ngx_log_t *log)
{
    ngx_connection_t  *c;

    if (ac->ev.data != NULL) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = ac;
    c->read->handler = ngx_fluxgate_redis_adapter_read;
    c->write->handler = ngx_fluxgate_redis_adapter_write;
    c->read->log = log;
    c->write->log = log;

    ac->ev.addRead = ngx_fluxgate_redis_adapter_add_read;
    ac->ev.delRead = ngx_fluxgate_redis_adapter_del_read;
    ac->ev.addWrite = ngx_fluxgate_redis_adapter_add_write;
    ac->ev.delWrite = ngx_fluxgate_redis_adapter_del_write;
    ac->ev.cleanup = ngx_fluxgate_redis_adapter_cleanup;
    ac->ev.data = c;

    return NGX_OK;
}


#endif /* _NGX_FLUXGATE_REDIS_ADAPTER_H_INCLUDED_ */
