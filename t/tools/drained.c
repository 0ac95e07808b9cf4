/*
 * fg-drained: the suite's drain barrier.  "Everything produced to the
 * topic so far is in PostgreSQL" is a fact Kafka can state: fluxgate-worker
 * commits a partition's offset only after the PostgreSQL transaction that
 * holds those messages committed, so once the worker's group has committed
 * every partition up to the high watermark read at the start, every message
 * written before that moment is recorded (or dead-lettered).  Waiting on
 * that replaces sleeping "long enough" for the worker, however fast or slow
 * the machine is.
 *
 *   fg-drained -b 127.0.0.1:9092 -t orders [-g fluxgate-inventory] [-w 60]
 *
 * Exit status: 0 drained (one line with each partition's offsets), 1 not
 * drained within -w seconds (the partition behind, and how far), 2 bad
 * usage, 3 Kafka did not answer.
 *
 * The handle is a consumer configured with the group only so that
 * rd_kafka_committed() can read the group's offsets: it never subscribes,
 * assigns or commits, so it never joins the group (fluxgate-reconcile reads
 * them the same way).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define KAFKA_TIMEOUT_MS  5000
#define POLL_MS           100

static long long now_ms(void);
static void usage(FILE *out, const char *prog);
static rd_kafka_t *open_handle(const char *brokers, const char *group);
static int watermarks(rd_kafka_t *rk, const char *topic, int64_t **high,
    int64_t **low, int *n);
static int behind(rd_kafka_t *rk, const char *topic, const int64_t *high,
    const int64_t *low, int n, char *why, size_t size);

int
main(int argc, char **argv)
{
    const char  *brokers = "localhost:9092", *topic = NULL,
                *group = "fluxgate-inventory";
    long         wait_s = 60;
    long long    deadline;
    int64_t     *high = NULL, *low = NULL;
    int          c, n = 0, rc, i;
    char         why[512] = "";
    rd_kafka_t  *rk;
    struct timespec  pause = { 0, POLL_MS * 1000000L };

    while ((c = getopt(argc, argv, "b:t:g:w:h")) != -1) {
        switch (c) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case 'g': group = optarg; break;
        case 'w':
            errno = 0;
            wait_s = strtol(optarg, NULL, 10);
            if (errno != 0 || wait_s <= 0) {
                fprintf(stderr, "fg-drained: -w %s: not a number of seconds"
                        "\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return 2;
        }
    }
    if (topic == NULL || optind != argc) {
        usage(stderr, argv[0]);
        return 2;
    }

    deadline = now_ms() + wait_s * 1000;
    rk = open_handle(brokers, group);
    if (rk == NULL) {
        return 3;
    }
    if (watermarks(rk, topic, &high, &low, &n) != 0) {
        rd_kafka_destroy(rk);
        return 3;
    }

    /* a coordinator still loading answers with an error: ask again */
    for ( ;; ) {
        rc = behind(rk, topic, high, low, n, why, sizeof(why));
        if (rc == 0 || now_ms() >= deadline) {
            break;
        }
        nanosleep(&pause, NULL);
    }

    if (rc == 0) {
        printf("drained: group %s committed %s up to", group, topic);
        for (i = 0; i < n; i++) {
            printf(" [%d]@%lld", i, (long long) high[i]);
        }
        printf("\n");
    } else if (rc > 0) {
        fprintf(stderr, "fg-drained: not drained after %ld s: %s\n", wait_s,
                why);
    } else {
        fprintf(stderr, "fg-drained: %s\n", why);
    }
    free(high);
    free(low);
    rd_kafka_destroy(rk);
    return rc == 0 ? 0 : rc > 0 ? 1 : 3;
}

static long long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
usage(FILE *out, const char *prog)
{
    fprintf(out,
"usage: %s -b BROKERS -t TOPIC [-g GROUP] [-w SECONDS]\n"
"Waits until GROUP (default fluxgate-inventory) has committed every\n"
"partition of TOPIC up to the end offsets it had when this started\n"
"(default wait 60 s).  Exit status: 0 drained, 1 not in time, 2 usage,\n"
"3 Kafka did not answer.\n", prog);
}

static rd_kafka_t *
open_handle(const char *brokers, const char *group)
{
    char              err[512];
    rd_kafka_t       *rk;
    rd_kafka_conf_t  *conf = rd_kafka_conf_new();
    const char *const set[][2] = {
        { "bootstrap.servers", brokers },
        { "group.id", group },
        { "client.id", "fg-drained" },
        { "enable.auto.commit", "false" },
        { "enable.auto.offset.store", "false" },
        { "log_level", "3" },
    };
    size_t            i;

    for (i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
        if (rd_kafka_conf_set(conf, set[i][0], set[i][1], err, sizeof(err))
            != RD_KAFKA_CONF_OK)
        {
            fprintf(stderr, "fg-drained: %s=%s: %s\n", set[i][0], set[i][1],
                    err);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "fg-drained: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* the high and low watermarks of every partition of the topic, now */
static int
watermarks(rd_kafka_t *rk, const char *topic, int64_t **high, int64_t **low,
    int *n)
{
    const rd_kafka_metadata_t  *md;
    rd_kafka_topic_t           *rkt;
    rd_kafka_resp_err_t         e;
    int                         i;

    rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rkt == NULL) {
        fprintf(stderr, "fg-drained: topic %s: %s\n", topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    e = rd_kafka_metadata(rk, 0, rkt, &md, KAFKA_TIMEOUT_MS);
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "fg-drained: metadata of %s: %s\n", topic,
                rd_kafka_err2str(e));
        return -1;
    }
    if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR
        || md->topics[0].partition_cnt == 0)
    {
        fprintf(stderr, "fg-drained: topic %s: %s\n", topic,
                md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err)
                                   : "not found");
        rd_kafka_metadata_destroy(md);
        return -1;
    }
    *n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);

    *high = calloc(*n, sizeof(**high));
    *low = calloc(*n, sizeof(**low));
    if (*high == NULL || *low == NULL) {
        fprintf(stderr, "fg-drained: out of memory\n");
        return -1;
    }
    for (i = 0; i < *n; i++) {
        e = rd_kafka_query_watermark_offsets(rk, topic, i, &(*low)[i],
                                             &(*high)[i], KAFKA_TIMEOUT_MS);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "fg-drained: watermarks of %s[%d]: %s\n", topic,
                    i, rd_kafka_err2str(e));
            return -1;
        }
    }
    return 0;
}

/*
 * 0 when the group's committed offset of every partition that holds
 * messages reaches its high watermark, 1 when one does not (why says
 * which), -1 when Kafka did not answer (why says so)
 */
static int
behind(rd_kafka_t *rk, const char *topic, const int64_t *high,
    const int64_t *low, int n, char *why, size_t size)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t              e;
    long long                        done;
    int                              i, rc = 0;

    list = rd_kafka_topic_partition_list_new(n);
    for (i = 0; i < n; i++) {
        rd_kafka_topic_partition_list_add(list, topic, i);
    }
    e = rd_kafka_committed(rk, list, KAFKA_TIMEOUT_MS);
    for (i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && i < list->cnt; i++) {
        e = list->elems[i].err;
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(why, size, "committed offsets of the group: %s",
                 rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(list);
        return -1;
    }
    for (i = 0; i < list->cnt && rc == 0; i++) {
        done = list->elems[i].offset;   /* RD_KAFKA_OFFSET_INVALID: none */
        if (high[i] > low[i] && done < high[i]) {
            snprintf(why, size, "%s[%d] committed up to %lld of %lld", topic,
                     i, done < 0 ? 0 : done, (long long) high[i]);
            rc = 1;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}
