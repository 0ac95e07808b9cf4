/*
 * store.c: a batch of messages into PostgreSQL, exactly once.
 *
 * One transaction per batch, a few set-based statements per transaction
 * (arrays bound as parameters and unnest()ed), so the cost of a batch hardly
 * depends on its size.  Idempotence comes from the data: an order row is
 * keyed by its orderId (a redelivered order is a no-op, and only a new row
 * takes stock), a stock_set remembers the Kafka position it came from (a
 * redelivered one does not reset stock that later orders took), a dead
 * letter is unique by its position and a position once dead-lettered stays
 * so.  That is also what makes a retry safe when the connection drops
 * during COMMIT and the outcome is unknown: the redo finds what is there.
 *
 * Order matters per product: a stock_set must land between the orders
 * before and after it.  The batch is therefore split into phases, stock
 * phases and order phases alternating; each record goes into the earliest
 * phase of its kind that comes after everything before it for the same
 * product.  A flash sale (one stock_set, then orders) is two phases however
 * many products share the batch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg.h"
#include "store.h"
#include "strmap.h"
#include "worker.h"

#define BACKOFF_FIRST_MS   100
#define BACKOFF_MAX_MS     5000
#define MAX_ARRAYS         8

/* growable text for one array parameter: {"a","b"} or {1,2} */
struct buf {
    char    *p;
    size_t   len;
    size_t   cap;
};

struct fg_store {
    char               *conninfo;
    char               *topic;
    int                 per_message;
    PGconn             *conn;
    char                error[1024];    /* the last failure, for the log */
    int                 data_error;     /* ... and it was caused by the data */

    /* per-batch scratch, kept between batches to avoid reallocating */
    struct buf          arr[MAX_ARRAYS];
    int                *phase;          /* per record */
    size_t             *order;          /* record indexes sorted by phase */
    size_t              scratch_cap;
    struct fg_strmap    map;            /* product -> phase, id -> record */
    struct fg_strmap    products;       /* product -> index below */
    const char        **prod_ids;
    long               *prod_stock;     /* read under FOR UPDATE; -1: none */
    long               *prod_left;
    size_t              prod_cap;
    struct {
        int32_t         part;
        int64_t         lo, hi;
    }                  *ranges;         /* offsets per partition in a batch */
};

enum attempt_rc {
    ATTEMPT_OK,
    ATTEMPT_RETRY,      /* PostgreSQL unavailable or busy: wait, redo */
    ATTEMPT_DATA        /* a record's data was refused: isolate it */
};

static int write_retrying(struct fg_store *s, struct fg_record *recs,
    size_t n);
static enum attempt_rc attempt(struct fg_store *s, struct fg_record *recs,
    size_t n);
static int plan_phases(struct fg_store *s, struct fg_record *recs, size_t n,
    size_t *nvalid);
static int skip_dead_lettered(struct fg_store *s, struct fg_record *recs,
    size_t n);
static int write_dead_letters(struct fg_store *s, struct fg_record *recs,
    size_t n);
static int write_stock_sets(struct fg_store *s, struct fg_record *recs,
    const size_t *idx, size_t k);
static int write_orders(struct fg_store *s, struct fg_record *recs,
    const size_t *idx, size_t k);
static int take_stock(struct fg_store *s, struct fg_record *recs,
    const size_t *idx, size_t k);
static int record_rejections(struct fg_store *s, struct fg_record *recs,
    const size_t *idx, size_t k);
static PGresult *exec(struct fg_store *s, const char *sql, int nparams,
    const char *const *params, ExecStatusType want);
static void count_and_log(struct fg_store *s, struct fg_record *recs,
    size_t n, struct fg_store_stats *st);

static void buf_reset(struct buf *b);
static void buf_grow(struct buf *b, size_t more);
static void arr_str(struct buf *b, const char *s);
static void arr_int(struct buf *b, long long v);
static const char *arr_end(struct buf *b);
static void *xrealloc(void *p, size_t size);

