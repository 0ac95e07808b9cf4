/*
 * plan.c: what a batch does to the (product, generation) rows, decided in
 * C from the rows as recorded, so that it can be tested without a
 * database (t/405-plan.t) and the SQL stays a handful of set-based
 * statements (statements.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

/* "product/generation": '/' is outside the productId character set */
#define KEY_MAX  (FG_ID_MAX + 1 + 20 + 1)

static int touches(const struct fg_record *r);
static void make_key(char *key, const char *product_id, int64_t generation);
static int grow(struct fg_plan *p, size_t n);
static void decide_stock_set(struct fg_gen_row *row, struct fg_record *r);
static void decide_order(struct fg_gen_row *row, struct fg_record *r);

int
fg_plan_rows(struct fg_plan *p, const struct fg_record *recs, size_t n)
{
    const struct fg_message *m;
    struct fg_gen_row       *row;
    long                    *slot;
    char                    *key;
    size_t                   i;

    p->nrows = 0;
    if (grow(p, n) != 0 || fg_strmap_reset(&p->map, n) != 0) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        p->row_of[i] = -1;
        if (!touches(&recs[i])) {
            continue;
        }
        m = &recs[i].msg;
        key = p->keys + p->nrows * KEY_MAX;
        make_key(key, m->product_id, m->generation);

        slot = fg_strmap_slot(&p->map, key, (long) p->nrows);
        if (slot == NULL) {
            return -1;
        }
        if (*slot == (long) p->nrows) {
            row = &p->rows[p->nrows++];
            memset(row, 0, sizeof(*row));
            row->product_id = m->product_id;
            row->generation = m->generation;
            row->first_stock = m->type == FG_MSG_STOCK_SET
                               ? m->stock : m->generation_stock;
        }
        p->row_of[i] = *slot;
    }
    return 0;
}

struct fg_gen_row *
fg_plan_find(struct fg_plan *p, const char *product_id, int64_t generation)
{
    char  key[KEY_MAX];
    long *slot;

    if (strlen(product_id) > FG_ID_MAX) {
        return NULL;
    }
    make_key(key, product_id, generation);
    slot = fg_strmap_find(&p->map, key);
    return slot != NULL ? &p->rows[*slot] : NULL;
}

void
fg_plan_decide(struct fg_plan *p, struct fg_record *recs, size_t n)
{
    struct fg_gen_row *row;
    size_t             i;

    for (i = 0; i < p->nrows; i++) {
        p->rows[i].add = 0;
        p->rows[i].set = 0;
        p->rows[i].set_at = 0;
    }

    for (i = 0; i < n; i++) {
        if (p->row_of[i] < 0) {
            continue;
        }
        row = &p->rows[p->row_of[i]];
        recs[i].gen_stock = row->stock;
        if (recs[i].msg.type == FG_MSG_STOCK_SET) {
            decide_stock_set(row, &recs[i]);
        } else {
            decide_order(row, &recs[i]);
        }
    }
}

void
fg_plan_free(struct fg_plan *p)
{
    free(p->rows);
    free(p->row_of);
    free(p->keys);
    fg_strmap_free(&p->map);
    memset(p, 0, sizeof(*p));
}

/* a stock_set, or an order that PostgreSQL has just recorded as new */
static int
touches(const struct fg_record *r)
{
    if (!r->valid || r->outcome == FG_OUT_DUPLICATE) {
        return 0;
    }
    return r->msg.type == FG_MSG_STOCK_SET || r->outcome == FG_OUT_ORDER_NEW;
}

static void
make_key(char *key, const char *product_id, int64_t generation)
{
    snprintf(key, KEY_MAX, "%s/%" PRId64, product_id, generation);
}

static int
grow(struct fg_plan *p, size_t n)
{
    struct fg_gen_row *rows;
    long              *row_of;
    char              *keys;

    if (n <= p->cap) {
        return 0;
    }
    rows = realloc(p->rows, n * sizeof(*rows));
    if (rows == NULL) {
        return -1;
    }
    p->rows = rows;
    row_of = realloc(p->row_of, n * sizeof(*row_of));
    if (row_of == NULL) {
        return -1;
    }
    p->row_of = row_of;
    keys = realloc(p->keys, n * KEY_MAX);
    if (keys == NULL) {
        return -1;
    }
    p->keys = keys;
    p->cap = n;
    return 0;
}

/*
 * The first stock recorded for a generation stands: the gate sets each
 * generation once, so another number is a replayed /init of another body
 * or a bug, and reporting it beats guessing which one is right.
 */
static void
decide_stock_set(struct fg_gen_row *row, struct fg_record *r)
{
    if (r->msg.stock != row->stock) {
        r->outcome = FG_OUT_STOCK_SET_CONFLICT;
        snprintf(r->reason, sizeof(r->reason),
                 "generation %" PRId64 " of %s has stock %d recorded"
                 " already; kept it", row->generation, row->product_id,
                 (int) row->stock);
    } else if (row->has_set) {
        r->outcome = FG_OUT_STOCK_SET_SKIPPED;
        snprintf(r->reason, sizeof(r->reason),
                 "generation %" PRId64 " already set (a replayed stock_set)",
                 row->generation);
    } else {
        r->outcome = FG_OUT_STOCK_SET;
        row->has_set = 1;
        row->set = 1;
        row->set_at = r->msg.at;
    }
}

/*
 * Redis never reserves more than a generation holds, so an order that does
 * not fit means Redis lost writes it had acknowledged (a failover to a
 * replica behind, a restart without its AOF).
 */
static void
decide_order(struct fg_gen_row *row, struct fg_record *r)
{
    int64_t left = (int64_t) row->stock - row->sold - row->add;

    if (r->msg.quantity > left) {
        r->outcome = FG_OUT_ORDER_REJECTED;
        snprintf(r->reason, sizeof(r->reason),
                 "generation %" PRId64 " of %s: %d wanted, %" PRId64
                 " left; Redis lost acknowledged writes?", row->generation,
                 row->product_id, (int) r->msg.quantity,
                 left > 0 ? left : 0);
        return;
    }
    row->add += r->msg.quantity;
}
