# Two of the three Kafka brokers down under a sale.  The topic is
# replicated three times with min.insync.replicas 2 and the gates produce
# with acks=all: with one broker left in the in-sync set Kafka refuses
# every write (NOT_ENOUGH_REPLICAS), so no order is answered 200 while the
# two are down: the gates answer 503 and release the units (or, an order
# whose delivery timed out, keep its claim until it is settled against
# PostgreSQL).  Started again, the brokers catch up, the in-sync set is
# whole again and the gates sell on.  The books balance.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::FleetStack;

fleet_or_skip(brokers => 3, gates => 2);

my $Stock = 10000;
my $p = uniq('f765');
my $res = http_post(admin_url() . '/init',
                    json_encode({ productId => $p, quantity => $Stock }));
is($res->{status}, 200, "$p set to $Stock units") or diag($res->{content});

my ($first, $partition) = FluxGate::FleetStack::first_order($p);
my $leader = partition_leader($partition);
ok($leader, "partition $partition of $p is led by broker $leader");
is(scalar(partition_isr($partition)), 3, 'three replicas in sync');
my @down = grep { $_ != $leader } partition_isr($partition);
is(scalar @down, 2, "its followers: brokers @down");

# the gates' 503s so far (every gate's fluxgate_orders_total{outcome="error"})
sub errors {
    my $n = 0;
    for my $u (split ' ', $ENV{FLUXGATE_ADMIN_URLS}) {
        $n += prom_samples(http_get("$u/metrics")->{content})
                  ->{'fluxgate_orders_total{outcome="error"}'} // 0;
    }
    return $n;
}

my ($down_at, $up_at);
my $r = fleet_sale(product => $p, d => 25, rate => 100, sold => 100, inject => sub {
    for my $id (@down) {
        like(svc('stop', kafka_program($id)), qr/stopped/,
             kafka_program($id) . " (broker $id) stopped");
    }
    # from the moment the leader is alone in the in-sync set, Kafka
    # refuses every write of the topic
    ok(wait_until(60, sub { my @isr = partition_isr($partition);
                            @isr == 1 && $isr[0] == $leader }),
       "broker $leader is alone in the in-sync set of partition $partition");
    $down_at = time;
    my $e0 = errors();
    ok(wait_until(30, sub { errors() > $e0 }), 'the gates answer 503');
});
$up_at = time;
my ($from, $to) = map { $_ * 1000 - $r->{started_at_ms} } $down_at // $up_at, $up_at;
diag(sprintf "two brokers down: from %.1f s to the sale's end (%.1f s)",
             $from / 1000, $to / 1000);

# on fg-loadgen's time line: no order due while the leader was alone got a 200
my @during = grep { $_->[4] - $_->[3] > $from } @{ $r->{log} };
my @sold = grep { $_->[0] == 200 } @during;
cmp_ok(scalar @during, '>', 0, 'orders came while two brokers were down ('
       . scalar(@during) . ')');
is(scalar @sold, 0, 'none of them was answered 200')
    or diag(join "\n", map { "@$_" } @sold[0 .. ($#sold < 9 ? $#sold : 9)]);
my @before = grep { $_->[0] == 200 && $_->[4] < $from } @{ $r->{log} };
cmp_ok(scalar @before, '>', 0, 'the sale sold before (' . scalar(@before) . ' 200s)');

for my $id (@down) {
    like(svc('start', kafka_program($id)), qr/started/,
         kafka_program($id) . " (broker $id) started again");
}
ok(wait_until(120, sub { partition_isr($partition) == 3 }),
   'the brokers caught up: three replicas in sync again');
my $again;
ok(wait_until(60, sub {
       $again = http_post((gates())[0] . '/order',
                          json_encode({ productId => $p, userId => uniq('u-again') }),
                          { 'X-Idempotency-Key' => uniq('k-again') });
       $again->{status} == 200 }),
   'the gates sell again') or diag("$again->{status} $again->{content}");
my $again_id = eval { json_decode($again->{content})->{orderId} };

fleet_books('two brokers down', $p, $Stock, $r,
            extra_ok => [$first, $again_id // ()]);

done_testing();
