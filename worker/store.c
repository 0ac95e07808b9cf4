/*
 * store.c: a batch of messages into PostgreSQL, exactly once.  This file
 * owns the connection and the loop around it: one transaction per batch
 * (or per message with --per-message), waiting out outages with backoff,
 * isolating a message PostgreSQL refuses, and logging what each record
 * became once it is committed.  What to write is decided by plan.c
 * (pure), how it is written by statements.c (the SQL).
 *
 * A batch's transaction: skip positions already dead-lettered, write the
 * new dead letters, insert the orders (those new to orders.id are the only
 * ones that count), create and lock the (product, generation) rows the
 * stock_sets and new orders touch, decide, write sold and set_at, mark
 * rejections, refresh products.  Every message touches its own generation
 * only, so no ordering inside a batch is needed.  Everything is keyed by
 * what the messages carry, which also makes a retry safe when the
 * connection drops during COMMIT and the outcome is unknown: the redo
 * finds what is there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "plan.h"
#include "statements.h"
#include "store.h"
#include "worker.h"

#define BACKOFF_FIRST_MS   100
#define BACKOFF_MAX_MS     5000

struct fg_store {
    char               *conninfo;
    char               *topic;
    int                 per_message;
    struct fg_stmt      st;         /* the connection, the last error */
    struct fg_plan      plan;
    int                 idle_down;  /* a ping found PostgreSQL away */
};

enum attempt_rc {
    ATTEMPT_OK,
    ATTEMPT_RETRY,      /* PostgreSQL unavailable or busy: wait, redo */
    ATTEMPT_DATA        /* a record's data was refused: isolate it */
};

enum connect_rc {
    CONNECT_OK,
    CONNECT_RETRY,      /* unreachable, or the schema is not there yet */
    CONNECT_OLD_SCHEMA  /* tables of an older version: --migrate first */
};

static enum connect_rc connect_once(struct fg_store *s);
static enum connect_rc connect_check(struct fg_store *s);
static int write_retrying(struct fg_store *s, struct fg_record *recs,
    size_t n);
static enum attempt_rc attempt(struct fg_store *s, struct fg_record *recs,
    size_t n);
static enum attempt_rc transaction(struct fg_store *s,
    struct fg_record *recs, size_t n);
static int write_batch(struct fg_store *s, struct fg_record *recs,
    size_t n);
static void count_and_log(struct fg_store *s, struct fg_record *recs,
    size_t n, struct fg_store_stats *st);
static void log_other_stock(struct fg_store *s, const struct fg_record *r);

struct fg_store *
fg_store_new(const char *conninfo, const char *topic, int per_message)
{
    struct fg_store *s = calloc(1, sizeof(*s));

    if (s == NULL || (s->conninfo = strdup(conninfo)) == NULL
        || (s->topic = strdup(topic)) == NULL)
    {
        fg_error("out of memory");
        exit(1);
    }
    s->st.topic = s->topic;
    s->per_message = per_message;
    return s;
}

void
fg_store_free(struct fg_store *s)
{
    if (s == NULL) {
        return;
    }
    PQfinish(s->st.conn);
    fg_stmt_free(&s->st);
    fg_plan_free(&s->plan);
    free(s->conninfo);
    free(s->topic);
    free(s);
}

/* --- connection ---------------------------------------------------------- */

/* connect_check, and what it found for /healthz and /metrics */
static enum connect_rc
connect_once(struct fg_store *s)
{
    enum connect_rc  rc;

    rc = connect_check(s);
    if (rc != CONNECT_OK) {
        fg_metrics_db_error();
    } else if (s->idle_down) {
        fg_info("PostgreSQL: connected again");
        s->idle_down = 0;
    }
    fg_metrics_pg_state(rc == CONNECT_OK, s->st.error);
    return rc;
}

