#!/usr/bin/env bash
# Drain rate of fluxgate-worker: how fast a pre-filled topic of orders gets
# into PostgreSQL, batched (the default) against one transaction per message
# (--per-message).
#
#   bench/drain.sh [-n ORDERS] [-p PRODUCTS] [-t SECONDS] [-b BATCH]
#                  [-w WORKERS] [-B] [STACK_DIR]
#
#   -n  orders per run (default 200000)
#   -p  products the orders are spread over (default 100)
#   -t  time limit of the per-message run; the rate is taken from the rows
#       written by then and the total extrapolated (default 60)
#   -b  --batch-size of the batched run (default: the worker's)
#   -w  worker processes of the batched run, one consumer group (default 1)
#   -B  the batched run only
#   STACK_DIR  a running stack (`make up` or a test stack; default .run)
#
# Each run gets a fresh topic (4 partitions), consumer group and products:
# first one stock_set per product (stock large enough for every order), then
# the orders, produced with kcat before the worker starts.  The worker runs
# outside supervisord beside the stack's own; the clock starts when it is
# started and stops when the last row is visible (start-up and the group
# join are included; the "steady" rate leaves them out).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=200000 PRODUCTS=100 LIMIT=60 BATCH= WORKERS=1 ONLY_BATCHED=0
while getopts n:p:t:b:w:B opt; do
    case $opt in
        n) N=$OPTARG ;;
        p) PRODUCTS=$OPTARG ;;
        t) LIMIT=$OPTARG ;;
        b) BATCH=$OPTARG ;;
        w) WORKERS=$OPTARG ;;
        B) ONLY_BATCHED=1 ;;
        *) sed -n '2,23s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
DIR=$(cd "${1:-$ROOT/.run}" && pwd)
[ -f "$DIR/env" ] || { echo "drain: no stack in $DIR (make up first)" >&2; exit 1; }
# shellcheck disable=SC1091
. "$DIR/env"
PG="host=$FG_RUN_DIR/pg/sock port=$PGPORT dbname=fluxgate user=fluxgate"
TMP=$ROOT/bench/tmp
mkdir -p "$TMP"
RUN=$(date +%s)-$$

q() { psql -X -Atq -d "$PG" -c "$1"; }

topic_create() {
    java -cp "$FG_KAFKA_LIBS/*" \
        -Dlog4j.configuration=file:"$FG_RUN_DIR/kafka/tools-log4j.properties" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
        --create --topic "$1" --partitions 4 --replication-factor 1 >/dev/null
}

# key|value lines: stock_sets first, then the orders spread over products
generate() {
    local tag=$1
    perl -e '
        my ($n, $np, $tag) = @ARGV;
        my $stock = int($n / $np) + 1;
        my $now = int(time * 1000);
        print "$tag-p$_|{\"type\":\"stock_set\",\"productId\":\"$tag-p$_\",\"stock\":$stock,\"generation\":1,\"at\":$now}\n"
            for 0 .. $np - 1;
        my $r = sprintf "%08x", int(rand(2**32));
        for my $i (0 .. $n - 1) {
            my $p = "$tag-p" . ($i % $np);
            printf "%s|{\"type\":\"order\",\"orderId\":\"%s-%04x-7000-8000-%012x\",\"productId\":\"%s\",\"userId\":\"u%d\",\"quantity\":1,\"idempotencyKey\":\"k%d\",\"acceptedAt\":%d,\"generation\":1,\"generationStock\":%d}\n",
                $p, $r, $i >> 16 & 0xffff, $i, $p, $i, $i, $now, $stock;
        }' "$N" "$PRODUCTS" "$tag"
}

