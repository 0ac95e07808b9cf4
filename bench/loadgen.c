/*
 * fg-loadgen: the HTTP client of the Flux-Gate benchmarks and crowd tests.
 *
 * wrk measures throughput well but cannot tell the latency of a 200 from the
 * latency of a 409, and cannot give every request its own user and
 * idempotency key without a Lua script that costs more than the request.
 * This client keeps C keep-alive connections on one epoll loop, sends
 * POST /order bodies with a distinct userId and X-Idempotency-Key per
 * request (or the same key everywhere with --same-key), and reports per
 * status: count, p50/p99/p99.9/max latency, and when the last 200 came.
 *
 *   fg-loadgen -u 127.0.0.1:8080 -c 200 -d 10 --product p1
 *   fg-loadgen -u 127.0.0.1:8080 -c 2000 -n 2000 --product p1 --once
 *   fg-loadgen ... -R 10000        open loop: 10,000 requests/s
 *   fg-loadgen ... --expect 200,409   any other answer fails the run
 *
 * Closed loop (no -R): each connection sends its next request when the
 * last one is answered; the throughput mode.  Latency is then timed from
 * the moment a request was written.
 *
 * Open loop (-R rate): request k is DUE at t0 + k / rate whatever happened
 * before, and its latency is timed from that due time, not from when a
 * free connection finally wrote it (as wrk2 does).  A gate that stalls
 * for 100 ms therefore shows the stall in every request that fell due
 * during it, instead of the one request that waited (coordinated
 * omission).  Requests due but never written when the run ends (more than
 * the last two milliseconds' worth) are counted as "unsent" and fail the
 * run: the offered rate was not offered.
 *
 * An answer is timed to when it ARRIVED, not to when this process read
 * it: each socket has SO_TIMESTAMPNS on, and the kernel's receive time of
 * the response's last bytes ends its latency.  On a box the client
 * shares with the stack, the client is one more process waiting for a
 * core; a reply that sits 100 ms in the socket while the client waits is
 * the client's delay, not the gate's (measured on 2 cores against the
 * wire: client-side p99 116-132 ms, wire p99 22-32 ms, in the same runs).
 * How long answers waited to be read is reported as client_lag_* so the
 * instrument's own error is on the page.  In open loop the client also
 * asks for SCHED_FIFO (root or CAP_SYS_NICE), so that it WRITES each
 * request when due and is not itself the cause of a late send; sched=
 * says whether it got it.  The load is bounded by the rate, so a
 * real-time client cannot take the cores from the server; a closed-loop
 * client would, and keeps the normal policy.
 *
 * Errors (the server closed a connection with a request outstanding, a
 * response never came, an unparsable answer) and answers whose status is
 * not in --expect are counted; either makes the run exit non-zero with a
 * line on stderr saying so (rc 3).  Without --expect every status is
 * accepted (and still counted per status).
 *
 *   fg-loadgen -u 127.0.0.1:8080 -u 127.0.0.1:8090 ...
 *                                  a load balancer's view of a fleet: the
 *                                  connections spread over the gates, and
 *                                  one that fails moves to the next gate
 *
 * Output is one "key=value" line per status, easy to read from Perl and sh;
 * the total line's started_at_ms is the wall-clock time (Unix ms) the
 * log's "ms since the start" count from, so a test can place a fault it
 * injected on the same time line;
 * --log FILE writes "<status> <orderId> <body status> <latency ms> <ms
 * since the start>" per response; with --log-errors also
 * "0 - <what> - <ms since the start>" per request that got no answer (the
 * connection failed with it outstanding).
 *
 *   fg-loadgen ... --queue /queue/status
 *                                  a crowd that follows the waiting room
 *                                  (closed loop only): a connection is a
 *                                  shopper, who does what the shipped page
 *                                  does with each 302 of its order (the
 *                                  body says which):
 *                                    "challenge": finds n such that
 *                                    SHA-256(C "." n) has the asked number
 *                                    of leading zero bits (OpenSSL, in
 *                                    slices between the other shoppers'
 *                                    I/O, as a page's worker does), then
 *                                    sends the same order again, same key
 *                                    and body, with X-Queue-Proof: C.n;
 *                                    "queued" and "prequeue": keeps the
 *                                    ticket and polls the status path with
 *                                    it in X-Queue-Ticket (at once, then
 *                                    every max(1, eta/4) s up to 5 s,
 *                                    spread by up to half again, never
 *                                    before Retry-After);
 *                                  when admitted it sends the same order
 *                                  again with X-Queue-Ticket.  Polls are
 *                                  counted apart ("queue ..." line), not
 *                                  as answers to orders.  With --once each
 *                                  connection is one shopper, who stops
 *                                  once bought or told no; the run ends
 *                                  when all have (or -d passes).
 *
 *                                  Admission order: a ticket's turn is in
 *                                  its own payload (kind q: its seq); a
 *                                  shopper notes when it last sent a poll
 *                                  that was answered "waiting" and when an
 *                                  answer "admitted" arrived.  A ticket is
 *                                  out of order when a ticket of a later
 *                                  turn was seen admitted before this one's
 *                                  last "waiting" poll was even sent: the
 *                                  gate let someone in ahead of it, whatever
 *                                  the polls' timing (out_of_order=).
 *                                  --track FILE writes one line per ticket:
 *                                  "<turn> <kind> <started> <booked> <last
 *                                  waiting sent> <admitted seen> <bought>
 *                                  <challenges> <hashes> <solve ms>
 *                                  <status>" (times: ms since the start,
 *                                  -1: never).
 *
 *   fg-loadgen ... --queue /queue/status --watch FILE --once
 *                                  follows the tickets of FILE (one per
 *                                  line; connection i the i-th) until each
 *                                  is seen admitted, without ordering:
 *                                  admission order measured on tickets
 *                                  booked elsewhere.  --poll-min S polls a
 *                                  ticket every max(S, eta/4) s and pays
 *                                  no heed to Retry-After: a measuring
 *                                  instrument, not a page.
 *
 *   fg-loadgen ... --tickets-out FILE
 *                                  (no --queue) writes the ticket of each
 *                                  302 that carries one, one per line: a
 *                                  line booked at full speed.
 *
 *   fg-loadgen ... --header 'X-Queue-Proof: ...'
 *                                  one more header on every new order
 *
 *   fg-loadgen ... -p /queue/status --poll-file FILE
 *                                  every request is GET <path>?productId=
 *                                  <product> with X-Queue-Ticket: the next
 *                                  line of FILE (round robin over the
 *                                  file, mapped, not read into memory;
 *                                  --poll-from B: from the line after byte
 *                                  B, to go on where another run stopped);
 *                                  answers counted as any others.
 *
 * This file holds the run's state and its loop; the connections and HTTP
 * are in loadgen_http.c, the shoppers of --queue in loadgen_queue.c, the
 * command line in loadgen_opts.c, the report in loadgen_report.c.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loadgen.h"

/* the defaults: -u 127.0.0.1:8080 -p /order --product p1 -c 50 -d 5 */
lg_opt_t  opt = { "127.0.0.1", 8080, { NULL }, { 0 }, 0, 0, "/order", "p1",
                  1, 0, "r", 50, 5, 0, 0, 1, 0, 0, NULL, NULL, NULL, NULL,
                  NULL, NULL, NULL, NULL, NULL, 0, 0 };