struct fg_store *
fg_store_new(const char *conninfo, const char *topic, int per_message)
{
    struct fg_store *s = xrealloc(NULL, sizeof(*s));

    memset(s, 0, sizeof(*s));
    s->conninfo = strdup(conninfo);
    s->topic = strdup(topic);
    s->per_message = per_message;
    if (s->conninfo == NULL || s->topic == NULL) {
        fg_error("out of memory");
        exit(1);
    }
    return s;
}

void
fg_store_free(struct fg_store *s)
{
    size_t i;

    if (s == NULL) {
        return;
    }
    PQfinish(s->conn);
    for (i = 0; i < MAX_ARRAYS; i++) {
        free(s->arr[i].p);
    }
    free(s->phase);
    free(s->order);
    fg_strmap_free(&s->map);
    fg_strmap_free(&s->products);
    free(s->prod_ids);
    free(s->prod_stock);
    free(s->prod_left);
    free(s->ranges);
    free(s->conninfo);
    free(s->topic);
    free(s);
}

/* --- connection ---------------------------------------------------------- */

static int
connect_once(struct fg_store *s)
{
    const char *err;
    PGresult   *res;

    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK) {
        return 0;
    }
    PQfinish(s->conn);
    s->conn = fg_pg_connect(s->conninfo, &err);
    if (s->conn == NULL) {
        snprintf(s->error, sizeof(s->error), "cannot connect: %s", err);
        return -1;
    }

    res = PQexec(s->conn,
                 "select to_regclass('orders') is not null"
                 " and to_regclass('products') is not null"
                 " and to_regclass('dead_letters') is not null");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(s->error, sizeof(s->error), "%s", fg_pg_error(s->conn, res));
        PQclear(res);
        return -1;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        snprintf(s->error, sizeof(s->error),
                 "schema missing (tables orders, products, dead_letters):"
                 " run fluxgate-worker --migrate");
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

int
fg_store_open(struct fg_store *s, int fail_fast)
{
    long backoff = BACKOFF_FIRST_MS;

    while (connect_once(s) != 0) {
        if (fail_fast) {
            fg_error("PostgreSQL: %s; giving up (--fail-fast)", s->error);
            return -1;
        }
        fg_warning("PostgreSQL: %s; retrying in %ld ms", s->error, backoff);
        if (fg_sleep_ms(backoff, &fg_stop)) {
            return -1;
        }
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }

    fg_info("PostgreSQL: connected (database %s on %s, server %d)",
            PQdb(s->conn), PQhost(s->conn), PQserverVersion(s->conn));
    return 0;
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
                   n, s->error);
    }

    for (i = 0; i < n; i++) {
        rc = write_retrying(s, &recs[i], 1);
        if (rc > 0) {
            /* its data is the problem: keep its bytes, not its meaning */
            recs[i].valid = 0;
            snprintf(recs[i].reason, sizeof(recs[i].reason),
                     "refused by PostgreSQL: %.120s", s->error);
            rc = write_retrying(s, &recs[i], 1);
        }
        while (rc > 0) {
            /* even the dead letter was refused: wait as for an outage */
            fg_error("PostgreSQL refused dead letter %d:%lld (%s);"
                     " retrying in %d ms", (int) recs[i].partition,
                     (long long) recs[i].offset, s->error, BACKOFF_MAX_MS);
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
 * 0: committed; 1: refused for its data (s->error says why); -1: a stop was
 * requested while PostgreSQL was unavailable.
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
                       " them again", s->error, n, n == 1 ? "" : "s");
            return -1;
        }
        fg_warning("PostgreSQL: %s; keeping %zu message%s (partition %d"
                   " from offset %lld), nothing committed, retrying in %ld ms",
                   s->error, n, n == 1 ? "" : "s", (int) recs[0].partition,
                   (long long) recs[0].offset, backoff);
        if (s->conn != NULL && PQstatus(s->conn) != CONNECTION_OK) {
            PQfinish(s->conn);
            s->conn = NULL;
        }
        fg_sleep_ms(backoff, &fg_stop);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

