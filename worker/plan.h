/*
 * plan.h: the decisions of a batch, without PostgreSQL.  Stock is kept per
 * (product, generation) (sql/002_generations.sql); this unit says which of
 * those rows a batch touches and, once their recorded stock and sold are
 * known, what becomes of each stock_set and each new order, in batch order,
 * and what to add to each row.  store.c reads and writes the rows;
 * t/405-plan.t (worker/test_plan.c) checks the decisions alone.
 *
 * Each message touches only its own generation's row, so the stock_sets
 * and orders of a batch commute: any arrival order of the same messages
 * gives the same rows (as long as the orders fit, which the gate ensures).
 */
#ifndef FG_PLAN_H
#define FG_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "strmap.h"

struct fg_gen_row {
    const char  *product_id;    /* points into the batch's messages */
    int64_t      generation;
    int32_t      first_stock;   /* named by the batch's first message of it:
                                   what a new row is created with */

    /* as recorded (under a row lock), filled in before fg_plan_decide */
    int32_t      stock;
    int32_t      sold;
    int          has_set;       /* a stock_set of it was recorded */

    /* decided by fg_plan_decide */
    int32_t      add;           /* units the batch's new orders take */
    int          set;           /* one of the batch's stock_sets records it */
    int64_t      set_at;        /* ... with this `at` (ms since the epoch) */
};

struct fg_plan {
    struct fg_gen_row  *rows;
    size_t              nrows;

    /* private */
    long               *row_of;     /* per record: its row, -1 for none */
    char               *keys;       /* "product/generation" per row */
    size_t              cap;
    struct fg_strmap    map;        /* key -> row */
};

/*
 * Gathers the rows touched by the batch's valid stock_sets and new orders
 * (outcome FG_OUT_ORDER_NEW), in order of first appearance.  Other records
 * (dead letters, duplicates) touch none.  -1 when out of memory.
 */
int fg_plan_rows(struct fg_plan *p, const struct fg_record *recs, size_t n);

/* the row of (product, generation), or NULL when the batch has none */
struct fg_gen_row *fg_plan_find(struct fg_plan *p, const char *product_id,
    int64_t generation);

/*
 * Decides, in batch order, with every row's stock, sold and has_set filled
 * in:
 * - a stock_set of a generation not set yet sets it when it names the
 *   recorded stock (FG_OUT_STOCK_SET); a generation already set is a replay
 *   (FG_OUT_STOCK_SET_SKIPPED); another stock than the one recorded first
 *   changes nothing (FG_OUT_STOCK_SET_CONFLICT);
 * - a new order takes its quantity within its generation while the
 *   generation's stock covers it, else FG_OUT_ORDER_REJECTED with the
 *   reason naming the generation.
 * Each record's gen_stock is its row's stock.
 */
void fg_plan_decide(struct fg_plan *p, struct fg_record *recs, size_t n);

void fg_plan_free(struct fg_plan *p);

#endif
