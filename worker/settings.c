/*
 * settings.c: the configuration file of fluxgate-worker (--config), and
 * the one lookup that puts the environment before it.
 *
 * The file is the environment-file format that systemd (EnvironmentFile=)
 * and docker (--env-file, compose's env_file) both read the same way when
 * values carry no quotes: so an operator keeps one file for all three.
 * Quotes are refused rather than stripped, because docker would keep them.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"

#define FG_SETTINGS_MAX  32

/* every FLUXGATE_* setting the worker reads; anything else is a typo */
static const char *const known[] = {
    "FLUXGATE_BROKERS",
    "FLUXGATE_TOPIC",
    "FLUXGATE_GROUP",
    "FLUXGATE_PG",
    "FLUXGATE_PG_PASSWORD_FILE",
    "FLUXGATE_BATCH_SIZE",
    "FLUXGATE_BATCH_WAIT",
    "FLUXGATE_KAFKA_OPTIONS",
    "FLUXGATE_FAIL_FAST",
    "FLUXGATE_PER_MESSAGE",
    "FLUXGATE_SQL_DIR",
    "FLUXGATE_METRICS_LISTEN",
    "FLUXGATE_LOG_FORMAT",
    NULL
};

struct fg_setting {
    char  *name;
    char  *value;
    char  *where;           /* "NAME (file:line)" */
};

static struct fg_setting  settings[FG_SETTINGS_MAX];
static size_t             nsettings;

static int is_known(const char *name);
static struct fg_setting *find(const char *name);

int
fg_settings_load(const char *path, char *err, size_t size)
{
    FILE               *f;
    char                line[4096], *name, *value, *eq, *end;
    size_t              len;
    unsigned            lineno = 0;
    struct fg_setting  *s;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, size, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            snprintf(err, size, "%s:%u: line longer than %zu bytes", path,
                     lineno, sizeof(line) - 2);
            goto failed;
        }

        /* leading and trailing white space go, as both readers drop them */
        for (name = line; isspace((unsigned char) *name); name++) { }
        end = name + strlen(name);
        while (end > name && isspace((unsigned char) end[-1])) {
            *--end = '\0';
        }
        if (*name == '\0' || *name == '#') {
            continue;
        }

        eq = strchr(name, '=');
        if (eq == NULL || eq == name) {
            snprintf(err, size, "%s:%u: NAME=VALUE expected, not \"%s\"",
                     path, lineno, name);
            goto failed;
        }
        *eq = '\0';
        value = eq + 1;

        if (!is_known(name)) {
            snprintf(err, size, "%s:%u: unknown setting %s", path, lineno,
                     name);
            goto failed;
        }
        len = strlen(value);
        if (len >= 2 && (value[0] == '"' || value[0] == '\'')
            && value[len - 1] == value[0])
        {
            snprintf(err, size, "%s:%u: %s: write the value without quotes "
                     "(docker --env-file would keep them)", path, lineno,
                     name);
            goto failed;
        }

        /* a later line wins, as in a shell or systemd */
        s = find(name);
        if (s == NULL) {
            if (nsettings == FG_SETTINGS_MAX) {
                snprintf(err, size, "%s:%u: too many settings", path, lineno);
                goto failed;
            }
            s = &settings[nsettings++];
            s->name = strdup(name);
        } else {
            free(s->value);
            free(s->where);
        }
        s->value = strdup(value);
        len = strlen(name) + strlen(path) + 32;
        s->where = malloc(len);
        if (s->name == NULL || s->value == NULL || s->where == NULL) {
            snprintf(err, size, "out of memory");
            goto failed;
        }
        snprintf(s->where, len, "%s (%s:%u)", name, path, lineno);
    }

    if (ferror(f)) {
        snprintf(err, size, "cannot read %s: %s", path, strerror(errno));
        goto failed;
    }
    fclose(f);
    return 0;

failed:
    fclose(f);
    return -1;
}

const char *
fg_setting(const char *name, const char **where)
{
    const char         *v;
    struct fg_setting  *s;

    v = getenv(name);
    if (v != NULL && *v != '\0') {
        if (where != NULL) {
            *where = name;
        }
        return v;
    }

    s = find(name);
    if (s != NULL && *s->value != '\0') {
        if (where != NULL) {
            *where = s->where;
        }
        return s->value;
    }

    return NULL;
}

static int
is_known(const char *name)
{
    const char *const  *k;

    for (k = known; *k != NULL; k++) {
        if (strcmp(*k, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static struct fg_setting *
find(const char *name)
{
    size_t  i;

    for (i = 0; i < nsettings; i++) {
        if (strcmp(settings[i].name, name) == 0) {
            return &settings[i];
        }
    }
    return NULL;
}
