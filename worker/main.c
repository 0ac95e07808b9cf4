/*
 * main.c: fluxgate-worker's command line.  Resolves the settings (flags
 * first, then FLUXGATE_* environment variables, then the --config file,
 * then defaults), installs the signal handlers and hands over to the
 * migration or the consumer.  Bad settings end here with exit status 2 and
 * a message naming them.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "settings.h"
#include "worker.h"

/* where --migrate looks by default; packages build in their own path */
#ifndef FG_SQL_DIR_DEFAULT
#define FG_SQL_DIR_DEFAULT  "sql"
#endif

#define FG_SHORT_OPTIONS  "b:t:g:d:n:w:X:vhV"

volatile sig_atomic_t fg_stop;

static const char *progname = "fluxgate-worker";

static void usage(FILE *out);
static const char *config_file(int argc, char **argv);
static void from_env(struct fg_config *cfg);
static void use_password_file(const char *path, const char *what);
static int env_flag(const char *name);
static void on_signal(int sig);

enum {
    OPT_MIGRATE = 256,
    OPT_SQL_DIR,
    OPT_FAIL_FAST,
    OPT_PER_MESSAGE,
    OPT_CONFIG,
    OPT_PG_PASSWORD_FILE,
    OPT_METRICS_LISTEN,
    OPT_LOG_FORMAT
};

/* cli.h's helpers, shared with the other program, under short names */
#define bad_usage       fg_cli_bad_usage
#define parse_long      fg_cli_parse_long
#define add_kafka_prop(cfg, spec, what)                                       \
    fg_cli_add_prop((cfg)->prop_names, (cfg)->prop_values, &(cfg)->nprops,    \
                    FG_MAX_KAFKA_PROPS, (spec), (what))