static enum connect_rc
connect_check(struct fg_store *s)
{
    const char *err;
    PGresult   *res;
    int         tables, current;

    if (s->st.conn != NULL && PQstatus(s->st.conn) == CONNECTION_OK) {
        return CONNECT_OK;
    }
    PQfinish(s->st.conn);
    s->st.conn = fg_pg_connect(s->conninfo, &err);
    if (s->st.conn == NULL) {
        snprintf(s->st.error, sizeof(s->st.error), "cannot connect: %s", err);
        return CONNECT_RETRY;
    }

    /* the tables of 001, and what 002_generations.sql adds to them */
    res = PQexec(s->st.conn,
                 "select to_regclass('orders') is not null"
                 " and to_regclass('products') is not null"
                 " and to_regclass('dead_letters') is not null,"
                 " to_regclass('stock_generations') is not null"
                 " and (select count(*) = 2 from pg_attribute"
                 "      where attname = 'generation' and not attisdropped"
                 "        and attrelid in (to_regclass('orders'),"
                 "                         to_regclass('products')))");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(s->st.error, sizeof(s->st.error), "%s",
                 fg_pg_error(s->st.conn, res));
        PQclear(res);
        return CONNECT_RETRY;
    }
    tables = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    current = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);

    if (!tables) {
        snprintf(s->st.error, sizeof(s->st.error),
                 "schema missing (tables orders, products, dead_letters):"
                 " run fluxgate-worker --migrate");
        return CONNECT_RETRY;
    }
    if (!current) {
        snprintf(s->st.error, sizeof(s->st.error),
                 "schema older than this worker (no stock_generations"
                 " table or generation columns of 002_generations.sql):"
                 " run fluxgate-worker --migrate");
        return CONNECT_OLD_SCHEMA;
    }
    return CONNECT_OK;
}

int
fg_store_open(struct fg_store *s, int fail_fast)
{
    long            backoff = BACKOFF_FIRST_MS;
    enum connect_rc rc;

    while ((rc = connect_once(s)) != CONNECT_OK) {
        if (rc == CONNECT_OLD_SCHEMA) {
            /* waiting would not help: nothing migrates but --migrate */
            fg_error("PostgreSQL: %s; exiting", s->st.error);
            return -1;
        }
        if (fail_fast) {
            fg_error("PostgreSQL: %s; giving up (--fail-fast)", s->st.error);
            return -1;
        }
        fg_warning("PostgreSQL: %s; retrying in %ld ms", s->st.error,
                   backoff);
        fg_metrics_db_retry();
        if (fg_sleep_ms(backoff, &fg_stop)) {
            return -1;
        }
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }

    fg_info("PostgreSQL: connected (database %s on %s, server %d)",
            PQdb(s->st.conn), PQhost(s->st.conn),
            PQserverVersion(s->st.conn));
    return 0;
}

void
fg_store_ping(struct fg_store *s)
{
    PGresult  *res;

    if (s->st.conn != NULL && PQstatus(s->st.conn) == CONNECTION_OK) {
        res = PQexec(s->st.conn, "");
        if (PQresultStatus(res) == PGRES_EMPTY_QUERY) {
            PQclear(res);
            return;
        }
        snprintf(s->st.error, sizeof(s->st.error), "%s",
                 fg_pg_error(s->st.conn, res));
        PQclear(res);
    }

    if (connect_once(s) != CONNECT_OK && !s->idle_down) {
        /* once: an idle worker would say it every second otherwise */
        fg_warning("PostgreSQL: %s; reconnecting while idle", s->st.error);
        s->idle_down = 1;
    }
}

/* --- batches ------------------------------------------------------------ */

int
fg_store_write(struct fg_store *s, struct fg_record *recs, size_t n,
    struct fg_store_stats *stats)
{
    size_t i;
    int    rc;

    memset(stats, 0, sizeof(*stats));
    if (n == 0) {
        return 0;
    }

    if (!s->per_message) {
        rc = write_retrying(s, recs, n);
        if (rc <= 0) {
            if (rc == 0) {
                stats->transactions = 1;
                count_and_log(s, recs, n, stats);
            }
            return rc;
        }
        fg_warning("PostgreSQL refused the batch of %zu messages (%s);"
                   " writing them one by one to find the bad one",
                   n, s->st.error);
    }

