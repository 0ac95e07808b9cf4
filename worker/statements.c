/*
 * statements.c: the SQL that writes a batch, one set-based statement per
 * function, its values bound as text arrays and unnest()ed, so the cost of
 * a batch hardly depends on its size.  Idempotence comes from the data: an
 * order row is keyed by its orderId, a (product, generation) row by its
 * key, a dead letter by its Kafka position; what a redelivery finds there
 * tells the plan it is one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg.h"
#include "statements.h"

static PGresult *exec(struct fg_stmt *st, const char *sql, int nparams,
    const char *const *params, ExecStatusType want);
static int out_of_memory(struct fg_stmt *st);
static void arr_reset(struct fg_stmt *st, int count);
static void arr_grow(struct fg_pgarray *a, size_t more);
static void arr_str(struct fg_pgarray *a, const char *s);
static void arr_int(struct fg_pgarray *a, long long v);
static void arr_null(struct fg_pgarray *a);
static const char *arr_end(struct fg_pgarray *a);
static void *xrealloc(void *p, size_t size);

/*
 * A message's fate is decided once.  One that went to dead_letters (say
 * PostgreSQL refused it) stays there when Kafka delivers it again, even if
 * it would pass now: look up the batch's positions, one range per
 * partition, which costs an index probe when there are none.
 */
int
fg_stmt_skip_dead_lettered(struct fg_stmt *st, struct fg_record *recs,
    size_t n)
{
    const char  *params[4];
    PGresult    *res;
    size_t       i, j, nparts = 0;
    char         key[48];
    int          row;

    /* a batch spans few partitions: a linear search is enough */
    st->ranges = xrealloc(st->ranges, n * sizeof(*st->ranges));
    for (i = 0; i < n; i++) {
        for (j = 0; j < nparts && st->ranges[j].part != recs[i].partition;
             j++)
        {
            /* find the partition's range */
        }
        if (j == nparts) {
            st->ranges[j].part = recs[i].partition;
            st->ranges[j].lo = st->ranges[j].hi = recs[i].offset;
            nparts++;
        }
        if (recs[i].offset < st->ranges[j].lo) {
            st->ranges[j].lo = recs[i].offset;
        }
        if (recs[i].offset > st->ranges[j].hi) {
            st->ranges[j].hi = recs[i].offset;
        }
    }

    arr_reset(st, 3);
    for (j = 0; j < nparts; j++) {
        arr_int(&st->arr[0], st->ranges[j].part);
        arr_int(&st->arr[1], st->ranges[j].lo);
        arr_int(&st->arr[2], st->ranges[j].hi);
    }
    params[0] = st->topic;
    for (j = 0; j < 3; j++) {
        params[j + 1] = arr_end(&st->arr[j]);
    }
    res = exec(st, "select d.\"partition\" || ':' || d.\"offset\""
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
    if (fg_strmap_reset(&st->map, PQntuples(res)) != 0) {
        PQclear(res);
        return out_of_memory(st);
    }
    for (row = 0; row < PQntuples(res); row++) {
        if (fg_strmap_slot(&st->map, PQgetvalue(res, row, 0), 1) == NULL) {
            PQclear(res);
            return out_of_memory(st);
        }
    }
    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%d:%lld", (int) recs[i].partition,
                 (long long) recs[i].offset);
        if (fg_strmap_find(&st->map, key) != NULL) {
            recs[i].outcome = FG_OUT_DUPLICATE;
        }
    }
    PQclear(res);
    return 0;
}

