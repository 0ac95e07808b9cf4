/*
 * test_plan.c: unit tests of plan.c, the decisions of a batch, printed as
 * TAP (t/405-plan.t runs it).  A small in-memory table stands in for
 * stock_generations and orders.id, doing what statements.c does in SQL
 * (a row is created by the first message of its generation, an orderId
 * counts once), so that whole histories of batches can be replayed in any
 * order and their books compared.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "test_tap.h"

#define DB_ROWS    64
#define DB_ORDERS  4096
#define MAX_MSGS   4096

/* stock_generations and the ids of orders, as the database holds them */
struct db {
    struct {
        char     product[FG_ID_MAX + 1];
        int64_t  generation;
        int32_t  stock;
        int32_t  sold;
        int      has_set;
        int64_t  set_at;
    }           rows[DB_ROWS];
    size_t      nrows;
    char        orders[DB_ORDERS][FG_UUID_LEN + 1];
    size_t      norders;
};

static struct fg_plan plan;

static struct fg_record
order(const char *product, int64_t generation, int32_t gen_stock,
    int32_t quantity, int id)
{
    struct fg_record r;

    memset(&r, 0, sizeof(r));
    r.valid = 1;
    r.msg.type = FG_MSG_ORDER;
    snprintf(r.msg.product_id, sizeof(r.msg.product_id), "%s", product);
    snprintf(r.msg.order_id, sizeof(r.msg.order_id),
             "00000000-0000-7000-8000-%012d", id);
    snprintf(r.msg.user_id, sizeof(r.msg.user_id), "u%d", id);
    r.msg.quantity = quantity;
    r.msg.generation = generation;
    r.msg.generation_stock = gen_stock;
    return r;
}

static struct fg_record
stock_set(const char *product, int64_t generation, int32_t stock, int64_t at)
{
    struct fg_record r;

    memset(&r, 0, sizeof(r));
    r.valid = 1;
    r.msg.type = FG_MSG_STOCK_SET;
    snprintf(r.msg.product_id, sizeof(r.msg.product_id), "%s", product);
    r.msg.generation = generation;
    r.msg.stock = stock;
    r.msg.at = at;
    return r;
}

static int
db_row(struct db *db, const char *product, int64_t generation)
{
    size_t i;

    for (i = 0; i < db->nrows; i++) {
        if (strcmp(db->rows[i].product, product) == 0
            && db->rows[i].generation == generation)
        {
            return (int) i;
        }
    }
    return -1;
}

/* an orderId not recorded yet is recorded now: 1 when it is new */
static int
db_insert_order(struct db *db, const char *id)
{
    size_t i;

    for (i = 0; i < db->norders; i++) {
        if (strcmp(db->orders[i], id) == 0) {
            return 0;
        }
    }
    snprintf(db->orders[db->norders++], FG_UUID_LEN + 1, "%s", id);
    return 1;
}

/* one batch, the way store.c runs its statements around the plan */
static void
run_batch(struct db *db, struct fg_record *recs, size_t n)
{
    struct fg_gen_row *row;
    size_t             i;
    int                k;

    for (i = 0; i < n; i++) {
        recs[i].outcome = FG_OUT_NONE;
        if (recs[i].valid && recs[i].msg.type == FG_MSG_ORDER) {
            recs[i].outcome = db_insert_order(db, recs[i].msg.order_id)
                              ? FG_OUT_ORDER_NEW : FG_OUT_DUPLICATE;
        }
    }

    if (fg_plan_rows(&plan, recs, n) != 0) {
        ok(0, "fg_plan_rows: out of memory");
        exit(1);
    }
    for (i = 0; i < plan.nrows; i++) {
        row = &plan.rows[i];
        k = db_row(db, row->product_id, row->generation);
        if (k < 0) {
            k = (int) db->nrows++;
            memset(&db->rows[k], 0, sizeof(db->rows[k]));
            snprintf(db->rows[k].product, FG_ID_MAX + 1, "%s",
                     row->product_id);
            db->rows[k].generation = row->generation;
            db->rows[k].stock = row->first_stock;
        }
        row->stock = db->rows[k].stock;
        row->sold = db->rows[k].sold;
        row->has_set = db->rows[k].has_set;
    }

    fg_plan_decide(&plan, recs, n);

    for (i = 0; i < plan.nrows; i++) {
        row = &plan.rows[i];
        k = db_row(db, row->product_id, row->generation);
        db->rows[k].sold += row->add;
        if (row->set) {
            db->rows[k].has_set = 1;
            db->rows[k].set_at = row->set_at;
        }
    }
}

