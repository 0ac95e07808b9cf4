
/*
 * Flux-Gate: a product's line record as lua/queue_head.lua answers it,
 * and what the record says of a ticket: the head now (lua/lib/line.lua's
 * line_head() in C) and the ticket's standing (waiting, admitted, its
 * window passed).  Pure functions of the record and the gate's clock:
 * ngx_fluxgate_line.c keeps the records in shared memory, the queue's
 * handlers read them through these.
 */


#include "ngx_fluxgate.h"
#include "ngx_fluxgate_lua.h"
#include "fluxgate_shuffle.h"


/*
 * {now, known, stock, epoch, n, h, t, rate, state, opensAt, P, seed,
 *  window, admitted, waiting, no-shows, oldest wait}
 */

ngx_int_t
ngx_fluxgate_line_parse(redisReply *reply, ngx_fluxgate_line_t *line)
{
    size_t       i;
    redisReply **e;

    ngx_memzero(line, sizeof(ngx_fluxgate_line_t));

    if (reply == NULL
        || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return NGX_ERROR;
    }

    e = reply->element;
    line->redis_now = e[0]->integer;

    if (e[1]->integer == 0) {
        /* a product never set by /init */
        return NGX_OK;
    }

    if (reply->elements != NGX_FLUXGATE_LUA_QUEUE_HEAD_FIELDS
        || e[5]->type != REDIS_REPLY_STRING
        || e[8]->type != REDIS_REPLY_STRING
        || e[11]->type != REDIS_REPLY_STRING
        || e[11]->len > sizeof(line->seed))
    {
        return NGX_ERROR;
    }

    for (i = 2; i < NGX_FLUXGATE_LUA_QUEUE_HEAD_FIELDS; i++) {
        if (i != 5 && i != 8 && i != 11
            && e[i]->type != REDIS_REPLY_INTEGER)
        {
            return NGX_ERROR;
        }
    }

    line->known = 1;
    line->stock = e[2]->integer;
    line->epoch = e[3]->integer;
    line->n = e[4]->integer;
    line->h = strtod(e[5]->str, NULL);
    line->t = e[6]->integer;
    line->rate = e[7]->integer;

    if (e[8]->len == sizeof("paused") - 1
        && ngx_strncmp(e[8]->str, "paused", e[8]->len) == 0)
    {
        line->state = NGX_FLUXGATE_LINE_PAUSED;

    } else if (e[8]->len == sizeof("closed") - 1
               && ngx_strncmp(e[8]->str, "closed", e[8]->len) == 0)
    {
        line->state = NGX_FLUXGATE_LINE_CLOSED;

    } else {
        line->state = NGX_FLUXGATE_LINE_OPEN;
    }

    line->opens_at = e[9]->integer;
    line->pre = e[10]->integer;
    line->seed_len = e[11]->len;
    ngx_memcpy(line->seed, e[11]->str, e[11]->len);
    line->window = e[12]->integer;
    line->admitted = e[13]->integer;
    line->waiting = e[14]->integer;
    line->no_shows = e[15]->integer;
    line->oldest = e[16]->integer;

    /* closed wins: a sale closed before it opened never opens */
    if (line->opens_at && line->pre < 0
        && line->state != NGX_FLUXGATE_LINE_CLOSED)
    {
        line->state = NGX_FLUXGATE_LINE_SCHEDULED;
    }

    return NGX_OK;
}


/* Redis's time now, as the gate's own clock carries the record's on */

int64_t
ngx_fluxgate_line_now(ngx_fluxgate_line_t *line)
{
    /* fetched by any worker, whose clock may be a little ahead: signed */
    return line->redis_now
           + (int64_t) (ngx_msec_int_t) (ngx_current_msec - line->fetched)
             * 1000;
}


/* H, the turns admitted by now: lua/lib/line.lua's line_head() */

double
ngx_fluxgate_line_head(ngx_fluxgate_line_t *line, int64_t now)
{
    double  x, cap;

    if (line->state == NGX_FLUXGATE_LINE_SCHEDULED) {
        return 0;
    }

    cap = (double) (line->n + (int64_t) line->burst + 1);

    if (line->state != NGX_FLUXGATE_LINE_OPEN) {
        return line->h;
    }

    if (line->rate == 0) {
        return cap;
    }

    x = line->h + (double) ngx_max(0, now - line->t) * line->rate / 1000000;

    return ngx_min(x, cap);
}


/*
 * Where a ticket stands, from the record alone: NULL with *st filled in,
 * or why the ticket has no place any more (for a 400).  Whether its turn
 * was spent is Redis's to know: an order with it says so.
 */

const char *
ngx_fluxgate_line_standing(ngx_fluxgate_line_t *line,
    ngx_fluxgate_ticket_t *ticket, ngx_fluxgate_standing_t *st)
{
    double     H;
    int64_t    now, turn, admitted;

    ngx_memzero(st, sizeof(ngx_fluxgate_standing_t));

    now = ngx_fluxgate_line_now(line);

    if (ticket->epoch != line->epoch || now / 1000000 >= ticket->expires) {
        return "has expired";
    }

    st->sold_out = (line->stock <= 0);
    st->state = line->state;
    st->opens_at = line->opens_at / 1000000;

    if (line->state == NGX_FLUXGATE_LINE_SCHEDULED
        || (ticket->kind == 'p' && line->pre < 0))
    {
        /* the opening's due but not seen yet: as good as the countdown */
        st->scheduled = 1;
        st->eta_ms = ngx_max(0, (line->opens_at - now) / 1000);
        return NULL;
    }

    turn = ticket->seq;

    if (ticket->kind == 'p') {
        turn = (int64_t) fg_shuffle((char *) line->seed, line->seed_len,
                                    (uint64_t) ticket->seq,
                                    (uint64_t) line->pre);
    }

    H = ngx_fluxgate_line_head(line, now);
    admitted = (int64_t) H;

    if (turn >= admitted) {
        st->position = turn - admitted + 1;

        if (line->state == NGX_FLUXGATE_LINE_OPEN && line->rate > 0) {
            st->eta_ms = (int64_t) (((double) turn + 1 - H) * 1000
                                    / line->rate);
        } else {
            st->eta_ms = -1;
        }

        return NULL;
    }

    /* turns handed out and admitted since: lua/order.lua's check */

    if (line->window && ngx_min(admitted, line->n) - turn > line->window) {
        return "admission window has passed";
    }

    st->admitted = 1;

    return NULL;
}
