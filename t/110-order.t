# POST /order, one block per row of DESIGN.md's API table, against the
# stack's real Redis and Kafka.  Every block orders a product id of its own
# (uniq), so blocks and the two worker modes never see each other's keys.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;


our $UUID7 = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
    fluxgate_max_quantity 5;
    log_format fluxgate '$status $fluxgate_outcome $fluxgate_order_id';
EOF

our $CONFIG = <<'EOF';
    access_log $TEST_NGINX_SERVROOT/logs/fluxgate.log fluxgate;

    location = /order {
        client_max_body_size 512;
        fluxgate_order;
    }
    location = /limited {
        fluxgate_per_user_limit 2;
        fluxgate_order;
    }
    location = /throttled {
        fluxgate_threshold 1;
        fluxgate_waiting_room /waiting-room/;
        fluxgate_order;
    }
    location = /no-redis {
        fluxgate_redis 127.0.0.1:1;
        fluxgate_order;
    }
    location = /metrics {
        fluxgate_metrics;
    }
EOF

# every order of this file goes to a topic of its own
$ENV{TEST_NGINX_TOPIC} = uniq('t110');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

# a product of its own for each block, with this much stock (undef: none)
sub product {
    my ($stock) = @_;
    $ENV{TEST_NGINX_P} = uniq('p');
    $ENV{TEST_NGINX_K} = uniq('k');
    set_stock("$ENV{TEST_NGINX_P}", $stock) if defined $stock;
    return $ENV{TEST_NGINX_P};
}

sub keys_of { my ($p) = @_; return sort(redis('KEYS', "fg:{$p}:*")) }

sub body_of { json_decode($_[0]->{body}) }

# the gate's own count of its Redis round trips (every worker process's)
sub redis_round_trips {
    my $m = prom_samples(http_get("http://127.0.0.1:" . server_port() . "/metrics")->{content});
    return $m->{fluxgate_redis_duration_seconds_count} // die "no Redis count in /metrics\n";
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: accepted: 200 with a UUIDv7 orderId, stock reserved, key done
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1","quantity":2}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 200
--- response_headers
Content-Type: application/json
!Idempotent-Replayed
--- response_body_like: ^\{"status":"success","orderId":"[0-9a-f-]{36}"\}$
--- check
my $p = $ENV{TEST_NGINX_P};
my $b = main::body_of($main::responses->[0]);
like($b->{orderId}, $main::UUID7, "$main::name - orderId is a UUIDv7");
is(redis('GET', "fg:{$p}:stock"), 3, "$main::name - 2 of 5 reserved");
is(redis('HGET', "fg:{$p}:buyers", 'u1'), 2, "$main::name - buyer counted");
# done.lua follows the answer on the same connection
wait_until(2, sub { redis('HGET', "fg:{$p}:idem:$ENV{TEST_NGINX_K}", 's') eq '200' });
my %idem = redis('HGETALL', "fg:{$p}:idem:$ENV{TEST_NGINX_K}");
is($idem{s}, 200, "$main::name - key marked done");
is($idem{o}, $b->{orderId}, "$main::name - key holds the orderId");
is($idem{g}, 1, "$main::name - reserved in generation 1");
is(redis('ZCARD', "fg:{$p}:pending"), 0, "$main::name - no pending claim left");
my $ttl = redis('PTTL', "fg:{$p}:idem:$ENV{TEST_NGINX_K}");
ok($ttl > 50000 && $ttl <= 60000, "$main::name - key lives 60s ($ttl)");
ok(wait_until(5, sub { `cat @{[servroot()]}/logs/fluxgate.log` =~ /^200 accepted \Q$b->{orderId}\E$/m }),
   "$main::name - \$fluxgate_outcome and \$fluxgate_order_id logged");



=== TEST 2: same key again: same status, status "ignored", same orderId, replayed header
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K"]
--- error_code eval
[200, 200]
--- response_headers eval
["!Idempotent-Replayed", "Idempotent-Replayed: true"]
--- response_body_like eval
['"status":"success"', '^\{"status":"ignored","outcome":"success","orderId":"[0-9a-f-]{36}"\}$']
--- check
my ($first, $again) = map { main::body_of($_) } @$main::responses;
is($again->{orderId}, $first->{orderId}, "$main::name - the same orderId");
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 4, "$main::name - reserved once");
ok(wait_until(5, sub { `cat @{[servroot()]}/logs/fluxgate.log` =~ /^200 duplicate \Q$first->{orderId}\E$/m }),
   "$main::name - logged as duplicate");



