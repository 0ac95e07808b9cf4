# The message an accepted order leaves on Kafka, consumed back and compared
# field by field with DESIGN.md: key = productId, value
# {"type":"order","orderId","productId","userId","quantity",
#  "idempotencyKey","acceptedAt"}, and nothing else.
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
EOF

$ENV{TEST_NGINX_TOPIC} = uniq('t120');
kafka_create_topic($ENV{TEST_NGINX_TOPIC}, 2);

our ($t0, $before, $stock);

sub product {
    my ($stock) = @_;
    $ENV{TEST_NGINX_P} = uniq('p');
    $ENV{TEST_NGINX_K} = uniq('k');
    set_stock($ENV{TEST_NGINX_P}, $stock);
    $main::stock = $stock;
    $main::t0 = int(time * 1000);
}

# the messages of this block's product
sub messages {
    my ($want) = @_;
    my @m;
    wait_until(15, sub {
        @m = grep { $_->{key} eq $ENV{TEST_NGINX_P} }
             kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
        @m >= $want;
    });
    return @m;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: the order message, field by field
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(5);
--- request
POST /order
{"productId":"$TEST_NGINX_P","userId":"user.42_x-y","quantity":3}
--- more_headers
Content-Type: application/json
X-Idempotency-Key: $TEST_NGINX_K
--- error_code: 200
--- check
my $order = json_decode($main::responses->[0]{body});
my @m = main::messages(1);
is(scalar @m, 1, "$main::name - one message for the product");
my $raw = $m[0]{payload} // '{}';
my $v = json_decode($raw);
is_deeply([sort keys %$v],
          [sort qw(type orderId productId userId quantity idempotencyKey acceptedAt
                   generation generationStock)],
          "$main::name - exactly DESIGN.md's fields");
like($raw, qr/"generation":1[,}]/, "$main::name - generation is the number 1 (set_stock's)");
like($raw, qr/"generationStock":$main::stock[,}]/, "$main::name - generationStock is the stock set");
is($v->{type}, 'order', "$main::name - type");
is($v->{orderId}, $order->{orderId}, "$main::name - orderId is the one the client got");
is($v->{productId}, $ENV{TEST_NGINX_P}, "$main::name - productId");
is($v->{userId}, 'user.42_x-y', "$main::name - userId");
like($raw, qr/"quantity":3[,}]/, "$main::name - quantity is the number 3");
is($v->{idempotencyKey}, $ENV{TEST_NGINX_K}, "$main::name - idempotencyKey");
like($raw, qr/"acceptedAt":\d{13}[,}]/, "$main::name - acceptedAt in ms");
ok($v->{acceptedAt} >= $main::t0 - 1000 && $v->{acceptedAt} <= time * 1000 + 1000,
   "$main::name - acceptedAt is now");
is($m[0]{key}, $ENV{TEST_NGINX_P}, "$main::name - key is the productId");



=== TEST 2: quantity defaults to 1, and a replay publishes nothing more
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
--- check
# both answered: a message produced for either was acknowledged before its
# answer, so the topic holds every one there will be
my @m = main::messages(1);
is(scalar @m, 1, "$main::name - one message for two requests");
like($m[0]{payload} // '', qr/"quantity":1[,}]/, "$main::name - quantity 1");



=== TEST 3: a sold-out or rejected order publishes nothing
--- http_config eval: $::HTTP
--- config eval: $::CONFIG
--- init
main::product(0);
--- request eval
["POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\"}",
 "POST /order\n{\"productId\":\"\$TEST_NGINX_P\",\"userId\":\"u1\",\"quantity\":0}"]
--- more_headers eval
["Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K",
 "Content-Type: application/json\nX-Idempotency-Key: \$TEST_NGINX_K"]
--- error_code eval
[409, 400]
--- check
# An empty answer from kcat is also what a Kafka it cannot reach gives:
# a marker produced now, keyed like the product's messages, must be read
# back in the same pass over the topic that finds nothing else of it.
my $marker = uniq('marker');
kafka_produce($ENV{TEST_NGINX_TOPIC}, [[$ENV{TEST_NGINX_P}, $marker]]);
my @all;
ok(wait_until(15, sub {
        @all = kafka_consume($ENV{TEST_NGINX_TOPIC}, timeout => 10);
        grep { ($_->{payload} // '') eq $marker } @all }),
   "$main::name - Kafka reached: the marker read back");
my @m = grep { $_->{key} eq $ENV{TEST_NGINX_P} && ($_->{payload} // '') ne $marker } @all;
is(scalar @m, 0, "$main::name - no message");
