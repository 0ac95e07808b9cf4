/*
 * reconcile_books.c: one round of fluxgate-reconcile.  With --repair it
 * first settles the overdue pending claims, as the v2 contract says:
 *
 *   1. the claims reserved more than --claim-deadline ago (Redis TIME);
 *   2. a marker written into every partition of the topic, acknowledged
 *      by its in-sync replicas, after that (so after every such claim's
 *      deadline), then a second one once the first are all in: a message
 *      the module produced for one of these claims is below the second
 *      markers or never will be in Kafka.  The high watermark is not
 *      enough: a leader whose followers stopped fetching, with no quorum
 *      of controllers to drop them, holds messages above it for as long
 *      as that lasts, and shows them afterwards.  A partition that does
 *      not take its marker (no leader, too few replicas in sync) settles
 *      nothing this round;
 *   3. wait (--settle-wait) until the worker's group has committed past
 *      the second markers; the worker commits after PostgreSQL did, so
 *      from then on "not in PostgreSQL" means "never will be".  Not
 *      reached: settle nothing this round;
 *   4. recorded -> done.lua (the key replays 200, or 409 rejected when
 *      PostgreSQL recorded the order rejected), not -> release.lua.
 *
 * Then it checks the books of each product's current generation:
 *
 *   drift = stock set - (Redis stock + pending units + recorded units)
 *
 * where pending units are those of the generation's claims not recorded
 * yet.  A reading is "quiet" when the worker had committed everything
 * written to the topic before it started and nothing was written while it
 * ran; only a quiet reading can call a difference drift, any other one is
 * a sale or a lagging worker in flight.  The reading is repeated for a few
 * seconds before a difference is reported.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_lua.h"
#include "log.h"
#include "pg.h"
#include "reconcile.h"

#define CHECK_SPAN_MS   3000    /* re-read this long before reporting */
#define CHECK_PAUSE_MS  300
#define SETTLE_POLL_MS  250

enum service { REDIS, POSTGRES, KAFKA };

static int open_conns(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns);
static int list_products(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns, struct fg_rc_product **prods, size_t *n);
static int settle(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_product *prods, size_t n);
static int mark(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_offsets *marks);
static int wait_for_worker(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns, const struct fg_rc_offsets *snap, char *why,
    size_t size);
static int settle_product(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns, struct fg_rc_product *p, long long now);
static const char *settled_how(const struct fg_rc_claim *cl, long long res);
static enum fg_rc_status check(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns, struct fg_rc_memory *memory,
    struct fg_rc_product *prods, size_t n);
static int read_books(const struct fg_rc_config *cfg,
    struct fg_rc_conns *conns, struct fg_rc_product *prods, size_t n,
    int *quiet);
static void derive(const struct fg_rc_config *cfg, struct fg_rc_product *p,
    long long now);
static void judge(struct fg_rc_product *p, int quiet);
static void report(const struct fg_rc_config *cfg,
    const struct fg_rc_memory *memory, struct fg_rc_product *prods,
    size_t n);
static void print_table(const struct fg_rc_config *cfg,
    const struct fg_rc_product *prods, size_t n);
static void print_json(const struct fg_rc_product *prods, size_t n);
static void log_verdicts(const struct fg_rc_config *cfg,
    const struct fg_rc_product *prods, size_t n);
static void remember(struct fg_rc_memory *memory,
    struct fg_rc_product *prods, size_t n);
static void lost(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    enum service which, const char *doing, const char *err);
static void free_products(struct fg_rc_product *prods, size_t n);

enum fg_rc_status
fg_rc_round(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_memory *memory)
{
    struct fg_rc_product *prods = NULL;
    enum fg_rc_status     st = FG_RC_UNREACHABLE;
    size_t                n = 0;

    if (open_conns(cfg, conns) != 0
        || list_products(cfg, conns, &prods, &n) != 0)
    {
        return FG_RC_UNREACHABLE;
    }
    if (cfg->repair && settle(cfg, conns, prods, n) != 0) {
        goto out;
    }
    st = check(cfg, conns, memory, prods, n);
    if (memory != NULL && st != FG_RC_UNREACHABLE) {
        remember(memory, prods, n);
        return st;
    }

out:
    free_products(prods, n);
    return st;
}

