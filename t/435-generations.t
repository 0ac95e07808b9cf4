# Stock generations in the worker: every message is accounted against the
# generation it names, so the order in which several producers' messages
# arrive (one partition or several, one batch or many) changes nothing:
# orders of a new generation before its stock_set, a slow producer's
# orders of the old generation after it, a stock_set published twice.
# products shows the highest generation: its stock minus what it sold.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use FluxGate::Test;
use FluxGate::Worker;

sub rejected_of {
    my ($p) = @_;
    return scalar psql("select count(*) from orders where product_id = '$p'"
                       . " and status <> 'accepted'");
}

# an order of generation $g of a product set to $s units, as JSON
sub o {
    my ($p, $g, $s, %o) = @_;
    return [$p, (order_msg(productId => $p, generation => $g,
                           generationStock => $s, %o))[1]];
}

my @partitions = sort { $a <=> $b } keys %{ end_offsets(topic()) };
ok(@partitions >= 2, 'the topic has several partitions (' . scalar(@partitions) . ')');

# (a) one partition, several producers one after the other: generation 2's
# orders come before generation 2's stock_set, between generation 1's
{
    my $p = uniq('p435a');
    produce([$p, stock_msg($p, 3, 1)]);                 # /init, process A
    produce(o($p, 1, 3));                               # process B
    produce(o($p, 2, 10, quantity => 2), o($p, 2, 10)); # C, after /init #2
    produce(o($p, 1, 3), o($p, 1, 3));                  # B, slow, still g1
    produce([$p, stock_msg($p, 10, 2)]);                # A's stock_set of g2
    produce(o($p, 2, 10));                              # C
    ok(wait_until(30, sub { orders_of($p) == 6 }), 'one partition: six orders recorded')
        or diag(`tail -5 @{[worker_log()]}`);
    is(rejected_of($p), 0, 'none rejected');
    is(generation_row($p, 1), '3|3|t', 'generation 1: stock 3, sold 3, set');
    is(generation_row($p, 2), '10|4|t', 'generation 2: stock 10, sold 4, set');
    is(product_stock($p) . '|' . product_generation($p), '6|2',
       'products: generation 2, stock 10 - 4');
}

# (a) the same, each step committed before the next one is produced: the
# row of generation 2 is made by an order, its stock_set comes batches later
{
    my $p = uniq('p435b');
    my $n = 0;
    my $step = sub {
        $n += grep { $_->[1] =~ /"type":"order"/ } @_;
        produce(@_);
        wait_until(30, sub { orders_of($p) == $n }) or diag("step with $n orders not recorded");
    };
    $step->([$p, stock_msg($p, 2, 1)], o($p, 1, 2));
    $step->(o($p, 2, 5, quantity => 3));
    is(generation_row($p, 2), '5|3|f', 'an order made generation 2\'s row, not set yet');
    is(product_stock($p) . '|' . product_generation($p), '2|2',
       'products already shows generation 2: 5 - 3');
    $step->(o($p, 1, 2));
    $step->([$p, stock_msg($p, 5, 2)]);
    $step->(o($p, 2, 5, quantity => 2));
    is(rejected_of($p), 0, 'batch by batch: none rejected');
    is(generation_row($p, 1), '2|2|t', 'generation 1: 2 of 2');
    is(generation_row($p, 2), '5|5|t', 'generation 2: 5 of 5, set by the late stock_set');
    is(product_stock($p), 0, 'products: 5 - 5');
}

# (a) several partitions and producers at once: a producer with its own
# partitioner per nginx process, generation 2's stock_set last
{
    my $p = uniq('p435c');
    my @g1 = map { o($p, 1, 50) } 1 .. 50;
    my @g2 = map { o($p, 2, 80) } 1 .. 40;
    my $last = $partitions[-1];
    produce([$p, stock_msg($p, 50, 1)]);
    produce_concurrently(
        sub { produce_to_partition($partitions[0], @g1[0 .. 24]) },
        sub { produce_to_partition($partitions[1], @g2[0 .. 19]) },
        sub { produce(@g1[25 .. 49]) },
        sub { produce_to_partition($last, @g2[20 .. 39]) },
    );
    produce_to_partition($partitions[0], [$p, stock_msg($p, 80, 2)]);
    ok(drained(), 'the worker drained the topic');
    is(orders_of($p), 90, 'several partitions: 90 orders recorded');
    is(rejected_of($p), 0, 'none rejected');
    is(generation_row($p, 1), '50|50|t', 'generation 1: 50 of 50');
    is(generation_row($p, 2), '80|40|t', 'generation 2: 40 of 80');
    is(product_stock($p) . '|' . product_generation($p), '40|2', 'products: generation 2, 80 - 40');
    cmp_ok(psql("select count(distinct kafka_partition) from orders where product_id = '$p'"),
           '>=', @partitions > 2 ? 3 : 2, 'the orders really came through several partitions');
}

