# The crowd of a flash sale: thousands of attempts at once against a small
# stock, the same idempotency key from many connections, several products
# with a per-user limit.  Each block sets a fresh product's stock through the
# admin location, lets build/fg-loadgen loose on the gate, then checks the
# answers, Redis and, once the stack's worker drained the topic, PostgreSQL.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket::Lite;
use FluxGate::Test;
use Data::Dumper ();

sub dumped { Data::Dumper->new([@_])->Indent(0)->Terse(1)->Dump }

our $HttpConfig = <<'EOF';
    fluxgate_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    fluxgate_redis_timeout 2s;
    fluxgate_kafka_brokers $TEST_NGINX_KAFKA_BROKERS;
    fluxgate_kafka_topic orders;
    fluxgate_threshold 100000 burst=100000;
    fluxgate_waiting_room /waiting-room/;
    fluxgate_max_quantity 10;
    keepalive_requests 100000;
EOF

# answers of one run: {status => count} and {body status => count}
sub tally {
    my ($log) = @_;
    my (%st, %body);
    for my $l (@$log) {
        $st{ $l->[0] }++;
        $body{ $l->[2] }++;
    }
    return (\%st, \%body);
}

# stock of a product in PostgreSQL, once the worker applied stock_set
sub db_stock {
    my ($p) = @_;
    return scalar psql("select stock from products where id = '$p'");
}

plan 'no_plan';
run_tests();

__DATA__

=== TEST 1: stock 100, 2,000 concurrent buyers: exactly 100 sold, books balance
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('crowd');
--- http_config eval: $::HttpConfig
--- config
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":100}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- timeout: 10
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
my $r = loadgen(port => server_port(), c => 2000, once => 1,
                product => $p, log => 1);
my ($st, $body) = main::tally($r->{log});
is(scalar @{ $r->{log} }, 2000, "$name - 2000 answers");
is($st->{200}, 100, "$name - exactly 100 accepted");
is(($st->{409} // 0) + ($st->{302} // 0), 1900,
   "$name - every other answer is a 409 or a 302") or diag(main::dumped($st));
is($body->{sold_out} // 0, $st->{409} // 0, "$name - every 409 says sold_out");
is(redis('GET', "fg:{$p}:stock"), 0, "$name - Redis stock is 0");
my %ids = map { $_->[1] => 1 } grep { $_->[0] == 200 } @{ $r->{log} };
is(scalar keys %ids, 100, "$name - 100 distinct orderIds");
my $rows = wait_drained($p);
is(scalar @$rows, 100, "$name - 100 rows in orders");
is(scalar(grep { $ids{ $_->[0] } && $_->[3] eq 'accepted' } @$rows), 100,
   "$name - each accepted orderId has its row");
is(main::db_stock($p), '0', "$name - products.stock is 0");

=== TEST 2: one idempotency key from 50 connections at once: one order
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('samekey');
--- http_config eval: $::HttpConfig
--- config
    location = /order { fluxgate_order; }
    location = /init { fluxgate_stock_admin; }
--- request
POST /init
{"productId":"$TEST_NGINX_PRODUCT","quantity":10}
--- more_headers
Content-Type: application/json
--- error_code: 200
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
my $r = loadgen(port => server_port(), c => 50, once => 1, same_key => 1,
                product => $p, log => 1);
is(scalar @{ $r->{log} }, 50, "$name - 50 answers");
my %ids = map { $_->[1] => 1 } grep { $_->[1] ne '-' } @{ $r->{log} };
is(scalar keys %ids, 1, "$name - one orderId among all answers")
    or diag(main::dumped([keys %ids]));
my @other = grep { $_->[1] eq '-' && $_->[2] ne 'in_progress' } @{ $r->{log} };
is(scalar @other, 0, "$name - every other answer is in_progress")
    or diag(main::dumped(\@other));
is(redis('GET', "fg:{$p}:stock"), 9, "$name - stock taken once");
my $rows = wait_drained($p);
is(scalar @$rows, 1, "$name - one row in orders");
is($rows->[0][0], (keys %ids)[0], "$name - the row is that orderId");

=== TEST 3: five products, quantity 2, per-user limit 3: nothing oversold
--- init
$ENV{TEST_NGINX_PRODUCT} = uniq('multi');
--- http_config eval: $::HttpConfig
--- config
    location = /order { fluxgate_order; fluxgate_per_user_limit 3; }
    location = /init { fluxgate_stock_admin; }
--- request eval
[ map { "POST /init\n{\"productId\":\"\$TEST_NGINX_PRODUCT-$_\",\"quantity\":40}" } 0 .. 4 ]
--- more_headers eval
[ ("Content-Type: application/json") x 5 ]
--- error_code eval
[ (200) x 5 ]
--- check
my $p = $ENV{TEST_NGINX_PRODUCT};
# 7 users over 5 products, coprime: every user tries every product often
my $r = loadgen(port => server_port(), c => 200, n => 3000, products => 5,
                users => 7, quantity => 2, product => $p, log => 1);
my ($st, $body) = main::tally($r->{log});
is(scalar @{ $r->{log} }, 3000, "$name - 3000 answers");
ok($body->{limit_reached}, "$name - the per-user limit answered")
    or diag(main::dumped($body));
for my $i (0 .. 4) {
    my $stock = redis('GET', "fg:{$p-$i}:stock");
    ok($stock >= 0, "$name - $p-$i Redis stock not negative");
    my $buyers = { redis('HGETALL', "fg:{$p-$i}:buyers") };
    my $sold = 0;
    $sold += $_ for values %$buyers;
    is($stock + $sold, 40, "$name - $p-$i stock + sold = 40");
    ok(!grep({ $_ > 3 } values %$buyers), "$name - $p-$i no user above 3");
}
my %ids = map { $_->[1] => 1 } grep { $_->[0] == 200 } @{ $r->{log} };
ok(drained(), "$name - the worker drained the topic");
my @rows = map { @{ order_rows("$p-$_") } } 0 .. 4;
is_deeply([sort map { $_->[0] } @rows], [sort keys %ids],
          "$name - the rows are the orders answered 200, one each");
for my $i (0 .. 4) {
    my %per_user;
    $per_user{ $_->[1] } += $_->[2] for @{ order_rows("$p-$i") };
    ok(!grep({ $_ > 3 } values %per_user),
       "$name - $p-$i no user above 3 in PostgreSQL");
    my $units = 0;
    $units += $_ for values %per_user;
    # every claim ended (answered), so what Redis let go is recorded
    is(redis('ZCARD', "fg:{$p-$i}:pending"), 0, "$name - $p-$i no claim pending");
    is($units, 40 - redis('GET', "fg:{$p-$i}:stock"),
       "$name - $p-$i units in PostgreSQL ($units) = the 40 less Redis's stock");
    is(psql("select stock from products where id = '$p-$i'"), 40 - $units,
       "$name - $p-$i products.stock = 40 less the units");
}