void
fg_rc_forget(struct fg_rc_memory *memory)
{
    fg_strmap_free(&memory->seen);
    free_products(memory->prods, memory->n);
    memset(memory, 0, sizeof(*memory));
}

void
fg_rc_close(struct fg_rc_conns *conns)
{
    if (conns->redis != NULL) {
        redisFree(conns->redis);
        conns->redis = NULL;
    }
    if (conns->pg != NULL) {
        PQfinish(conns->pg);
        conns->pg = NULL;
    }
    if (conns->kafka != NULL) {
        /* never subscribed: closing leaves no group and commits nothing */
        rd_kafka_consumer_close(conns->kafka);
        rd_kafka_destroy(conns->kafka);
        conns->kafka = NULL;
    }
    if (conns->producer != NULL) {
        /* every marker was reported before its round went on */
        rd_kafka_destroy(conns->producer);
        conns->producer = NULL;
    }
}

/* opens what is not open (a failed round dropped it) */
static int
open_conns(const struct fg_rc_config *cfg, struct fg_rc_conns *conns)
{
    const char *err;
    char        msg[512];

    if (conns->pg != NULL && PQstatus(conns->pg) != CONNECTION_OK) {
        PQfinish(conns->pg);
        conns->pg = NULL;
    }
    if (conns->redis == NULL) {
        conns->redis = fg_rc_redis_connect(cfg->redis, &err);
        if (conns->redis == NULL) {
            lost(cfg, conns, REDIS, "cannot connect", err);
            return -1;
        }
    }
    if (conns->pg == NULL) {
        conns->pg = fg_pg_connect(cfg->pg, &err);
        if (conns->pg == NULL) {
            lost(cfg, conns, POSTGRES, "cannot connect", err);
            return -1;
        }
    }
    if (conns->kafka == NULL) {
        conns->kafka = fg_rc_kafka_new(cfg, msg, sizeof(msg));
        if (conns->kafka == NULL) {
            lost(cfg, conns, KAFKA, "cannot create a client", msg);
            return -1;
        }
    }
    if (cfg->repair && conns->producer == NULL) {
        conns->producer = fg_rc_kafka_producer_new(cfg, msg, sizeof(msg));
        if (conns->producer == NULL) {
            lost(cfg, conns, KAFKA, "cannot create a producer", msg);
            return -1;
        }
    }
    return 0;
}

/* --product as given, or every product Redis has a generation for */
static int
list_products(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_product **prods, size_t *n)
{
    const char  *err;
    char       **ids = NULL;
    size_t       i, count;

    if (cfg->nproducts > 0) {
        count = cfg->nproducts;
    } else if (fg_rc_redis_products(conns->redis, &ids, &count, &err) != 0) {
        lost(cfg, conns, REDIS, "listing the products (SCAN)", err);
        return -1;
    }

    *prods = calloc(count ? count : 1, sizeof(**prods));
    if (*prods == NULL) {
        fg_error("out of memory for %zu products", count);
        abort();
    }
    for (i = 0; i < count; i++) {
        (*prods)[i].id = ids != NULL ? ids[i] : strdup(cfg->products[i]);
    }
    free(ids);
    *n = count;
    if (count == 0) {
        fg_info("no product has a generation in Redis (no fg:{*}:gen):"
                " nothing to check");
    }
    return 0;
}

