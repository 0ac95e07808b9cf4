# Orders through the front door: stock set with POST /init reaches
# PostgreSQL as a stock_set of the generation /init answered, orders
# accepted by nginx (POST /order) end up as rows with every field right
# (their generation included), exactly once, an idempotent replay adds
# nothing, and a sold-out order never reaches the database.  A stack whose
# nginx does not serve POST /init fails here: nothing else in this file
# means anything without it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time);
use FluxGate::Test;
use FluxGate::Worker;

my $url = $ENV{FLUXGATE_URL};
my $p = uniq('p470');

my $init = http_post("$ENV{FLUXGATE_ADMIN_URL}/init",
                     json_encode({ productId => $p, quantity => 5 }));
unless (is($init->{status}, 200, "POST /init to $ENV{FLUXGATE_ADMIN_URL}/init")) {
    diag("$init->{status} $init->{content}");
    done_testing();
    exit 1;
}
my $g = (eval { json_decode($init->{content}) } || {})->{generation} // '';
like($g, qr/^[1-9]\d*$/, "POST /init answers the generation it started ($g)");

ok(wait_until(20, sub { (product_stock($p) // '') eq '5' }),
   'POST /init: the stock_set reached products')
    or diag(`tail -3 @{[worker_log()]}`);
is(generation_row($p, $g), '5|0|t', "generation $g recorded: stock 5, set");

sub order {
    my ($user, $qty, $key) = @_;
    my $res = http_post("$url/order",
                        json_encode({ productId => $p, userId => $user, quantity => $qty }),
                        { 'X-Idempotency-Key' => $key });
    my $body = eval { json_decode($res->{content}) } || {};
    return ($res->{status}, $body);
}

my $t0 = time;
my %sent;
for my $o (['u-470-a', 1], ['u-470-b', 2], ['u-470-c', 1]) {
    my $key = uniq('k470');
    my ($status, $body) = order($o->[0], $o->[1], $key);
    is($status, 200, "order of $o->[0] accepted by nginx");
    $sent{$body->{orderId} // ''} = [@$o, $key];
}

ok(wait_until(20, sub { orders_of($p) == 3 }), 'three rows')
    or diag(`tail -5 $ENV{FG_RUN_DIR}/logs/worker.log`);
for my $id (sort keys %sent) {
    my ($user, $qty, $key) = @{ $sent{$id} };
    my $row = psql(qq{select product_id, user_id, quantity, idempotency_key, status,
                             generation, extract(epoch from accepted_at)
                      from orders where id = '$id'});
    my @f = split /\|/, $row;
    is_deeply([@f[0 .. 5]], [$p, $user, $qty, $key, 'accepted', $g],
              "order $id: product, user, quantity, key, status, generation");
    ok(@f == 7 && $f[6] >= $t0 - 1 && $f[6] <= time + 1, "order $id: accepted_at is when nginx took it");
}
is(product_stock($p), 1, 'PostgreSQL stock 5 - 1 - 2 - 1');
is(redis('GET', "fg:{$p}:stock"), 1, 'the same as Redis');

# a replayed request: same key, same body
{
    my ($id) = grep { $sent{$_}[0] eq 'u-470-a' } keys %sent;
    my ($status, $body) = order('u-470-a', 1, $sent{$id}[2]);
    is($body->{status}, 'ignored', 'a replay is answered from Redis');
    is($body->{orderId}, $id, 'with the first orderId');
}

# sold out: 1 left, 2 wanted
{
    my ($status, $body) = order('u-470-d', 2, uniq('k470'));
    is($status, 409, 'more than the stock: 409');
    is($body->{status}, 'sold_out', 'sold_out');
}

# a last order as a marker behind the replay and the refusal
{
    my ($status, $body) = order('u-470-e', 1, uniq('k470'));
    is($status, 200, 'the last unit accepted');
    ok(drained(), 'the worker drained the topic');
    is(orders_of($p), 4, 'its row arrived, and nothing else: the replay and the refusal made no rows');
    is(product_stock($p), 0, 'stock 0 in PostgreSQL');
    is(generation_row($p, $g), '5|5|t', "generation $g sold 5 of 5");
}

done_testing();
