# fluxgate_metrics: Prometheus text exposition of the whole nginx (every
# worker process counts into one shared zone).  Orders of known outcomes
# move their counters by exactly that much, under 1 and 2 workers; the
# histograms count the orders that reached Redis and Kafka; the counts
# survive `nginx -s reload`; promtool accepts the exposition; per-product
# counts only with fluxgate_metrics_products, and only that many products.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Time::HiRes qw(time sleep);
use POSIX ();


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    log_format times '$http_x_idempotency_key $status $fluxgate_outcome $fluxgate_redis_time $fluxgate_kafka_time $fluxgate_gate_time';
EOF

our $CONFIG = <<'EOF';
    access_log $TEST_NGINX_SERVROOT/logs/times.log times;

    location = /metrics {
        fluxgate_metrics;
    }
    location = /order {
        fluxgate_order;
    }
    location = /cached {
        fluxgate_sold_out_cache 10s;
        fluxgate_order;
    }
    location = /limited {
        fluxgate_per_user_limit 1;
        fluxgate_order;
    }
    location = /slow {
        fluxgate_threshold 1;
        fluxgate_order;
    }
    location = /init {
        fluxgate_stock_admin;
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t196');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

our @OUTCOMES = qw(accepted duplicate in_progress redirected sold_out
                   limit_reached invalid error unknown_product);

sub url { "http://127.0.0.1:" . server_port() . $_[0] }

sub scrape { metrics_scrape(url('/metrics')) }

sub order {
    my ($path, $product, $key, $user) = @_;
    $user //= 'u1';
    return http_post(url($path), qq({"productId":"$product","userId":"$user"}),
                     { 'X-Idempotency-Key' => $key })->{status};
}

# how much each sample moved between two scrapes
sub moved {
    my ($before, $after, $key) = @_;
    return ($after->{$key} // 0) - ($before->{$key} // 0);
}

sub orders_total { qq(fluxgate_orders_total{outcome="$_[0]"}) }

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: the exposition: every metric with HELP and TYPE, every outcome, promtool accepts it
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
--- check
my $text = $main::responses->[0]{body};
for my $name (qw(fluxgate_orders_total fluxgate_stock_updates_total
                 fluxgate_sold_out_flag_hits_total fluxgate_releases_total
                 fluxgate_claims_settled_total fluxgate_redis_duration_seconds
                 fluxgate_kafka_delivery_duration_seconds fluxgate_in_flight
                 fluxgate_kafka_queue_messages fluxgate_redis_up
                 fluxgate_kafka_up)) {
    like($text, qr/^# HELP \Q$name\E \S/m, "$main::name - HELP $name");
    like($text, qr/^# TYPE \Q$name\E (counter|gauge|histogram)$/m,
         "$main::name - TYPE $name");
}
like($text, qr/^\Q${\main::orders_total($_)}\E \d+$/m,
     "$main::name - outcome $_") for @main::OUTCOMES;
unlike($text, qr/fluxgate_product_orders_total/,
       "$main::name - no per-product series unless asked for");
my ($ok, $out) = promtool_check($text);
SKIP: {
    skip_missing('promtool is not installed (scripts/setup.sh: prometheus)', 1)
        unless defined $ok;
    ok($ok, "$main::name - promtool check metrics") or diag($out);
}
# the gauges of a healthy gate, once the connections are made
ok(wait_until(5, sub { my $m = main::scrape();
                       $m->{fluxgate_redis_up} == 1 && $m->{fluxgate_kafka_up} == 1 }),
   "$main::name - redis and kafka up");



=== TEST 2: orders of known outcomes move their counters by exactly that much
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
my ($p1, $p2, $p3, $p4) = map { uniq("p$_") } 1 .. 4;
set_stock($p1, 2);
set_stock($p2, 10);
set_stock($p3, 10);
set_stock($p4, 0);
my $before = main::scrape();
my $k = uniq('k');
my @got = (
    main::order('/order', $p1, "$k-1"),            # accepted
    main::order('/order', $p1, "$k-2"),            # accepted
    main::order('/order', $p1, "$k-3"),            # sold_out (Redis)
    main::order('/order', $p1, "$k-1"),            # duplicate
    main::order('/order', uniq('nope'), "$k-4"),   # unknown_product
    main::order('/limited', $p2, "$k-5", 'u9'),    # accepted
    main::order('/limited', $p2, "$k-6", 'u9'),    # limit_reached
    main::order('/slow', $p3, "$k-7"),             # accepted
    main::order('/slow', $p3, "$k-8"),             # redirected
    main::order('/cached', $p4, "$k-9"),           # sold_out (Redis), flagged
    main::order('/cached', $p4, "$k-10"),          # sold_out (flag)
    main::order('/cached', $p4, "$k-11"),          # sold_out (flag)
    http_post(main::url('/order'), '{"productId":"x"}',
              { 'X-Idempotency-Key' => "$k-12" })->{status},  # invalid
    http_get(main::url('/order'))->{status},       # invalid (405)
    http_post(main::url('/init'), qq({"productId":"$p4","quantity":0}))->{status},
    http_post(main::url('/init'), '{"productId":"x"}')->{status},
);
is("@got", "200 200 409 200 404 200 409 200 302 409 409 409 400 405 200 400",
   "$main::name - the statuses expected");
# done.lua ends each accepted order's claim just after its 200
ok(wait_until(5, sub { main::moved($before, main::scrape(),
                       'fluxgate_claims_settled_total{by="done"}') >= 4 }),
   "$main::name - done.lua ran");
my $after = main::scrape();
my %want = (accepted => 4, duplicate => 1, in_progress => 0, redirected => 1,
            sold_out => 4, limit_reached => 1, invalid => 2, error => 0,
            unknown_product => 1);
for my $o (@main::OUTCOMES) {
    is(main::moved($before, $after, main::orders_total($o)), $want{$o},
       "$main::name - $o moved by $want{$o}");
}
is(main::moved($before, $after, 'fluxgate_stock_updates_total{outcome="accepted"}'), 1,
   "$main::name - 1 stock update accepted");
is(main::moved($before, $after, 'fluxgate_stock_updates_total{outcome="invalid"}'), 1,
   "$main::name - 1 stock update invalid");
is(main::moved($before, $after, 'fluxgate_sold_out_flag_hits_total'), 2,
   "$main::name - 2 sold-out flag hits");
is(main::moved($before, $after, 'fluxgate_claims_settled_total{by="done"}'), 4,
   "$main::name - 4 claims settled by done.lua");
is(main::moved($before, $after, 'fluxgate_releases_total{result="stock_returned"}'), 0,
   "$main::name - nothing released");
# every order but the 2 invalid and the 2 flagged went to Redis; the 4
# accepted to Kafka
is(main::moved($before, $after, 'fluxgate_redis_duration_seconds_count'), 10,
   "$main::name - 10 order.lua round trips");
is(main::moved($before, $after, 'fluxgate_redis_duration_seconds_bucket{le="+Inf"}'), 10,
   "$main::name - +Inf bucket = count");
is(main::moved($before, $after, 'fluxgate_kafka_delivery_duration_seconds_count'), 4,
   "$main::name - 4 deliveries");
ok(main::moved($before, $after, 'fluxgate_kafka_delivery_duration_seconds_sum') > 0,
   "$main::name - delivery time summed");
# buckets are cumulative
my @b = $after->{text} =~ /^fluxgate_redis_duration_seconds_bucket\{le="[^"]+"\} (\d+)$/mg;
is(scalar @b, 14, "$main::name - 14 buckets");
is("@b", join(' ', sort { $a <=> $b } @b), "$main::name - buckets never decrease");
is($after->{fluxgate_in_flight}, 0, "$main::name - nothing in flight");



=== TEST 3: the counts survive nginx -s reload
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 0);
my $k = uniq('k');
main::order('/order', $p, "$k-$_") for 1 .. 3;
my $before = main::scrape();
ok($before->{main::orders_total('sold_out')} >= 3, "$main::name - counted");
ok(reload_nginx(), "$main::name - reloaded");
my $after = main::scrape();
for my $key (main::orders_total('sold_out'), main::orders_total('accepted'),
             'fluxgate_redis_duration_seconds_count',
             'fluxgate_kafka_delivery_duration_seconds_count') {
    is($after->{$key}, $before->{$key}, "$main::name - $key kept");
}
main::order('/order', $p, "$k-4");
is(main::moved($before, main::scrape(), main::orders_total('sold_out')), 1,
   "$main::name - and counting on");



=== TEST 4: $fluxgate_redis_time, $fluxgate_kafka_time and $fluxgate_gate_time
--- http_config eval: $::HTTP
--- config eval: $::CONFIG . "    location = /patient { fluxgate_redis_timeout 5s; fluxgate_order; }\n    location = /hasty { fluxgate_redis_timeout 300ms; fluxgate_order; }\n"
--- request
GET /metrics
--- error_code: 200
--- check
my $log = main::servroot() . '/logs/times.log';
truncate $log, 0;
my ($p, $q) = (uniq('p'), uniq('q'));
set_stock($p, 5);
set_stock($q, 0);
my $k = uniq('k');
main::order('/order', $p, "$k-1");
main::order('/cached', $q, "$k-2");
main::order('/cached', $q, "$k-3");
http_post(main::url('/order'), '{}', { 'X-Idempotency-Key' => "$k-4" });
# nginx writes a request's access log line as it finishes the request;
# two worker processes may write theirs in either order: by key
my %line;
my $read = sub {
    my ($n) = @_;
    wait_until(10, sub {
        %line = map { chomp; my ($key, $rest) = split / /, $_, 2; ($key => $rest) }
                do { open my $fh, '<', $log or die $!; <$fh> };
        keys %line >= $n });
};
$read->(4);
like($line{"$k-1"} // '', qr/^200 accepted \d+\.\d{3} \d+\.\d{3} \d+\.\d{6}$/,
     "$main::name - accepted: both times, and the gate's own to the microsecond");
like($line{"$k-2"} // '', qr/^409 sold_out \d+\.\d{3} - \d+\.\d{6}$/,
     "$main::name - sold out by Redis: its time only");
like($line{"$k-3"} // '', qr/^409 sold_out - - \d+\.\d{6}$/, "$main::name - sold out by the flag: the gate's time only");
like($line{"$k-4"} // '', qr/^400 invalid - - \d+\.\d{6}$/, "$main::name - invalid: the gate's time only");
# Redis held 0.5 s under an order: its round trip holds that, the gate's
# own time does not (the hold is the fault injected, not a wait for it)
truncate $log, 0;
my $redis = svc_pid('redis') or die 'no redis pid';
kill 'STOP', $redis;
my $pid = fork // die "fork: $!";
if (!$pid) {
    sleep 0.5;
    kill 'CONT', $redis;
    POSIX::_exit(0);
}
my $status = main::order('/patient', $p, "$k-5");
waitpid $pid, 0;
kill 'CONT', $redis;
is($status, 200, "$main::name - the order waited for Redis and was accepted");
$read->(1);
my (undef, undef, $rt, $kt, $gt) = split ' ', $line{"$k-5"} // '';
cmp_ok($rt // 0, '>=', 0.3, "$main::name - Redis's round trip holds the hold ($rt s)");
cmp_ok($gt // 9, '<', ($rt // 0) - 0.2, "$main::name - the gate's own time does not ($gt s)");
# Redis held past a 300 ms deadline: the 503's wait is not the gate's
truncate $log, 0;
kill 'STOP', $redis;
$pid = fork // die "fork: $!";
if (!$pid) {
    sleep 0.6;
    kill 'CONT', $redis;
    POSIX::_exit(0);
}
$status = main::order('/hasty', $p, "$k-6");
waitpid $pid, 0;
kill 'CONT', $redis;
is($status, 503, "$main::name - Redis past the deadline: 503");
$read->(1);
my ($code, $outcome, $rt2, $kt2, $gt2) = split ' ', $line{"$k-6"} // '';
is("$code $outcome $rt2 $kt2", '503 error - -', "$main::name - no round trip ended: no Redis or Kafka time");
cmp_ok($gt2 // 9, '<', 0.2, "$main::name - the gate's own time leaves out the 300 ms waited ($gt2 s)");



=== TEST 5: fluxgate_metrics answers GET and HEAD only
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
POST /metrics
x
--- error_code: 405



=== TEST 6: per product only when asked, for at most that many products
--- http_config eval: $::HTTP . "    fluxgate_metrics_products 2;\n"
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
my @p = map { uniq("p$_") } 1 .. 3;
set_stock($_, 0) for @p;
my $k = uniq('k');
my $before = main::scrape();
main::order('/order', $p[0], "$k-1");
main::order('/order', $p[1], "$k-2");
main::order('/order', $p[1], "$k-3");
main::order('/order', $p[2], "$k-4");
main::order('/order', $p[2], "$k-5");
main::order('/order', $p[2], "$k-6");
my $after = main::scrape();
# nginx started anew for this configuration: the first two products
# ever counted are the first two here
for my $i (0, 1) {
    is($after->{qq(fluxgate_product_orders_total{product="$p[$i]",outcome="sold_out"})},
       $i + 1, "$main::name - $p[$i] counted " . ($i + 1));
}
unlike($after->{text}, qr/\Q$p[2]\E/, "$main::name - the third not labelled");
is(main::moved($before, $after, 'fluxgate_product_overflow_total'), 3,
   "$main::name - its 3 orders counted as overflow");
is(main::moved($before, $after, main::orders_total('sold_out')), 6,
   "$main::name - all 6 in the total");
my ($ok, $out) = promtool_check($after->{text});
SKIP: {
    skip_missing('promtool is not installed (scripts/setup.sh: prometheus)', 1)
        unless defined $ok;
    ok($ok, "$main::name - promtool check metrics") or diag($out);
}



=== TEST 7: fluxgate_metrics_products takes a count up to 10000
--- http_config
    fluxgate_metrics_products lots;
--- config
    location = /metrics { fluxgate_metrics; }
--- must_die
--- error_log
invalid value "lots" in "fluxgate_metrics_products" directive



=== TEST 8: fluxgate_metrics alone needs neither Redis nor Kafka
--- config
    location = /metrics { fluxgate_metrics; }
--- request
GET /metrics
--- error_code: 200
--- response_body_like: ^# HELP fluxgate_orders_total .*fluxgate_redis_up 0\n
--- no_error_log
fluxgate: redis



=== TEST 9: an order reserved after its deadline is released, and counted so
--- http_config eval: $::HTTP
--- config eval: $::CONFIG . "    location = /quick { fluxgate_redis_timeout 100ms; fluxgate_order; }\n"
--- request
GET /metrics
--- error_code: 200
--- check
my $p = uniq('p');
set_stock($p, 5);
my $before = main::scrape();
# Redis frozen past the deadline: the client gets 503, order.lua runs when
# Redis goes on, and its late reservation is given back
my $redis = svc_pid('redis') or die 'no redis pid';
# Redis is held for half a second from the request's start: the late
# round trip is at least that long less the gate's few ms before it sent
# order.lua (the deadline counts from the request, not from the send)
my $t0 = time;
kill 'STOP', $redis;
my $status = main::order('/quick', $p, uniq('k'));
my $hold = $t0 + 0.5 - time;
sleep $hold if $hold > 0;
kill 'CONT', $redis;
is($status, 503, "$main::name - 503 at the deadline");
my $released = 'fluxgate_releases_total{result="stock_returned"}';
ok(wait_until(10, sub { main::moved($before, main::scrape(), $released) >= 1 }),
   "$main::name - released");
my $after = main::scrape();
is(main::moved($before, $after, $released), 1, "$main::name - once");
is(main::moved($before, $after, 'fluxgate_claims_settled_total{by="release"}'), 1,
   "$main::name - its claim ended by release.lua");
is(main::moved($before, $after, main::orders_total('error')), 1,
   "$main::name - the 503 counted as error");
is(main::moved($before, $after, 'fluxgate_redis_duration_seconds_count'), 1,
   "$main::name - the late round trip observed");
cmp_ok($after->{'fluxgate_redis_duration_seconds_bucket{le="0.25"}'}
       - $before->{'fluxgate_redis_duration_seconds_bucket{le="0.25"}'}, '==', 0,
       "$main::name - counted whole: in a bucket above 0.25 s (Redis held 0.5 s)");
is(redis('GET', "fg:{$p}:stock"), 5, "$main::name - the stock is whole again");
