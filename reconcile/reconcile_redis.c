/*
 * reconcile_redis.c: everything fluxgate-reconcile asks Redis (hiredis,
 * synchronous: a command line tool waits anyway).  It reads a product's
 * books in one MULTI, so the stock, the generation and the pending claims
 * are one moment's, and settles a claim only through the project's own
 * lua/done.lua and lua/release.lua (compiled in from lua/, see Makefile),
 * which act only while the key is still that order's pending claim: a
 * settle racing nginx or another reconcile does nothing twice.
 *
 * Errors come back as -1 and *err (static storage, one line); the caller
 * drops the connection (a pipeline may be left half read) and says what
 * it will do.
 *
 * A Redis Cluster (--redis names any of its nodes) is found at connect:
 * CLUSTER SLOTS gives the slot map, each master gets its own connection,
 * a product's commands go to the master of its slot (include/
 * fluxgate_slot.h, the module's function) and the products are scanned on
 * every master.  A MOVED is an error like any other: the caller reconnects
 * next round, and the map is fetched again.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "fg_lua.h"
#include "fluxgate_slot.h"
#include "reconcile.h"

#define CLUSTER_NODES_MAX 64

/* the cluster behind the context fg_rc_redis_connect() returned last */
static struct {
    redisContext  *seed;          /* NULL: not a cluster */
    int            nnodes;
    struct {
        char           host[64];
        int            port;
        redisContext  *c;
        int            master;
    }              nodes[CLUSTER_NODES_MAX];
    redisContext  *slots[FG_CLUSTER_SLOTS];
} cluster;

static int cluster_load(redisContext *c, const char **err);
static redisContext *at(redisContext *c, const char *product);
static int products_on(redisContext *c, char ***ids, size_t *n,
    const char **err);

#define REDIS_TIMEOUT_S 5