static int
settle(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_product *prods, size_t n)
{
    struct fg_rc_offsets  marks = { 0, NULL, NULL };
    const char           *err;
    char                  why[512];
    long long             now;
    size_t                i, total = 0;
    int                   rc;

    if (fg_rc_redis_now(conns->redis, &now, &err) != 0) {
        lost(cfg, conns, REDIS, "reading TIME", err);
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (fg_rc_redis_overdue(conns->redis, &prods[i],
                                now - cfg->claim_deadline, &err) != 0)
        {
            lost(cfg, conns, REDIS, "reading the pending claims", err);
            return -1;
        }
        total += prods[i].nclaims;
    }
    if (total == 0) {
        fg_debug("no pending claim older than %ld ms", cfg->claim_deadline);
        return 0;
    }

    /* written after TIME answered: after every one of these deadlines */
    if (mark(cfg, conns, &marks) != 0) {
        return -1;
    }
    rc = wait_for_worker(cfg, conns, &marks, why, sizeof(why));
    fg_rc_offsets_free(&marks);
    if (rc < 0) {
        lost(cfg, conns, KAFKA, "reading the worker's committed offsets",
             why);
        return -1;
    }
    if (rc == 0) {
        fg_warning("not settling %zu overdue claim%s: group %s has not"
                   " committed topic %s up to the snapshot taken after their"
                   " deadline within %ld ms (%s): fluxgate-worker is stopped"
                   " or lagging, and an order not in PostgreSQL yet may still"
                   " be on its way; nothing settled, %s", total,
                   total == 1 ? "" : "s", cfg->group, cfg->topic,
                   cfg->settle_wait, why,
                   cfg->watch ? "trying again next round"
                              : "run again once the worker has caught up");
        for (i = 0; i < n; i++) {
            fg_rc_product_clear(&prods[i]);
        }
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (prods[i].nclaims > 0
            && settle_product(cfg, conns, &prods[i], now) != 0)
        {
            return -1;
        }
        fg_rc_product_clear(&prods[i]);
    }
    return 0;
}

/*
 * The markers twice, the second only once every first one is in: a broker
 * that has just come back (a frozen process, a leader that lost its
 * followers) acknowledges the first ones along with what it was holding,
 * in whatever order; the second ones are written behind all of that.
 */
static int
mark(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_offsets *marks)
{
    char  why[512];
    int   pass;

    for (pass = 1; pass <= 2; pass++) {
        fg_rc_offsets_free(marks);
        if (fg_rc_kafka_mark(conns->producer, cfg->topic, marks, why,
                             sizeof(why)) != 0)
        {
            lost(cfg, conns, KAFKA, "writing the markers the worker must"
                 " pass before claims are settled (nothing settled)", why);
            return -1;
        }
    }
    return 0;
}

/* 1 caught up, 0 not within --settle-wait (why says), -1 Kafka failed */
static int
wait_for_worker(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    const struct fg_rc_offsets *snap, char *why, size_t size)
{
    long long deadline = fg_now_ms() + cfg->settle_wait;
    int       rc;

    for ( ;; ) {
        rc = fg_rc_kafka_caught_up(conns->kafka, cfg->topic, snap, why,
                                   size);
        if (rc != 0) {
            return rc;
        }
        if (fg_now_ms() >= deadline) {
            return 0;
        }
        if (fg_sleep_ms(SETTLE_POLL_MS, &fg_rc_stop)) {
            snprintf(why, size, "stop requested while waiting");
            return 0;
        }
    }
}

static int
settle_product(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_product *p, long long now)
{
    struct fg_rc_claim *cl;
    const char         *err;
    long long           res;
    size_t              i;

    if (fg_rc_db_mark_recorded(conns->pg, p->claims, p->nclaims, &err) != 0) {
        lost(cfg, conns, POSTGRES, "looking up the overdue orders", err);
        return -1;
    }

    for (i = 0; i < p->nclaims; i++) {
        cl = &p->claims[i];
        if (cl->recorded) {
            if (fg_rc_redis_done(conns->redis, p, cl, cfg->idempotency_ttl,
                                 &res, &err) != 0)
            {
                lost(cfg, conns, REDIS, "running lua/done.lua", err);
                return -1;
            }
        } else if (fg_rc_redis_release(conns->redis, p, cl, &res, &err)
                   != 0)
        {
            lost(cfg, conns, REDIS, "running lua/release.lua", err);
            return -1;
        }

        if (cl->recorded ? res == FG_LUA_DONE_NOT_OURS
                         : res == FG_LUA_RELEASE_NONE)
        {
            fg_info("claim %s of %s (order %s): settled meanwhile by"
                    " someone else; left as it is", cl->key, p->id,
                    cl->order_id);
            continue;
        }
        if (cl->recorded) {
            p->settled_done++;
        } else {
            p->settled_released++;
        }
        fg_info("settled claim %s of %s (order %s, user %s, %lld unit%s,"
                " generation %lld, reserved %lld s ago): %s", cl->key,
                p->id, cl->order_id, cl->user, cl->quantity,
                cl->quantity == 1 ? "" : "s", cl->generation,
                (now - cl->reserved_at) / 1000, settled_how(cl, res));
    }
    return 0;
}

