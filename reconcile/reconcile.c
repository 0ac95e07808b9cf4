/*
 * reconcile.c: fluxgate-reconcile's command line.  Resolves the settings
 * (flags first, then FLUXGATE_* environment variables, then defaults, as
 * fluxgate-worker does), installs the signal handlers and runs one round,
 * or a round every --watch seconds until SIGTERM/SIGINT.  Bad settings end
 * here with exit status 2 and a message naming them.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fluxgate_ids.h"
#include "cli.h"
#include "log.h"
#include "reconcile.h"

volatile sig_atomic_t fg_rc_stop;

static const char *progname = "fluxgate-reconcile";

static void usage(FILE *out);
static void from_env(struct fg_rc_config *cfg);
static void add_product(struct fg_rc_config *cfg, const char *id);
static void check_redis_addr(const char *addr);
static enum fg_rc_status watch(const struct fg_rc_config *cfg);
static void on_signal(int sig);

enum {
    OPT_REDIS = 256,
    OPT_CLAIM_DEADLINE,
    OPT_IDEMPOTENCY_TTL,
    OPT_SETTLE_WAIT,
    OPT_REPAIR,
    OPT_WATCH,
    OPT_JSON,
    OPT_LOG_FORMAT
};

/* cli.h's helpers, shared with the other program, under short names */
#define bad_usage       fg_cli_bad_usage
#define parse_long      fg_cli_parse_long
#define add_kafka_prop(cfg, spec, what)                                       \
    fg_cli_add_prop((cfg)->prop_names, (cfg)->prop_values, &(cfg)->nprops,    \
                    FG_RC_MAX_PROPS, (spec), (what))