static enum attempt_rc
attempt(struct fg_store *s, struct fg_record *recs, size_t n)
{
    PGresult   *res;
    size_t      i, start, nvalid;

    for (i = 0; i < n; i++) {
        recs[i].outcome = FG_OUT_NONE;
    }
    s->data_error = 0;

    if (connect_once(s) != 0) {
        return ATTEMPT_RETRY;
    }

    res = exec(s, "begin", 0, NULL, PGRES_COMMAND_OK);
    if (res == NULL) {
        goto failed;
    }
    PQclear(res);

    if (skip_dead_lettered(s, recs, n) != 0
        || plan_phases(s, recs, n, &nvalid) != 0
        || write_dead_letters(s, recs, n) != 0)
    {
        goto failed;
    }

    /* s->order: the valid records grouped by phase, in batch order */
    for (start = 0; start < nvalid; start = i) {
        int ph = s->phase[s->order[start]];

        for (i = start; i < nvalid && s->phase[s->order[i]] == ph; i++) {
            /* find the end of this phase */
        }
        if ((ph % 2 == 0 ? write_stock_sets : write_orders)
                (s, recs, s->order + start, i - start) != 0)
        {
            goto failed;
        }
    }

    res = exec(s, "commit", 0, NULL, PGRES_COMMAND_OK);
    if (res == NULL) {
        goto failed;
    }
    PQclear(res);
    return ATTEMPT_OK;

failed:
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK) {
        PQclear(PQexec(s->conn, "rollback"));
    }
    return s->data_error ? ATTEMPT_DATA : ATTEMPT_RETRY;
}

/*
 * Gives each valid record its phase (even: stock sets, odd: orders) and
 * sorts the valid records' indexes by phase, keeping batch order within a
 * phase.  Dead letters have no phase: they do not touch stock.
 */
static int
plan_phases(struct fg_store *s, struct fg_record *recs, size_t n,
    size_t *nvalid)
{
    size_t   i;
    size_t  *next;
    long    *last;
    int      ph, max = -1;

    if (n > s->scratch_cap) {
        s->phase = xrealloc(s->phase, n * sizeof(*s->phase));
        s->order = xrealloc(s->order, n * sizeof(*s->order));
        s->scratch_cap = n;
    }
    if (fg_strmap_reset(&s->map, n) != 0) {
        snprintf(s->error, sizeof(s->error), "out of memory");
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (!recs[i].valid || recs[i].outcome == FG_OUT_DUPLICATE) {
            s->phase[i] = -1;
            continue;
        }
        last = fg_strmap_slot(&s->map, recs[i].msg.product_id, -1);
        if (last == NULL) {
            snprintf(s->error, sizeof(s->error), "out of memory");
            return -1;
        }
        ph = recs[i].msg.type == FG_MSG_STOCK_SET ? 0 : 1;
        while (ph < *last) {
            ph += 2;
        }
        *last = ph;
        s->phase[i] = ph;
        if (ph > max) {
            max = ph;
        }
    }

    /* counting sort by phase; stable, so batch order holds in a phase */
    next = calloc(max + 2, sizeof(*next));
    if (next == NULL) {
        snprintf(s->error, sizeof(s->error), "out of memory");
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (s->phase[i] >= 0) {
            next[s->phase[i] + 1]++;
        }
    }
    for (ph = 1; ph <= max + 1; ph++) {
        next[ph] += next[ph - 1];
    }
    *nvalid = next[max + 1];
    for (i = 0; i < n; i++) {
        if (s->phase[i] >= 0) {
            s->order[next[s->phase[i]]++] = i;
        }
    }
    free(next);
    return 0;
}

/*
 * A message's fate is decided once.  One that went to dead_letters (say
 * PostgreSQL refused it) stays there when Kafka delivers it again, even if
 * it would pass now: look up the batch's positions, one range per
 * partition, which costs an index probe when there are none.
 */
