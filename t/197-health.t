# fluxgate_health: 200 with each dependency's state while Redis and Kafka
# are up; 503 naming the one that is down: the location's Redis at a port
# where nothing listens, or brokers where nothing listens.  The metrics'
# up gauges say the same, and the orders turned away count as "error".
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;


our $CLOSED = Test::Nginx::Socket::Lite::free_port();
$ENV{TEST_NGINX_CLOSED_PORT} = $CLOSED;

our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $HTTP_NO_KAFKA = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers 127.0.0.1:$TEST_NGINX_CLOSED_PORT;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $CONFIG = <<'EOF';
    location = /health {
        fluxgate_health;
    }
    location = /metrics {
        fluxgate_metrics;
    }
    location = /order {
        fluxgate_order;
    }
EOF

our $CONFIG_NO_REDIS = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_CLOSED_PORT;

    location = /health {
        fluxgate_health;
    }
    location = /metrics {
        fluxgate_metrics;
    }
    location = /order {
        fluxgate_order;
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t197');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

sub url { "http://127.0.0.1:" . server_port() . $_[0] }

# the health answer once it is $want (a worker connects after it starts;
# brokers are found down after the first attempts), or the last one
# health is each worker process's own view: "ok" is waited for until the
# gauges, the minimum over every worker, say up too (a worker that just
# started has not asked Kafka yet)
sub health_becomes {
    my ($want) = @_;
    my $res;
    wait_until(15, sub {
        $res = http_get(url('/health'));
        return 0 unless $res->{content} eq $want;
        return 1 unless $want =~ /"status":"ok"/;
        my $m = metrics_scrape(url('/metrics'));
        ($m->{fluxgate_redis_up} // 0) == 1 && ($m->{fluxgate_kafka_up} // 0) == 1;
    });
    return $res;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: all up: 200
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
my $ok = '{"status":"ok","redis":"up","kafka":"up"}';
my $res = main::health_becomes($ok);
is($res->{content}, $ok, "$main::name - body");
is($res->{status}, 200, "$main::name - 200");
is($res->{headers}{'content-type'}, 'application/json', "$main::name - JSON");
# every worker answers the same
for (1 .. 6) {
    my $r = http_get(main::url('/health'));
    is("$r->{status} $r->{content}", "200 $ok", "$main::name - again");
}
is(http_get(main::url('/health'), 'HEAD')->{status}, 200, "$main::name - HEAD");
is(http_get(main::url('/health'), 'POST')->{status}, 405, "$main::name - POST: 405");
# the gauges: every worker's view, as each last changed
my $m;
wait_until(5, sub { $m = metrics_scrape(main::url('/metrics'));
                    $m->{fluxgate_redis_up} && $m->{fluxgate_kafka_up} });
is($m->{fluxgate_redis_up}, 1, "$main::name - fluxgate_redis_up 1");
is($m->{fluxgate_kafka_up}, 1, "$main::name - fluxgate_kafka_up 1");
my @workers = nginx_workers(nginx_pid());
is($m->{fluxgate_worker_processes}, scalar @workers,
   "$main::name - every worker reports");



=== TEST 2: Redis unreachable: 503 naming redis, orders 503 counted as error
--- http_config eval: $::HTTP
--- config eval: $::CONFIG_NO_REDIS
--- request
GET /metrics
--- error_code: 200
--- check
my $want = '{"status":"unavailable","redis":"down","kafka":"up"}';
my $res = main::health_becomes($want);
is($res->{content}, $want, "$main::name - body");
is($res->{status}, 503, "$main::name - 503");
my $before = metrics_scrape(main::url('/metrics'));
my $k = uniq('k');
for my $i (1 .. 3) {
    is(http_post(main::url('/order'), '{"productId":"p1","userId":"u1"}',
                 { 'X-Idempotency-Key' => "$k-$i" })->{status}, 503,
       "$main::name - order $i: 503");
}
my $after;
ok(wait_until(3, sub { $after = metrics_scrape(main::url('/metrics'));
                       $after->{fluxgate_redis_up} == 0 }),
   "$main::name - fluxgate_redis_up 0");
is($after->{'fluxgate_orders_total{outcome="error"}'}
   - $before->{'fluxgate_orders_total{outcome="error"}'}, 3,
   "$main::name - 3 errors counted");
is($after->{fluxgate_redis_duration_seconds_count}
   - $before->{fluxgate_redis_duration_seconds_count}, 0,
   "$main::name - none reached Redis");
# the gauge is every worker's view: a worker whose producer has not met
# the broker yet since this nginx started says 0 until it has (the health
# answer above came from one worker); a Redis outage must not make it 0
ok(wait_until(15, sub { metrics_scrape(main::url('/metrics'))->{fluxgate_kafka_up} == 1 }),
   "$main::name - kafka still up");



=== TEST 3: brokers unreachable: 503 naming kafka
--- http_config eval: $::HTTP_NO_KAFKA
--- config eval: $::CONFIG
--- request
GET /metrics
--- error_code: 200
--- check
my $want = '{"status":"unavailable","redis":"up","kafka":"down"}';
my $res = main::health_becomes($want);
is($res->{content}, $want, "$main::name - body");
is($res->{status}, 503, "$main::name - 503");
my $after;
ok(wait_until(5, sub { $after = metrics_scrape(main::url('/metrics'));
                       $after->{fluxgate_kafka_up} == 0
                       && $after->{fluxgate_redis_up} == 1 }),
   "$main::name - fluxgate_kafka_up 0");
is($after->{fluxgate_redis_up}, 1, "$main::name - redis still up");



=== TEST 4: fluxgate_health needs the brokers, like the order handlers
--- config
    location = /health { fluxgate_health; }
--- must_die
--- error_log
need "fluxgate_kafka_brokers" in the http block
