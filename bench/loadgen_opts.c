/*
 * fg-loadgen's command line (usage() lists it, loadgen.c explains it), the
 * files it reads and writes, and the process's own settings: SIGPIPE,
 * SCHED_FIFO in open loop, enough file descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"


static void
usage(int rc)
{
    fprintf(rc ? stderr : stdout,
        "usage: fg-loadgen [-u host:port ...] [-p path] [-c conns] [-d secs]\n"
        "                  [-n total] [-R rate] [--product id]\n"
        "                  [--products N] [--users N] [--quantity N] [--same-key]\n"
        "                  [--once] [--body json] [--run id] [--log file]\n"
        "                  [--expect 200,409,...] [--log-errors]\n"
        "                  [--queue /queue/status [--track file] [--watch file]\n"
        "                  [--poll-min secs]] [--tickets-out file]\n"
        "                  [--poll-file file [--poll-from byte]]\n"
        "                  [--header 'Name: value']\n"
        "  -R rate: open loop, latency from each request's due time\n");
    exit(rc);
}

/* -u host:port: one more gate */
static void
add_target(const char *arg)
{
    char  *colon;

    if (opt.targets == MAX_TARGETS) {
        usage(2);
    }
    opt.host = strdup(arg);
    colon = strchr(opt.host, ':');
    if (colon) {
        *colon = '\0';
        opt.port = atoi(colon + 1);
    }
    opt.hosts[opt.targets] = opt.host;
    opt.ports[opt.targets++] = opt.port;
}

/* --expect 200,409: the statuses a run accepts */
static int
parse_expect(void)
{
    char  *list = strdup(opt.expect), *tok, *save = NULL;
    int    s;

    for (tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save))
    {
        s = atoi(tok);
        if (s < 100 || s >= MAX_STATUS) {
            fprintf(stderr, "fg-loadgen: --expect: bad status \"%s\"\n",
                    tok);
            free(list);
            return 2;
        }
        expected[s] = 1;
    }
    free(list);
    return 0;
}

/* the defaults that depend on other options, and the options that do not
 * go together */
static int
check_options(void)
{
    int  i;

    if (opt.targets == 0) {
        opt.hosts[0] = opt.host;
        opt.ports[0] = opt.port;
        opt.targets = 1;
    }
    for (i = 0; i < opt.targets; i++) {
        if (opt.ports[i] < 1) {
            usage(2);
        }
    }
    if (opt.conns < 1) {
        usage(2);
    }
    if (opt.queue && (opt.rate > 0 || opt.total || opt.same_key)) {
        fprintf(stderr, "fg-loadgen: --queue follows shoppers in a closed "
                "loop: not with -R, -n or --same-key\n");
        return 2;
    }
    if ((opt.watch || opt.track || opt.poll_min > 0) && !opt.queue) {
        fprintf(stderr, "fg-loadgen: --watch, --track and --poll-min "
                "follow shoppers: with --queue only\n");
        return 2;
    }
    if (opt.watch && !opt.once) {
        fprintf(stderr, "fg-loadgen: --watch follows each ticket once: "
                "with --once\n");
        return 2;
    }
    if (opt.poll_file && (opt.queue || opt.tickets_out)) {
        fprintf(stderr, "fg-loadgen: --poll-file polls, it does not "
                "shop: not with --queue or --tickets-out\n");
        return 2;
    }
    if (opt.once && !opt.total && !opt.queue) {
        opt.total = opt.conns;
    }
    return opt.expect ? parse_expect() : 0;
}