/* what settling a claim did, for the log; res is the script's reply */
static const char *
settled_how(const struct fg_rc_claim *cl, long long res)
{
    if (cl->recorded && cl->rejected) {
        return "recorded in PostgreSQL as rejected (the shop sold nothing"
               " for it), the key replays 409 rejected";
    }
    if (cl->recorded) {
        return "recorded in PostgreSQL, the key replays 200";
    }
    if (res == FG_LUA_RELEASE_GIVEN) {
        return "not in PostgreSQL, released: units back to its generation's"
               " stock and the user's count";
    }
    return "not in PostgreSQL, released: its generation is over, so the"
           " stock is left as it is; the user's count given back";
}

static enum fg_rc_status
check(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_memory *memory, struct fg_rc_product *prods, size_t n)
{
    long long  give_up = fg_now_ms() + CHECK_SPAN_MS;
    size_t     i, off;
    int        quiet;

    for ( ;; ) {
        if (read_books(cfg, conns, prods, n, &quiet) != 0) {
            return FG_RC_UNREACHABLE;
        }
        for (i = 0, off = 0; i < n; i++) {
            off += !prods[i].known || prods[i].drift != 0;
        }
        /* a live sale moves the numbers between reads: look again */
        if (off == 0 || fg_now_ms() >= give_up
            || fg_sleep_ms(CHECK_PAUSE_MS, &fg_rc_stop))
        {
            break;
        }
    }

    for (i = 0, off = 0; i < n; i++) {
        judge(&prods[i], quiet);
        off += prods[i].verdict != 0;
    }
    report(cfg, memory, prods, n);
    return off > 0 ? FG_RC_DRIFT : FG_RC_BALANCED;
}

/* every product's books once; *quiet when nothing was in flight meanwhile */
static int
read_books(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    struct fg_rc_product *prods, size_t n, int *quiet)
{
    struct fg_rc_offsets  before = { 0, NULL, NULL };
    struct fg_rc_offsets  after = { 0, NULL, NULL };
    struct fg_rc_product *p;
    const char           *err;
    char                  why[512];
    long long             now;
    size_t                i;
    int                   caught, rc = -1;

    if (fg_rc_kafka_watermarks(conns->kafka, cfg->topic, &before, why,
                               sizeof(why)) != 0)
    {
        lost(cfg, conns, KAFKA, "reading the high watermarks", why);
        return -1;
    }
    caught = fg_rc_kafka_caught_up(conns->kafka, cfg->topic, &before, why,
                                   sizeof(why));
    if (caught < 0) {
        lost(cfg, conns, KAFKA, "reading the worker's committed offsets",
             why);
        goto out;
    }
    if (fg_rc_redis_now(conns->redis, &now, &err) != 0) {
        lost(cfg, conns, REDIS, "reading TIME", err);
        goto out;
    }

    for (i = 0; i < n; i++) {
        p = &prods[i];
        fg_rc_product_clear(p);
        if (fg_rc_redis_read(conns->redis, p, &err) != 0) {
            lost(cfg, conns, REDIS, "reading a product's books", err);
            goto out;
        }
        if (!p->known) {
            continue;
        }
        if (fg_rc_db_recorded_units(conns->pg, p, &err) != 0
            || fg_rc_db_mark_recorded(conns->pg, p->claims, p->nclaims,
                                      &err) != 0)
        {
            lost(cfg, conns, POSTGRES, "reading the recorded orders", err);
            goto out;
        }
        derive(cfg, p, now);
    }

    if (fg_rc_kafka_watermarks(conns->kafka, cfg->topic, &after, why,
                               sizeof(why)) != 0)
    {
        lost(cfg, conns, KAFKA, "reading the high watermarks", why);
        goto out;
    }
    *quiet = caught == 1 && after.n == before.n
             && memcmp(after.high, before.high,
                       before.n * sizeof(*before.high)) == 0;
    if (!*quiet) {
        fg_debug("books read with messages in flight: %s", caught != 1 ? why
                 : "the topic was written to meanwhile");
    }
    rc = 0;

out:
    fg_rc_offsets_free(&before);
    fg_rc_offsets_free(&after);
    return rc;
}