    for (i = 0; i < n; i++) {
        rc = write_retrying(s, &recs[i], 1);
        if (rc > 0) {
            /* its data is the problem: keep its bytes, not its meaning */
            recs[i].valid = 0;
            snprintf(recs[i].reason, sizeof(recs[i].reason),
                     "refused by PostgreSQL: %.120s", s->st.error);
            rc = write_retrying(s, &recs[i], 1);
        }
        while (rc > 0) {
            /* even the dead letter was refused: wait as for an outage */
            fg_error("PostgreSQL refused dead letter %d:%lld (%s);"
                     " retrying in %d ms", (int) recs[i].partition,
                     (long long) recs[i].offset, s->st.error, BACKOFF_MAX_MS);
            if (fg_sleep_ms(BACKOFF_MAX_MS, &fg_stop)) {
                rc = -1;
                break;
            }
            rc = write_retrying(s, &recs[i], 1);
        }
        if (rc < 0) {
            return -1;
        }
        stats->transactions++;
        count_and_log(s, &recs[i], 1, stats);
    }
    return 0;
}

/*
 * 0: committed; 1: refused for its data (s->st.error says why); -1: a stop
 * was requested while PostgreSQL was unavailable.
 */
static int
write_retrying(struct fg_store *s, struct fg_record *recs, size_t n)
{
    long       backoff = BACKOFF_FIRST_MS;
    long long  t0 = 0;

    for (;;) {
        switch (attempt(s, recs, n)) {
        case ATTEMPT_OK:
            if (t0 != 0) {
                fg_info("PostgreSQL is back after %lld ms: wrote the %zu"
                        " waiting message%s", fg_now_ms() - t0, n,
                        n == 1 ? "" : "s");
            }
            return 0;
        case ATTEMPT_DATA:
            return 1;
        case ATTEMPT_RETRY:
            break;
        }

        if (t0 == 0) {
            t0 = fg_now_ms();
        }
        if (fg_stop) {
            fg_warning("stopping while PostgreSQL is unavailable (%s): %zu"
                       " message%s left uncommitted, Kafka will deliver"
                       " them again", s->st.error, n, n == 1 ? "" : "s");
            return -1;
        }
        fg_warning("PostgreSQL: %s; keeping %zu message%s (partition %d"
                   " from offset %lld), nothing committed, retrying in %ld ms",
                   s->st.error, n, n == 1 ? "" : "s", (int) recs[0].partition,
                   (long long) recs[0].offset, backoff);
        if (s->st.conn != NULL && PQstatus(s->st.conn) != CONNECTION_OK) {
            PQfinish(s->st.conn);
            s->st.conn = NULL;
        }
        fg_metrics_db_retry();
        fg_sleep_ms(backoff, &fg_stop);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

static enum attempt_rc
attempt(struct fg_store *s, struct fg_record *recs, size_t n)
{
    enum attempt_rc  rc;

    if (connect_once(s) != CONNECT_OK) {
        return ATTEMPT_RETRY;       /* counted by connect_once */
    }
    rc = transaction(s, recs, n);
    if (rc != ATTEMPT_OK) {
        fg_metrics_db_error();
        fg_metrics_pg_state(PQstatus(s->st.conn) == CONNECTION_OK,
                            s->st.error);
    }
    return rc;
}

static enum attempt_rc
transaction(struct fg_store *s, struct fg_record *recs, size_t n)
{
    PGresult   *res;
    size_t      i;

    for (i = 0; i < n; i++) {
        recs[i].outcome = FG_OUT_NONE;
    }
    s->st.data_error = 0;

    if (fg_pg_command(s->st.conn, "begin", &res) != 0) {
        snprintf(s->st.error, sizeof(s->st.error), "%s",
                 fg_pg_error(s->st.conn, res));
        PQclear(res);
        return ATTEMPT_RETRY;
    }
    PQclear(res);

    if (write_batch(s, recs, n) != 0) {
        if (s->st.conn != NULL && PQstatus(s->st.conn) == CONNECTION_OK) {
            PQclear(PQexec(s->st.conn, "rollback"));
        }
        return s->st.data_error ? ATTEMPT_DATA : ATTEMPT_RETRY;
    }

    if (fg_pg_command(s->st.conn, "commit", &res) != 0) {
        snprintf(s->st.error, sizeof(s->st.error), "%s",
                 fg_pg_error(s->st.conn, res));
        s->st.data_error = fg_pg_data_error(s->st.conn, res);
        PQclear(res);
        return s->st.data_error ? ATTEMPT_DATA : ATTEMPT_RETRY;
    }
    PQclear(res);
    return ATTEMPT_OK;
}

/* the statements of one batch, inside its transaction */
static int
write_batch(struct fg_store *s, struct fg_record *recs, size_t n)
{
    if (fg_stmt_skip_dead_lettered(&s->st, recs, n) != 0
        || fg_stmt_dead_letters(&s->st, recs, n) != 0
        || fg_stmt_insert_orders(&s->st, recs, n) != 0)
    {
        return -1;
    }
    if (fg_plan_rows(&s->plan, recs, n) != 0) {
        snprintf(s->st.error, sizeof(s->st.error), "out of memory");
        return -1;
    }
    if (fg_stmt_lock_generations(&s->st, &s->plan) != 0) {
        return -1;
    }
    fg_plan_decide(&s->plan, recs, n);
    if (fg_stmt_update_generations(&s->st, &s->plan) != 0
        || fg_stmt_reject_orders(&s->st, recs, n) != 0
        || fg_stmt_refresh_products(&s->st, &s->plan) != 0)
    {
        return -1;
    }
    return 0;
}

/* after the commit: what the batch did, and a line for each notable record */
static void
count_and_log(struct fg_store *s, struct fg_record *recs, size_t n,
    struct fg_store_stats *st)
{
    size_t i;

    for (i = 0; i < n; i++) {
        struct fg_record *r = &recs[i];

        switch (r->outcome) {
        case FG_OUT_ORDER_NEW:
            st->orders++;
            log_other_stock(s, r);
            break;
        case FG_OUT_DUPLICATE:
            st->duplicates++;
            fg_debug("%s %d:%lld already recorded: skipped", s->topic,
                     (int) r->partition, (long long) r->offset);
            break;
        case FG_OUT_ORDER_REJECTED:
            st->rejected++;
            log_other_stock(s, r);
            fg_warning("order %s rejected: %s (product %s, user %s,"
                       " quantity %d, %s %d:%lld)", r->msg.order_id,
                       r->reason, r->msg.product_id, r->msg.user_id,
                       (int) r->msg.quantity, s->topic, (int) r->partition,
                       (long long) r->offset);
            break;
        case FG_OUT_STOCK_SET:
            st->stock_sets++;
            fg_info("stock of %s generation %lld set to %d (%s %d:%lld)",
                    r->msg.product_id, (long long) r->msg.generation,
                    (int) r->msg.stock, s->topic, (int) r->partition,
                    (long long) r->offset);
            break;
        case FG_OUT_STOCK_SET_SKIPPED:
            st->skipped_stock_sets++;
            fg_info("stock_set of %s generation %lld to %d at %s %d:%lld"
                    " skipped: %s", r->msg.product_id,
                    (long long) r->msg.generation, (int) r->msg.stock,
                    s->topic, (int) r->partition, (long long) r->offset,
                    r->reason);
            break;
        case FG_OUT_STOCK_SET_CONFLICT:
            st->skipped_stock_sets++;
            fg_warning("stock_set of %s generation %lld to %d at %s %d:%lld"
                       " ignored: %s", r->msg.product_id,
                       (long long) r->msg.generation, (int) r->msg.stock,
                       s->topic, (int) r->partition, (long long) r->offset,
                       r->reason);
            break;
        case FG_OUT_DEAD_LETTER:
            st->dead_letters++;
            fg_warning("dead letter %s %d:%lld (%zu bytes): %s", s->topic,
                       (int) r->partition, (long long) r->offset,
                       r->payload_len, r->reason);
            break;
        case FG_OUT_NONE:
            if (r->valid && r->msg.type == FG_MSG_MARKER) {
                fg_debug("%s %d:%lld is a marker of fluxgate-reconcile:"
                         " nothing to record", s->topic, (int) r->partition,
                         (long long) r->offset);
            }
            break;
        }
    }
}

/* every order of a generation carries the stock /init set it to */
static void
log_other_stock(struct fg_store *s, const struct fg_record *r)
{
    if (r->msg.generation_stock == r->gen_stock) {
        return;
    }
    fg_warning("order %s says generation %lld of %s has stock %d, but %d"
               " is recorded: counted against %d (%s %d:%lld)",
               r->msg.order_id, (long long) r->msg.generation,
               r->msg.product_id, (int) r->msg.generation_stock,
               (int) r->gen_stock, (int) r->gen_stock, s->topic,
               (int) r->partition, (long long) r->offset);
}
