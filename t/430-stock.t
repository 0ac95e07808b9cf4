# The stock safety net, per generation: an order its generation's stock
# cannot cover (which only happens when Redis lost writes it had
# acknowledged) is kept with status rejected and a reason naming the
# generation, logged, and takes nothing; an order whose generation has no
# stock_set yet is accounted against the generationStock it carries; sold
# never passes a generation's stock however many orders race for it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $mark = log_mark();

# (d) Redis "lost" the reservations of o1 and o3: they were sold again
{
    my $p = uniq('p430');
    my %s = (generationStock => 3);
    my ($o1, $j1) = order_msg(productId => $p, quantity => 1, %s);
    my ($o2, $j2) = order_msg(productId => $p, quantity => 3, userId => 'greedy', %s);
    my ($o3, $j3) = order_msg(productId => $p, quantity => 1, %s);
    produce([$p, stock_msg($p, 3)], [$p, $j1], [$p, $j2], [$p, $j3]);
    ok(wait_until(20, sub { orders_of($p) == 3 }), 'all three orders stored');

    is(psql("select status from orders where id = '$o1->{orderId}'"), 'accepted', 'first order accepted');
    is(psql("select status || '|' || reason from orders where id = '$o2->{orderId}'"),
       "rejected|generation 1 of $p: 3 wanted, 2 left; Redis lost acknowledged writes?",
       'an order past its generation\'s stock: rejected, the reason names the generation');
    is(psql("select status from orders where id = '$o3->{orderId}'"), 'accepted',
       'a later order that fits is still accepted');
    is(product_stock($p), 1, 'stock 3 - 1 - 1 = 1; the rejected order took nothing');
    is(generation_row($p, 1), '3|2|t', 'its generation sold 2 of 3');
    like(log_since($mark), qr/warning: order $o2->{orderId} rejected: generation 1 of $p: 3 wanted, 2 left; Redis lost acknowledged writes\? \(product $p, user greedy, quantity 3/,
         'the rejection is logged with the order');

    # later batches: the last unit, then one past it
    my ($o4, $j4) = order_msg(productId => $p, %s);
    produce([$p, $j4]);
    ok(wait_until(20, sub { orders_of($p) == 4 }), 'the last unit');
    is(psql("select status from orders where id = '$o4->{orderId}'"), 'accepted', 'accepted');
    my ($o5, $j5) = order_msg(productId => $p, %s);
    produce([$p, $j5]);
    ok(wait_until(20, sub { orders_of($p) == 5 }), 'an order after sell-out is stored');
    is(psql("select status || '|' || reason from orders where id = '$o5->{orderId}'"),
       "rejected|generation 1 of $p: 1 wanted, 0 left; Redis lost acknowledged writes?",
       'rejected');
    is(product_stock($p), 0, 'stock stays 0');
    is(generation_row($p, 1), '3|3|t', 'sold 3 of 3');
}

# the safety net is per generation: generation 2's stock does not cover
# what generation 1 oversold
{
    my $p = uniq('p430-g2');
    my (undef, $j1) = order_msg(productId => $p, generationStock => 1);
    my ($o2, $j2) = order_msg(productId => $p, generationStock => 1);
    my ($o3, $j3) = order_msg(productId => $p, generation => 2, generationStock => 5);
    produce([$p, stock_msg($p, 1)], [$p, stock_msg($p, 5, 2)], [$p, $j1], [$p, $j2], [$p, $j3]);
    ok(wait_until(20, sub { orders_of($p) == 3 }), 'orders of generations 1 and 2 stored');
    like(psql("select status || '|' || reason from orders where id = '$o2->{orderId}'"),
         qr/^rejected\|generation 1 of $p: 1 wanted, 0 left/,
         'the second order of generation 1 is rejected though generation 2 has units');
    is(psql("select status from orders where id = '$o3->{orderId}'"), 'accepted',
       'generation 2\'s order is accepted');
    is(product_stock($p), 4, 'products: 5 - 1');
}

{
    my $p = uniq('p430-unset');
    my ($o, $j) = order_msg(productId => $p, quantity => 2, generationStock => 7);
    produce([$p, $j]);
    ok(wait_until(20, sub { orders_of($p) == 1 }),
       'an order for a product whose stock_set has not arrived is stored');
    is(psql("select status from orders where id = '$o->{orderId}'"), 'accepted',
       'accepted against the generationStock it carries (the gate reserved it)');
    is(generation_row($p, 1), '7|2|f', 'its generation: stock 7 from the order, sold 2, not set yet');
    is(product_stock($p), 5, 'and the product made for it: 7 - 2');
}

{
    # 200 orders race for 30 units across a few batches' worth of messages
    my $p = uniq('p430-race');
    my @m = ([$p, stock_msg($p, 30)]);
    push @m, [$p, (order_msg(productId => $p, quantity => 1 + $_ % 2,
                             generationStock => 30))[1]] for 1 .. 200;
    produce(@m);
    ok(wait_until(30, sub { orders_of($p) == 200 }), '200 orders for 30 units stored');
    is(psql("select sum(quantity) from orders where product_id = '$p' and status = 'accepted'"),
       30, 'exactly the 30 units accepted');
    is(product_stock($p), 0, 'stock 0, not negative');
    is(generation_row($p, 1), '30|30|t', 'sold 30 of 30');
    is(psql("select count(*) from products where stock < 0"), 0, 'no product anywhere below 0');
    is(psql("select count(*) from stock_generations where sold > stock"), 0,
       'no generation anywhere sold past its stock');
}

done_testing();
