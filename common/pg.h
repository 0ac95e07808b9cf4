/*
 * common/pg.h: the PostgreSQL connection of both programs.  Offers
 * connecting with the program's name as application_name (log.h's
 * fg_progname), an error as one line, running a command without
 * parameters, and telling an outage (wait and retry) from an error in the
 * data (retrying would fail the same way forever).
 *
 * Used by fluxgate-worker (migrate.c, statements.c, store.c) and
 * fluxgate-reconcile (reconcile_books.c, reconcile_db.c).
 */
#ifndef FG_PG_H
#define FG_PG_H

#include <libpq-fe.h>

/* NULL and *err set (a one-line message, static storage) when it fails */
PGconn *fg_pg_connect(const char *conninfo, const char **err);

/* the connection's or the result's error as one line, without "ERROR:  " */
const char *fg_pg_error(PGconn *conn, const PGresult *res);

/*
 * Non-zero when the statement failed because of the data it was given
 * (SQLSTATE classes 22 data exception and 23 integrity violation): it will
 * fail the same way every time.  Anything else (server down or restarting,
 * lost connection, deadlock, missing table before --migrate) may well pass
 * later and is waited out.
 */
int fg_pg_data_error(PGconn *conn, const PGresult *res);

/* runs a command without parameters; non-zero on failure, result kept */
int fg_pg_command(PGconn *conn, const char *sql, PGresult **res);

#endif