static int
skip_dead_lettered(struct fg_store *s, struct fg_record *recs, size_t n)
{
    const char  *params[4];
    PGresult    *res;
    long        *slot;
    size_t       i, j, nparts = 0;
    char         key[48];
    int          row;

    /* a batch spans few partitions: a linear search is enough */
    s->ranges = xrealloc(s->ranges, n * sizeof(*s->ranges));
    for (i = 0; i < n; i++) {
        for (j = 0; j < nparts && s->ranges[j].part != recs[i].partition; j++) {
            /* find the partition's range */
        }
        if (j == nparts) {
            s->ranges[j].part = recs[i].partition;
            s->ranges[j].lo = s->ranges[j].hi = recs[i].offset;
            nparts++;
        }
        if (recs[i].offset < s->ranges[j].lo) {
            s->ranges[j].lo = recs[i].offset;
        }
        if (recs[i].offset > s->ranges[j].hi) {
            s->ranges[j].hi = recs[i].offset;
        }
    }

    for (j = 0; j < 3; j++) {
        buf_reset(&s->arr[j]);
    }
    for (j = 0; j < nparts; j++) {
        arr_int(&s->arr[0], s->ranges[j].part);
        arr_int(&s->arr[1], s->ranges[j].lo);
        arr_int(&s->arr[2], s->ranges[j].hi);
    }
    params[0] = s->topic;
    for (j = 0; j < 3; j++) {
        params[j + 1] = arr_end(&s->arr[j]);
    }
    res = exec(s, "select d.\"partition\" || ':' || d.\"offset\""
                  " from unnest($2::int[], $3::bigint[], $4::bigint[])"
                  "     as v(part, lo, hi)"
                  " join dead_letters d on d.topic = $1"
                  "     and d.\"partition\" = v.part"
                  "     and d.\"offset\" between v.lo and v.hi",
               4, params, PGRES_TUPLES_OK);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }

    /* rare: only a redelivery of a batch that had dead letters gets here */
    if (fg_strmap_reset(&s->map, PQntuples(res)) != 0) {
        PQclear(res);
        snprintf(s->error, sizeof(s->error), "out of memory");
        return -1;
    }
    for (row = 0; row < PQntuples(res); row++) {
        if (fg_strmap_slot(&s->map, PQgetvalue(res, row, 0), 1) == NULL) {
            PQclear(res);
            snprintf(s->error, sizeof(s->error), "out of memory");
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%d:%lld", (int) recs[i].partition,
                 (long long) recs[i].offset);
        slot = fg_strmap_find(&s->map, key);
        if (slot != NULL) {
            recs[i].outcome = FG_OUT_DUPLICATE;
        }
    }
    PQclear(res);
    return 0;
}

static int
write_dead_letters(struct fg_store *s, struct fg_record *recs, size_t n)
{
    const char  *values[6];
    int          lengths[6], formats[6] = { 0, 0, 0, 1, 1, 0 };
    char         part[16], off[24];
    PGresult    *res;
    size_t       i;

    /* rare, and bytes are simplest bound one row at a time in binary */
    for (i = 0; i < n; i++) {
        if (recs[i].valid || recs[i].outcome == FG_OUT_DUPLICATE) {
            continue;
        }
        snprintf(part, sizeof(part), "%d", (int) recs[i].partition);
        snprintf(off, sizeof(off), "%lld", (long long) recs[i].offset);
        values[0] = s->topic;
        values[1] = part;
        values[2] = off;
        values[3] = (const char *) recs[i].key;
        lengths[3] = (int) recs[i].key_len;
        values[4] = (const char *) recs[i].payload;
        lengths[4] = (int) recs[i].payload_len;
        values[5] = recs[i].reason;

        res = PQexecParams(s->conn,
            "insert into dead_letters"
            "     (topic, \"partition\", \"offset\", key, payload, reason)"
            " values ($1, $2, $3, $4, $5, $6)"
            " on conflict (topic, \"partition\", \"offset\") do nothing",
            6, NULL, values, lengths, formats, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(s->error, sizeof(s->error), "%s",
                     fg_pg_error(s->conn, res));
            s->data_error = fg_pg_data_error(s->conn, res);
            PQclear(res);
            return -1;
        }
        /* none inserted: this position was dead-lettered before */
        recs[i].outcome = strcmp(PQcmdTuples(res), "0") == 0
                          ? FG_OUT_DUPLICATE : FG_OUT_DEAD_LETTER;
        PQclear(res);
    }
    return 0;
}