FILE        *log_file;
series_t     by_status[MAX_STATUS];
series_t     all;
char         expected[MAX_STATUS];
long         seq, sent, done, errors, unexpected, unsent;
uint64_t     t0, last_200, max_behind, last_event;
series_t     polls;
series_t     lag;
int64_t      real_minus_mono;
const char  *sched_policy = "other";
long         queued, admitted, queue_sold_out, queue_lost;
long         challenged, proofs, prequeued, requeued, shoppers_done;
char         run_id[64];
track_t     *tracks;
size_t       ntracks, tracks_cap;
FILE        *tickets_file;
long         tickets_written;
const char  *pf_data, *pf_end, *pf_next;
long         pf_lines;

/* the connections, each to its gate; --watch: each with its ticket */
static conn_t *
open_conns(int ep)
{
    conn_t  *conns = calloc(opt.conns, sizeof(conn_t));
    int      i;

    if (conns == NULL) {
        perror("setup");
        return NULL;
    }
    t0 = now_us();
    for (i = 0; i < opt.conns; i++) {
        conns[i].target = i % opt.targets;
        conns[i].tr.turn = -1;
        if (opt.watch) {
            const char  *t;
            int          len;

            /* a ticket booked elsewhere, first polled within a second */
            next_file_ticket(&t, &len);
            snprintf(conns[i].ticket, sizeof(conns[i].ticket), "%.*s", len,
                     t);
            ticket_turn(conns[i].ticket, &conns[i].tr.kind,
                        &conns[i].tr.turn);
            conns[i].tr.booked = t0;
            conns[i].shopper = SHOPPER_WAITING;
            conns[i].wake_at = t0 + (uint64_t) i * 1000000 / opt.conns;
        }
        if (open_conn(&conns[i], ep) != 0) {
            return NULL;
        }
    }
    return conns;
}

