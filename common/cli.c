/*
 * cli.c: the command-line helpers fluxgate-worker and fluxgate-reconcile
 * share (see cli.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static void __attribute__((noreturn))
try_help(void)
{
    fprintf(stderr, "Try \"%s --help\" for more information.\n",
            fg_progname);
    exit(FG_CLI_USAGE);
}

void
fg_cli_bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", fg_progname);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    fprintf(stderr, fmt, arg);
#pragma GCC diagnostic pop
    fputc('\n', stderr);
    try_help();
}

long
fg_cli_parse_long(const char *what, const char *s, long min, long max)
{
    char *end;
    long  v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "%s: %s must be an integer from %ld to %ld, not"
                " \"%s\"\n", fg_progname, what, min, max, s);
        try_help();
    }
    return v;
}

void
fg_cli_add_prop(const char **names, const char **values, size_t *n,
    size_t max, char *spec, const char *what)
{
    char *eq = strchr(spec, '=');

    if (eq == NULL || eq == spec) {
        fprintf(stderr, "%s: %s wants NAME=VALUE, not \"%s\"\n", fg_progname,
                what, spec);
        try_help();
    }
    if (*n == max) {
        fg_cli_bad_usage("too many librdkafka properties (%s)", spec);
    }
    *eq = '\0';
    names[*n] = spec;
    values[*n] = eq + 1;
    (*n)++;
}
