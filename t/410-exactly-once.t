# Each order message recorded exactly once, with every field right: hand
# produced orders become rows carrying the message's fields, generation and
# Kafka position, their generation's sold takes their quantity once, a copy
# of an order (a redelivery) changes nothing, and a second consumer group
# reading the whole topic again (every message redelivered) changes nothing
# at all.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $p = uniq('p410');

# one stock_set, then two orders, in one partition (key = productId)
my ($a, $a_json) = order_msg(productId => $p, userId => 'u-410.a', quantity => 2,
                             acceptedAt => 1732470000123, generationStock => 10);
my ($b, $b_json) = order_msg(productId => $p, userId => 'u-410.b', quantity => 1,
                             generationStock => 10);
produce([$p, stock_msg($p, 10)], [$p, $a_json], [$p, $b_json]);

ok(wait_until(20, sub { orders_of($p) == 2 }), 'both orders recorded')
    or diag(`tail -5 $ENV{FG_RUN_DIR}/logs/worker.log`);

{
    my $row = psql(qq{select id, product_id, user_id, quantity, idempotency_key,
                             status, coalesce(reason, 'NULL'),
                             (extract(epoch from accepted_at) * 1000)::bigint,
                             kafka_topic, kafka_partition, kafka_offset, generation
                      from orders where id = '$a->{orderId}'});
    my @f = split /\|/, $row, -1;
    is($f[0], $a->{orderId}, 'id is the orderId');
    is($f[1], $p, 'product_id');
    is($f[2], 'u-410.a', 'user_id');
    is($f[3], 2, 'quantity');
    is($f[4], $a->{idempotencyKey}, 'idempotency_key');
    is($f[5], 'accepted', 'status accepted');
    is($f[6], 'NULL', 'no reason');
    is($f[7], 1732470000123, 'accepted_at to the millisecond');
    is($f[8], topic(), 'kafka_topic');
    is($f[11], 1, 'generation');

    is_deeply(message_at($f[8], $f[9], $f[10]), [$p, $a_json],
              'kafka_partition and kafka_offset point at the message');
}

is(product_stock($p), 7, 'stock 10, minus 2, minus 1');
is(generation_row($p, 1), '10|3|t', 'its generation: stock 10, sold 3, set');
like(psql("select created_at > now() - interval '5 minutes' from orders where id = '$b->{orderId}'"),
     qr/^t$/, 'created_at set');

# the same message again, twice, then a marker behind it in the partition
{
    my ($c, $c_json) = order_msg(productId => $p, userId => 'u-410.c', generationStock => 10);
    produce([$p, $a_json], [$p, $a_json], [$p, $c_json]);
    ok(wait_until(20, sub { orders_of($p) == 3 }), 'the marker behind the copies is recorded');
    is(psql("select count(*) from orders where id = '$a->{orderId}'"), 1,
       'a copied order is one row');
    is(product_stock($p), 6, 'and took stock once (only the marker took 1 more)');
    is(generation_row($p, 1), '10|4|t', 'sold 4 in its generation');
}

# two copies of one order inside one produce call (one batch)
{
    my $q = uniq('p410q');
    my ($d, $d_json) = order_msg(productId => $q, quantity => 3, generationStock => 5);
    produce([$q, stock_msg($q, 5)], [$q, $d_json], [$q, $d_json]);
    ok(drained(), 'the worker drained the topic');
    is(orders_of($q), 1, 'order copied within a batch recorded once');
    is(product_stock($q), 2, 'and stock taken once');
}

# a stock_set after orders starts a new generation; later orders sell
# from it, and an order past the old one's stock is rejected in its own
{
    my $q = uniq('p410s');
    my @m = ([$q, stock_msg($q, 1, 1)]);
    my (undef, $o1) = order_msg(productId => $q, generationStock => 1);
    my ($o2, $o2_json) = order_msg(productId => $q, generationStock => 1);
    my (undef, $o3) = order_msg(productId => $q, generation => 2, generationStock => 5);
    push @m, [$q, $o1], [$q, $o2_json], [$q, stock_msg($q, 5, 2)], [$q, $o3];
    produce(@m);
    ok(wait_until(20, sub { orders_of($q) == 3 }), 'orders around a stock_set recorded');
    is(psql("select status || '|' || reason from orders where product_id = '$q' and status = 'rejected'"),
       "rejected|generation 1 of $q: 1 wanted, 0 left; Redis lost acknowledged writes?",
       'the second order of generation 1 could not be covered by it');
    is(psql("select id from orders where product_id = '$q' and status = 'rejected'"),
       $o2->{orderId}, 'the second one');
    is(product_stock($q) . '|' . product_generation($q), '4|2',
       'products: generation 2, 5 - 1');
    is(generation_row($q, 1) . ' ' . generation_row($q, 2), '1|1|t 5|1|t',
       'each generation sold 1');
}

# every message of the topic delivered again, to a second group
{
    my $before = db_fingerprint();
    my $end = end_offsets(topic());
    my $w = start_private_worker(topic => topic(), group => uniq('g410'));
    ok(wait_until(60, sub { caught_up($w->{log}, $end) }),
       'a second group read the whole topic again')
        or diag(explain({ end => $end, done => committed_in_log(slurp($w->{log})) }));
    is(stop_private_worker($w), 0, 'and stopped with status 0 on SIGTERM');
    is(db_fingerprint(), $before, 'orders, stock and dead letters unchanged by the redelivery');
    my $log = slurp($w->{log});
    unlike($log, qr/batch committed.* (accepted|rejected)=[1-9]/, 'it wrote no new order');
}

done_testing();