# (b) an order of generation 1 arriving after generation 2 was set
{
    my $p = uniq('p435d');
    produce([$p, stock_msg($p, 5, 1)], o($p, 1, 5), [$p, stock_msg($p, 10, 2)], o($p, 2, 10));
    ok(wait_until(30, sub { orders_of($p) == 2 }), 'generation 2 set and selling');
    is(product_stock($p) . '|' . product_generation($p), '9|2', 'products: 10 - 1 of generation 2');
    my ($late) = order_msg(productId => $p, generation => 1, generationStock => 5);
    produce([$p, json_encode($late)]);
    ok(drained(), 'the worker drained the topic');
    is(orders_of($p), 3, 'a late order of generation 1 recorded');
    is(psql("select status || '|' || generation from orders where id = '$late->{orderId}'"),
       'accepted|1', 'accepted, in generation 1');
    is(generation_row($p, 1), '5|2|t', 'generation 1 sold it');
    is(product_stock($p) . '|' . product_generation($p), '9|2',
       'products.stock unchanged: it shows generation 2');
}

# (c) a stock_set published twice for the same generation (a retried /init
# replays and publishes again), and one naming another stock
{
    my $p = uniq('p435e');
    my $set1 = stock_msg($p, 5, 1);
    produce([$p, $set1], o($p, 1, 5), o($p, 1, 5));
    ok(wait_until(30, sub { orders_of($p) == 2 }), 'generation 1 set, two sold');
    my $row = sub {
        scalar psql(qq{select stock || '|' || sold || '|' || set_at from stock_generations
                       where product_id = '$p' and generation = 1})
    };
    my $before = $row->();
    my $products_before = psql("select stock || '|' || generation || '|' || updated_at"
                               . " from products where id = '$p'");
    my $mark = log_mark();
    produce([$p, $set1]);
    ok(wait_until(30, sub { log_since($mark) =~ /batch committed: .* stock_set_skipped=1 / }),
       'the same stock_set again is consumed');
    is($row->(), $before, 'the replayed stock_set changed nothing: stock, sold, set_at');
    is(psql("select stock || '|' || generation || '|' || updated_at from products where id = '$p'"),
       $products_before, 'products untouched (not even updated_at)');
    like(log_since($mark), qr/info: stock_set of $p generation 1 to 5 at \S+ \d+:\d+ skipped: generation 1 already set \(a replayed stock_set\)/,
         'the log says it was a replay');
    like(log_since($mark), qr/batch committed: messages=1 .* stock_set=0 stock_set_skipped=1 /,
         'and the batch counts it as skipped, not set');

    $mark = log_mark();
    produce([$p, stock_msg($p, 7, 1)], o($p, 1, 5));
    ok(wait_until(30, sub { orders_of($p) == 3 }), 'a stock_set naming another stock for generation 1, then an order');
    is(generation_row($p, 1), '5|3|t', 'the first stock is kept; the order sold within it');
    like(log_since($mark), qr/warning: stock_set of $p generation 1 to 7 at \S+ \d+:\d+ ignored: generation 1 of $p has stock 5 recorded already; kept it/,
         'a warning names both stocks');

    # a replay of generation 1's stock_set once generation 2 is on sale
    produce([$p, stock_msg($p, 4, 2)]);
    ok(wait_until(30, sub { product_generation($p) == 2 }), 'generation 2 set');
    produce([$p, $set1], o($p, 2, 4));
    ok(wait_until(30, sub { orders_of($p) == 4 }), 'generation 1\'s stock_set again, then an order of 2');
    is(product_stock($p) . '|' . product_generation($p), '3|2',
       'products stays on generation 2: 4 - 1');
    is(generation_row($p, 1), '5|3|t', 'generation 1 unchanged');
}

# an order naming another generationStock than the one recorded counts
# against the recorded one, and says so
{
    my $p = uniq('p435f');
    my $mark = log_mark();
    my ($odd) = order_msg(productId => $p, generationStock => 9);
    produce([$p, stock_msg($p, 2)], [$p, json_encode($odd)]);
    ok(wait_until(30, sub { orders_of($p) == 1 }), 'an order with another generationStock');
    is(generation_row($p, 1), '2|1|t', 'counted against the recorded stock 2');
    like(log_since($mark), qr/warning: order $odd->{orderId} says generation 1 of $p has stock 9, but 2 is recorded: counted against 2/,
         'with a warning');
}

done_testing();