/*
 * Upserts products.stock.  Within one stock phase the last stock_set of a
 * product wins (no order of that product lies between them).  A stock_set
 * whose Kafka position is not after the one recorded is a redelivery and
 * changes nothing.
 */
static int
write_stock_sets(struct fg_store *s, struct fg_record *recs,
    const size_t *idx, size_t k)
{
    const char  *params[6];
    long        *last;
    PGresult    *res;
    size_t       j, m = 0;
    int          row;

    if (fg_strmap_reset(&s->map, k) != 0) {
        snprintf(s->error, sizeof(s->error), "out of memory");
        return -1;
    }
    for (j = 0; j < k; j++) {
        last = fg_strmap_slot(&s->map, recs[idx[j]].msg.product_id, -1);
        if (last == NULL) {
            snprintf(s->error, sizeof(s->error), "out of memory");
            return -1;
        }
        if (*last >= 0) {
            recs[*last].outcome = FG_OUT_STOCK_SET_SKIPPED;
            snprintf(recs[*last].reason, sizeof(recs[*last].reason),
                     "superseded by offset %lld in the same batch",
                     (long long) recs[idx[j]].offset);
        }
        *last = (long) idx[j];
    }

    for (j = 0; j < 5; j++) {
        buf_reset(&s->arr[j]);
    }
    for (j = 0; j < k; j++) {
        struct fg_record *r = &recs[idx[j]];

        if (r->outcome == FG_OUT_STOCK_SET_SKIPPED) {
            continue;
        }
        /* not applied unless RETURNING names it */
        r->outcome = FG_OUT_STOCK_SET_SKIPPED;
        snprintf(r->reason, sizeof(r->reason),
                 "already applied (redelivered)");
        arr_str(&s->arr[0], r->msg.product_id);
        arr_int(&s->arr[1], r->msg.stock);
        arr_int(&s->arr[2], r->msg.at);
        arr_int(&s->arr[3], r->partition);
        arr_int(&s->arr[4], r->offset);
        m++;
    }
    if (m == 0) {
        return 0;
    }

    params[0] = s->topic;
    for (j = 0; j < 5; j++) {
        params[j + 1] = arr_end(&s->arr[j]);
    }
    res = exec(s,
        "insert into products as p (id, stock, updated_at, stock_set_at,"
        "     stock_set_topic, stock_set_partition, stock_set_offset)"
        " select v.id, v.stock, now(),"
        "     timestamptz 'epoch' + v.at * interval '1 millisecond',"
        "     $1, v.part, v.off"
        " from unnest($2::text[], $3::int[], $4::bigint[], $5::int[],"
        "     $6::bigint[]) as v(id, stock, at, part, off)"
        " on conflict (id) do update set"
        "     stock = excluded.stock, updated_at = excluded.updated_at,"
        "     stock_set_at = excluded.stock_set_at,"
        "     stock_set_topic = excluded.stock_set_topic,"
        "     stock_set_partition = excluded.stock_set_partition,"
        "     stock_set_offset = excluded.stock_set_offset"
        " where p.stock_set_topic is distinct from excluded.stock_set_topic"
        "     or p.stock_set_partition"
        "         is distinct from excluded.stock_set_partition"
        "     or p.stock_set_offset is null"
        "     or p.stock_set_offset < excluded.stock_set_offset"
        " returning p.id",
        6, params, PGRES_TUPLES_OK);
    if (res == NULL) {
        return -1;
    }
    for (row = 0; row < PQntuples(res); row++) {
        last = fg_strmap_find(&s->map, PQgetvalue(res, row, 0));
        if (last != NULL) {
            recs[*last].outcome = FG_OUT_STOCK_SET;
        }
    }
    PQclear(res);
    return 0;
}