=== TEST 3: same key while the first is in flight: 409 in_progress
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
my $p = main::product(5);
# what order.lua leaves while Kafka has not acknowledged yet
redis('HSET', "fg:{$p}:idem:$ENV{TEST_NGINX_K}", 's', 'pending', 'f', 'u1:1',
      'o', '01890000-0000-7000-8000-000000000000');
redis('PEXPIRE', "fg:{$p}:idem:$ENV{TEST_NGINX_K}", 60000);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 409
--- response_body: {"status":"in_progress"}
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 5, "$main::name - nothing reserved");



=== TEST 4: same key, another body: 422 naming the key, nothing reserved again
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":1}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":2}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K"]
--- error_code eval
[200, 422]
--- response_body_like eval
['"status":"success"', '^\{"status":"error","error":"[^"]+","field":"X-Idempotency-Key"\}$']
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 4, "$main::name - reserved once");



=== TEST 5: over the rate: 302 to the waiting room with Retry-After, nothing claimed
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
$ENV{TEST_NGINX_K2} = uniq('k');
--- request eval
["POST /throttled\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /throttled\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u2\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2"]
--- error_code eval
[200, 302]
--- response_headers_like eval
["", "Location: ^http://localhost(:\\d+)?/waiting-room/\\?productId=p-[0-9-]+&retryAfter=1\$\nRetry-After: ^1\$"]
--- check
my $p = $ENV{TEST_NGINX_P};
is(redis('GET', "fg:{$p}:stock"), 4, "$main::name - only the first reserved");
is(redis('EXISTS', "fg:{$p}:idem:$ENV{TEST_NGINX_K2}"), 0,
   "$main::name - the redirected key is not claimed");
# the rate's state: the product's line record, one turn taken by the sale
is(redis('HGET', "fg:{$p}:q", 'n'), 1, "$main::name - one turn taken, none by the 302");
# the redirected request may come back with the same key once admitted:
# once Redis's clock reached the next turn's time at 1 a second
ok(wait_next_turn($p, 1, 5), "$main::name - the next turn's second came");
my $res = http_post("http://127.0.0.1:" . server_port() . "/throttled",
                    qq({"productId":"$p","userId":"u2"}),
                    { 'X-Idempotency-Key' => $ENV{TEST_NGINX_K2} });
is($res->{status}, 200, "$main::name - same key admitted later");



=== TEST 6: a product never set by /init: 404 unknown_product, Redis gains no key
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(undef);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K"]
--- error_code eval
[404, 404]
--- response_headers eval
["!Idempotent-Replayed", "!Idempotent-Replayed"]
--- response_body eval
['{"status":"unknown_product"}', '{"status":"unknown_product"}']
--- check
my $p = $ENV{TEST_NGINX_P};
is_deeply([main::keys_of($p)], [], "$main::name - no key at all for the product");



=== TEST 7: sold out: 409, nothing stored under the key; after a restock the same key is decided again
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K"]
--- error_code eval
[409, 409]
--- response_headers eval
["!Idempotent-Replayed", "!Idempotent-Replayed"]
--- response_body eval
['{"status":"sold_out"}', '{"status":"sold_out"}']
--- check
my $p = $ENV{TEST_NGINX_P};
is_deeply([main::keys_of($p)], ["fg:{$p}:gen", "fg:{$p}:stock"],
          "$main::name - no key, rate state or buyer written");
set_stock($p, 1);
my $res = http_post("http://127.0.0.1:" . server_port() . "/order",
                    qq({"productId":"$p","userId":"u1"}),
                    { 'X-Idempotency-Key' => $ENV{TEST_NGINX_K} });
is($res->{status}, 200, "$main::name - restocked: the same key buys");
is(redis('GET', "fg:{$p}:stock"), 0, "$main::name - the unit reserved");



