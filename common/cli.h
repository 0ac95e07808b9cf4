/*
 * common/cli.h: what the command lines of both programs share.  Offers
 * ending the program on a bad setting, parsing an integer within bounds,
 * and taking a librdkafka NAME=VALUE property.  A bad setting ends the
 * program here, with exit status 2 and a message that names the flag or
 * variable and the value it got, followed by a pointer to --help; the
 * program's name is log.h's fg_progname.
 *
 * Used by fluxgate-worker (main.c) and fluxgate-reconcile (reconcile.c).
 */
#ifndef FG_CLI_H
#define FG_CLI_H

#include <stddef.h>

#define FG_CLI_USAGE  2         /* exit status of a bad setting */

void fg_cli_bad_usage(const char *fmt, const char *arg)
    __attribute__((noreturn, format(printf, 1, 0)));

/* s as a decimal integer in [min, max], or exit naming `what` */
long fg_cli_parse_long(const char *what, const char *s, long min, long max);

/*
 * "NAME=VALUE" (an -X flag or one word of FLUXGATE_KAFKA_OPTIONS), split
 * in place and appended to names/values, at most max of them; `what`
 * names where it came from in the error.
 */
void fg_cli_add_prop(const char **names, const char **values, size_t *n,
    size_t max, char *spec, const char *what);

#endif