static void fail(const char **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static redisReply *command(redisContext *c, const char **err, int argc,
    const char **argv);
static int read_claims(redisContext *c, struct fg_rc_product *p,
    redisReply *members, const char **err);
static int run_script(redisContext *c, const char *sha, const char *src,
    int nkeys, int argc, const char **args, long long *res,
    const char **err);
static char *product_key(const char *product, const char *suffix);
static char *idem_key(const char *product, const char *key);
static long long to_ll(const redisReply *r);
static int by_string(const void *a, const void *b);

redisContext *
fg_rc_redis_connect(const char *addr, const char **err)
{
    struct timeval  tv = { REDIS_TIMEOUT_S, 0 };
    redisContext   *c;
    char            host[256];
    const char     *colon;
    size_t          len;

    if (strncmp(addr, "unix:", 5) == 0) {
        c = redisConnectUnixWithTimeout(addr + 5, tv);
    } else {
        /* checked by reconcile.c: HOST:PORT, [v6]:PORT */
        colon = strrchr(addr, ':');
        len = colon - addr;
        if (addr[0] == '[' && len >= 2 && addr[len - 1] == ']') {
            addr++;
            len -= 2;
        }
        snprintf(host, sizeof(host), "%.*s", (int) len, addr);
        c = redisConnectWithTimeout(host, atoi(colon + 1), tv);
    }
    if (c == NULL || c->err) {
        fail(err, "%s", c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    /* every command has the same deadline as the connect */
    redisSetTimeout(c, tv);
    if (cluster_load(c, err) != 0) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static void
cluster_free(void)
{
    int  i;

    for (i = 0; i < cluster.nnodes; i++) {
        redisFree(cluster.nodes[i].c);
    }
    memset(&cluster, 0, sizeof(cluster));
}

/* CLUSTER SLOTS on a fresh connection: the map, or "not a cluster" */
static int
cluster_load(redisContext *c, const char **err)
{
    struct timeval   tv = { REDIS_TIMEOUT_S, 0 };
    redisReply      *r, *range, *m;
    long long        a, b, s;
    size_t           i;
    int              j;

    cluster_free();

    r = redisCommand(c, "CLUSTER SLOTS");
    if (r == NULL) {
        fail(err, "%s", c->errstr);
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
        /* "ERR This instance has cluster support disabled" */
        freeReplyObject(r);
        return 0;
    }

    cluster.seed = c;
    for (i = 0; i < r->elements; i++) {
        range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[2]->type != REDIS_REPLY_ARRAY
            || range->element[2]->elements < 2)
        {
            continue;
        }
        a = range->element[0]->integer;
        b = range->element[1]->integer;
        m = range->element[2];
        if (a < 0 || b >= FG_CLUSTER_SLOTS || a > b
            || m->element[0]->type != REDIS_REPLY_STRING)
        {
            continue;
        }
        for (j = 0; j < cluster.nnodes; j++) {
            if (cluster.nodes[j].port == (int) m->element[1]->integer
                && strcmp(cluster.nodes[j].host, m->element[0]->str) == 0)
            {
                break;
            }
        }
        if (j == cluster.nnodes) {
            if (j == CLUSTER_NODES_MAX) {
                freeReplyObject(r);
                fail(err, "more than %d cluster masters", CLUSTER_NODES_MAX);
                return -1;
            }
            snprintf(cluster.nodes[j].host, sizeof(cluster.nodes[j].host),
                     "%s", m->element[0]->str);
            cluster.nodes[j].port = (int) m->element[1]->integer;
            cluster.nodes[j].c = redisConnectWithTimeout(
                cluster.nodes[j].host, cluster.nodes[j].port, tv);
            cluster.nnodes++;
            if (cluster.nodes[j].c == NULL || cluster.nodes[j].c->err) {
                fail(err, "cluster node %s:%d: %s", cluster.nodes[j].host,
                     cluster.nodes[j].port, cluster.nodes[j].c != NULL
                     ? cluster.nodes[j].c->errstr : "out of memory");
                freeReplyObject(r);
                return -1;
            }
            redisSetTimeout(cluster.nodes[j].c, tv);
            cluster.nodes[j].master = 1;
        }
        for (s = a; s <= b; s++) {
            cluster.slots[s] = cluster.nodes[j].c;
        }
    }
    freeReplyObject(r);
    return 0;
}

/* the connection for a product: its slot's master in a cluster */
static redisContext *
at(redisContext *c, const char *product)
{
    char          *k;
    redisContext  *node;

    if (cluster.seed == NULL || cluster.seed != c) {
        return c;
    }
    k = product_key(product, "gen");
    node = cluster.slots[fg_key_slot((const unsigned char *) k, strlen(k))];
    free(k);
    return node != NULL ? node : c;
}

/* every product with a generation, on every master of a cluster */
int
fg_rc_redis_products(redisContext *c, char ***ids, size_t *n,
    const char **err)
{
    char    **all = NULL, **some;
    size_t    count = 0, got, i;
    int       j;

    if (cluster.seed == NULL || cluster.seed != c) {
        return products_on(c, ids, n, err);
    }
    for (j = 0; j < cluster.nnodes; j++) {
        if (products_on(cluster.nodes[j].c, &some, &got, err) != 0) {
            for (i = 0; i < count; i++) {
                free(all[i]);
            }
            free(all);
            return -1;
        }
        all = realloc(all, (count + got + 1) * sizeof(*all));
        if (all == NULL) {
            abort();
        }
        memcpy(all + count, some, got * sizeof(*some));
        count += got;
        free(some);
    }
    if (count > 0) {
        qsort(all, count, sizeof(*all), by_string);
    }
    *ids = all;
    *n = count;
    return 0;
}

/* every product with a generation: SCAN MATCH fg:{*}:gen, sorted */
static int
products_on(redisContext *c, char ***ids, size_t *n, const char **err)
{
    const char  *argv[] = { "SCAN", "0", "MATCH", "fg:{*}:gen",
                            "COUNT", "1000" };
    redisReply  *r, *keys;
    char         cursor[32] = "0";
    char       **list = NULL;
    size_t       count = 0, out, i, len;
    const char  *k;

    do {
        argv[1] = cursor;
        r = command(c, err, 6, argv);
        if (r == NULL) {
            goto failed;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
            || r->element[1]->type != REDIS_REPLY_ARRAY)
        {
            freeReplyObject(r);
            fail(err, "SCAN: unexpected reply");
            goto failed;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        keys = r->element[1];
        list = realloc(list, (count + keys->elements + 1) * sizeof(*list));
        if (list == NULL) {
            freeReplyObject(r);
            fail(err, "out of memory");
            return -1;
        }
        for (i = 0; i < keys->elements; i++) {
            k = keys->element[i]->str;
            len = keys->element[i]->len;
            /* fg:{p}:gen; the pattern also matches fg:{a}b}:gen */
            if (len > 9 && strlen(k) == len && k[len - 5] == '}'
                && memchr(k + 4, '}', len - 9) == NULL)
            {
                list[count++] = strndup(k + 4, len - 9);
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);

    /* SCAN may return a key more than once */
    if (count > 0) {
        qsort(list, count, sizeof(*list), by_string);
    }
    for (i = 0, out = 0; i < count; i++) {
        if (out > 0 && strcmp(list[out - 1], list[i]) == 0) {
            free(list[i]);
        } else {
            list[out++] = list[i];
        }
    }
    *ids = list;
    *n = out;
    return 0;

failed:
    for (i = 0; i < count; i++) {
        free(list[i]);
    }
    free(list);
    return -1;
}

/* Redis TIME in ms: the clock the claims' reserved-at comes from */
int
fg_rc_redis_now(redisContext *c, long long *ms, const char **err)
{
    const char *argv[] = { "TIME" };
    redisReply *r;

    r = command(c, err, 1, argv);
    if (r == NULL) {
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        freeReplyObject(r);
        fail(err, "TIME: unexpected reply");
        return -1;
    }
    *ms = to_ll(r->element[0]) * 1000 + to_ll(r->element[1]) / 1000;
    freeReplyObject(r);
    return 0;
}

/*
 * The product's generation, stock and every pending claim, as of one
 * moment (MULTI/EXEC).  A claim's fields never change while it is pending,
 * so reading the hashes right after still describes that moment; a claim
 * settled in between has lost them and is read as gone (quantity 0).
 */
int
fg_rc_redis_read(redisContext *any, struct fg_rc_product *p, const char **err)
{
    redisContext *c = at(any, p->id);
    char        *gen = product_key(p->id, "gen");
    char        *stock = product_key(p->id, "stock");
    char        *pending = product_key(p->id, "pending");
    redisReply  *r = NULL, *ex;
    int          i, rc = -1;

    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "HMGET %s g s", gen);
    redisAppendCommand(c, "GET %s", stock);
    redisAppendCommand(c, "ZRANGE %s 0 -1 WITHSCORES", pending);
    redisAppendCommand(c, "EXEC");
    for (i = 0; i < 5; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            fail(err, "%s", c->errstr);
            goto out;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            fail(err, "%s", r->str);
            freeReplyObject(r);
            r = NULL;
            goto out;
        }
        if (i < 4) {
            freeReplyObject(r);
            r = NULL;
        }
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3
        || r->element[0]->type != REDIS_REPLY_ARRAY
        || r->element[0]->elements != 2
        || r->element[2]->type != REDIS_REPLY_ARRAY)
    {
        fail(err, "MULTI/EXEC: unexpected reply (a transaction aborted?)");
        goto out;
    }
    ex = r->element[0];
    p->known = ex->element[0]->type == REDIS_REPLY_STRING;
    p->generation = to_ll(ex->element[0]);
    p->stock_set = to_ll(ex->element[1]);
    p->stock = to_ll(r->element[1]);
    rc = read_claims(c, p, r->element[2], err);

out:
    freeReplyObject(r);
    free(gen);
    free(stock);
    free(pending);
    return rc;
}

/* the claims reserved at or before before_ms that still say pending */
int
fg_rc_redis_overdue(redisContext *any, struct fg_rc_product *p,
    long long before_ms, const char **err)
{
    redisContext *c = at(any, p->id);
    char         max[32];
    char        *pending = product_key(p->id, "pending");
    const char  *argv[] = { "ZRANGEBYSCORE", pending, "-inf", max,
                            "WITHSCORES" };
    redisReply  *r;
    size_t       i, out;
    int          rc;

    snprintf(max, sizeof(max), "%lld", before_ms);
    r = command(c, err, 5, argv);
    free(pending);
    if (r == NULL) {
        return -1;
    }
    if (r->type == REDIS_REPLY_ARRAY) {
        rc = read_claims(c, p, r, err);
    } else {
        fail(err, "ZRANGEBYSCORE: unexpected reply");
        rc = -1;
    }
    freeReplyObject(r);
    if (rc != 0) {
        return rc;
    }

    /* settled since: nothing left to do for them */
    for (i = 0, out = 0; i < p->nclaims; i++) {
        if (p->claims[i].pending) {
            p->claims[out++] = p->claims[i];
        } else {
            free(p->claims[i].key);
            free(p->claims[i].user);
        }
    }
    p->nclaims = out;
    return 0;
}

/* members: [key, score, key, score, ...]; one pipelined HMGET per claim */
static int
read_claims(redisContext *c, struct fg_rc_product *p, redisReply *members,
    const char **err)
{
    struct fg_rc_claim  *cl;
    redisReply          *r, *f;
    size_t               i, n = members->elements / 2;
    char                *idem;
    int                  rc = 0;

    p->claims = calloc(n ? n : 1, sizeof(*p->claims));
    if (p->claims == NULL) {
        fail(err, "out of memory");
        return -1;
    }
    p->nclaims = n;
    for (i = 0; i < n; i++) {
        cl = &p->claims[i];
        cl->key = strndup(members->element[2 * i]->str,
                          members->element[2 * i]->len);
        cl->reserved_at = to_ll(members->element[2 * i + 1]);
        idem = idem_key(p->id, cl->key);
        redisAppendCommand(c, "HMGET %s o g u q s", idem);
        free(idem);
    }

    /* every reply is read, even after a failure, to keep the pipeline */
    for (i = 0; i < n; i++) {
        cl = &p->claims[i];
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            fail(err, "%s", c->errstr);
            return -1;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
            if (rc == 0) {
                fail(err, "HMGET: %s", r->type == REDIS_REPLY_ERROR
                                       ? r->str : "unexpected reply");
            }
            rc = -1;
            freeReplyObject(r);
            continue;
        }
        f = r->element[0];
        if (f->type == REDIS_REPLY_STRING) {
            snprintf(cl->order_id, sizeof(cl->order_id), "%s", f->str);
        }
        cl->generation = to_ll(r->element[1]);
        cl->user = r->element[2]->type == REDIS_REPLY_STRING
                   ? strdup(r->element[2]->str) : strdup("");
        cl->quantity = to_ll(r->element[3]);
        cl->pending = r->element[4]->type == REDIS_REPLY_STRING
                      && strcmp(r->element[4]->str, "pending") == 0;
        freeReplyObject(r);
    }
    return rc;
}

/*
 * lua/done.lua, whose contract (its --- keys: and --- args: lines) is
 * idem pending; order_id ttl key status outcome: 200 success, or 409
 * rejected for an order PostgreSQL recorded as rejected (the shop sold
 * nothing for it).  *res is one of FG_LUA_DONE_<REPLY>.
 */
_Static_assert(FG_LUA_DONE_NKEYS == 2 && FG_LUA_DONE_NARGS == 5,
               "lua/done.lua's KEYS or ARGV changed: fix fg_rc_redis_done()");

int
fg_rc_redis_done(redisContext *any, const struct fg_rc_product *p,
    const struct fg_rc_claim *cl, long ttl, long long *res, const char **err)
{
    redisContext *c = at(any, p->id);
    char        ttl_s[32];
    char       *idem = idem_key(p->id, cl->key);
    char       *pending = product_key(p->id, "pending");
    const char *args[FG_LUA_DONE_NKEYS + FG_LUA_DONE_NARGS];
    int         rc;

    snprintf(ttl_s, sizeof(ttl_s), "%ld", ttl);
    args[0] = idem;
    args[1] = pending;
    args[2] = cl->order_id;
    args[3] = ttl_s;
    args[4] = cl->key;
    args[5] = cl->rejected ? "409" : "200";
    args[6] = cl->rejected ? "rejected" : "success";
    rc = run_script(c, FG_LUA_DONE_SHA, FG_LUA_DONE, FG_LUA_DONE_NKEYS,
                    FG_LUA_DONE_NKEYS + FG_LUA_DONE_NARGS, args, res, err);
    free(idem);
    free(pending);
    return rc;
}

/*
 * lua/release.lua, whose contract is stock buyers idem gen pending prefix;
 * order_id key ttl.  Every key is passed: the last, fg:{p}:q:, gives back
 * the waiting-room turn the claim's order spent, as the gate's release
 * does (the order never happened).  The ttl is not: it is the gate's, for
 * a tombstone when it does not know whether order.lua ran, and a claim
 * read as pending here did run.  *res is one of FG_LUA_RELEASE_<REPLY>.
 */
_Static_assert(FG_LUA_RELEASE_NKEYS == 6 && FG_LUA_RELEASE_NARGS == 3,
               "lua/release.lua's KEYS or ARGV changed: fix "
               "fg_rc_redis_release()");

int
fg_rc_redis_release(redisContext *any, const struct fg_rc_product *p,
    const struct fg_rc_claim *cl, long long *res, const char **err)
{
    redisContext *c = at(any, p->id);
    char       *stock = product_key(p->id, "stock");
    char       *buyers = product_key(p->id, "buyers");
    char       *idem = idem_key(p->id, cl->key);
    char       *gen = product_key(p->id, "gen");
    char       *pending = product_key(p->id, "pending");
    char       *line = product_key(p->id, "q:");
    const char *args[FG_LUA_RELEASE_NKEYS + FG_LUA_RELEASE_NARGS - 1];
    int         rc;

    args[0] = stock;
    args[1] = buyers;
    args[2] = idem;
    args[3] = gen;
    args[4] = pending;
    args[5] = line;
    args[6] = cl->order_id;
    args[7] = cl->key;
    rc = run_script(c, FG_LUA_RELEASE_SHA, FG_LUA_RELEASE,
                    FG_LUA_RELEASE_NKEYS,
                    FG_LUA_RELEASE_NKEYS + FG_LUA_RELEASE_NARGS - 1, args,
                    res, err);
    free(stock);
    free(buyers);
    free(idem);
    free(gen);
    free(pending);
    free(line);
    return rc;
}

void
fg_rc_product_clear(struct fg_rc_product *p)
{
    size_t i;

    for (i = 0; i < p->nclaims; i++) {
        free(p->claims[i].key);
        free(p->claims[i].user);
    }
    free(p->claims);
    p->claims = NULL;
    p->nclaims = 0;
}

/* EVALSHA, and EVAL when this Redis has not seen the script yet */
static int
run_script(redisContext *c, const char *sha, const char *src, int nkeys,
    int argc, const char **args, long long *res, const char **err)
{
    const char  *argv[16];
    char         nk[8];
    redisReply  *r;
    int          i;

    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[1] = sha;
    argv[2] = nk;
    for (i = 0; i < argc; i++) {
        argv[3 + i] = args[i];
    }

    r = redisCommandArgv(c, argc + 3, argv, NULL);
    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = src;
        r = redisCommandArgv(c, argc + 3, argv, NULL);
    }
    if (r == NULL) {
        fail(err, "%s", c->errstr);
        return -1;
    }
    if (r->type != REDIS_REPLY_INTEGER) {
        fail(err, "%s", r->type == REDIS_REPLY_ERROR ? r->str
                        : "the script did not answer an integer");
        freeReplyObject(r);
        return -1;
    }
    *res = r->integer;
    freeReplyObject(r);
    return 0;
}

static redisReply *
command(redisContext *c, const char **err, int argc, const char **argv)
{
    redisReply *r;

    r = redisCommandArgv(c, argc, argv, NULL);
    if (r == NULL) {
        fail(err, "%s", c->errstr);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fail(err, "%s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* fg:{<product>}:<suffix>, malloc'ed */
static char *
product_key(const char *product, const char *suffix)
{
    char *k;

    if (asprintf(&k, "fg:{%s}:%s", product, suffix) < 0) {
        abort();
    }
    return k;
}

/* fg:{<product>}:idem:<key>, malloc'ed */
static char *
idem_key(const char *product, const char *key)
{
    char *k;

    if (asprintf(&k, "fg:{%s}:idem:%s", product, key) < 0) {
        abort();
    }
    return k;
}

static long long
to_ll(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        return r->integer;
    }
    if (r->type == REDIS_REPLY_STRING) {
        return strtoll(r->str, NULL, 10);
    }
    return 0;
}

static int
by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
fail(const char **err, const char *fmt, ...)
{
    static char msg[512];
    va_list     ap;
    char       *p;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    *err = msg;
}
