# Kafka does not take the order: 503 with Retry-After, and release.lua gave
# back exactly what order.lua reserved: the stock, the buyer's count and the
# idempotency key are as they were before the request.  Two ways: a topic
# that does not exist (the message is taken, then times out undelivered),
# and brokers on a closed port (no broker up: refused before Redis, fast).
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Time::HiRes qw(time);


our $NO_TOPIC = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_NO_TOPIC;
    fluxgate_kafka_option message.timeout.ms 1500;
EOF

# with no broker up an order is refused before it is produced; one that
# waited for its delivery report instead would take this long
our $NO_BROKER_TIMEOUT = 6;
$ENV{TEST_NGINX_NO_BROKER_TIMEOUT_MS} = $NO_BROKER_TIMEOUT * 1000;

our $NO_BROKER = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers 127.0.0.1:1;
    fluxgate_kafka_option message.timeout.ms $TEST_NGINX_NO_BROKER_TIMEOUT_MS;
    fluxgate_kafka_option reconnect.backoff.max.ms 200;
EOF

# the brokers refuse to create topics on the fly
$ENV{TEST_NGINX_NO_TOPIC} = uniq('t130-missing');

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_per_user_limit 5;
        fluxgate_order;
    }
    location = /init {
        fluxgate_stock_admin;
    }
EOF

our ($t0, $before);

sub product {
    $ENV{TEST_NGINX_P} = uniq('p');
    $ENV{TEST_NGINX_K} = uniq('k');
    my $p = $ENV{TEST_NGINX_P};
    set_stock($p, 5);
    redis('HSET', "fg:{$p}:buyers", 'u1', 1);
    $main::before = snapshot();
    $main::t0 = time;
}

sub snapshot {
    my $p = $ENV{TEST_NGINX_P};
    return { stock  => scalar redis('GET', "fg:{$p}:stock"),
             buyers => [sort(redis('HGETALL', "fg:{$p}:buyers"))],
             keys   => [sort(redis('KEYS', "fg:{$p}:*"))] };
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: not delivered: 503 after the delivery timeout, Redis exactly as before
--- http_config eval: $::NO_TOPIC
--- config eval: $::CONFIG
--- init
main::product();
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1","quantity":2}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- timeout: 15
--- error_code: 503
--- response_headers
Retry-After: 1
--- response_body_like: ^\{"status":"error","error":"kafka [^"]+"\}$
--- error_log
not delivered to kafka
--- check
ok(time - $main::t0 < 5, "$main::name - answered within the delivery timeout");
ok(wait_until(3, sub { main::snapshot()->{stock} == 5 }), "$main::name - stock back");
is_deeply(main::snapshot(), $main::before, "$main::name - stock, buyers and keys as before");



=== TEST 2: the same key after the failure is a new attempt, not in_progress
--- http_config eval: $::NO_TOPIC
--- config eval: $::CONFIG
--- init
main::product();
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u2\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u2\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K"]
--- timeout: 15
--- error_code eval
[503, 503]
--- response_body_like eval
['"kafka ', '"kafka ']
--- check
is_deeply(main::snapshot(), $main::before, "$main::name - as before, twice");



=== TEST 3: stock admin, not delivered: 503 (SET is safe to retry)
--- http_config eval: $::NO_TOPIC
--- config eval: $::CONFIG
--- init
main::product();
--- request
POST /init
{"productId":"$TEST_NGINX_P","quantity":9}
--- more_headers
Content-Type: application/json
--- timeout: 15
--- error_code: 503
--- response_headers
Retry-After: 1
--- response_body_like: ^\{"status":"error","error":"kafka [^"]+"\}$



=== TEST 4: no broker up: 503 at once, before Redis is touched
--- http_config eval: $::NO_BROKER
--- config eval: $::CONFIG
--- init
main::product();
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- timeout: 15
--- error_code: 503
--- response_body_like: "kafka [^"]+"
--- check
# once librdkafka has said that no broker is up
ok(wait_until(10, sub { error_log_since(0) =~ /fluxgate: kafka: no broker is up/ }),
   "$main::name - the gate knows no broker is up");
my $t0 = time;
my $res = http_post("http://127.0.0.1:" . server_port() . "/order",
                    qq({"productId":"$ENV{TEST_NGINX_P}","userId":"u1"}),
                    { 'X-Idempotency-Key' => 'fast' });
is($res->{status}, 503, "$main::name - 503");
is($res->{content}, '{"status":"error","error":"kafka unavailable"}', "$main::name - says Kafka");
# at once: well under the delivery timeout a produced message would wait
my $took = time - $t0;
ok($took < $main::NO_BROKER_TIMEOUT / 2,
   sprintf("$main::name - at once (%.3fs, the delivery timeout is %ds)",
           $took, $main::NO_BROKER_TIMEOUT));
is_deeply(main::snapshot(), $main::before, "$main::name - Redis as before");
