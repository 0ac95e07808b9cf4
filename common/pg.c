/*
 * pg.c: connecting to PostgreSQL and classifying its failures (see pg.h).
 * The worker keeps a batch and retries through an outage, but must not
 * retry an error the data itself causes, or one bad message would stop a
 * partition.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "pg.h"

PGconn *
fg_pg_connect(const char *conninfo, const char **err)
{
    static char  msg[512];
    const char  *keys[] = { "dbname", "fallback_application_name", NULL };
    const char  *vals[] = { conninfo, fg_progname, NULL };
    PGconn      *conn;

    /* dbname is expanded as a conninfo string or URI; PG* env fills gaps */
    conn = PQconnectdbParams(keys, vals, 1);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK) {
        return conn;
    }

    snprintf(msg, sizeof(msg), "%s",
             conn != NULL ? fg_pg_error(conn, NULL) : "out of memory");
    PQfinish(conn);
    *err = msg;
    return NULL;
}

const char *
fg_pg_error(PGconn *conn, const PGresult *res)
{
    static char  msg[1024];
    const char  *src;
    char        *p;

    src = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (src == NULL || *src == '\0') {
        src = res != NULL ? PQresultErrorMessage(res) : "";
    }
    if (*src == '\0' && conn != NULL) {
        src = PQerrorMessage(conn);
    }
    if (*src == '\0') {
        src = "unknown error";
    }

    /* libpq's messages span lines; a log line must not */
    for (p = msg; *src != '\0' && p < msg + sizeof(msg) - 1; src++) {
        if (isspace((unsigned char) *src)) {
            if (p > msg && p[-1] != ' ') {
                *p++ = ' ';
            }
        } else {
            *p++ = *src;
        }
    }
    while (p > msg && p[-1] == ' ') {
        p--;
    }
    *p = '\0';
    return msg;
}

int
fg_pg_data_error(PGconn *conn, const PGresult *res)
{
    const char *state;

    if (conn == NULL || PQstatus(conn) != CONNECTION_OK || res == NULL) {
        return 0;
    }
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return state != NULL
           && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

int
fg_pg_command(PGconn *conn, const char *sql, PGresult **res)
{
    ExecStatusType st;

    *res = PQexec(conn, sql);
    st = PQresultStatus(*res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}
