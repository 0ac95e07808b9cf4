/*
 * fg-loadgen's report: the "total" line, the "queue" line of --queue (with
 * the admission order its shoppers saw), "tickets" of --tickets-out, one
 * "status=" line per status, --track's file, and the exit code.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "loadgen.h"


/*
 * Tickets of a later turn seen admitted before a ticket's last "waiting"
 * poll was sent: that ticket was overtaken.  Sorted by turn, swept from
 * the last turn down with the earliest admission seen behind.
 */
static int
cmp_turn(const void *a, const void *b)
{
    int64_t  x = ((const track_t *) a)->turn, y = ((const track_t *) b)->turn;

    return x < y ? -1 : x > y;
}

static long
out_of_order(long *known, double *rate, double *worst_ms)
{
    size_t    i, n = 0;
    track_t  *t = malloc((ntracks + 1) * sizeof(track_t));
    uint64_t  min_adm = UINT64_MAX;
    long      bad = 0;
    size_t    first = SIZE_MAX, last = 0;

    *rate = 0;
    *worst_ms = 0;
    *known = 0;
    if (t == NULL) {
        return -1;
    }
    for (i = 0; i < ntracks; i++) {
        if (tracks[i].turn >= 0) {
            t[n++] = tracks[i];
        }
    }
    *known = (long) n;
    qsort(t, n, sizeof(track_t), cmp_turn);
    for (i = n; i-- > 0; ) {
        if (min_adm < t[i].last_wait) {
            bad++;
            if ((t[i].last_wait - min_adm) / 1000.0 > *worst_ms) {
                *worst_ms = (t[i].last_wait - min_adm) / 1000.0;
            }
        }
        if (t[i].admitted && t[i].admitted < min_adm) {
            min_adm = t[i].admitted;
        }
    }
    /* the pace of admission as the polls saw it: first and last turns
     * seen admitted */
    for (i = 0; i < n; i++) {
        if (t[i].admitted) {
            if (first == SIZE_MAX) {
                first = i;
            }
            last = i;
        }
    }
    if (first != SIZE_MAX && last > first
        && t[last].admitted > t[first].admitted)
    {
        *rate = (t[last].turn - t[first].turn) * 1e6
                / (double) (t[last].admitted - t[first].admitted);
    }
    free(t);
    return bad;
}

static double
ms_since(uint64_t at)
{
    return at ? (double) (at - t0) / 1000.0 : -1;
}

/* --track: one line per ticket */
static void
write_tracks(void)
{
    FILE    *f = fopen(opt.track, "w");
    size_t   i;

    if (f == NULL) {
        perror(opt.track);
        return;
    }
    for (i = 0; i < ntracks; i++) {
        track_t  *t = &tracks[i];

        fprintf(f, "%lld %c %.1f %.1f %.1f %.1f %.1f %u %llu %.1f %d\n",
                (long long) t->turn, t->kind ? t->kind : '?',
                ms_since(t->started), ms_since(t->booked),
                ms_since(t->last_wait), ms_since(t->admitted),
                ms_since(t->bought), t->challenges,
                (unsigned long long) t->hashes, t->solve_us / 1000.0,
                t->status);
    }
    fclose(f);
}

/* p-th percentile of the ms between two of a track's times */
static double
track_pct(size_t off_from, size_t off_to, double p, long *count)
{
    series_t  s = { NULL, 0, 0 };
    size_t    i;
    double    v = -1;

    for (i = 0; i < ntracks; i++) {
        uint64_t  a = *(uint64_t *) ((char *) &tracks[i] + off_from);
        uint64_t  b = *(uint64_t *) ((char *) &tracks[i] + off_to);

        if (a && b && b >= a) {
            series_push(&s, b - a);
        }
    }
    *count = (long) s.n;
    if (s.n) {
        series_sort(&s);
        v = series_pct(&s, p);
    }
    free(s.v);
    return v;
}

/* the total line: every answer to an order, whatever its status */
static void
report_total(double secs)
{
    long  total_ok = all.n;

    series_sort(&all);
    series_sort(&lag);
    printf("total requests=%ld responses=%ld errors=%ld unexpected=%ld"
           " unsent=%ld seconds=%.3f rps=%.0f last_200_ms=%.1f mode=%s"
           " rate=%.0f max_behind_ms=%.1f p50_ms=%.3f p90_ms=%.3f"
           " p99_ms=%.3f p999_ms=%.3f max_ms=%.3f sched=%s stamped=%zu"
           " client_lag_p50_ms=%.3f client_lag_p99_ms=%.3f"
           " client_lag_max_ms=%.3f started_at_ms=%.1f\n",
           sent, total_ok, errors, unexpected, unsent, secs, total_ok / secs,
           last_200 / 1000.0, opt.rate > 0 ? "open" : "closed", opt.rate,
           max_behind / 1000.0,
           series_pct(&all, 0.50), series_pct(&all, 0.90),
           series_pct(&all, 0.99), series_pct(&all, 0.999),
           series_max_ms(&all),
           sched_policy, lag.n, series_pct(&lag, 0.50),
           series_pct(&lag, 0.99), series_max_ms(&lag),
           (double) ((int64_t) t0 + real_minus_mono) / 1000.0);
}