=== TEST 8: less stock than the quantity: 409 sold_out, stock untouched
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(2);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1","quantity":3}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 409
--- response_body: {"status":"sold_out"}
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 2, "$main::name - stock untouched");



=== TEST 9: the last unit: one 200, then sold_out
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(1);
$ENV{TEST_NGINX_K2} = uniq('k');
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u2\"}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2"]
--- error_code eval
[200, 409]
--- response_body_like eval
['"status":"success"', '^\{"status":"sold_out"\}$']
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 0, "$main::name - stock 0, never below");



=== TEST 10: per-user limit: 409 limit_reached, stored under the key
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(10);
$ENV{TEST_NGINX_K2} = uniq('k');
--- request eval
["POST /limited\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":2}",
 "POST /limited\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":1}",
 "POST /limited\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":1}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2"]
--- error_code eval
[200, 409, 409]
--- response_body eval
[undef, '{"status":"limit_reached"}', '{"status":"ignored","outcome":"limit_reached"}']
--- check
my $p = $ENV{TEST_NGINX_P};
is(redis('GET', "fg:{$p}:stock"), 8, "$main::name - only the first reserved");
is(redis('HGET', "fg:{$p}:buyers", 'u1'), 2, "$main::name - u1 has 2");



=== TEST 11: bad input: 400 naming the field, Redis never contacted
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request eval
my $p = '$TEST_NGINX_P';
[map { "POST /order\n$_" }
 '{"productId":"' . $p . '","userId":"u1"',
 '',
 '[1,2]',
 '{"userId":"u1"}',
 '{"productId":"' . $p . '"}',
 '{"productId":7,"userId":"u1"}',
 '{"productId":"' . $p . '","userId":null}',
 '{"productId":"p{1}:stock","userId":"u1"}',
 '{"productId":"' . $p . '","userId":"u 1"}',
 '{"productId":"' . ('x' x 65) . '","userId":"u1"}',
 '{"productId":"","userId":"u1"}',
 '{"productId":"' . $p . '","userId":"u1","quantity":0}',
 '{"productId":"' . $p . '","userId":"u1","quantity":-1}',
 '{"productId":"' . $p . '","userId":"u1","quantity":1.5}',
 '{"productId":"' . $p . '","userId":"u1","quantity":"1"}',
 '{"productId":"' . $p . '","userId":"u1","quantity":6}',
 '{"productId":"' . $p . '","userId":"u1","quantity":99999999999999999999}',
 '{"productId":"' . $p . '","productId":"' . $p . '","userId":"u1"}',
 '{"productId":"' . $p . '","userId":"u1"} trailing',
 '{"productId":"' . $p . '","userId":"u1"}',
 '{"productId":"' . $p . '","userId":"u1"}',
 '{"productId":"' . $p . '","userId":"u1"}',
 '{"productId":"' . $p . '","userId":"u1"}',
]
--- more_headers eval
[("Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K") x 19,
 "Content-Type: application/json",
 "Content-Type: application/json\nX-Idempotency-Key: a.b",
 "Content-Type: application/json\nX-Idempotency-Key: " . ('k' x 65),
 "Content-Type: application/json\nX-Idempotency-Key: a1\nX-Idempotency-Key: a2"]