/* the loop, until the run is over and every answer came (or 30 s more) */
static void
run(conn_t *conns, int ep)
{
    struct epoll_event  evs[256];
    int                 i, n;

    last_event = now_us();
    for ( ;; ) {
        int  solving = 0;

        if (finished() && done >= sent) {
            break;
        }
        if (opt.queue) {
            solving = solve_some(conns);
        }
        n = epoll_wait(ep, evs, 256, solving ? 0 : opt.rate > 0 ? 1
                                     : opt.queue ? 5 : 100);
        for (i = 0; i < n; i++) {
            conn_t  *c = evs[i].data.ptr;

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(c, ep);
            }
            if (evs[i].events & EPOLLOUT) {
                try_send(c);
            }
        }
        if (opt.rate > 0) {
            /* whatever fell due, on the free connections */
            for (i = 0; i < opt.conns && may_send(now_us()); i++) {
                if (!conns[i].busy) {
                    try_send(&conns[i]);
                }
            }
        } else if (n == 0 || opt.queue) {
            /* an idle connection, or a queued shopper whose poll is due */
            for (i = 0; i < opt.conns; i++) {
                if (!conns[i].busy
                    && !(opt.once && !opt.queue && sent >= opt.total))
                {
                    try_send(&conns[i]);
                }
            }
        }
        if (n > 0) {
            last_event = now_us();
        }
        /* a run of -n requests lasts as long as they take: it gives up
         * only when nothing came for 30 s; a timed run 30 s after its end */
        if ((opt.total && !opt.queue)
            ? sent > done && now_us() - last_event > 30000000
            : opt.duration > 0
              && now_us() - t0 > (uint64_t) ((opt.duration + 30) * 1e6))
        {
            fprintf(stderr, "fg-loadgen: %ld responses missing after "
                    "the run; giving up\n", sent - done);
            errors += sent - done;
            break;
        }
    }
}

int
main(int argc, char **argv)
{
    conn_t  *conns;
    double   secs;
    int      ep, rc;

    rc = parse_options(argc, argv);
    if (rc == 0) {
        rc = open_inputs();
    }
    if (rc == 0) {
        rc = open_outputs();
    }
    if (rc != 0) {
        return rc;
    }
    set_up_process();

    ep = epoll_create1(0);
    if (ep < 0) {
        perror("setup");
        return 1;
    }
    conns = open_conns(ep);
    if (conns == NULL) {
        return 1;
    }
    run(conns, ep);

    secs = (now_us() - t0) / 1e6;
    if (opt.rate > 0 && opt.duration > 0 && !opt.total) {
        /* due before the end but never written: the client fell behind */
        long  due = (long) (opt.duration * opt.rate);

        unsent = due > sent ? due - sent : 0;
        /* the loop wakes every millisecond: what fell due in the last
         * two of them is not the server's fault */
        if (unsent <= (long) (opt.rate * 0.002) + 1) {
            unsent = 0;
        }
    }
    return report(conns, secs);
}
