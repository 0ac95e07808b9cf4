/*
 * fg-loadgen's parts (loadgen.c says what the client does and how it
 * measures): the connections and HTTP (loadgen_http.c), the waiting
 * room's shoppers (loadgen_queue.c), the options (loadgen_opts.c) and
 * the report (loadgen_report.c) share these types and the run's state.
 */
#ifndef FG_BENCH_LOADGEN_H
#define FG_BENCH_LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* SHA256_Init() and friends: the prefix of a challenge is hashed once */
#define OPENSSL_API_COMPAT 0x10100000L
#include <openssl/sha.h>

#include "series.h"

#define MAX_STATUS  600
#define BUF_SIZE    8192
#define MAX_TARGETS 16

/* --queue: where a shopper is */
enum {
    SHOPPER_NEW = 0,          /* the next request is a new shopper's order */
    SHOPPER_WAITING,          /* queued: polls when wake_at comes */
    SHOPPER_ADMITTED,         /* sends its order again with its ticket */
    SHOPPER_SOLVING,          /* challenged: looking for n */
    SHOPPER_PROVING,          /* sends its order again with its proof */
    SHOPPER_DONE              /* --once: bought, or told no */
};

#define TICKET_MAX  512
#define POLL_MAX_S  5         /* as conf/waiting-room/waiting-room.js */

/* hashes per look at the sockets, shared by every solving shopper (about
 * a millisecond's worth), and per shopper in one turn */
#define SOLVE_BUDGET  4096
#define SOLVE_SLICE   1024

/* what became of a shopper's ticket, for --track and out_of_order= */
typedef struct {
    int64_t    turn;          /* -1: unknown (a pre-queue place) */
    char       kind;
    int        status;        /* the last answer to its order */
    uint64_t   started;       /* its first request written */
    uint64_t   booked;        /* the 302 with its ticket arrived */
    uint64_t   last_wait;     /* the last request answered "waiting" was
                               * written */
    uint64_t   admitted;      /* the first "admitted" answer arrived */
    uint64_t   bought;        /* its 200 arrived */
    uint64_t   solve_us;      /* from a challenge to its proof found */
    uint64_t   hashes;
    uint32_t   challenges;
} track_t;

typedef struct {
    int        fd;
    int        busy;          /* a request is outstanding */
    int        polling;       /* the outstanding request is a status poll */
    int        shopper;       /* SHOPPER_* */
    long       user;          /* the shopper's number: userId and key */
    uint64_t   wake_at;       /* SHOPPER_WAITING: when to poll */
    int        failures;      /* polls in a row that got no status */
    char       ticket[TICKET_MAX];
    char       challenge[TICKET_MAX];
    int        bits;          /* SHOPPER_SOLVING: zero bits asked */
    char       nonce[24];     /* n, decimal: the next to try */
    int        nonce_len;
    uint64_t   solve_from;    /* when the challenge came */
    SHA256_CTX prefix;        /* "<challenge>." hashed */
    track_t    tr;
    int        target;        /* index into opt.hosts / opt.ports */
    size_t     out_len, out_off;
    char       out[2048];
    size_t     in_len;
    char       in[BUF_SIZE];
    uint64_t   sent_at;       /* when it was due (open loop) or written */
    uint64_t   written_at;    /* when its first byte was written */
    uint64_t   rx_at;         /* the kernel's receive time of the bytes
                               * read last (CLOCK_MONOTONIC us), 0: none */
} conn_t;

typedef struct {
    const char  *host;
    int          port;
    const char  *hosts[MAX_TARGETS];
    int          ports[MAX_TARGETS];
    int          targets;
    int          log_errors;
    const char  *path;
    const char  *product;
    int          products;
    long         users;
    const char  *run;
    int          conns;
    double       duration;
    long         total;
    double       rate;
    int          quantity;
    int          same_key;
    int          once;
    const char  *body;
    const char  *log;
    const char  *expect;
    const char  *queue;
    const char  *track;
    const char  *watch;
    const char  *tickets_out;
    const char  *poll_file;
    const char  *header;
    long         poll_from;
    double       poll_min;
} lg_opt_t;

/* the options (loadgen_opts.c fills them) */
extern lg_opt_t      opt;

/* the run's state, defined in loadgen.c */
extern FILE         *log_file;
extern series_t      by_status[MAX_STATUS];
extern series_t      all;             /* every answer, whatever its status */
extern char          expected[MAX_STATUS];
extern long          seq, sent, done, errors, unexpected, unsent;
extern uint64_t      t0, last_200, max_behind, last_event;
extern series_t      polls;           /* --queue: the status polls' latency */
extern series_t      lag;             /* answers' wait in the socket for us */
extern int64_t       real_minus_mono; /* us: kernel stamps -> monotonic */
extern const char   *sched_policy;
extern long          queued, admitted, queue_sold_out, queue_lost;
extern long          challenged, proofs, prequeued, requeued, shoppers_done;
extern char          run_id[64];
extern track_t      *tracks;          /* --queue: every ticket's story */
extern size_t        ntracks, tracks_cap;
extern FILE         *tickets_file;    /* --tickets-out */
extern long          tickets_written;
extern const char   *pf_data, *pf_end, *pf_next; /* --poll-file, mapped */
extern long          pf_lines;

/* loadgen_opts.c: each returns 0, or the exit code of a bad start */
int parse_options(int argc, char **argv);
int open_inputs(void);
int open_outputs(void);
void set_up_process(void);

/* loadgen_http.c */
int open_conn(conn_t *c, int ep);
int finished(void);
int may_send(uint64_t now);
void try_send(conn_t *c);
void on_readable(conn_t *c, int ep);
void next_file_ticket(const char **t, int *len);
void json_field(const char *body, size_t len, const char *name, char *out,
    size_t size);
const char *body_of(const char *resp, size_t len, size_t *blen);
const char *json_raw(const char *body, size_t len, const char *name);

/* loadgen_queue.c */
void on_order(conn_t *c, int status, size_t len, uint64_t now);
void on_poll(conn_t *c, int status, size_t len, uint64_t now);
void ticket_turn(const char *t, char *kind, int64_t *turn);
void push_track(track_t *t);
int solve_some(conn_t *conns);

/* loadgen_report.c: prints the run's lines; returns the exit code */
int report(conn_t *conns, double secs);

#endif
