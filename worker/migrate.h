/*
 * migrate.h: `fluxgate-worker --migrate`: the numbered files of the SQL
 * directory applied in order, each once, each in its own transaction.
 */
#ifndef FG_MIGRATE_H
#define FG_MIGRATE_H

/* 0 when the schema is up to date; errors are logged */
int fg_migrate(const char *conninfo, const char *sql_dir);

#endif