static void
derive(const struct fg_rc_config *cfg, struct fg_rc_product *p,
    long long now)
{
    const struct fg_rc_claim *cl;
    size_t                    i;

    p->overdue = 0;
    p->pending_units = 0;
    for (i = 0; i < p->nclaims; i++) {
        cl = &p->claims[i];
        if (cl->reserved_at <= now - cfg->claim_deadline) {
            p->overdue++;
        }
        /* an older generation's claim holds nothing of this one's stock;
         * a recorded one is counted by PostgreSQL already */
        if (cl->generation == p->generation && !cl->recorded) {
            p->pending_units += cl->quantity;
        }
    }
    p->drift = p->stock_set - (p->stock + p->pending_units
                               + p->recorded_units);
}

/* the verdict on a product's books, from the final reading */
static void
judge(struct fg_rc_product *p, int quiet)
{
    if (!p->known) {
        p->state = "unknown";
        p->verdict = LONG_MIN;
    } else if (p->drift == 0) {
        p->state = "balanced";
        p->verdict = 0;
    } else if (quiet) {
        p->state = "drift";
        p->verdict = (long) p->drift;
    } else {
        p->state = "in-flight";
        p->verdict = 0;
    }
}

/*
 * Prints the products, or under --watch only those whose verdict changed
 * since the last round or that had claims settled: drift is said once
 * when it appears (and once more when it is gone), not every round.
 */
static void
report(const struct fg_rc_config *cfg, const struct fg_rc_memory *memory,
    struct fg_rc_product *prods, size_t n)
{
    struct fg_rc_product *p, tmp;
    long                 *last;
    size_t                i, out;

    for (i = 0, out = 0; i < n; i++) {
        p = &prods[i];
        if (memory != NULL && p->settled_done == 0
            && p->settled_released == 0)
        {
            last = fg_strmap_find(&memory->seen, p->id);
            if ((last != NULL ? *last : 0) == p->verdict) {
                continue;
            }
        }
        if (out != i) {
            /* the shown ones first, in order; the round keeps them all */
            tmp = prods[out];
            prods[out] = *p;
            *p = tmp;
        }
        out++;
    }

    if (cfg->json) {
        print_json(prods, out);
    } else {
        print_table(cfg, prods, out);
    }
    log_verdicts(cfg, prods, out);
}

static void
log_verdicts(const struct fg_rc_config *cfg, const struct fg_rc_product *prods,
    size_t n)
{
    const struct fg_rc_product *p;
    size_t                      i;

    for (i = 0; i < n; i++) {
        p = &prods[i];
        if (!p->known) {
            fg_error("product %s has no generation in Redis (fg:{%s}:gen:"
                     " never set by POST /init): no books to check", p->id,
                     p->id);
        } else if (p->verdict != 0) {
            fg_error("product %s, generation %lld: drift %+lld with nothing"
                     " in flight (stock set %lld, Redis stock %lld, pending"
                     " %lld, recorded %lld): units were lost or made outside"
                     " the gate; nothing changed, %s", p->id, p->generation,
                     p->drift, p->stock_set, p->stock, p->pending_units,
                     p->recorded_units,
                     cfg->watch ? "said again only when it changes"
                                : "exit status 1");
        } else if (p->drift != 0) {
            fg_info("product %s, generation %lld: %+lld units not accounted"
                    " for while messages are in flight (a live sale or a"
                    " lagging worker); not called drift", p->id,
                    p->generation, p->drift);
        }
    }
}

