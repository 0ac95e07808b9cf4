# A sold-out answer writes nothing to Redis (issue 12, item 1): order.lua
# checks the idempotency key and the stock, and on sold_out returns before
# any write.  A flood of 10,000 sold-out orders with fresh keys leaves
# INFO commandstats' write commands, the key count and used_memory flat,
# while the replay of the order accepted before it under its own key stays
# exact, and a sold-out key sent again after a restock is decided again.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;

our $HttpConfig = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 2s;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
    fluxgate_threshold 100000 burst=100000;
    fluxgate_waiting_room /waiting-room/;
    keepalive_requests 100000;
EOF

# every Redis command that writes, as INFO commandstats names them
our @Writes = qw(set setex psetex setnx getset getdel getex append incr
    incrby decr decrby incrbyfloat mset msetnx del unlink expire pexpire
    expireat pexpireat persist rename hset hmset hsetnx hdel hincrby
    hincrbyfloat zadd zrem zincrby zremrangebyscore zremrangebyrank lpush
    rpush lpop rpop sadd srem);

# {command => calls} of the write commands, with Redis' key count and memory
sub write_stats {
    my %calls = map { $_ => 0 } @main::Writes;
    for (redis('INFO', 'commandstats')) {
        my ($cmd, $n) = /^cmdstat_(\w+):calls=(\d+)/ or next;
        $calls{$cmd} = $n if exists $calls{$cmd};
    }
    my ($mem) = redis('INFO', 'memory') =~ /^used_memory:(\d+)/m;
    return (\%calls, scalar redis('DBSIZE'), $mem);
}

sub order {
    my ($key, $user) = @_;
    my $res = queue_order(server_port(), $ENV{TEST_NGINX_PRODUCT}, $key, user => $user);
    $res->{json} = eval { json_decode($res->{content}) } || {};
    return $res;
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: 10,000 sold-out answers with fresh keys write nothing; the accepted key still replays
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('ro');
--- http_config eval: $::HttpConfig
--- config
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":1}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- timeout: 60
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
my $k1 = uniq('k');
my $first = main::order($k1, 'u1');
is($first->{status}, 200, "$name - the only unit sold");
ok(wait_until(10, sub { redis('HGET', "fg:{$p}:idem:$k1", 's') eq '200' }),
   "$name - its key is done");
is(redis('GET', "fg:{$p}:stock"), 0, "$name - stock 0");

# the accepted order left the line's record (its rate state)
my $rate0 = join ',', redis('HMGET', "fg:{$p}:q", 'n', 'h', 't');
my ($w0, $keys0, $mem0) = main::write_stats();
my $r = loadgen(port => server_port(), c => 50, n => 10_000, product => $p,
                expect => '409', log => 1);
my ($w1, $keys1, $mem1) = main::write_stats();
is($r->{rc}, 0, "$name - 10,000 answers, every one a 409") or diag($r->{raw});
my %body;
$body{ $_->[2] }++ for @{ $r->{log} };
is($body{sold_out}, 10_000, "$name - every one sold_out");

# the stack's settler may write a little meanwhile (claims of earlier
# tests); one write per answer would be 10,000
my %delta = map { $_ => $w1->{$_} - $w0->{$_} } grep { $w1->{$_} != $w0->{$_} } @main::Writes;
my $writes = 0;
$writes += $_ for values %delta;
ok($writes < 50, "$name - write commands flat: $writes during the flood")
    or diag(join ' ', map { "$_+$delta{$_}" } sort keys %delta);
ok($keys1 - $keys0 <= 5, "$name - key count flat ($keys0 -> $keys1)");
# an idempotency hash per answer would take over 1 MB
ok($mem1 - $mem0 < 512 * 1024,
   "$name - used_memory flat ($mem0 -> $mem1, " . ($mem1 - $mem0) . " bytes)");
my $rate1 = join ',', redis('HMGET', "fg:{$p}:q", 'n', 'h', 't');
ok($rate1 eq $rate0,
   "$name - no rate state written either ('$rate0' -> '$rate1')");

# the accepted order's key replays exactly
my $again = main::order($k1, 'u1');
is($again->{status}, 200, "$name - replay: 200");
is($again->{headers}{'idempotent-replayed'}, 'true', "$name - replay header");
is($again->{json}{orderId}, $first->{json}{orderId}, "$name - the same orderId");
is($again->{json}{status}, 'ignored', "$name - status ignored");
is($again->{json}{outcome}, 'success', "$name - outcome success");

# a sold-out key is decided again on retry: after a restock it buys
my $k2 = uniq('k');
my $no = main::order($k2, 'u2');
is($no->{status}, 409, "$name - another key: 409");
is($no->{json}{status}, 'sold_out', "$name - sold_out");
is(redis('EXISTS', "fg:{$p}:idem:$k2"), 0, "$name - nothing stored for it");
my $res = http_post("http://127.0.0.1:" . server_port() . "/init",
                    qq({"productId":"$p","quantity":1}));
is($res->{status}, 200, "$name - restocked");
my $yes = main::order($k2, 'u2');
is($yes->{status}, 200, "$name - the same key after the restock: 200");
ok(!$yes->{headers}{'idempotent-replayed'}, "$name - decided, not replayed");

# what reached the shop: once the worker drained the topic, the product's
# rows are the two orders answered 200, and nothing of the 10,001 sold-out
# answers; its stock is the second generation's, sold
ok(drained(), "$name - the worker drained the topic");
is_deeply([ map { "$_->[0] $_->[1] $_->[3]" } @{ order_rows($p) } ],
          [ sort map { "$_->{json}{orderId} $_->{u} accepted" }
                { %$first, u => 'u1' }, { %$yes, u => 'u2' } ],
          "$name - PostgreSQL holds the two 200s and nothing else");
is(psql("select stock || ' ' || generation from products where id = '$p'"), '0 2',
   "$name - products: generation 2, sold out");