static const struct option long_options[] = {
    { "redis",           required_argument, NULL, OPT_REDIS },
    { "pg",              required_argument, NULL, 'd' },
    { "brokers",         required_argument, NULL, 'b' },
    { "topic",           required_argument, NULL, 't' },
    { "group",           required_argument, NULL, 'g' },
    { "product",         required_argument, NULL, 'p' },
    { "claim-deadline",  required_argument, NULL, OPT_CLAIM_DEADLINE },
    { "idempotency-ttl", required_argument, NULL, OPT_IDEMPOTENCY_TTL },
    { "settle-wait",     required_argument, NULL, OPT_SETTLE_WAIT },
    { "repair",          no_argument,       NULL, OPT_REPAIR },
    { "watch",           required_argument, NULL, OPT_WATCH },
    { "json",            no_argument,       NULL, OPT_JSON },
    { "log-format",      required_argument, NULL, OPT_LOG_FORMAT },
    { "verbose",         no_argument,       NULL, 'v' },
    { "help",            no_argument,       NULL, 'h' },
    { "version",         no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
};

int
main(int argc, char **argv)
{
    struct fg_rc_config  cfg = {
        .redis = "127.0.0.1:6379",
        .pg = "",
        .brokers = "localhost:9092",
        .topic = "orders",
        .group = "fluxgate-inventory",
        .claim_deadline = 30000,
        .idempotency_ttl = 60000,
        .settle_wait = 20000,
    };
    struct fg_rc_conns   conns = { NULL, NULL, NULL, NULL };
    struct sigaction     sa;
    rd_kafka_conf_t     *conf;
    enum fg_rc_status    st;
    char                 msg[600];
    int                  c;

    fg_progname = progname;
    from_env(&cfg);

    while ((c = getopt_long(argc, argv, "d:b:t:g:p:X:vhV", long_options,
                            NULL)) != -1)
    {
        switch (c) {
        case OPT_REDIS: cfg.redis = optarg; break;
        case 'd': cfg.pg = optarg; break;
        case 'b': cfg.brokers = optarg; break;
        case 't': cfg.topic = optarg; break;
        case 'g': cfg.group = optarg; break;
        case 'p': add_product(&cfg, optarg); break;
        case OPT_CLAIM_DEADLINE:
            cfg.claim_deadline = parse_long("--claim-deadline", optarg, 1000,
                                            604800000);
            break;
        case OPT_IDEMPOTENCY_TTL:
            cfg.idempotency_ttl = parse_long("--idempotency-ttl", optarg, 1,
                                             604800000);
            break;
        case OPT_SETTLE_WAIT:
            cfg.settle_wait = parse_long("--settle-wait", optarg, 0, 600000);
            break;
        case OPT_REPAIR: cfg.repair = 1; break;
        case OPT_WATCH:
            cfg.watch = parse_long("--watch", optarg, 1, 86400);
            break;
        case OPT_JSON: cfg.json = 1; break;
        case OPT_LOG_FORMAT:
            if (fg_log_set_format(optarg) != 0) {
                bad_usage("--log-format must be text or json, not \"%s\"",
                          optarg);
            }
            break;
        case 'X': add_kafka_prop(&cfg, optarg, "-X"); break;
        case 'v': fg_log_min_level = FG_LOG_DEBUG; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("%s %s\n", progname, FG_RC_VERSION); exit(0);
        default:
            /* getopt has said what was wrong */
            fprintf(stderr, "Try \"%s --help\" for more information.\n",
                    progname);
            exit(FG_RC_USAGE);
        }
    }
    if (optind < argc) {
        bad_usage("unexpected argument \"%s\"", argv[optind]);
    }
    if (*cfg.topic == '\0' || *cfg.group == '\0' || *cfg.brokers == '\0') {
        bad_usage("%s must not be empty", "--brokers, --topic and --group");
    }
    if (cfg.topic[0] == '^') {
        bad_usage("--topic must name one topic, not a pattern (%s)", cfg.topic);
    }
    check_redis_addr(cfg.redis);
    /* every -X property, checked by librdkafka now rather than mid-round */
    conf = fg_rc_kafka_conf(&cfg, msg, sizeof(msg));
    if (conf == NULL) {
        bad_usage("%s", msg);
    }
    rd_kafka_conf_destroy(conf);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* the report is read by people and pipes alike: whole lines */
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (cfg.watch > 0) {
        st = watch(&cfg);
    } else {
        st = fg_rc_round(&cfg, &conns, NULL);
        fg_rc_close(&conns);
    }
    free(cfg.products);
    return st;
}

/* --watch: rounds until a signal; a failed round is retried, not fatal */
static enum fg_rc_status
watch(const struct fg_rc_config *cfg)
{
    struct fg_rc_conns  conns = { NULL, NULL, NULL, NULL };
    struct fg_rc_memory memory;

    memset(&memory, 0, sizeof(memory));
    fg_info("watching: a round every %ld s%s, claims overdue %ld ms after"
            " their reservation, topic %s, group %s", cfg->watch,
            cfg->repair ? " settling overdue claims" : " (report only)",
            cfg->claim_deadline, cfg->topic, cfg->group);
    while (!fg_rc_stop) {
        fg_rc_round(cfg, &conns, &memory);
        fg_sleep_ms(cfg->watch * 1000, &fg_rc_stop);
    }
    fg_rc_close(&conns);
    fg_rc_forget(&memory);
    fg_info("stop requested: stopped (exit status 0)");
    return FG_RC_BALANCED;
}

static void
on_signal(int sig)
{
    (void) sig;
    fg_rc_stop = 1;
}

static void
usage(FILE *out)
{
    fprintf(out,
"%s checks Flux-Gate's books per product (Redis stock,\n"
"pending claims, PostgreSQL's recorded orders, the generation's stock)\n"
"and, with --repair, settles the claims whose Kafka outcome stayed\n"
"unknown past the claim deadline.\n"
"\n"
"Usage:\n"
"  %s [OPTION]...\n"
"\n"
"Options (environment fallback in brackets):\n"
"      --redis=ADDR       Redis as HOST:PORT or unix:/PATH [FLUXGATE_REDIS]\n"
"                         (default 127.0.0.1:6379)\n"
"  -d, --pg=CONNINFO      libpq connection string or URI [FLUXGATE_PG]\n"
"                         (default: libpq's PG* environment variables)\n"
"  -b, --brokers=LIST     Kafka bootstrap servers [FLUXGATE_BROKERS]\n"
"                         (default localhost:9092)\n"
"  -t, --topic=NAME       the order topic [FLUXGATE_TOPIC] (default orders)\n"
"  -g, --group=ID         fluxgate-worker's consumer group, read, never\n"
"                         joined [FLUXGATE_GROUP]\n"
"                         (default fluxgate-inventory)\n"
"  -p, --product=ID       check only this product; repeatable (default:\n"
"                         every product Redis has a generation for)\n"
"      --claim-deadline=MS  a pending claim reserved longer ago is overdue\n"
"                         and settled by --repair [FLUXGATE_CLAIM_DEADLINE]\n"
"                         (default 30000; keep it above the producer's\n"
"                         message.timeout.ms plus the module's grace)\n"
"      --idempotency-ttl=MS  how long a key settled as done replays 200\n"
"                         [FLUXGATE_IDEMPOTENCY_TTL] (default 60000)\n"
"      --settle-wait=MS   how long --repair waits for the worker to commit\n"
"                         the topic up to its snapshot [FLUXGATE_SETTLE_WAIT]\n"
"                         (default 20000)\n"
"      --repair           settle overdue claims once the worker has\n"
"                         committed past a marker written into each\n"
"                         partition (acks=all): recorded in PostgreSQL ->\n"
"                         the key replays 200 (409 rejected for an order\n"
"                         recorded rejected); not recorded -> released\n"
"      --watch=SECONDS    a round every SECONDS until SIGTERM/SIGINT; prints\n"
"                         only products not balanced or with claims settled\n"
"      --json             one JSON object per product and line\n"
"  -X NAME=VALUE          set a librdkafka property; repeatable\n"
"                         [FLUXGATE_KAFKA_OPTIONS: NAME=VALUE ... separated\n"
"                         by white space]\n"
"      --log-format=FMT   log lines on stderr as text (default) or json,\n"
"                         one object per line [FLUXGATE_LOG_FORMAT]\n"
"  -v, --verbose          log debug lines too\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n"
"\n"
"drift = stock set - (Redis stock + pending units + recorded units), for\n"
"the current generation; pending units are those of claims of that\n"
"generation not recorded yet.\n"
"Exit status: 0 books balanced (or the difference is in flight: messages\n"
"the worker has not consumed yet), 1 drift it cannot explain or an unknown\n"
"--product, 2 bad usage, 3 Redis, PostgreSQL or Kafka could not be reached.\n",
            progname, progname);
}

static void
from_env(struct fg_rc_config *cfg)
{
    const char *v;
    char       *copy, *tok, *save;

    if ((v = getenv("FLUXGATE_REDIS")) != NULL && *v) cfg->redis = v;
    if ((v = getenv("FLUXGATE_LOG_FORMAT")) != NULL && *v
        && fg_log_set_format(v) != 0)
    {
        bad_usage("FLUXGATE_LOG_FORMAT must be text or json, not \"%s\"", v);
    }
    if ((v = getenv("FLUXGATE_PG")) != NULL) cfg->pg = v;
    if ((v = getenv("FLUXGATE_BROKERS")) != NULL && *v) cfg->brokers = v;
    if ((v = getenv("FLUXGATE_TOPIC")) != NULL && *v) cfg->topic = v;
    if ((v = getenv("FLUXGATE_GROUP")) != NULL && *v) cfg->group = v;
    if ((v = getenv("FLUXGATE_CLAIM_DEADLINE")) != NULL && *v) {
        cfg->claim_deadline = parse_long("FLUXGATE_CLAIM_DEADLINE", v, 1000,
                                         604800000);
    }
    if ((v = getenv("FLUXGATE_IDEMPOTENCY_TTL")) != NULL && *v) {
        cfg->idempotency_ttl = parse_long("FLUXGATE_IDEMPOTENCY_TTL", v, 1,
                                          604800000);
    }
    if ((v = getenv("FLUXGATE_SETTLE_WAIT")) != NULL && *v) {
        cfg->settle_wait = parse_long("FLUXGATE_SETTLE_WAIT", v, 0, 600000);
    }

    if ((v = getenv("FLUXGATE_KAFKA_OPTIONS")) != NULL && *v) {
        copy = strdup(v);     /* lives as long as the process */
        if (copy == NULL) {
            bad_usage("%s", "out of memory");
        }
        for (tok = strtok_r(copy, " \t\n", &save); tok != NULL;
             tok = strtok_r(NULL, " \t\n", &save))
        {
            add_kafka_prop(cfg, tok, "FLUXGATE_KAFKA_OPTIONS");
        }
    }
}

/* the module's rule for a productId (fluxgate_ids.h) */
static void
add_product(struct fg_rc_config *cfg, const char *id)
{
    if (!fg_id_valid(id, strlen(id))) {
        bad_usage("--product wants 1 to 64 of A-Z a-z 0-9 . _ -, not \"%s\"",
                  id);
    }
    cfg->products = realloc(cfg->products,
                            (cfg->nproducts + 1) * sizeof(*cfg->products));
    if (cfg->products == NULL) {
        bad_usage("%s", "out of memory");
    }
    cfg->products[cfg->nproducts++] = id;
}

static void
check_redis_addr(const char *addr)
{
    const char *colon;
    char       *end;
    long        port;

    if (strncmp(addr, "unix:", 5) == 0) {
        if (addr[5] != '/') {
            bad_usage("--redis wants unix:/absolute/path, not \"%s\"", addr);
        }
        return;
    }
    colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr) {
        bad_usage("--redis wants HOST:PORT or unix:/PATH, not \"%s\"", addr);
    }
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < 1
        || port > 65535)
    {
        bad_usage("--redis wants a port from 1 to 65535 after the host,"
                  " not \"%s\"", addr);
    }
}
