# fluxgate_sold_out_cache: once Redis said a product is sold out, the crowd
# asking for it is answered 409 from shared memory for a while, without
# Redis; POST /init (and the end of that while) makes Redis decide again.
# Redis is watched through INFO commandstats: its EVALSHA count must not
# move while the flag answers.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Time::HiRes qw(sleep);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    log_format fluxgate '$status $fluxgate_outcome';
EOF

our $CONFIG = <<'EOF';
    access_log $TEST_NGINX_SERVROOT/logs/fluxgate.log fluxgate;

    location = /order {
        fluxgate_sold_out_cache 1s;
        fluxgate_order;
    }
    location = /uncached {
        fluxgate_order;
    }
    location = /init {
        fluxgate_stock_admin;
    }
EOF

# every order of this file goes to a topic of its own
$ENV{TEST_NGINX_TOPIC} = uniq('t195');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

# a product of its own for each block, with this much stock, and keys
# K1..K8 for its orders; the EVALSHA count starts from here
sub product {
    my ($stock) = @_;
    $ENV{TEST_NGINX_P} = uniq('p');
    $ENV{"TEST_NGINX_K$_"} = uniq("k$_") for 1 .. 8;
    set_stock("$ENV{TEST_NGINX_P}", $stock);
    $main::evalsha = evalsha_calls();
    return $ENV{TEST_NGINX_P};
}

# how many EVALSHA Redis ran since it started
sub evalsha_calls {
    my ($line) = grep { /^cmdstat_evalsha:/ } redis('INFO', 'commandstats');
    return $line && $line =~ /calls=(\d+)/ ? $1 : 0;
}

sub evalsha_since { evalsha_calls() - $main::evalsha }

# an accepted order's done.lua is an EVALSHA too, sent as the 200 goes out:
# the count once the keys of the accepted orders are done (done.lua ran)
sub evalsha_once_done {
    my (@keys) = @_;
    wait_until(10, sub { !grep { redis('HGET', "fg:{$ENV{TEST_NGINX_P}}:idem:$_", 's') ne '200' }
                         @keys });
    return evalsha_since();
}

# n orders of the block's product to $path, key K1..Kn
sub requests {
    my ($n, $path) = @_;
    return [map { "POST $path\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}" } 1 .. $n];
}

sub headers {
    my ($n) = @_;
    return [map { "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K$_" } 1 .. $n];
}

# one more order of the block's product, from the check section
sub order_now {
    my ($key) = @_;
    return http_post("http://127.0.0.1:" . server_port() . "/order",
                     qq({"productId":"$ENV{TEST_NGINX_P}","userId":"u1"}),
                     { 'X-Idempotency-Key' => $key });
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: off by default: every sold-out order asks Redis
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
main::requests(4, '/uncached')
--- more_headers eval
main::headers(4)
--- error_code eval
[409, 409, 409, 409]
--- response_body eval
[('{"status":"sold_out"}') x 4]
--- check
is(main::evalsha_since(), 4, "$main::name - 4 EVALSHA for 4 orders");



=== TEST 2: flagged: the first sold-out asks Redis, the next ones do not
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
main::requests(8, '/order')
--- more_headers eval
main::headers(8)
--- error_code eval
[(409) x 8]
--- response_body eval
[('{"status":"sold_out"}') x 8]
--- check
is(main::evalsha_since(), 1, "$main::name - 1 EVALSHA for 8 orders");
ok(wait_until(5, sub { my @l = grep { /^409 sold_out$/ }
                           split /\n/, `cat @{[servroot()]}/logs/fluxgate.log`;
                       @l >= 8 }),
   "$main::name - \$fluxgate_outcome is sold_out for the flag's answers too");



=== TEST 3: the flag expires: after the cache time Redis decides again
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
main::requests(2, '/order')
--- more_headers eval
main::headers(2)
--- error_code eval
[409, 409]
--- check
is(main::evalsha_since(), 1, "$main::name - flagged after the first");
sleep 1.3;
my $res = main::order_now($ENV{TEST_NGINX_K3});
is($res->{status}, 409, "$main::name - still sold out");
is(main::evalsha_since(), 2, "$main::name - Redis asked again once expired");
$res = main::order_now($ENV{TEST_NGINX_K4});
is($res->{status}, 409, "$main::name - sold out again");
is(main::evalsha_since(), 2, "$main::name - and the flag is up again");



=== TEST 4: POST /init clears the flag at once: restocked, the next order is 200
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":5}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K1",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K3"]
--- error_code eval
[409, 409, 200, 200]
--- response_body_like eval
['sold_out', 'sold_out', '"stock":5', '"status":"success"']
--- check
# the first order, init.lua, the last order and its done.lua; the second
# was the flag's
is(main::evalsha_once_done($ENV{TEST_NGINX_K3}), 4, "$main::name - 4 EVALSHA");
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 4,
   "$main::name - 1 of 5 reserved");



=== TEST 5: bad input still gets its 400 while the flag is up
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":0}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K1",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K3",
 "Content-Type: application/json",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K5"]
--- error_code eval
[409, 400, 400, 400, 409]
--- response_body_like eval
['sold_out', '"field":"quantity"', '"field":"userId"', '"field":"X-Idempotency-Key"', 'sold_out']
--- check
is(main::evalsha_since(), 1, "$main::name - Redis asked once");



=== TEST 6: a quantity larger than what is left does not raise the flag
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(1);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":2}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u2\",\"quantity\":1}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u3\",\"quantity\":1}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u4\",\"quantity\":1}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K1",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K3",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K4"]
--- error_code eval
[409, 200, 409, 409]
--- check
# u1's, u2's and its done.lua, u3's; u4 got the flag's answer
is(main::evalsha_once_done($ENV{TEST_NGINX_K2}), 4, "$main::name - flagged only once the stock is 0");



=== TEST 7: the trade-off: while flagged, an accepted key's retry gets sold_out
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(1);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u2\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /uncached\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K1",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K1",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K1"]
--- error_code eval
[200, 409, 409, 200]
--- response_body_like eval
['"status":"success"', '^\{"status":"sold_out"\}$', '^\{"status":"sold_out"\}$', '"status":"ignored"']



=== TEST 8: fluxgate_sold_out_cache: not a time
--- http_config
    fluxgate_sold_out_cache abc;
--- must_die
--- error_log
invalid value "abc" in "fluxgate_sold_out_cache" directive



=== TEST 9: fluxgate_sold_out_cache: zero
--- http_config
    fluxgate_sold_out_cache 0;
--- must_die
--- error_log
invalid value "0" in "fluxgate_sold_out_cache" directive



=== TEST 10: fluxgate_sold_out_cache: twice at one level
--- http_config
    fluxgate_sold_out_cache 1s;
    fluxgate_sold_out_cache off;
--- must_die
--- error_log
"fluxgate_sold_out_cache" directive is duplicate
