/*
 * reconcile_db.c: what fluxgate-reconcile asks PostgreSQL, the system of
 * record: which orderIds are recorded (orders.id, whatever their status:
 * the message reached the worker), and how many units the accepted orders
 * of a product's generation took.  Read only.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pg.h"
#include "reconcile.h"

static int is_uuid(const char *s);

int
fg_rc_db_recorded_units(PGconn *conn, struct fg_rc_product *p,
    const char **err)
{
    char         gen[32];
    const char  *params[2] = { p->id, gen };
    PGresult    *res;

    snprintf(gen, sizeof(gen), "%lld", p->generation);
    res = PQexecParams(conn,
        "select coalesce(sum(quantity), 0) from orders"
        " where product_id = $1 and generation = $2 and status = 'accepted'",
        2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *err = fg_pg_error(conn, res);
        PQclear(res);
        return -1;
    }
    p->recorded_units = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

/* sets `recorded` on each claim whose orderId is a row of orders */
int
fg_rc_db_mark_recorded(PGconn *conn, struct fg_rc_claim *claims, size_t n,
    const char **err)
{
    const char  *params[1];
    PGresult    *res;
    char        *ids, *w;
    size_t       i;
    int          row;

    for (i = 0; i < n; i++) {
        claims[i].recorded = 0;
        claims[i].rejected = 0;
    }
    if (n == 0) {
        return 0;
    }

    /* '{uuid,uuid,...}'; a claim without a well-formed orderId was never
     * produced by the module, so it cannot be recorded either */
    ids = malloc(n * (FG_RC_UUID_LEN + 1) + 3);
    if (ids == NULL) {
        *err = "out of memory";
        return -1;
    }
    w = ids;
    *w++ = '{';
    for (i = 0; i < n; i++) {
        if (is_uuid(claims[i].order_id)) {
            w += sprintf(w, "%s%s", w > ids + 1 ? "," : "",
                         claims[i].order_id);
        }
    }
    *w++ = '}';
    *w = '\0';

    params[0] = ids;
    res = PQexecParams(conn,
        "select id::text, status from orders where id = any($1::uuid[])",
        1, NULL, params, NULL, NULL, 0);
    free(ids);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *err = fg_pg_error(conn, res);
        PQclear(res);
        return -1;
    }
    for (row = 0; row < PQntuples(res); row++) {
        for (i = 0; i < n; i++) {
            if (strcasecmp(PQgetvalue(res, row, 0), claims[i].order_id) == 0) {
                claims[i].recorded = 1;
                claims[i].rejected = strcmp(PQgetvalue(res, row, 1),
                                            "rejected") == 0;
            }
        }
    }
    PQclear(res);
    return 0;
}

static int
is_uuid(const char *s)
{
    int i;

    for (i = 0; i < FG_RC_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return 0;
            }
        } else if (!isxdigit((unsigned char) s[i])) {
            return 0;
        }
    }
    return s[FG_RC_UUID_LEN] == '\0';
}