/*
 * Inserts the orders; those that were not there yet take their quantity
 * from stock in batch order, or are marked rejected when it does not cover
 * them.
 */
static int
write_orders(struct fg_store *s, struct fg_record *recs, const size_t *idx,
    size_t k)
{
    const char  *params[9];
    long        *first;
    PGresult    *res;
    size_t       j, m = 0;
    int          row;

    if (fg_strmap_reset(&s->map, k) != 0) {
        snprintf(s->error, sizeof(s->error), "out of memory");
        return -1;
    }
    for (j = 0; j < 8; j++) {
        buf_reset(&s->arr[j]);
    }

    for (j = 0; j < k; j++) {
        struct fg_record *r = &recs[idx[j]];

        /* duplicates unless RETURNING says the row is new */
        r->outcome = FG_OUT_DUPLICATE;
        first = fg_strmap_slot(&s->map, r->msg.order_id, -1);
        if (first == NULL) {
            snprintf(s->error, sizeof(s->error), "out of memory");
            return -1;
        }
        if (*first >= 0) {
            continue;       /* the same orderId earlier in this batch */
        }
        *first = (long) idx[j];

        arr_str(&s->arr[0], r->msg.order_id);
        arr_str(&s->arr[1], r->msg.product_id);
        arr_str(&s->arr[2], r->msg.user_id);
        arr_int(&s->arr[3], r->msg.quantity);
        arr_str(&s->arr[4], r->msg.idempotency_key);
        arr_int(&s->arr[5], r->msg.accepted_at);
        arr_int(&s->arr[6], r->partition);
        arr_int(&s->arr[7], r->offset);
        m++;
    }

    params[0] = s->topic;
    for (j = 0; j < 8; j++) {
        params[j + 1] = arr_end(&s->arr[j]);
    }
    res = exec(s,
        "insert into orders (id, product_id, user_id, quantity,"
        "     idempotency_key, accepted_at, kafka_topic, kafka_partition,"
        "     kafka_offset)"
        " select v.id, v.product_id, v.user_id, v.quantity, v.idem,"
        "     timestamptz 'epoch' + v.accepted * interval '1 millisecond',"
        "     $1, v.part, v.off"
        " from unnest($2::uuid[], $3::text[], $4::text[], $5::int[],"
        "     $6::text[], $7::bigint[], $8::int[], $9::bigint[])"
        "     as v(id, product_id, user_id, quantity, idem, accepted,"
        "          part, off)"
        " on conflict (id) do nothing"
        " returning id",
        9, params, PGRES_TUPLES_OK);
    if (res == NULL) {
        return -1;
    }
    for (row = 0; row < PQntuples(res); row++) {
        first = fg_strmap_find(&s->map, PQgetvalue(res, row, 0));
        if (first != NULL) {
            recs[*first].outcome = FG_OUT_ORDER_NEW;
        }
    }
    PQclear(res);

    if (take_stock(s, recs, idx, k) != 0) {
        return -1;
    }
    return record_rejections(s, recs, idx, k);
}

/*
 * The stock safety net for the new orders of a phase: lock their products,
 * let each order take its quantity in batch order while stock covers it,
 * then take the sums off with `stock = stock - taken WHERE stock >= taken`.
 */