static void
print_table(const struct fg_rc_config *cfg, const struct fg_rc_product *prods,
    size_t n)
{
    const struct fg_rc_product *p;
    size_t                      i;
    int                         w = 7;

    if (n == 0) {
        return;
    }
    for (i = 0; i < n; i++) {
        if ((int) strlen(prods[i].id) > w) {
            w = (int) strlen(prods[i].id);
        }
    }
    printf("%-*s %10s %8s %8s %8s %8s %8s %9s %7s  %s\n", w, "product",
           "generation", "set", "stock", "pending", "units", "overdue",
           "recorded", "drift", cfg->repair ? "state       done released"
                                            : "state");
    for (i = 0; i < n; i++) {
        p = &prods[i];
        printf("%-*s %10lld %8lld %8lld %8zu %8lld %8zu %9lld %+7lld  ",
               w, p->id, p->generation, p->stock_set, p->stock, p->nclaims,
               p->pending_units, p->overdue, p->recorded_units, p->drift);
        if (cfg->repair) {
            printf("%-9s %6zu %8zu\n", p->state, p->settled_done,
                   p->settled_released);
        } else {
            printf("%s\n", p->state);
        }
    }
}

/* product ids are [A-Za-z0-9._-] (the module's rule): nothing to escape */
static void
print_json(const struct fg_rc_product *prods, size_t n)
{
    const struct fg_rc_product *p;
    size_t                      i;

    for (i = 0; i < n; i++) {
        p = &prods[i];
        printf("{\"productId\":\"%s\",\"state\":\"%s\",\"generation\":%lld,"
               "\"stockSet\":%lld,\"stock\":%lld,\"pending\":%zu,"
               "\"pendingUnits\":%lld,\"overdue\":%zu,\"recordedUnits\":%lld,"
               "\"drift\":%lld,\"settledDone\":%zu,\"settledReleased\":%zu}\n",
               p->id, p->state, p->generation, p->stock_set,
               p->stock, p->nclaims, p->pending_units, p->overdue,
               p->recorded_units, p->drift, p->settled_done,
               p->settled_released);
    }
}

/* this round's verdicts become the memory; the products own its keys */
static void
remember(struct fg_rc_memory *memory, struct fg_rc_product *prods, size_t n)
{
    size_t  i;
    long   *slot;

    fg_rc_forget(memory);
    if (fg_strmap_reset(&memory->seen, n) != 0) {
        fg_error("out of memory for %zu products", n);
        abort();
    }
    for (i = 0; i < n; i++) {
        fg_rc_product_clear(&prods[i]);
        slot = fg_strmap_slot(&memory->seen, prods[i].id, 0);
        if (slot == NULL) {
            fg_error("out of memory for %zu products", n);
            abort();
        }
        *slot = prods[i].verdict;
    }
    memory->prods = prods;
    memory->n = n;
}

/* says what failed and what happens next; drops a broken connection */
static void
lost(const struct fg_rc_config *cfg, struct fg_rc_conns *conns,
    enum service which, const char *doing, const char *err)
{
    char next[64];

    if (cfg->watch) {
        snprintf(next, sizeof(next), "trying again in %ld s", cfg->watch);
    } else {
        snprintf(next, sizeof(next), "giving up (exit status %d)",
                 FG_RC_UNREACHABLE);
    }

    switch (which) {
    case REDIS:
        fg_error("Redis %s: %s: %s; %s", cfg->redis, doing, err, next);
        if (conns->redis != NULL) {
            redisFree(conns->redis);
            conns->redis = NULL;
        }
        break;
    case POSTGRES:
        fg_error("PostgreSQL: %s: %s; %s", doing, err, next);
        if (conns->pg != NULL) {
            PQfinish(conns->pg);
            conns->pg = NULL;
        }
        break;
    case KAFKA:
        /* librdkafka reconnects by itself: the handle stays */
        fg_error("Kafka %s: %s: %s; %s", cfg->brokers, doing, err, next);
        break;
    }
}

static void
free_products(struct fg_rc_product *prods, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        fg_rc_product_clear(&prods[i]);
        free(prods[i].id);
    }
    free(prods);
}