static void
test_one_generation(void)
{
    struct db        db = { .nrows = 0 };
    struct fg_record b[] = {
        stock_set("p", 1, 3, 1000),
        order("p", 1, 3, 1, 1),
        order("p", 1, 3, 2, 2),
    };

    run_batch(&db, b, 3);
    is_int(plan.nrows, 1, "a stock_set and two orders of one generation"
           " touch one row");
    is_int(b[0].outcome, FG_OUT_STOCK_SET, "the stock_set sets it");
    is_int(plan.rows[0].set, 1, "and records set_at");
    is_int(plan.rows[0].set_at, 1000, "with the message's at");
    ok(b[1].outcome == FG_OUT_ORDER_NEW && b[2].outcome == FG_OUT_ORDER_NEW,
       "both orders fit and are accepted");
    is_int(plan.rows[0].add, 3, "they add their 3 units to sold");
    is_int(db.rows[0].sold, 3, "sold 3 of 3");
}

static void
test_past_stock(void)
{
    struct db        db = { .nrows = 0 };
    struct fg_record b1[] = {
        stock_set("p", 1, 2, 1),
        order("p", 1, 2, 1, 1),
        order("p", 1, 2, 1, 2),
    };
    struct fg_record b2[] = {
        order("p", 1, 2, 1, 3),
        order("p", 2, 5, 1, 4),
    };

    run_batch(&db, b1, 3);
    run_batch(&db, b2, 2);
    is_int(b2[0].outcome, FG_OUT_ORDER_REJECTED,
           "an order past its generation's recorded sold is rejected");
    is_str(b2[0].reason, "generation 1 of p: 1 wanted, 0 left;"
           " Redis lost acknowledged writes?",
           "the reason names the generation and what it means");
    is_int(b2[1].outcome, FG_OUT_ORDER_NEW,
           "an order of the next generation in the same batch is not");
    is_int(db.rows[0].sold, 2, "the rejected order took nothing");

    {
        struct db        d = { .nrows = 0 };
        struct fg_record b[] = {
            order("q", 7, 4, 3, 1),
            order("q", 7, 4, 2, 2),
            order("q", 7, 4, 1, 3),
        };

        run_batch(&d, b, 3);
        ok(b[0].outcome == FG_OUT_ORDER_NEW
           && b[1].outcome == FG_OUT_ORDER_REJECTED
           && b[2].outcome == FG_OUT_ORDER_NEW,
           "within a batch, in batch order: 3 of 4 fits, 2 does not,"
           " 1 still does");
        is_str(b[1].reason, "generation 7 of q: 2 wanted, 1 left;"
               " Redis lost acknowledged writes?", "with what was left");
        is_int(plan.rows[0].add, 4, "sums to add: 3 + 1");
    }
}

static void
test_stock_sets(void)
{
    struct db        db = { .nrows = 0 };
    struct fg_record b1[] = {
        stock_set("p", 1, 10, 1),
        stock_set("p", 1, 10, 2),
    };
    struct fg_record b2[] = {
        stock_set("p", 1, 10, 3),
        stock_set("p", 1, 99, 4),
    };

    run_batch(&db, b1, 2);
    is_int(b1[1].outcome, FG_OUT_STOCK_SET_SKIPPED,
           "the same stock_set twice in a batch: the second is a replay");
    is_int(db.rows[0].set_at, 1, "set_at is the first one's");
    run_batch(&db, b2, 2);
    is_int(b2[0].outcome, FG_OUT_STOCK_SET_SKIPPED,
           "a stock_set of a generation set in an earlier batch: replay");
    is_str(b2[0].reason, "generation 1 already set (a replayed stock_set)",
           "and says so");
    is_int(b2[1].outcome, FG_OUT_STOCK_SET_CONFLICT,
           "another stock for a recorded generation: a conflict");
    is_str(b2[1].reason,
           "generation 1 of p has stock 10 recorded already; kept it",
           "which keeps the first");
    ok(db.rows[0].stock == 10 && db.rows[0].set_at == 1
       && plan.rows[0].add == 0 && !plan.rows[0].set,
       "replays and conflicts change nothing");
}

