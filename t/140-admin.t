# POST /init (fluxgate_stock_admin): sets the Redis stock and publishes a
# stock_set event on the orders topic, key = productId; answers 200 only
# after Kafka acknowledged it.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Time::HiRes qw(time);


our $HTTP = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic $TEST_NGINX_TOPIC;
EOF

our $CONFIG = <<'EOF';
    location = /order {
        fluxgate_order;
    }
    location = /init {
        allow 127.0.0.1;
        deny all;
        fluxgate_stock_admin;
    }
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t140');
kafka_create_topic($ENV{TEST_NGINX_TOPIC});

our ($t0, $before);

sub product {
    $ENV{TEST_NGINX_P} = uniq('p');
    $ENV{TEST_NGINX_K} = uniq('k');
    $ENV{TEST_NGINX_K2} = uniq('k');
    $main::t0 = int(time * 1000);
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: /init sets the stock and publishes stock_set
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product();
--- request
POST /init
{"productId":"$TEST_NGINX_P","quantity":7}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- response_body_like: ^\{"status":"success","productId":"p-[0-9-]+","stock":7,"generation":1\}$
--- check
my $p = $ENV{TEST_NGINX_P};
is(redis('GET', "fg:{$p}:stock"), 7, "$main::name - Redis stock set");
is(join(',', redis('HMGET', "fg:{$p}:gen", 'g', 's')), '1,7', "$main::name - generation 1 of 7 units");
my @m;
wait_until(15, sub {
    @m = grep { $_->{key} eq $p } kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
    @m >= 1;
});
is(scalar @m, 1, "$main::name - one event");
my $v = json_decode($m[0]{payload} // '{}');
is_deeply([sort keys %$v], [qw(at generation productId stock type)], "$main::name - DESIGN.md's fields");
is($v->{generation}, 1, "$main::name - the generation it started");
is($v->{type}, 'stock_set', "$main::name - type");
is($v->{productId}, $p, "$main::name - productId");
like($m[0]{payload} // '', qr/"stock":7[,}]/, "$main::name - stock is the number 7");
ok(($v->{at} // 0) >= $main::t0 - 1000 && $v->{at} <= time * 1000 + 1000, "$main::name - at is now, in ms");



=== TEST 2: sold out, then restocked: orders flow again
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product();
--- request eval
["POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":0}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":3}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}"]
--- more_headers eval
["Content-Type: application/json",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2"]
--- error_code eval
[200, 409, 200, 200]
--- check
is(redis('GET', "fg:{$ENV{TEST_NGINX_P}}:stock"), 2, "$main::name - 3 minus one order");



=== TEST 3: bad stock bodies: 400 naming the field, Redis untouched
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product();
--- request eval
[map { "POST /init\n$_" }
 '{"productId":"$TEST_NGINX_P"}',
 '{"productId":"$TEST_NGINX_P","quantity":-1}',
 '{"productId":"$TEST_NGINX_P","quantity":"5"}',
 '{"productId":"$TEST_NGINX_P","quantity":1e3}',
 '{"productId":"a/b","quantity":5}',
 '{"quantity":5}',
 'nope',
 '{"productId":"$TEST_NGINX_P","quantity":5,"ifGeneration":"1"}',
 '{"productId":"$TEST_NGINX_P","quantity":5,"ifGeneration":-1}',
 '{"productId":"$TEST_NGINX_P","quantity":5}']
--- more_headers eval
[("Content-Type: application/json") x 9,
 "Content-Type: application/json\nX-Idempotency-Key: no spaces"]
--- error_code eval
[(400) x 10]
--- response_body_like eval
[map { qr/^\{"status":"error","error":"[^"]+","field":"$_"\}$/ }
 qw(quantity quantity quantity quantity productId productId body
    ifGeneration ifGeneration X-Idempotency-Key)]
--- check
is(redis('EXISTS', "fg:{$ENV{TEST_NGINX_P}}:stock"), 0, "$main::name - no stock key");



=== TEST 4: not POST: 405; not JSON: 415
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- request eval
["GET /init", "POST /init\nquantity=5"]
--- more_headers eval
["", "Content-Type: text/plain"]
--- error_code eval
[405, 415]
--- response_headers eval
["Allow: POST", ""]



=== TEST 5: every /init is a new generation; orders and releases stay in theirs
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product();
--- request eval
["POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":2}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":5}"]
--- more_headers eval
["Content-Type: application/json",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
['"stock":2,"generation":1\}$', '"status":"success"', '"stock":5,"generation":2\}$']
--- check
my $p = $ENV{TEST_NGINX_P};
is(redis('GET', "fg:{$p}:stock"), 5, "$main::name - the new generation's stock, whole");
my ($order) = grep { $_->{key} eq $p && $_->{payload} =~ /"type":"order"/ }
    kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
my $v = json_decode($order->{payload} // '{}');
is($v->{generation}, 1, "$main::name - the order carries the generation it was reserved in");
is($v->{generationStock}, 2, "$main::name - and that generation's stock");



=== TEST 6: X-Idempotency-Key: a retry replays and sets nothing, even after sales; another body is 422
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product();
--- request eval
["POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":3}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":3}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":4}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K2"]
--- error_code eval
[200, 200, 200, 422]
--- response_headers eval
["!Idempotent-Replayed", "", "Idempotent-Replayed: true", ""]
--- response_body_like eval
['"stock":3,"generation":1\}$', '"status":"success"', '"stock":3,"generation":1\}$',
 '"field":"X-Idempotency-Key"']
--- check
my $p = $ENV{TEST_NGINX_P};
is(redis('GET', "fg:{$p}:stock"), 2, "$main::name - the retry did not reset the stock");
is(redis('HGET', "fg:{$p}:gen", 'g'), 1, "$main::name - still generation 1");
like($main::responses->[3]{raw}, qr{^HTTP/1\.1 422 Unprocessable Entity\r\n},
     "$main::name - 422 has its reason phrase");
my @sets = grep { $_->{key} eq $p && $_->{payload} =~ /"type":"stock_set"/ }
    kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
is(scalar @sets, 2, "$main::name - the replay published generation 1's event again");
is(scalar(grep { $_->{payload} =~ /"generation":1[,}]/ && $_->{payload} =~ /"stock":3[,}]/ } @sets), 2,
   "$main::name - both say generation 1, stock 3");



=== TEST 7: ifGeneration: a compare-and-set; the wrong generation is 409 and sets nothing
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product();
--- request eval
["POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":3,\"ifGeneration\":0}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":9,\"ifGeneration\":0}",
 "POST /init\n{\"productId\":\"\$TEST_NGINX_P\",\"quantity\":6,\"ifGeneration\":1}"]
--- more_headers eval
[("Content-Type: application/json") x 3]
--- error_code eval
[200, 409, 200]
--- response_body_like eval
['^\{"status":"success","productId":"p-[0-9-]+","stock":3,"generation":1\}$',
 '^\{"status":"generation_mismatch","generation":1\}$',
 '^\{"status":"success","productId":"p-[0-9-]+","stock":6,"generation":2\}$']
--- check
my $p = $ENV{TEST_NGINX_P};
is(redis('GET', "fg:{$p}:stock"), 6, "$main::name - the matching set won");