int
parse_options(int argc, char **argv)
{
    static struct option  longopts[] = {
        { "product", required_argument, NULL, 'P' },
        { "products", required_argument, NULL, 'N' },
        { "quantity", required_argument, NULL, 'q' },
        { "users", required_argument, NULL, 'U' },
        { "same-key", no_argument, NULL, 'K' },
        { "once", no_argument, NULL, 'O' },
        { "body", required_argument, NULL, 'B' },
        { "run", required_argument, NULL, 'r' },
        { "log", required_argument, NULL, 'L' },
        { "expect", required_argument, NULL, 'E' },
        { "log-errors", no_argument, NULL, 'X' },
        { "queue", required_argument, NULL, 'Q' },
        { "track", required_argument, NULL, 'T' },
        { "watch", required_argument, NULL, 'W' },
        { "poll-min", required_argument, NULL, 'M' },
        { "tickets-out", required_argument, NULL, 'o' },
        { "poll-file", required_argument, NULL, 'F' },
        { "poll-from", required_argument, NULL, 'S' },
        { "header", required_argument, NULL, 'H' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int  ch;

    while ((ch = getopt_long(argc, argv, "u:p:c:d:n:R:h", longopts, NULL))
           != -1)
    {
        switch (ch) {
        case 'u': add_target(optarg); break;
        case 'p': opt.path = optarg; break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'n': opt.total = atol(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'P': opt.product = optarg; break;
        case 'N': opt.products = atoi(optarg); break;
        case 'q': opt.quantity = atoi(optarg); break;
        case 'U': opt.users = atol(optarg); break;
        case 'K': opt.same_key = 1; break;
        case 'O': opt.once = 1; break;
        case 'B': opt.body = optarg; break;
        case 'r': opt.run = optarg; break;
        case 'L': opt.log = optarg; break;
        case 'E': opt.expect = optarg; break;
        case 'X': opt.log_errors = 1; break;
        case 'Q': opt.queue = optarg; break;
        case 'T': opt.track = optarg; break;
        case 'W': opt.watch = optarg; break;
        case 'M': opt.poll_min = atof(optarg); break;
        case 'o': opt.tickets_out = optarg; break;
        case 'F': opt.poll_file = optarg; break;
        case 'S': opt.poll_from = atol(optarg); break;
        case 'H': opt.header = optarg; break;
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    return check_options();
}

/* --poll-file or --watch: the tickets, mapped */
int
open_inputs(void)
{
    const char  *name = opt.poll_file ? opt.poll_file : opt.watch;
    struct stat  st;
    int          fd;

    if (name == NULL) {
        return 0;
    }
    fd = open(name, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        fprintf(stderr, "fg-loadgen: %s: %s\n", name,
                fd < 0 ? strerror(errno) : "empty");
        return 2;
    }
    pf_data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (pf_data == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    pf_end = pf_data + st.st_size;
    pf_next = pf_data;
    if (opt.poll_from > 0 && opt.poll_from < st.st_size) {
        /* --poll-from: the line after that byte, where a run before
         * this one stopped */
        const char  *nl = memchr(pf_data + opt.poll_from - 1, '\n',
                                 pf_end - (pf_data + opt.poll_from - 1));

        pf_next = nl && nl + 1 < pf_end ? nl + 1 : pf_data;
    }
    for (const char *q = pf_data; q < pf_end; q++) {
        pf_lines += *q == '\n';
    }
    if (pf_end[-1] != '\n') {
        pf_lines++;
    }
    if (opt.watch && opt.conns > pf_lines) {
        fprintf(stderr, "fg-loadgen: --watch: %d connections, %ld "
                "tickets in %s\n", opt.conns, pf_lines, name);
        return 2;
    }
    return 0;
}

/* --tickets-out and --log */
int
open_outputs(void)
{
    if (opt.tickets_out) {
        tickets_file = fopen(opt.tickets_out, "w");
        if (tickets_file == NULL) {
            perror(opt.tickets_out);
            return 2;
        }
        setvbuf(tickets_file, NULL, _IOFBF, 1 << 20);
    }
    if (opt.log) {
        log_file = fopen(opt.log, "w");
        if (log_file == NULL) {
            perror(opt.log);
            return 2;
        }
    }
    return 0;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC now, in us: the kernel stamps packets
 * with the first, the schedule runs on the second */
static int64_t
clock_offset_us(void)
{
    struct timespec  r, m;

    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &r);
    return ((int64_t) r.tv_sec - m.tv_sec) * 1000000
           + (r.tv_nsec - m.tv_nsec) / 1000;
}


/*
 * Receive stamps on before the run: the kernel turns packet stamping on
 * for the first socket that asks for it a moment later (a deferred static
 * key), and an answer that arrives in that moment has no stamp.  A UDP
 * socket with SO_TIMESTAMPNS, kept open for the whole run, sends itself
 * datagrams until one comes back stamped (at most 2 s; without one the
 * run goes on, and stamped= says how many answers had theirs)
 */
static void
stamps_on(void)
{
    int                 fd, one = 1;
    char                b = 0;
    uint64_t            until;
    socklen_t           len = sizeof(struct sockaddr_in);
    struct iovec        iov = { &b, 1 };
    struct msghdr       msg;
    struct cmsghdr     *cm;
    struct sockaddr_in  sa;
    union {
        char            buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr  align;
    } ctl;

    fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0
        || setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) != 0
        || bind(fd, (struct sockaddr *) &sa, len) != 0
        || getsockname(fd, (struct sockaddr *) &sa, &len) != 0)
    {
        perror("fg-loadgen: a socket to turn receive stamps on");
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    /* fd stays open: stamping stays on while one socket asks for it */
    for (until = now_us() + 2000000; now_us() < until; ) {
        if (sendto(fd, &b, 1, 0, (struct sockaddr *) &sa, len) != 1) {
            break;
        }
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        if (recvmsg(fd, &msg, 0) != 1) {
            break;
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_SOCKET
                && cm->cmsg_type == SCM_TIMESTAMPNS)
            {
                return;
            }
        }
        usleep(1000);
    }
    fprintf(stderr, "fg-loadgen: the kernel does not stamp received packets"
            " yet: answers may be timed to their reading\n");
}

/* SIGPIPE, the run's id, SCHED_FIFO in open loop, the clocks' offset,
 * enough file descriptors */
void
set_up_process(void)
{
    struct rlimit  rl;

    /* a gate killed under us, or a server that resets a connection:
     * write() to its socket fails, an error counted, not a kill */
    signal(SIGPIPE, SIG_IGN);

    snprintf(run_id, sizeof(run_id), "%s%ld", opt.run, (long) getpid());

    if (opt.rate > 0) {
        struct sched_param  sp = { .sched_priority = 10 };

        if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) {
            sched_policy = "fifo";
        } else {
            fprintf(stderr, "fg-loadgen: SCHED_FIFO refused (%s): waits of "
                    "this client for a core can make requests late\n",
                    strerror(errno));
        }
    }
    real_minus_mono = clock_offset_us();
    stamps_on();

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0
        && rl.rlim_cur < (rlim_t) opt.conns + 64)
    {
        rl.rlim_cur = opt.conns + 64;
        if (rl.rlim_max < rl.rlim_cur) {
            rl.rlim_max = rl.rlim_cur;   /* root only; fails loudly below */
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("fg-loadgen: setrlimit(RLIMIT_NOFILE)");
        }
    }
}