static void
test_order_first(void)
{
    struct db        db = { .nrows = 0 };
    struct fg_record b1[] = { order("p", 2, 5, 2, 1) };
    struct fg_record b2[] = {
        stock_set("p", 2, 5, 77),
        order("p", 2, 5, 3, 2),
        order("p", 2, 9, 1, 3),
    };

    run_batch(&db, b1, 1);
    is_int(plan.rows[0].first_stock, 5,
           "an order before its generation's stock_set makes the row with"
           " its generationStock");
    ok(db.rows[0].stock == 5 && db.rows[0].sold == 2 && !db.rows[0].has_set,
       "stock 5, sold 2, not set yet");
    run_batch(&db, b2, 3);
    is_int(b2[0].outcome, FG_OUT_STOCK_SET,
           "the stock_set arriving later sets the generation");
    is_int(db.rows[0].set_at, 77, "records its at");
    is_int(b2[1].outcome, FG_OUT_ORDER_NEW, "orders after it still fit");
    is_int(b2[2].outcome, FG_OUT_ORDER_REJECTED,
           "an order naming another generationStock counts against the"
           " recorded one");
    is_int(b2[2].gen_stock, 5, "and carries the recorded stock for the log");

    {
        struct db        d = { .nrows = 0 };
        struct fg_record o[] = { order("q", 1, 5, 1, 1) };
        struct fg_record s[] = { stock_set("q", 1, 6, 9) };

        run_batch(&d, o, 1);
        run_batch(&d, s, 1);
        is_int(s[0].outcome, FG_OUT_STOCK_SET_CONFLICT,
               "a stock_set naming another stock than the order that made"
               " the row: a conflict, the first kept");
        ok(d.rows[0].stock == 5 && !d.rows[0].has_set,
           "the row keeps stock 5 and is not marked set");
    }
}

static void
test_untouched(void)
{
    struct db        db = { .nrows = 0 };
    struct fg_record b[] = {
        order("p", 1, 5, 1, 1),
        order("p", 1, 5, 1, 1),
        stock_set("p", 1, 5, 1),
        order("p", 1, 5, 1, 2),
    };

    b[3].valid = 0;     /* a dead letter */
    run_batch(&db, b, 4);
    is_int(b[1].outcome, FG_OUT_DUPLICATE, "the copy of an order is a"
           " duplicate");
    is_int(b[3].outcome, FG_OUT_NONE, "a dead letter gets no decision");
    is_int(db.rows[0].sold, 1, "only the first copy takes a unit");
    run_batch(&db, b, 3);
    ok(b[0].outcome == FG_OUT_DUPLICATE
       && b[2].outcome == FG_OUT_STOCK_SET_SKIPPED && db.rows[0].sold == 1,
       "the batch delivered again changes nothing");
}

static void
test_generations_interleaved(void)
{
    struct db        db = { .nrows = 0 };
    struct fg_record b[] = {
        stock_set("p", 1, 3, 1),
        order("p", 1, 3, 1, 1),
        order("p", 2, 4, 2, 2),     /* another producer, already in g2 */
        order("p", 1, 3, 1, 3),
        order("p", 2, 4, 1, 4),
        order("p", 1, 3, 1, 5),     /* a slow producer still in g1 */
        stock_set("p", 2, 4, 2),
        order("p", 2, 4, 1, 6),
        order("q", 1, 1, 1, 7),
    };
    size_t           i, rejected = 0;

    run_batch(&db, b, sizeof(b) / sizeof(b[0]));
    for (i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
        rejected += b[i].outcome == FG_OUT_ORDER_REJECTED;
    }
    is_int(rejected, 0, "generations 1 and 2 interleaved, g2's orders"
           " before its stock_set: nothing rejected");
    is_int(plan.nrows, 3, "three rows: p/1, p/2, q/1");
    ok(db.rows[0].sold == 3 && db.rows[0].stock == 3,
       "generation 1: 3 of 3 sold");
    ok(db.rows[1].sold == 4 && db.rows[1].stock == 4 && db.rows[1].has_set,
       "generation 2: 4 of 4 sold, set");
    is_int(b[6].outcome, FG_OUT_STOCK_SET, "g2's stock_set sets it");
}

/* --- any arrival order gives the same books ------------------------------ */

struct gen {
    char     product[8];
    int64_t  generation;
    int32_t  stock;
    int32_t  sold;          /* what its accepted orders add up to */
    int      has_set;
    int      rejected;      /* orders past its stock (Redis lost writes) */
};

static unsigned long long rng;

static unsigned
rnd(unsigned n)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned) ((rng >> 33) % n);
}

/*
 * A history: a few products, each with a few generations, orders that fit
 * their generation, stock_sets published once to three times (replays),
 * some orders delivered twice; shuffled as any producers and partitions
 * could deliver them, cut into batches at random.  In some generations
 * Redis "lost writes": one-unit orders past the stock, of which exactly
 * the surplus must be rejected, whichever they are.  -1 when the books
 * differ from what the history holds; why goes to diag.
 */
