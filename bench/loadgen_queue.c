/*
 * fg-loadgen --queue: each connection a shopper that follows the waiting
 * room as the shipped page does (loadgen.c's comment): solves a challenge
 * between the other shoppers' I/O, polls with its ticket, orders again
 * once admitted, and leaves a track of its ticket for the report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen.h"

/* Retry-After of the response in c->in, in seconds, 0 if none */
static double
retry_after(conn_t *c)
{
    const char  *h = strcasestr(c->in, "\r\nRetry-After:");
    const char  *end = strstr(c->in, "\r\n\r\n");

    return h && end && h < end ? atof(h + 15) : 0;
}

/* as the waiting-room page: never sooner than asked, spread by up to
 * half again so shoppers that arrived together do not poll together */
static void
poll_later(conn_t *c, double seconds, double floor, uint64_t now)
{
    double  s = seconds > floor ? seconds : floor;

    if (s < 0.5) {
        s = 0.5;
    }
    s *= 1 + (double) rand() / RAND_MAX * 0.5;
    c->shopper = SHOPPER_WAITING;
    c->wake_at = now + (uint64_t) (s * 1e6);
}

/* a ticket's kind and turn, from its own payload: base64url of
 * "product|buyer|epoch|kind|seq|expires"; a pre-queue place's turn is
 * the opening's secret (-1) */
void
ticket_turn(const char *t, char *kind, int64_t *turn)
{
    static const char  b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                               "0123456789-_";
    char         payload[TICKET_MAX], *f[6], *save = NULL;
    const char  *p, *dot = strchr(t, '.');
    uint32_t     acc = 0;
    int          bits = 0, i;
    size_t       n = 0;

    *kind = '?';
    *turn = -1;
    for (p = t; dot && p < dot && n < sizeof(payload) - 1; p++) {
        const char  *v = memchr(b64, *p, 64);

        if (v == NULL) {
            return;
        }
        acc = (acc << 6) | (uint32_t) (v - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            payload[n++] = (char) (acc >> bits);
        }
    }
    payload[n] = '\0';
    for (i = 0; i < 6; i++) {
        f[i] = strtok_r(i ? NULL : payload, "|", &save);
        if (f[i] == NULL) {
            return;
        }
    }
    *kind = f[3][0];
    if (*kind == 'q') {
        *turn = atoll(f[4]);
    }
}


