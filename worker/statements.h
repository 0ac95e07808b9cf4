/*
 * statements.h: the SQL of writing a batch.  Each function is one
 * set-based statement (the batch's values bound as array parameters and
 * unnest()ed), run inside the transaction store.c opened; none commits,
 * retries or logs.  On failure they return -1 with the reason in
 * st->error and st->data_error set when the data caused it.
 */
#ifndef FG_STATEMENTS_H
#define FG_STATEMENTS_H

#include <libpq-fe.h>

#include "plan.h"
#include "store.h"
#include "strmap.h"

#define FG_STMT_ARRAYS  9

/* growable text of one array parameter: {"a","b"} or {1,2} */
struct fg_pgarray {
    char    *p;
    size_t   len;
    size_t   cap;
};

struct fg_stmt {
    PGconn             *conn;           /* owned by store.c */
    const char         *topic;
    char                error[1024];    /* the last failure, for the log */
    int                 data_error;     /* ... and it was caused by the data */

    /* scratch, kept between batches to avoid reallocating */
    struct fg_pgarray   arr[FG_STMT_ARRAYS];
    struct fg_strmap    map;
    struct {
        int32_t         part;
        int64_t         lo, hi;
    }                  *ranges;         /* offsets per partition in a batch */
};

/* the batch's positions already in dead_letters: outcome FG_OUT_DUPLICATE */
int fg_stmt_skip_dead_lettered(struct fg_stmt *st, struct fg_record *recs,
    size_t n);

/* the invalid records into dead_letters (FG_OUT_DEAD_LETTER or DUPLICATE) */
int fg_stmt_dead_letters(struct fg_stmt *st, struct fg_record *recs,
    size_t n);

/*
 * The valid orders into orders, status accepted; those whose orderId was
 * not there yet become FG_OUT_ORDER_NEW, the others FG_OUT_DUPLICATE.
 */
int fg_stmt_insert_orders(struct fg_stmt *st, struct fg_record *recs,
    size_t n);

/*
 * The plan's rows into stock_generations (those not there yet, with their
 * first stock), then all of them read and locked, in (product, generation)
 * order so that two writers never wait on each other in a circle; fills
 * each row's stock, sold and has_set.
 */
int fg_stmt_lock_generations(struct fg_stmt *st, struct fg_plan *p);

/* what fg_plan_decide decided: sold += add, set_at of the stock_sets */
int fg_stmt_update_generations(struct fg_stmt *st, const struct fg_plan *p);

/* FG_OUT_ORDER_REJECTED orders: status rejected with their reason */
int fg_stmt_reject_orders(struct fg_stmt *st, const struct fg_record *recs,
    size_t n);

/* products of the plan's rows: stock - sold of their highest generation */
int fg_stmt_refresh_products(struct fg_stmt *st, const struct fg_plan *p);

void fg_stmt_free(struct fg_stmt *st);

#endif