static int
random_history(unsigned long long seed)
{
    static struct fg_record msgs[MAX_MSGS];
    static struct db        db;
    struct gen              gens[DB_ROWS];
    size_t                  ngens = 0, n = 0, i, j, start, len;
    int                     id = 0, p, g, c, k, lost, rejected;
    int32_t                 q;

    rng = seed;
    memset(&db, 0, sizeof(db));

    for (p = 0; p < 3; p++) {
        for (g = 1 + (int) rnd(3); g <= 4; g++) {
            struct gen *x = &gens[ngens++];

            snprintf(x->product, sizeof(x->product), "p%d", p);
            x->generation = g;
            x->stock = (int32_t) rnd(25);
            x->sold = 0;
            x->has_set = rnd(5) != 0;   /* its stock_set may not be here */
            x->rejected = 0;
            for (c = x->has_set ? 1 + (int) rnd(3) : 0; c > 0; c--) {
                msgs[n++] = stock_set(x->product, g, x->stock, 1000 + g);
            }
            if (rnd(4) == 0) {
                x->rejected = 1 + (int) rnd(3);
                for (lost = x->stock + x->rejected; lost > 0; lost--) {
                    msgs[n++] = order(x->product, g, x->stock, 1, ++id);
                }
                x->sold = x->stock;
                if (x->stock == 0) {
                    /* an order of a generation of 0: parsed as invalid */
                    n -= x->rejected;
                    x->rejected = 0;
                }
                continue;
            }
            while (x->sold < x->stock && rnd(8) != 0) {
                q = 1 + (int32_t) rnd(3);
                if (q > x->stock - x->sold) {
                    q = x->stock - x->sold;
                }
                msgs[n++] = order(x->product, g, x->stock, q, ++id);
                if (rnd(6) == 0) {
                    msgs[n] = msgs[n - 1];      /* a redelivery */
                    n++;
                }
                x->sold += q;
            }
        }
    }

    for (i = n - 1; i > 0; i--) {
        struct fg_record t;

        j = rnd((unsigned) i + 1);
        t = msgs[i];
        msgs[i] = msgs[j];
        msgs[j] = t;
    }

    for (start = 0; start < n; start += len) {
        len = 1 + rnd(12);
        if (len > n - start) {
            len = n - start;
        }
        run_batch(&db, msgs + start, len);
        for (i = start; i < start + len; i++) {
            if (msgs[i].outcome == FG_OUT_STOCK_SET_CONFLICT) {
                diag("seed %llu: message %zu: %s", seed, i, msgs[i].reason);
                return -1;
            }
            if (msgs[i].outcome != FG_OUT_ORDER_REJECTED) {
                continue;
            }
            for (j = 0; j < ngens; j++) {
                if (strcmp(gens[j].product, msgs[i].msg.product_id) == 0
                    && gens[j].generation == msgs[i].msg.generation)
                {
                    break;
                }
            }
            if (--gens[j].rejected < 0) {
                diag("seed %llu: message %zu: %s", seed, i, msgs[i].reason);
                return -1;
            }
        }
    }

    for (i = 0; i < ngens; i++) {
        rejected = gens[i].rejected;
        if (rejected != 0) {
            diag("seed %llu: %s/%" PRId64 ": %d fewer rejections than"
                 " orders past its stock", seed, gens[i].product,
                 gens[i].generation, rejected);
            return -1;
        }
        k = db_row(&db, gens[i].product, gens[i].generation);
        if (k < 0) {
            if (gens[i].sold == 0 && !gens[i].has_set) {
                continue;       /* nothing of it was published */
            }
            diag("seed %llu: no row for %s/%" PRId64, seed, gens[i].product,
                 gens[i].generation);
            return -1;
        }
        if (db.rows[k].stock != gens[i].stock
            || db.rows[k].sold != gens[i].sold
            || db.rows[k].has_set != gens[i].has_set)
        {
            diag("seed %llu: %s/%" PRId64 " has stock %d sold %d set %d,"
                 " wanted %d %d %d", seed, gens[i].product,
                 gens[i].generation, (int) db.rows[k].stock,
                 (int) db.rows[k].sold, db.rows[k].has_set,
                 (int) gens[i].stock, (int) gens[i].sold, gens[i].has_set);
            return -1;
        }
    }
    return 0;
}

static void
test_any_order(void)
{
    unsigned long long seed;
    int                failed = 0;

    for (seed = 1; seed <= 2000 && !failed; seed++) {
        failed = random_history(seed) != 0;
    }
    ok(!failed, "2000 random histories (interleaved generations, replayed"
       " stock_sets, redelivered orders, random batches): every book as"
       " published, only orders past their generation's stock rejected");
}

int
main(void)
{
    test_one_generation();
    test_past_stock();
    test_stock_sets();
    test_order_first();
    test_untouched();
    test_generations_interleaved();
    test_any_order();
    fg_plan_free(&plan);
    return done_testing();
}