static const struct option long_options[] = {
    { "brokers",     required_argument, NULL, 'b' },
    { "topic",       required_argument, NULL, 't' },
    { "group",       required_argument, NULL, 'g' },
    { "pg",          required_argument, NULL, 'd' },
    { "pg-password-file", required_argument, NULL, OPT_PG_PASSWORD_FILE },
    { "config",      required_argument, NULL, OPT_CONFIG },
    { "batch-size",  required_argument, NULL, 'n' },
    { "batch-wait",  required_argument, NULL, 'w' },
    { "migrate",     no_argument,       NULL, OPT_MIGRATE },
    { "sql-dir",     required_argument, NULL, OPT_SQL_DIR },
    { "fail-fast",   no_argument,       NULL, OPT_FAIL_FAST },
    { "per-message", no_argument,       NULL, OPT_PER_MESSAGE },
    { "metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN },
    { "log-format",  required_argument, NULL, OPT_LOG_FORMAT },
    { "verbose",     no_argument,       NULL, 'v' },
    { "help",        no_argument,       NULL, 'h' },
    { "version",     no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
};

int
main(int argc, char **argv)
{
    struct fg_config  cfg = {
        .brokers = "localhost:9092",
        .topic = "orders",
        .group = "fluxgate-inventory",
        .pg = "",
        .sql_dir = FG_SQL_DIR_DEFAULT,
        .batch_size = 5000,
        .batch_wait = 100,
    };
    struct sigaction  sa;
    char              msg[600];
    const char       *conf, *password_file, *password_what;
    int               c, rc;

    conf = config_file(argc, argv);
    if (conf != NULL && fg_settings_load(conf, msg, sizeof(msg)) != 0) {
        bad_usage("%s", msg);
    }

    from_env(&cfg);
    password_file = fg_setting("FLUXGATE_PG_PASSWORD_FILE", &password_what);

    while ((c = getopt_long(argc, argv, FG_SHORT_OPTIONS, long_options,
                            NULL)) != -1)
    {
        switch (c) {
        case 'b': cfg.brokers = optarg; break;
        case 't': cfg.topic = optarg; break;
        case 'g': cfg.group = optarg; break;
        case 'd': cfg.pg = optarg; break;
        case OPT_PG_PASSWORD_FILE:
            password_file = optarg;
            password_what = "--pg-password-file";
            break;
        case OPT_CONFIG: break;     /* read before everything else */
        case 'n':
            cfg.batch_size = parse_long("--batch-size", optarg, 1, 100000);
            break;
        case 'w':
            cfg.batch_wait = parse_long("--batch-wait", optarg, 0, 600000);
            break;
        case 'X': add_kafka_prop(&cfg, optarg, "-X"); break;
        case OPT_MIGRATE: cfg.migrate = 1; break;
        case OPT_SQL_DIR: cfg.sql_dir = optarg; break;
        case OPT_FAIL_FAST: cfg.fail_fast = 1; break;
        case OPT_PER_MESSAGE: cfg.per_message = 1; break;
        case OPT_METRICS_LISTEN: cfg.metrics_listen = optarg; break;
        case OPT_LOG_FORMAT:
            if (fg_log_set_format(optarg) != 0) {
                bad_usage("--log-format must be text or json, not \"%s\"",
                          optarg);
            }
            break;
        case 'v': fg_log_min_level = FG_LOG_DEBUG; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("%s %s\n", progname, FG_VERSION); exit(0);
        default:
            /* getopt has said what was wrong */
            fprintf(stderr, "Try \"%s --help\" for more information.\n",
                    progname);
            exit(2);
        }
    }
    if (optind < argc) {
        bad_usage("unexpected argument \"%s\"", argv[optind]);
    }
    if (*cfg.topic == '\0' || *cfg.group == '\0' || *cfg.brokers == '\0') {
        bad_usage("%s must not be empty", "--brokers, --topic and --group");
    }
    if (cfg.topic[0] == '^') {
        /* librdkafka would subscribe to a pattern; rows name one topic */
        bad_usage("--topic must name one topic, not a pattern (%s)", cfg.topic);
    }

    if (fg_check_kafka_options(&cfg, msg, sizeof(msg)) != 0) {
        bad_usage("%s", msg);
    }

    if (password_file != NULL) {
        use_password_file(password_file, password_what);
    }

    if (cfg.migrate) {
        return fg_migrate(cfg.pg, cfg.sql_dir) == 0 ? 0 : 1;
    }

    /* a flag, acted on between batches and in every wait */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* before the consumer, so /healthz says why while it waits */
    if (cfg.metrics_listen != NULL
        && fg_metrics_http_start(cfg.metrics_listen, msg, sizeof(msg)) != 0)
    {
        fg_error("%s; exiting", msg);
        return 1;
    }
    rc = fg_consume(&cfg);
    fg_metrics_http_stop();
    return rc;
}

static void
on_signal(int sig)
{
    (void) sig;
    fg_stop = 1;
}

static void
usage(FILE *out)
{
    fprintf(out,
"%s consumes the Flux-Gate order topic into PostgreSQL, one transaction\n"
"per batch, committing Kafka offsets only after PostgreSQL committed.\n"
"\n"
"Usage:\n"
"  %s [OPTION]...            consume (runs in the foreground)\n"
"  %s --migrate [--pg CONNINFO] [--sql-dir DIR]\n"
"                                        apply the schema migrations and exit\n"
"\n"
"Options (environment fallback in brackets):\n"
"      --config=FILE      read settings from FILE [FLUXGATE_CONFIG]: lines\n"
"                         NAME=VALUE with the environment names below, no\n"
"                         quotes, '#' comments (the format of systemd's\n"
"                         EnvironmentFile= and docker's --env-file)\n"
"  -b, --brokers=LIST     Kafka bootstrap servers [FLUXGATE_BROKERS]\n"
"                         (default localhost:9092)\n"
"  -t, --topic=NAME       topic to consume [FLUXGATE_TOPIC] (default orders)\n"
"  -g, --group=ID         consumer group [FLUXGATE_GROUP]\n"
"                         (default fluxgate-inventory)\n"
"  -d, --pg=CONNINFO      libpq connection string or URI [FLUXGATE_PG]\n"
"                         (default: libpq's PG* environment variables)\n"
"      --pg-password-file=FILE\n"
"                         the PostgreSQL password is FILE's first line\n"
"                         [FLUXGATE_PG_PASSWORD_FILE]; a password in\n"
"                         CONNINFO wins over it\n"
"  -n, --batch-size=N     at most N messages per transaction\n"
"                         [FLUXGATE_BATCH_SIZE] (default 5000)\n"
"  -w, --batch-wait=MS    commit a batch at most MS ms after its first\n"
"                         message; 0: take what has arrived, do not wait\n"
"                         [FLUXGATE_BATCH_WAIT] (default 100)\n"
"  -X NAME=VALUE          set a librdkafka property; repeatable\n"
"                         [FLUXGATE_KAFKA_OPTIONS: NAME=VALUE ... separated\n"
"                         by white space]\n"
"      --per-message      one transaction per message (for comparison only;\n"
"                         offsets are still committed per batch)\n"
"                         [FLUXGATE_PER_MESSAGE=1]\n"
"      --metrics-listen=ADDR:PORT\n"
"                         serve GET /metrics (Prometheus) and GET /healthz\n"
"                         there, e.g. 127.0.0.1:9187 [FLUXGATE_METRICS_LISTEN]\n"
"                         (default: not served)\n"
"      --log-format=FMT   log lines on stderr as text (default) or json,\n"
"                         one object per line [FLUXGATE_LOG_FORMAT]\n"
"      --fail-fast        exit non-zero when PostgreSQL or Kafka cannot be\n"
"                         reached at start-up instead of waiting\n"
"                         [FLUXGATE_FAIL_FAST=1]\n"
"      --migrate          apply the migrations of --sql-dir and exit\n"
"      --sql-dir=DIR      migrations directory [FLUXGATE_SQL_DIR]\n"
"                         (default %s)\n"
"  -v, --verbose          log debug lines too\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n"
"\n"
"A setting comes from the flag if given, else from the environment, else\n"
"from the --config file, else the default; an empty value counts as unset.\n"
"\n"
"SIGTERM or SIGINT: finish the current batch, commit, leave the group,\n"
"exit 0.\n"
"Exit status: 0 stopped by a signal or migrated, 1 failure, 2 bad usage.\n",
            progname, progname, progname, FG_SQL_DIR_DEFAULT);
}

/*
 * --config FILE, else FLUXGATE_CONFIG, else none: looked for before the
 * other flags, which are read after the file so that they win over it.
 */
static const char *
config_file(int argc, char **argv)
{
    const char *path = getenv("FLUXGATE_CONFIG");
    int         c;

    if (path != NULL && *path == '\0') {
        path = NULL;
    }

    opterr = 0;                 /* the real pass reports bad flags */
    while ((c = getopt_long(argc, argv, FG_SHORT_OPTIONS, long_options,
                            NULL)) != -1)
    {
        if (c == OPT_CONFIG) {
            path = optarg;
        }
    }
    opterr = 1;
    optind = 0;                 /* glibc: start the next scan afresh */

    return path;
}

/* FLUXGATE_* settings: the environment's, else the --config file's */
static void
from_env(struct fg_config *cfg)
{
    const char *v, *where;
    char       *copy, *tok, *save;

    if ((v = fg_setting("FLUXGATE_BROKERS", NULL)) != NULL) cfg->brokers = v;
    if ((v = fg_setting("FLUXGATE_TOPIC", NULL)) != NULL) cfg->topic = v;
    if ((v = fg_setting("FLUXGATE_GROUP", NULL)) != NULL) cfg->group = v;
    if ((v = fg_setting("FLUXGATE_PG", NULL)) != NULL) cfg->pg = v;
    if ((v = fg_setting("FLUXGATE_SQL_DIR", NULL)) != NULL) cfg->sql_dir = v;
    if ((v = fg_setting("FLUXGATE_METRICS_LISTEN", NULL)) != NULL) {
        cfg->metrics_listen = v;
    }
    if ((v = fg_setting("FLUXGATE_LOG_FORMAT", &where)) != NULL
        && fg_log_set_format(v) != 0)
    {
        bad_usage("%s must be text or json", where);
    }
    if ((v = fg_setting("FLUXGATE_BATCH_SIZE", &where)) != NULL) {
        cfg->batch_size = parse_long(where, v, 1, 100000);
    }
    if ((v = fg_setting("FLUXGATE_BATCH_WAIT", &where)) != NULL) {
        cfg->batch_wait = parse_long(where, v, 0, 600000);
    }
    cfg->fail_fast = env_flag("FLUXGATE_FAIL_FAST");
    cfg->per_message = env_flag("FLUXGATE_PER_MESSAGE");

    if ((v = fg_setting("FLUXGATE_KAFKA_OPTIONS", &where)) != NULL) {
        copy = strdup(v);     /* lives as long as the process */
        if (copy == NULL) {
            bad_usage("%s", "out of memory");
        }
        for (tok = strtok_r(copy, " \t\n", &save); tok != NULL;
             tok = strtok_r(NULL, " \t\n", &save))
        {
            add_kafka_prop(cfg, tok, where);
        }
    }
}

/*
 * The PostgreSQL password from a file (a secret mounted by docker, or
 * systemd's LoadCredential=), handed to libpq as PGPASSWORD so that it
 * never appears in a command line, a unit or a conninfo.
 */
static void
use_password_file(const char *path, const char *what)
{
    FILE    *f;
    char     password[1024], msg[1200];
    size_t   len;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(msg, sizeof(msg), "%s: cannot read %s: %s", what, path,
                 strerror(errno));
        bad_usage("%s", msg);
    }
    if (fgets(password, sizeof(password), f) == NULL) {
        password[0] = '\0';
    }
    fclose(f);

    len = strcspn(password, "\r\n");
    password[len] = '\0';
    if (len == 0) {
        snprintf(msg, sizeof(msg), "%s: no password on the first line of %s",
                 what, path);
        bad_usage("%s", msg);
    }

    if (setenv("PGPASSWORD", password, 1) != 0) {
        bad_usage("%s", strerror(errno));
    }
    memset(password, 0, sizeof(password));
}

static int
env_flag(const char *name)
{
    const char *where;
    const char *v = fg_setting(name, &where);

    if (v == NULL || *v == '\0' || strcmp(v, "0") == 0
        || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0
        || strcasecmp(v, "off") == 0)
    {
        return 0;
    }
    if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0
        || strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0)
    {
        return 1;
    }
    bad_usage("%s must be 1/0, true/false, yes/no or on/off", where);
    return 0;
}

