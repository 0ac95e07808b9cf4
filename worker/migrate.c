/*
 * migrate.c: schema migrations.  A migration is a file NNN_name.sql in the
 * SQL directory; its version is NNN.  Versions are applied in numeric
 * order, each file and its schema_migrations row in one transaction, under
 * an advisory lock so two workers starting together do not race.  Applying
 * again changes nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "migrate.h"
#include "pg.h"

/* any constant, the same for every worker of this database */
#define MIGRATE_LOCK_KEY "28821445706588532"

static const char *const setup[] = {
    "set client_min_messages = warning",
    "select pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
    "create table if not exists schema_migrations ("
    " version text primary key,"
    " name text not null,"
    " applied_at timestamptz not null default now())"
};

struct migration {
    unsigned long long  number;
    char                version[32];
    char               *name;
};

static int load_migrations(const char *dir, struct migration **out,
    size_t *count);
static int compare_migrations(const void *a, const void *b);
static char *read_file(const char *path);
static int apply(PGconn *conn, const char *dir, const struct migration *m);
static int is_applied(PGconn *conn, const struct migration *m, int *applied);

int
fg_migrate(const char *conninfo, const char *sql_dir)
{
    PGconn           *conn;
    PGresult         *res;
    struct migration *ms = NULL;
    size_t            n = 0, i, done = 0;
    const char       *err;
    int               rc = -1, applied;

    if (load_migrations(sql_dir, &ms, &n) != 0) {
        return -1;
    }

    conn = fg_pg_connect(conninfo, &err);
    if (conn == NULL) {
        fg_error("migrate: cannot connect to PostgreSQL: %s", err);
        goto out;
    }

    for (i = 0; i < sizeof(setup) / sizeof(setup[0]); i++) {
        if (fg_pg_command(conn, setup[i], &res) != 0) {
            fg_error("migrate: cannot prepare schema_migrations: %s",
                     fg_pg_error(conn, res));
            PQclear(res);
            goto out;
        }
        PQclear(res);
    }

    for (i = 0; i < n; i++) {
        if (is_applied(conn, &ms[i], &applied) != 0) {
            goto out;
        }
        if (applied) {
            continue;
        }
        if (apply(conn, sql_dir, &ms[i]) != 0) {
            goto out;
        }
        done++;
    }

    fg_info("migrate: schema up to date"
            " (%zu migration%s in %s, %zu applied now)",
            n, n == 1 ? "" : "s", sql_dir, done);
    rc = 0;

out:
    /* the advisory lock goes with the session */
    PQfinish(conn);
    for (i = 0; i < n; i++) {
        free(ms[i].name);
    }
    free(ms);
    return rc;
}

static int
load_migrations(const char *dir, struct migration **out, size_t *count)
{
    DIR              *d;
    struct dirent    *de;
    struct migration *ms = NULL, *grown;
    size_t            n = 0, cap = 0, len, digits, i;

    d = opendir(dir);
    if (d == NULL) {
        fg_error("migrate: cannot open SQL directory %s: %s", dir,
                 strerror(errno));
        return -1;
    }

    while ((de = readdir(d)) != NULL) {
        len = strlen(de->d_name);
        digits = strspn(de->d_name, "0123456789");
        if (digits == 0 || digits >= sizeof(ms->version)
            || de->d_name[digits] != '_' || len < digits + 5
            || strcmp(de->d_name + len - 4, ".sql") != 0)
        {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(ms, cap * sizeof(*ms));
            if (grown == NULL) {
                fg_error("migrate: out of memory");
                goto fail;
            }
            ms = grown;
        }
        memcpy(ms[n].version, de->d_name, digits);
        ms[n].version[digits] = '\0';
        ms[n].number = strtoull(ms[n].version, NULL, 10);
        ms[n].name = strdup(de->d_name);
        if (ms[n].name == NULL) {
            fg_error("migrate: out of memory");
            goto fail;
        }
        n++;
    }
    closedir(d);
    d = NULL;

    if (n == 0) {
        fg_error("migrate: no migrations (NNN_name.sql) in %s", dir);
        goto fail;
    }

    qsort(ms, n, sizeof(*ms), compare_migrations);
    for (i = 1; i < n; i++) {
        if (ms[i].number == ms[i - 1].number) {
            fg_error("migrate: %s and %s have the same version; renumber one",
                     ms[i - 1].name, ms[i].name);
            goto fail;
        }
    }

    *out = ms;
    *count = n;
    return 0;

fail:
    if (d != NULL) {
        closedir(d);
    }
    for (i = 0; i < n; i++) {
        free(ms[i].name);
    }
    free(ms);
    return -1;
}

static int
compare_migrations(const void *a, const void *b)
{
    const struct migration *x = a, *y = b;

    return (x->number > y->number) - (x->number < y->number);
}

static char *
read_file(const char *path)
{
    FILE   *f;
    char   *buf = NULL;
    long    size;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0
        && fseek(f, 0, SEEK_SET) == 0
        && (buf = malloc(size + 1)) != NULL)
    {
        if (fread(buf, 1, size, f) != (size_t) size) {
            free(buf);
            buf = NULL;
        } else {
            buf[size] = '\0';
        }
    }
    fclose(f);
    return buf;
}

static int
is_applied(PGconn *conn, const struct migration *m, int *applied)
{
    const char *params[1] = { m->version };
    PGresult   *res;

    /* stored as written; compared by number so 1_ and 001_ are the same */
    res = PQexecParams(conn,
                       "select 1 from schema_migrations"
                       " where version ~ '^[0-9]+$'"
                       " and version::numeric = $1::numeric",
                       1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fg_error("migrate: cannot read schema_migrations: %s",
                 fg_pg_error(conn, res));
        PQclear(res);
        return -1;
    }
    *applied = PQntuples(res) > 0;
    PQclear(res);
    return 0;
}

static int
apply(PGconn *conn, const char *dir, const struct migration *m)
{
    const char *params[2] = { m->version, m->name };
    char        path[4096];
    char       *sql;
    PGresult   *res;
    long long   t0 = fg_now_ms();

    snprintf(path, sizeof(path), "%s/%s", dir, m->name);
    sql = read_file(path);
    if (sql == NULL) {
        fg_error("migrate: cannot read %s: %s", path, strerror(errno));
        return -1;
    }

    if (fg_pg_command(conn, "begin", &res) != 0) {
        goto fail;
    }
    PQclear(res);
    if (fg_pg_command(conn, sql, &res) != 0) {
        goto fail;
    }
    PQclear(res);
    res = PQexecParams(conn,
                       "insert into schema_migrations (version, name)"
                       " values ($1, $2)",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        goto fail;
    }
    PQclear(res);
    if (fg_pg_command(conn, "commit", &res) != 0) {
        goto fail;
    }
    PQclear(res);
    free(sql);

    fg_info("migrate: applied %s in %lld ms", m->name, fg_now_ms() - t0);
    return 0;

fail:
    fg_error("migrate: %s failed, nothing of it applied: %s", m->name,
             fg_pg_error(conn, res));
    PQclear(res);
    PQclear(PQexec(conn, "rollback"));
    free(sql);
    return -1;
}