/* --queue: the solving times of the tickets that were challenged */
static long
solve_pcts(double *s50, double *s99)
{
    series_t  sv = { NULL, 0, 0 };
    long      n;

    for (size_t k = 0; k < ntracks; k++) {
        if (tracks[k].challenges) {
            series_push(&sv, tracks[k].solve_us);
        }
    }
    n = (long) sv.n;
    series_sort(&sv);
    *s50 = series_pct(&sv, 0.50);
    *s99 = series_pct(&sv, 0.99);
    free(sv.v);
    return n;
}

/* --queue: the shoppers' line, after the tracks of those still out */
static void
report_queue(conn_t *conns)
{
    long    known = 0, n_wait, n_buy, n_solve, bad;
    double  rate, worst, w50, w99, b50, b99, s50, s99;
    int     i;

    for (i = 0; i < opt.conns; i++) {
        if (conns[i].shopper != SHOPPER_DONE
            && (conns[i].tr.started || conns[i].tr.booked))
        {
            conns[i].tr.status = -1;
            push_track(&conns[i].tr);
        }
    }
    series_sort(&polls);
    bad = out_of_order(&known, &rate, &worst);
    w50 = track_pct(offsetof(track_t, booked),
                    offsetof(track_t, admitted), 0.5, &n_wait);
    w99 = track_pct(offsetof(track_t, booked),
                    offsetof(track_t, admitted), 0.99, &n_wait);
    b50 = track_pct(offsetof(track_t, started),
                    offsetof(track_t, bought), 0.5, &n_buy);
    b99 = track_pct(offsetof(track_t, started),
                    offsetof(track_t, bought), 0.99, &n_buy);
    n_solve = solve_pcts(&s50, &s99);
    printf("queue queued=%ld polls=%zu admitted=%ld sold_out=%ld lost=%ld"
           " p50_ms=%.3f p99_ms=%.3f challenged=%ld proofs=%ld"
           " prequeued=%ld requeued=%ld done=%ld tickets=%zu"
           " turns_known=%ld out_of_order=%ld out_of_order_worst_ms=%.1f"
           " admit_rate=%.1f wait_n=%ld wait_p50_ms=%.1f"
           " wait_p99_ms=%.1f bought=%ld buy_p50_ms=%.1f"
           " buy_p99_ms=%.1f solved=%ld solve_p50_ms=%.1f"
           " solve_p99_ms=%.1f\n", queued, polls.n, admitted,
           queue_sold_out, queue_lost, series_pct(&polls, 0.50),
           series_pct(&polls, 0.99), challenged, proofs,
           prequeued, requeued, shoppers_done, ntracks, known, bad, worst,
           rate, n_wait, w50, w99, n_buy, b50, b99, n_solve, s50, s99);
    if (opt.track) {
        write_tracks();
    }
}

int
report(conn_t *conns, double secs)
{
    int  s;

    report_total(secs);
    if (opt.queue) {
        report_queue(conns);
    }
    if (tickets_file) {
        fclose(tickets_file);
        printf("tickets written=%ld\n", tickets_written);
    }
    for (s = 0; s < MAX_STATUS; s++) {
        series_t  *ser = &by_status[s];

        if (ser->n == 0) {
            continue;
        }
        series_sort(ser);
        printf("status=%d count=%zu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f"
               " p999_ms=%.3f max_ms=%.3f\n", s, ser->n,
               series_pct(ser, 0.50), series_pct(ser, 0.90),
               series_pct(ser, 0.99), series_pct(ser, 0.999),
               series_max_ms(ser));
    }
    if (log_file) {
        fclose(log_file);
    }
    if (errors || unexpected || unsent) {
        fprintf(stderr, "fg-loadgen: FAILED: %ld errors, %ld answers not in"
                " --expect %s, %ld requests due but never sent\n", errors,
                unexpected, opt.expect ? opt.expect : "(any)", unsent);
        return 3;
    }
    return 0;
}