# drain TAG LIMIT PROCS [worker flags]: prints "rows seconds steady_seconds"
drain() {
    local tag=$1 limit=$2 procs=$3 i
    shift 3
    local topic=bench-$tag group=bench-$tag pid pids=() t0 t1 tfirst=0 rows=0 now
    local rss rss_first=0 rss_max=0 rss_last=0
    topic_create "$topic"
    generate "$tag" > "$TMP/$tag.msgs"
    kcat -P -b "$KAFKA_BOOTSTRAP" -t "$topic" -K '|' -X linger.ms=50 \
        -X batch.num.messages=10000 -l "$TMP/$tag.msgs"
    rm -f "$TMP/$tag.msgs"

    t0=$(date +%s.%N)
    for ((i = 1; i <= procs; i++)); do
        "${FG_BENCH_WORKER:-$ROOT/build/fluxgate-worker}" --brokers "$KAFKA_BOOTSTRAP" --topic "$topic" \
            --group "$group" --pg "$PG" "$@" 2>> "$TMP/$tag.log" &
        pids+=($!)
    done
    pid=${pids[0]}
    while :; do
        rows=$(q "select count(*) from orders where kafka_topic = '$topic'")
        now=$(date +%s.%N)
        if [ "$rows" -gt 0 ] && [ "$tfirst" = 0 ]; then tfirst=$now; fi
        # the worker's memory while it drains: first batch, peak, last
        rss=$(ps -o rss= -p $pid 2>/dev/null | tr -d ' ')
        if [ -n "$rss" ] && [ "$rows" -gt 0 ]; then
            [ "$rss_first" = 0 ] && rss_first=$rss
            [ "$rss" -gt "$rss_max" ] && rss_max=$rss
            rss_last=$rss
        fi
        [ "$rows" -ge "$N" ] && break
        if [ -n "$limit" ] && perl -e "exit !($now - $t0 >= $limit)"; then break; fi
        for i in "${pids[@]}"; do
            kill -0 "$i" 2>/dev/null || { echo "drain: worker died, see $TMP/$tag.log" >&2; exit 1; }
        done
        sleep 0.1
    done
    t1=$(date +%s.%N)
    echo "$rss_first $rss_max $rss_last" > "$TMP/$tag.rss"
    kill -TERM "${pids[@]}"
    wait "${pids[@]}" || true
    [ "$tfirst" = 0 ] && tfirst=$t1
    perl -e 'printf "%d %.3f %.3f\n", $ARGV[0], $ARGV[2] - $ARGV[1], $ARGV[2] - $ARGV[3]' \
        "$rows" "$t0" "$t1" "$tfirst"
}

echo "drain: $N orders over $PRODUCTS products per run, stack $DIR"

read -r b_rows b_secs b_steady < <(drain "b$RUN" "" "$WORKERS" ${BATCH:+--batch-size "$BATCH"})
echo "drain: batched:     $b_rows orders in ${b_secs}s ($WORKERS worker processes)"
read -r r_first r_max r_last < "$TMP/b$RUN.rss"
rm -f "$TMP/b$RUN.rss" "$TMP/m$RUN.rss"
echo "worker rss: ${r_first} kB at the first rows, ${r_max} kB peak, ${r_last} kB at the end of the drain"
if [ "$ONLY_BATCHED" = 1 ]; then
    perl -e 'printf "batched:      %8.0f orders/s  (%d orders in %.2f s; steady %.0f orders/s after the first row; %d worker processes)\n",
        $ARGV[0] / $ARGV[1], $ARGV[0], $ARGV[1], $ARGV[2] > 0 ? $ARGV[0] / $ARGV[2] : 0, $ARGV[3]' \
        "$b_rows" "$b_secs" "$b_steady" "$WORKERS"
    exit 0
fi
read -r p_rows p_secs p_steady < <(drain "m$RUN" "$LIMIT" 1 --per-message)
echo "drain: per-message: $p_rows orders in ${p_secs}s"

perl -e '
    my ($n, $br, $bs, $bst, $pr, $ps, $pst) = @ARGV;
    my $brate = $br / $bs;
    my $prate = $pr / $ps;
    printf "batched:      %8.0f orders/s  (%d orders in %.2f s; steady %.0f orders/s after the first row)\n",
        $brate, $br, $bs, $bst > 0 ? $br / $bst : 0;
    printf "per-message:  %8.0f orders/s  (%d orders in %.2f s%s)\n",
        $prate, $pr, $ps, $pr < $n ? sprintf("; time limit hit, all %d would take ~%.0f s", $n, $n / $prate) : "";
    printf "ratio:        %8.1fx\n", $brate / $prate;
' "$N" "$b_rows" "$b_secs" "$b_steady" "$p_rows" "$p_secs" "$p_steady"
echo "drain: worker logs in $TMP/b$RUN.log and $TMP/m$RUN.log"
