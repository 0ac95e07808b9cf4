# fluxgate_redis_wait with no replica to wait for: the stack's Redis has
# none, so WAIT 1 answers 0 and no reservation ever counts as safe.  The
# order is answered 503 (Retry-After), never 200, and nothing reaches
# Kafka; what the reservation took in Redis is released at once (stock,
# key, the buyer's count), so a retry of the key is decided again.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;

our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_wait 1 100ms;
    fluxgate_redis_timeout 2s;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
EOF

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: WAIT 1 with no replica: 503, never 200, nothing on Kafka, the reservation released
--- http_config eval: $::HTTP
--- config
    location = /order { fluxgate_order; }
--- init
is(scalar(grep { /^connected_slaves:0/ } redis('INFO', 'replication')), 1,
   'the stack\'s Redis has no replica');
$ENV{TEST_NGINX_P} = uniq('p191');
$ENV{TEST_NGINX_K} = uniq('k');
set_stock($ENV{TEST_NGINX_P}, 5);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 503
--- response_headers
Retry-After: 1
--- response_body_like: ^\{"status":"error","error":"[^"]+"\}$
--- error_log
WAIT: 0 of 1 replicas acknowledged within 100ms
releasing what it may have reserved
--- check
my ($p, $k) = @ENV{qw(TEST_NGINX_P TEST_NGINX_K)};
my $c = { key => $k };
# the gate releases what the reservation may have taken: stock, key and
# the buyer's count back, no claim left
ok(wait_until(10, sub { claim_state($p, $c) eq 'gone' }), "$main::name - the key is free");
is(redis('GET', "fg:{$p}:stock"), 5, "$main::name - the unit is back");
is(redis('HGET', "fg:{$p}:buyers", 'u1'), '', "$main::name - u1 bought nothing");
is(redis('ZCARD', "fg:{$p}:pending"), 0, "$main::name - no claim pending");
# the same key again: decided again, and refused again the same way
my $again = queue_order(server_port(), $p, $k, user => 'u1');
is($again->{status}, 503, "$main::name - the key again: 503 again");
ok(wait_until(10, sub { claim_state($p, $c) eq 'gone'
                        && redis('GET', "fg:{$p}:stock") == 5 }),
   "$main::name - and released again");
# nothing was produced for either
ok(drained(), "$main::name - the worker drained the topic");
is(scalar @{ order_rows($p) }, 0, "$main::name - no order of the product in PostgreSQL");