--- error_code eval
[(400) x 23]
--- response_body_like eval
[map { qr/^\{"status":"error","error":"[^"]+","field":"\Q$_\E"\}$/ }
 qw(body body body productId userId productId userId productId userId
    productId productId quantity quantity quantity quantity quantity body
    body body X-Idempotency-Key X-Idempotency-Key X-Idempotency-Key
    X-Idempotency-Key)]
--- check
# the product is on sale: an order that reached Redis would leave a key
my $p = $ENV{TEST_NGINX_P};
is_deeply([main::keys_of($p)], ["fg:{$p}:gen", "fg:{$p}:stock"],
          "$main::name - no key of the product but its stock");
is(redis('GET', "fg:{$p}:stock"), 5, "$main::name - stock untouched");
like($main::responses->[15]{body}, qr/between 1 and 5/, "$main::name - says the range");
# and the gate counts no Redis round trip for them: the same 23 requests
# again, then one good order, which is counted
my $before = main::redis_round_trips();
my @reqs = Test::Nginx::Socket::Lite::as_list($main::block->request);
my @hdrs = Test::Nginx::Socket::Lite::as_list($main::block->more_headers);
is(scalar @reqs, 23, "$main::name - the 23 requests");
my @again = map {
    http_request(Test::Nginx::Socket::Lite::build_request(
        Test::Nginx::Socket::Lite::expand_env($reqs[$_]),
        Test::Nginx::Socket::Lite::expand_env($hdrs[$_])))->{status}
} 0 .. $#reqs;
is_deeply(\@again, [(400) x 23], "$main::name - sent again: 400 each");
is(main::redis_round_trips() - $before, 0,
   "$main::name - no Redis round trip for 23 bad orders");
my $good = queue_order(server_port(), $p, uniq('k'));
is($good->{status}, 200, "$main::name - then a good order: 200");
ok(main::redis_round_trips() > $before, "$main::name - and it is counted");



=== TEST 12: not POST: 405 with Allow: POST
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request
GET /order
--- error_code: 405
--- response_headers
Allow: POST
Content-Type: application/json
--- response_body_like: ^\{"status":"error",.*\}$



=== TEST 13: not JSON: 415
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request
POST /order
productId=p1&userId=u1
--- more_headers
Content-Type: application/x-www-form-urlencoded
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 415
--- response_body_like: ^\{"status":"error",.*"field":"Content-Type"\}$
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 5, "$main::name - stock untouched");



=== TEST 14: JSON with a charset parameter is JSON
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: Application/JSON; charset=utf-8
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 200



=== TEST 15: body larger than client_max_body_size: 413, announced or chunked
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- raw_request eval
my $big = '{"productId":"' . ('x' x 600) . '","userId":"u1"}';
my $h = "POST /order HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
      . "Content-Type: application/json\r\nX-Idempotency-Key: k1\r\n";
[$h . "Content-Length: " . length($big) . "\r\n\r\n" . $big,
 $h . "Transfer-Encoding: chunked\r\n\r\n"
    . sprintf("%x\r\n%s\r\n0\r\n\r\n", length($big), $big)]
--- error_code eval
[413, 413]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/json"]
--- response_body eval
['{"status":"error","error":"body too large","field":"body"}',
 '{"status":"error","error":"body too large","field":"body"}']
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 5, "$main::name - stock untouched");



=== TEST 16: a broken chunked body: nginx's 400, in JSON
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- raw_request eval
"POST /order HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
. "Content-Type: application/json\r\nX-Idempotency-Key: k1\r\n"
. "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
--- error_code: 400
--- response_headers
Content-Type: application/json
--- response_body: {"status":"error","error":"malformed request"}



=== TEST 17: a chunked body, and a body that arrives slowly in pieces
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 200
--- check
my $p = $ENV{TEST_NGINX_P};
my $head = "POST /order HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
         . "Content-Type: application/json\r\n";
my ($a, $b) = ('{"productId":"', qq($p","userId":"u2"}));
my $res = http_request($head . "X-Idempotency-Key: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                       . sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", length $a, $a, length $b, $b), 10);
is($res->{status}, 200, "$main::name - chunked body: 200") or diag($res->{raw});
my $body = qq({"productId":"$p","userId":"u3"});
$res = http_request([$head . "X-Idempotency-Key: slow\r\n"
                     . "Content-Length: " . length($body) . "\r\n\r\n" . substr($body, 0, 10),
                     substr($body, 10, 20), substr($body, 30)], 10);
is($res->{status}, 200, "$main::name - slow body: 200") or diag($res->{raw});
is(redis('GET', "fg:{$p}:stock"), 2, "$main::name - all three reserved");



=== TEST 18: Redis unreachable: 503 with Retry-After
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request
POST /no-redis
{"productId":"$TEST_NGINX_P","userId":"u1"}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 503
--- response_headers
Retry-After: 1
--- response_body_like: ^\{"status":"error","error":"[^"]+"\}$
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 5, "$main::name - stock untouched");
