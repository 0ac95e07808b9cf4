/*
 * settings.h: fluxgate-worker's FLUXGATE_* settings, from the environment
 * and from an optional configuration file (--config), the environment
 * first.  Its flags win over both; main.c applies them.  The worker's
 * alone: fluxgate-reconcile reads only its environment (reconcile.c), and
 * has no --config.
 */
#ifndef FG_SETTINGS_H
#define FG_SETTINGS_H

#include <stddef.h>

/*
 * Reads path: lines NAME=VALUE, blank lines and lines starting with '#'.
 * Values are taken as written (no quotes, no escapes), as docker's
 * --env-file and systemd's EnvironmentFile= both read such lines.  0 when
 * read; -1 with err naming the file and line otherwise (unreadable file,
 * a line without '=', a quoted value, a NAME no program of ours reads).
 */
int fg_settings_load(const char *path, char *err, size_t size);

/*
 * The value of the setting name: the environment's when set and not empty,
 * else the file's when set and not empty, else NULL.  where (may be NULL)
 * gets a label for messages: "NAME" or "NAME (file:line)".
 */
const char *fg_setting(const char *name, const char **where);

#endif