static int
take_stock(struct fg_store *s, struct fg_record *recs, const size_t *idx,
    size_t k)
{
    const char  *params[2];
    long        *slot;
    PGresult    *res;
    size_t       j, np = 0, changed = 0;
    int          row;

    if (fg_strmap_reset(&s->products, k) != 0) {
        snprintf(s->error, sizeof(s->error), "out of memory");
        return -1;
    }
    if (k > s->prod_cap) {
        s->prod_ids = xrealloc(s->prod_ids, k * sizeof(*s->prod_ids));
        s->prod_stock = xrealloc(s->prod_stock, k * sizeof(*s->prod_stock));
        s->prod_left = xrealloc(s->prod_left, k * sizeof(*s->prod_left));
        s->prod_cap = k;
    }

    buf_reset(&s->arr[0]);
    for (j = 0; j < k; j++) {
        struct fg_record *r = &recs[idx[j]];

        if (r->outcome != FG_OUT_ORDER_NEW) {
            continue;
        }
        slot = fg_strmap_slot(&s->products, r->msg.product_id, -1);
        if (slot == NULL) {
            snprintf(s->error, sizeof(s->error), "out of memory");
            return -1;
        }
        if (*slot < 0) {
            *slot = (long) np;
            s->prod_ids[np] = r->msg.product_id;
            s->prod_stock[np] = -1;
            arr_str(&s->arr[0], r->msg.product_id);
            np++;
        }
    }
    if (np == 0) {
        return 0;
    }

    params[0] = arr_end(&s->arr[0]);
    res = exec(s, "select id, stock from products where id = any($1::text[])"
                  " order by id for update",
               1, params, PGRES_TUPLES_OK);
    if (res == NULL) {
        return -1;
    }
    for (row = 0; row < PQntuples(res); row++) {
        slot = fg_strmap_find(&s->products, PQgetvalue(res, row, 0));
        if (slot != NULL) {
            s->prod_stock[*slot] = atol(PQgetvalue(res, row, 1));
        }
    }
    PQclear(res);

    for (j = 0; j < np; j++) {
        s->prod_left[j] = s->prod_stock[j];
    }
    for (j = 0; j < k; j++) {
        struct fg_record *r = &recs[idx[j]];
        long             *left;

        if (r->outcome != FG_OUT_ORDER_NEW) {
            continue;
        }
        left = &s->prod_left[*fg_strmap_find(&s->products, r->msg.product_id)];
        if (*left < 0) {
            r->outcome = FG_OUT_ORDER_REJECTED;
            snprintf(r->reason, sizeof(r->reason),
                     "unknown product (no stock_set recorded for it)");
        } else if (*left < r->msg.quantity) {
            r->outcome = FG_OUT_ORDER_REJECTED;
            snprintf(r->reason, sizeof(r->reason),
                     "insufficient stock: %d wanted, %ld left",
                     (int) r->msg.quantity, *left);
        } else {
            *left -= r->msg.quantity;
        }
    }

    buf_reset(&s->arr[0]);
    buf_reset(&s->arr[1]);
    for (j = 0; j < np; j++) {
        if (s->prod_stock[j] > s->prod_left[j]) {
            arr_str(&s->arr[0], s->prod_ids[j]);
            arr_int(&s->arr[1], s->prod_stock[j] - s->prod_left[j]);
            changed++;
        }
    }
    if (changed == 0) {
        return 0;
    }

    params[0] = arr_end(&s->arr[0]);
    params[1] = arr_end(&s->arr[1]);
    res = exec(s, "update products p set stock = p.stock - v.taken,"
                  "     updated_at = now()"
                  " from unnest($1::text[], $2::int[]) as v(id, taken)"
                  " where p.id = v.id and p.stock >= v.taken",
               2, params, PGRES_COMMAND_OK);
    if (res == NULL) {
        return -1;
    }
    if (strtoul(PQcmdTuples(res), NULL, 10) != changed) {
        /* cannot happen under FOR UPDATE; if it does, redo from scratch */
        snprintf(s->error, sizeof(s->error),
                 "stock changed under the row lock (%s of %zu products"
                 " updated)", PQcmdTuples(res), changed);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

static int
record_rejections(struct fg_store *s, struct fg_record *recs,
    const size_t *idx, size_t k)
{
    const char  *params[2];
    PGresult    *res;
    size_t       j, m = 0;

    buf_reset(&s->arr[0]);
    buf_reset(&s->arr[1]);
    for (j = 0; j < k; j++) {
        if (recs[idx[j]].outcome == FG_OUT_ORDER_REJECTED) {
            arr_str(&s->arr[0], recs[idx[j]].msg.order_id);
            arr_str(&s->arr[1], recs[idx[j]].reason);
            m++;
        }
    }
    if (m == 0) {
        return 0;
    }

    params[0] = arr_end(&s->arr[0]);
    params[1] = arr_end(&s->arr[1]);
    res = exec(s, "update orders o set status = 'rejected', reason = v.reason"
                  " from unnest($1::uuid[], $2::text[]) as v(id, reason)"
                  " where o.id = v.id",
               2, params, PGRES_COMMAND_OK);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    return 0;
}

/* runs one statement; NULL on failure, s->error and s->data_error set */
static PGresult *
exec(struct fg_store *s, const char *sql, int nparams,
    const char *const *params, ExecStatusType want)
{
    PGresult *res;

    res = PQexecParams(s->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == want) {
        return res;
    }
    snprintf(s->error, sizeof(s->error), "%s", fg_pg_error(s->conn, res));
    s->data_error = fg_pg_data_error(s->conn, res);
    PQclear(res);
    return NULL;
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
            break;
        case FG_OUT_DUPLICATE:
            st->duplicates++;
            fg_debug("%s %d:%lld already recorded: skipped", s->topic,
                     (int) r->partition, (long long) r->offset);
            break;
        case FG_OUT_ORDER_REJECTED:
            st->rejected++;
            fg_warning("order %s rejected: %s (product %s, user %s,"
                       " quantity %d, %s %d:%lld)", r->msg.order_id,
                       r->reason, r->msg.product_id, r->msg.user_id,
                       (int) r->msg.quantity, s->topic, (int) r->partition,
                       (long long) r->offset);
            break;
        case FG_OUT_STOCK_SET:
            st->stock_sets++;
            fg_info("stock of %s set to %d (%s %d:%lld)", r->msg.product_id,
                    (int) r->msg.stock, s->topic, (int) r->partition,
                    (long long) r->offset);
            break;
        case FG_OUT_STOCK_SET_SKIPPED:
            st->skipped_stock_sets++;
            fg_info("stock_set of %s to %d at %s %d:%lld skipped: %s",
                    r->msg.product_id, (int) r->msg.stock, s->topic,
                    (int) r->partition, (long long) r->offset, r->reason);
            break;
        case FG_OUT_DEAD_LETTER:
            st->dead_letters++;
            fg_warning("dead letter %s %d:%lld (%zu bytes): %s", s->topic,
                       (int) r->partition, (long long) r->offset,
                       r->payload_len, r->reason);
            break;
        case FG_OUT_NONE:
            break;
        }
    }
}

