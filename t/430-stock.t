# The stock safety net: an order the database cannot cover (not enough
# stock, or no stock_set ever seen for its product) is kept with status
# rejected and the reason, logged, and takes nothing; stock never goes
# below zero however many orders race for it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $mark = log_mark();

{
    my $p = uniq('p430');
    my ($o1, $j1) = order_msg(productId => $p, quantity => 1);
    my ($o2, $j2) = order_msg(productId => $p, quantity => 3, userId => 'greedy');
    my ($o3, $j3) = order_msg(productId => $p, quantity => 1);
    produce([$p, stock_msg($p, 2)], [$p, $j1], [$p, $j2], [$p, $j3]);
    ok(wait_until(20, sub { orders_of($p) == 3 }), 'all three orders stored');

    is(psql("select status from orders where id = '$o1->{orderId}'"), 'accepted', 'first order accepted');
    is(psql("select status || '|' || reason from orders where id = '$o2->{orderId}'"),
       'rejected|insufficient stock: 3 wanted, 1 left', 'order for 3 of 1 left: rejected, with the reason');
    is(psql("select status from orders where id = '$o3->{orderId}'"), 'accepted',
       'a later order that fits is still accepted');
    is(product_stock($p), 0, 'stock 2 - 1 - 1 = 0; the rejected order took nothing');
    like(log_since($mark), qr/warning: order $o2->{orderId} rejected: insufficient stock: 3 wanted, 1 left \(product $p, user greedy, quantity 3/,
         'the rejection is logged with the order');

    # a later batch, stock already 0
    my ($o4, $j4) = order_msg(productId => $p);
    produce([$p, $j4]);
    ok(wait_until(20, sub { orders_of($p) == 4 }), 'an order after sell-out is stored');
    is(psql("select status || '|' || reason from orders where id = '$o4->{orderId}'"),
       'rejected|insufficient stock: 1 wanted, 0 left', 'rejected');
    is(product_stock($p), 0, 'stock stays 0');
}

{
    my $p = uniq('p430-unknown');
    my ($o, $j) = order_msg(productId => $p);
    produce([$p, $j]);
    ok(wait_until(20, sub { orders_of($p) == 1 }), 'an order for a product without stock is stored');
    like(psql("select status || '|' || reason from orders where id = '$o->{orderId}'"),
         qr/^rejected\|unknown product/, 'rejected as unknown product');
    is(psql("select count(*) from products where id = '$p'"), 0, 'and no product made up for it');
}

{
    # 200 orders race for 30 units across a few batches' worth of messages
    my $p = uniq('p430-race');
    my @m = ([$p, stock_msg($p, 30)]);
    push @m, [$p, (order_msg(productId => $p, quantity => 1 + $_ % 2))[1]] for 1 .. 200;
    produce(@m);
    ok(wait_until(30, sub { orders_of($p) == 200 }), '200 orders for 30 units stored');
    is(psql("select sum(quantity) from orders where product_id = '$p' and status = 'accepted'"),
       30, 'exactly the 30 units accepted');
    is(product_stock($p), 0, 'stock 0, not negative');
    is(psql("select count(*) from products where stock < 0"), 0, 'no product anywhere below 0');
}

done_testing();