int
fg_stmt_dead_letters(struct fg_stmt *st, struct fg_record *recs, size_t n)
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
        values[0] = st->topic;
        values[1] = part;
        values[2] = off;
        values[3] = (const char *) recs[i].key;
        lengths[3] = (int) recs[i].key_len;
        values[4] = (const char *) recs[i].payload;
        lengths[4] = (int) recs[i].payload_len;
        values[5] = recs[i].reason;

        res = PQexecParams(st->conn,
            "insert into dead_letters"
            "     (topic, \"partition\", \"offset\", key, payload, reason)"
            " values ($1, $2, $3, $4, $5, $6)"
            " on conflict (topic, \"partition\", \"offset\") do nothing",
            6, NULL, values, lengths, formats, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(st->error, sizeof(st->error), "%s",
                     fg_pg_error(st->conn, res));
            st->data_error = fg_pg_data_error(st->conn, res);
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

int
fg_stmt_insert_orders(struct fg_stmt *st, struct fg_record *recs, size_t n)
{
    const char  *params[10];
    long        *first;
    PGresult    *res;
    size_t       i, j, m = 0;
    int          row;

    if (fg_strmap_reset(&st->map, n) != 0) {
        return out_of_memory(st);
    }
    arr_reset(st, 9);

    for (i = 0; i < n; i++) {
        struct fg_record *r = &recs[i];

        if (!r->valid || r->msg.type != FG_MSG_ORDER
            || r->outcome == FG_OUT_DUPLICATE)
        {
            continue;
        }
        /* duplicates unless RETURNING says the row is new */
        r->outcome = FG_OUT_DUPLICATE;
        first = fg_strmap_slot(&st->map, r->msg.order_id, -1);
        if (first == NULL) {
            return out_of_memory(st);
        }
        if (*first >= 0) {
            continue;       /* the same orderId earlier in this batch */
        }
        *first = (long) i;

        arr_str(&st->arr[0], r->msg.order_id);
        arr_str(&st->arr[1], r->msg.product_id);
        arr_str(&st->arr[2], r->msg.user_id);
        arr_int(&st->arr[3], r->msg.quantity);
        arr_str(&st->arr[4], r->msg.idempotency_key);
        arr_int(&st->arr[5], r->msg.accepted_at);
        arr_int(&st->arr[6], r->partition);
        arr_int(&st->arr[7], r->offset);
        arr_int(&st->arr[8], r->msg.generation);
        m++;
    }
    if (m == 0) {
        return 0;
    }

    params[0] = st->topic;
    for (j = 0; j < 9; j++) {
        params[j + 1] = arr_end(&st->arr[j]);
    }
    res = exec(st,
        "insert into orders (id, product_id, user_id, quantity,"
        "     idempotency_key, accepted_at, kafka_topic, kafka_partition,"
        "     kafka_offset, generation)"
        " select v.id, v.product_id, v.user_id, v.quantity, v.idem,"
        "     timestamptz 'epoch' + v.accepted * interval '1 millisecond',"
        "     $1, v.part, v.off, v.gen"
        " from unnest($2::uuid[], $3::text[], $4::text[], $5::int[],"
        "     $6::text[], $7::bigint[], $8::int[], $9::bigint[],"
        "     $10::bigint[])"
        "     as v(id, product_id, user_id, quantity, idem, accepted,"
        "          part, off, gen)"
        " on conflict (id) do nothing"
        " returning id",
        10, params, PGRES_TUPLES_OK);
    if (res == NULL) {
        return -1;
    }
    for (row = 0; row < PQntuples(res); row++) {
        first = fg_strmap_find(&st->map, PQgetvalue(res, row, 0));
        if (first != NULL) {
            recs[*first].outcome = FG_OUT_ORDER_NEW;
        }
    }
    PQclear(res);
    return 0;
}

int
fg_stmt_lock_generations(struct fg_stmt *st, struct fg_plan *p)
{
    const char         *params[3];
    struct fg_gen_row  *row;
    PGresult           *res;
    size_t              i;
    int                 r;

    if (p->nrows == 0) {
        return 0;
    }
    arr_reset(st, 3);
    for (i = 0; i < p->nrows; i++) {
        arr_str(&st->arr[0], p->rows[i].product_id);
        arr_int(&st->arr[1], p->rows[i].generation);
        arr_int(&st->arr[2], p->rows[i].first_stock);
    }
    for (i = 0; i < 3; i++) {
        params[i] = arr_end(&st->arr[i]);
    }

    /* made by whichever message of a generation comes first */
    res = exec(st,
        "insert into stock_generations (product_id, generation, stock)"
        " select v.p, v.g, v.s"
        " from unnest($1::text[], $2::bigint[], $3::int[]) as v(p, g, s)"
        " order by v.p, v.g"
        " on conflict (product_id, generation) do nothing",
        3, params, PGRES_COMMAND_OK);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);

    res = exec(st,
        "select g.product_id, g.generation, g.stock, g.sold,"
        "     g.set_at is not null"
        " from unnest($1::text[], $2::bigint[]) as v(p, g)"
        " join stock_generations g on g.product_id = v.p"
        "     and g.generation = v.g"
        " order by g.product_id, g.generation"
        " for update of g",
        2, params, PGRES_TUPLES_OK);
    if (res == NULL) {
        return -1;
    }
    for (r = 0; r < PQntuples(res); r++) {
        row = fg_plan_find(p, PQgetvalue(res, r, 0),
                           strtoll(PQgetvalue(res, r, 1), NULL, 10));
        if (row == NULL) {
            continue;
        }
        row->stock = (int32_t) strtol(PQgetvalue(res, r, 2), NULL, 10);
        row->sold = (int32_t) strtol(PQgetvalue(res, r, 3), NULL, 10);
        row->has_set = strcmp(PQgetvalue(res, r, 4), "t") == 0;
    }
    if ((size_t) PQntuples(res) != p->nrows) {
        /* only a concurrent DELETE could do this: redo from scratch */
        snprintf(st->error, sizeof(st->error),
                 "stock_generations: %d of %zu rows found after inserting"
                 " them", PQntuples(res), p->nrows);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

int
fg_stmt_update_generations(struct fg_stmt *st, const struct fg_plan *p)
{
    const char         *params[4];
    const struct fg_gen_row *row;
    PGresult           *res;
    size_t              i, m = 0;

    arr_reset(st, 4);
    for (i = 0; i < p->nrows; i++) {
        row = &p->rows[i];
        if (row->add == 0 && !row->set) {
            continue;
        }
        arr_str(&st->arr[0], row->product_id);
        arr_int(&st->arr[1], row->generation);
        arr_int(&st->arr[2], row->add);
        if (row->set) {
            arr_int(&st->arr[3], row->set_at);
        } else {
            arr_null(&st->arr[3]);
        }
        m++;
    }
    if (m == 0) {
        return 0;
    }
    for (i = 0; i < 4; i++) {
        params[i] = arr_end(&st->arr[i]);
    }

    res = exec(st,
        "update stock_generations g set sold = g.sold + v.add,"
        "     set_at = coalesce(g.set_at,"
        "         timestamptz 'epoch' + v.at * interval '1 millisecond')"
        " from unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[])"
        "     as v(p, gen, add, at)"
        " where g.product_id = v.p and g.generation = v.gen",
        4, params, PGRES_COMMAND_OK);
    if (res == NULL) {
        return -1;
    }
    if (strtoul(PQcmdTuples(res), NULL, 10) != m) {
        /* cannot happen under the row locks; if it does, redo */
        snprintf(st->error, sizeof(st->error),
                 "stock_generations changed under the row lock (%s of %zu"
                 " rows updated)", PQcmdTuples(res), m);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

int
fg_stmt_reject_orders(struct fg_stmt *st, const struct fg_record *recs,
    size_t n)
{
    const char  *params[2];
    PGresult    *res;
    size_t       i, m = 0;

    arr_reset(st, 2);
    for (i = 0; i < n; i++) {
        if (recs[i].outcome == FG_OUT_ORDER_REJECTED) {
            arr_str(&st->arr[0], recs[i].msg.order_id);
            arr_str(&st->arr[1], recs[i].reason);
            m++;
        }
    }
    if (m == 0) {
        return 0;
    }

    params[0] = arr_end(&st->arr[0]);
    params[1] = arr_end(&st->arr[1]);
    res = exec(st, "update orders o set status = 'rejected', reason = v.reason"
                   " from unnest($1::uuid[], $2::text[]) as v(id, reason)"
                   " where o.id = v.id",
               2, params, PGRES_COMMAND_OK);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    return 0;
}

/*
 * A product shows its highest generation: an order of an older one (from a
 * slower producer) counts in its own row and leaves products as it is.
 */
int
fg_stmt_refresh_products(struct fg_stmt *st, const struct fg_plan *p)
{
    const char  *params[1];
    PGresult    *res;
    size_t       i;

    if (p->nrows == 0) {
        return 0;
    }
    arr_reset(st, 1);
    for (i = 0; i < p->nrows; i++) {
        arr_str(&st->arr[0], p->rows[i].product_id);
    }
    params[0] = arr_end(&st->arr[0]);

    res = exec(st,
        "insert into products as p (id, stock, generation, updated_at)"
        " select distinct on (g.product_id)"
        "     g.product_id, g.stock - g.sold, g.generation, now()"
        " from stock_generations g"
        " where g.product_id = any($1::text[])"
        " order by g.product_id, g.generation desc"
        " on conflict (id) do update set"
        "     stock = excluded.stock, generation = excluded.generation,"
        "     updated_at = excluded.updated_at"
        " where (p.stock, p.generation)"
        "     is distinct from (excluded.stock, excluded.generation)",
        1, params, PGRES_COMMAND_OK);
    if (res == NULL) {
        return -1;
    }
    PQclear(res);
    return 0;
}

void
fg_stmt_free(struct fg_stmt *st)
{
    int i;

    for (i = 0; i < FG_STMT_ARRAYS; i++) {
        free(st->arr[i].p);
    }
    fg_strmap_free(&st->map);
    free(st->ranges);
    memset(st, 0, sizeof(*st));
}

/* runs one statement; NULL on failure, st->error and st->data_error set */
static PGresult *
exec(struct fg_stmt *st, const char *sql, int nparams,
    const char *const *params, ExecStatusType want)
{
    PGresult *res;

    res = PQexecParams(st->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == want) {
        return res;
    }
    snprintf(st->error, sizeof(st->error), "%s", fg_pg_error(st->conn, res));
    st->data_error = fg_pg_data_error(st->conn, res);
    PQclear(res);
    return NULL;
}

static int
out_of_memory(struct fg_stmt *st)
{
    snprintf(st->error, sizeof(st->error), "out of memory");
    return -1;
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
arr_grow(struct fg_pgarray *a, size_t more)
{
    if (a->len + more + 2 > a->cap) {
        a->cap = (a->len + more + 2) * 2;
        a->p = xrealloc(a->p, a->cap);
    }
}

/* empties the first count arrays */
static void
arr_reset(struct fg_stmt *st, int count)
{
    int i;

    for (i = 0; i < count; i++) {
        arr_grow(&st->arr[i], 1);
        st->arr[i].p[0] = '{';
        st->arr[i].len = 1;
    }
}

static void
arr_str(struct fg_pgarray *a, const char *s)
{
    size_t len = strlen(s);

    /* always quoted, so an id such as NULL stays a string */
    arr_grow(a, 2 * len + 3);
    if (a->len > 1) {
        a->p[a->len++] = ',';
    }
    a->p[a->len++] = '"';
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') {
            a->p[a->len++] = '\\';
        }
        a->p[a->len++] = *s;
    }
    a->p[a->len++] = '"';
}

static void
arr_int(struct fg_pgarray *a, long long v)
{
    arr_grow(a, 24);
    a->len += sprintf(a->p + a->len, "%s%lld", a->len > 1 ? "," : "", v);
}

static void
arr_null(struct fg_pgarray *a)
{
    arr_grow(a, 6);
    a->len += sprintf(a->p + a->len, "%sNULL", a->len > 1 ? "," : "");
}

static const char *
arr_end(struct fg_pgarray *a)
{
    arr_grow(a, 1);
    a->p[a->len] = '}';
    a->p[a->len + 1] = '\0';
    return a->p;
}