/* --- array parameters --------------------------------------------------- */

static void *
xrealloc(void *p, size_t size)
{
    p = realloc(p, size ? size : 1);
    if (p == NULL) {
        /* the batch is not committed: the restarted worker redoes it */
        fg_error("out of memory; exiting");
        exit(1);
    }
    return p;
}

static void
buf_grow(struct buf *b, size_t more)
{
    if (b->len + more + 2 > b->cap) {
        b->cap = (b->len + more + 2) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
}

static void
buf_reset(struct buf *b)
{
    buf_grow(b, 1);
    b->p[0] = '{';
    b->len = 1;
}

static void
arr_str(struct buf *b, const char *s)
{
    size_t len = strlen(s);

    /* always quoted, so an id such as NULL stays a string */
    buf_grow(b, 2 * len + 3);
    if (b->len > 1) {
        b->p[b->len++] = ',';
    }
    b->p[b->len++] = '"';
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') {
            b->p[b->len++] = '\\';
        }
        b->p[b->len++] = *s;
    }
    b->p[b->len++] = '"';
}

static void
arr_int(struct buf *b, long long v)
{
    buf_grow(b, 24);
    b->len += sprintf(b->p + b->len, "%s%lld", b->len > 1 ? "," : "", v);
}

static const char *
arr_end(struct buf *b)
{
    buf_grow(b, 1);
    b->p[b->len] = '}';
    b->p[b->len + 1] = '\0';
    return b->p;
}