void
push_track(track_t *t)
{
    if (ntracks == tracks_cap) {
        tracks_cap = tracks_cap ? tracks_cap * 2 : 1024;
        tracks = realloc(tracks, tracks_cap * sizeof(track_t));
        if (tracks == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    tracks[ntracks++] = *t;
}

/* the shopper leaves (status: its last order's answer, 0: a lost
 * ticket, -1: the run ended first); --once: it is done */
static void
shopper_end(conn_t *c, int status)
{
    if (c->tr.started || c->tr.booked) {
        c->tr.status = status;
        push_track(&c->tr);
    }
    memset(&c->tr, 0, sizeof(c->tr));
    c->tr.turn = -1;
    if (opt.once) {
        c->shopper = SHOPPER_DONE;
        shoppers_done++;
    } else {
        c->shopper = SHOPPER_NEW;
    }
}

/* a ticket came (booked, or held already): keep it, poll at once */
static void
take_ticket(conn_t *c, const char *ticket, uint64_t now)
{
    if (strcmp(c->ticket, ticket) != 0 || !c->tr.booked) {
        snprintf(c->ticket, sizeof(c->ticket), "%s", ticket);
        ticket_turn(c->ticket, &c->tr.kind, &c->tr.turn);
        if (!c->tr.booked) {
            c->tr.booked = now;
        }
    }
    /* it was waiting when that order was sent */
    c->tr.last_wait = c->written_at;
    c->failures = 0;
    /* the page polls as soon as it opens */
    c->shopper = SHOPPER_WAITING;
    c->wake_at = now;
}

/* --queue: the answer to an order */
void
on_order(conn_t *c, int status, size_t len, uint64_t now)
{
    const char  *b, *v;
    size_t       blen;
    char         st[32], text[TICKET_MAX];

    c->tr.status = status;
    if (status == 200) {
        c->tr.bought = now;
        shopper_end(c, status);
        return;
    }
    if (status != 302) {
        /* sold out, refused, or an error: the shopper goes */
        shopper_end(c, status);
        return;
    }
    b = body_of(c->in, len, &blen);
    json_field(b, blen, "status", st, sizeof(st));

    if (strcmp(st, "challenge") == 0) {
        json_field(b, blen, "challenge", text, sizeof(text));
        v = json_raw(b, blen, "bits");
        if (strcmp(text, "-") == 0 || v == NULL) {
            shopper_end(c, status);
            return;
        }
        challenged++;
        c->tr.challenges++;
        snprintf(c->challenge, sizeof(c->challenge), "%s", text);
        c->bits = atoi(v);
        c->nonce[0] = '0';
        c->nonce_len = 1;
        c->solve_from = now;
        SHA256_Init(&c->prefix);
        SHA256_Update(&c->prefix, c->challenge, strlen(c->challenge));
        SHA256_Update(&c->prefix, ".", 1);
        c->shopper = SHOPPER_SOLVING;
        return;
    }

    json_field(b, blen, "ticket", text, sizeof(text));
    if (strcmp(text, "-") == 0) {
        /* a plain 302: no line to wait in */
        shopper_end(c, status);
        return;
    }
    if (c->shopper == SHOPPER_ADMITTED) {
        /* the gate's record ran ahead of Redis: not yet after all */
        requeued++;
    } else {
        queued++;
        if (strcmp(st, "prequeue") == 0) {
            prequeued++;
        }
    }
    take_ticket(c, text, now);
}

/* n + 1, in decimal, in place */
static void
nonce_next(conn_t *c)
{
    int  i;

    for (i = c->nonce_len - 1; i >= 0; i--) {
        if (c->nonce[i] != '9') {
            c->nonce[i]++;
            return;
        }
        c->nonce[i] = '0';
    }
    memmove(c->nonce + 1, c->nonce, c->nonce_len);
    c->nonce[0] = '1';
    c->nonce_len++;
}

static int
zero_bits(const unsigned char *md)
{
    int            n = 0, i;
    unsigned char  b;

    for (i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        if (md[i] == 0) {
            n += 8;
            continue;
        }
        for (b = md[i]; !(b & 0x80); b <<= 1) {
            n++;
        }
        break;
    }
    return n;
}

/* up to `slice` tries of one shopper's challenge; 1 when solved */
static int
solve_slice(conn_t *c, int slice)
{
    SHA256_CTX     x;
    unsigned char  md[SHA256_DIGEST_LENGTH];
    int            i;

    for (i = 0; i < slice; i++) {
        x = c->prefix;
        SHA256_Update(&x, c->nonce, c->nonce_len);
        SHA256_Final(md, &x);
        c->tr.hashes++;
        if (zero_bits(md) >= c->bits) {
            return 1;
        }
        nonce_next(c);
    }
    return 0;
}

/* the solving shoppers' share of this turn of the loop; returns how many
 * still solve */
int
solve_some(conn_t *conns)
{
    static int  next;
    int         i, k, budget = SOLVE_BUDGET, solving = 0;
    uint64_t    now;

    for (k = 0; k < opt.conns && budget > 0; k++) {
        conn_t  *c = &conns[(next + k) % opt.conns];

        if (c->shopper != SHOPPER_SOLVING) {
            continue;
        }
        budget -= SOLVE_SLICE;
        if (solve_slice(c, SOLVE_SLICE)) {
            now = now_us();
            proofs++;
            c->tr.solve_us += now - c->solve_from;
            c->shopper = SHOPPER_PROVING;
            try_send(c);
        }
    }
    next = (next + k) % opt.conns;
    for (i = 0; i < opt.conns; i++) {
        solving += conns[i].shopper == SHOPPER_SOLVING;
    }
    return solving;
}

/* --queue: the answer to a status poll */
void
on_poll(conn_t *c, int status, size_t len, uint64_t now)
{
    const char  *b, *v;
    size_t       blen;
    double       ra = retry_after(c), eta, wait;

    if (opt.poll_min > 0) {
        ra = 0;     /* an instrument: its own schedule */
    }
    if (status == 400) {
        /* the gate no longer knows the ticket: the shopper leaves */
        queue_lost++;
        shopper_end(c, 0);
        return;
    }
    if (status != 200) {
        c->failures++;
        poll_later(c, ra > 0 ? ra : c->failures < POLL_MAX_S
                   ? c->failures : POLL_MAX_S, ra, now);
        return;
    }
    c->failures = 0;
    b = body_of(c->in, len, &blen);
    v = json_raw(b, blen, "soldOut");
    if (v && strncmp(v, "true", 4) == 0) {
        queue_sold_out++;
        shopper_end(c, 409);
        return;
    }
    v = json_raw(b, blen, "closed");
    if (v && strncmp(v, "true", 4) == 0) {
        /* the operator closed the sale: nothing to wait for */
        shopper_end(c, 409);
        return;
    }
    v = json_raw(b, blen, "admitted");
    if (v && strncmp(v, "true", 4) == 0) {
        admitted++;
        if (c->tr.admitted == 0) {
            c->tr.admitted = now;
        }
        if (opt.watch) {
            /* watching only: seen admitted is the end */
            shopper_end(c, 200);
            return;
        }
        c->shopper = SHOPPER_ADMITTED;
        return;
    }
    c->tr.last_wait = c->written_at;
    v = json_raw(b, blen, "etaSeconds");
    eta = v ? atof(v) : 0;
    wait = eta / 4 > 1 ? eta / 4 : 1;
    if (opt.poll_min > 0) {
        wait = eta / 4 > opt.poll_min ? eta / 4 : opt.poll_min;
    }
    poll_later(c, wait < POLL_MAX_S ? wait : POLL_MAX_S, ra, now);
}
