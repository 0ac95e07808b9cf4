# One of two fluxgate-worker processes of the consumer group killed with -9
# under a sale, and kept down: the group coordinator expires its session
# (10 s), the group rebalances, the survivor is assigned every partition
# and drains everything, the dead worker's uncommitted batch included
# (recorded once: the rows are idempotent on orderId).  The gates never
# notice (no 503).  Then the worker comes back and the group rebalances
# again.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::FleetStack;

fleet_or_skip(workers => 2);

my $Stock = 5000;
my $p = uniq('f760');
my $res = http_post(admin_url() . '/init',
                    json_encode({ productId => $p, quantity => $Stock }));
is($res->{status}, 200, "$p set to $Stock units") or diag($res->{content});

my $log = "$ENV{FG_RUN_DIR}/logs/worker.log";
my $mark = -s $log;
sub survivor_has_all {
    open my $fh, '<', $log or return 0;
    seek $fh, $mark, 0;
    my @a = grep { /Kafka: assigned/ } <$fh>;
    return @a && $a[-1] =~ /assigned ((?:\w+\[\d+\],?)+)/
           && (() = $1 =~ /\[/g) == scalar(FluxGate::FleetStack::partitions());
}

my $pid = svc_pid('worker-2') or BAIL_OUT('no pid for worker-2');
my ($killed_at, $rebalanced);
my $r = fleet_sale(product => $p, d => 10, inject => sub {
    kill 'KILL', $pid;
    $killed_at = time;
    # kept down, so the survivor has to drain alone
    svc('stop', 'worker-2');
    ok(!kill(0, $pid), "worker-2 ($pid) killed with -9 and kept down");
});
ok(wait_until(40, \&survivor_has_all), 'the group rebalanced: the surviving worker owns every partition');
$rebalanced = time - $killed_at;
diag(sprintf "rebalance: the survivor owned every partition %.1f s after the kill", $rebalanced);

my @w = failover_window($r);
is(scalar @w, 0, 'the gates never answered 503 (the workers are behind Kafka)');
my $t = time;
fleet_books('worker killed', $p, $Stock, $r);
diag(sprintf "drained by the survivor %.1f s after the sale ended", time - $t);
like(svc('status', 'worker-2'), qr/STOPPED/, 'worker-2 was down all along');

like(svc('start', 'worker-2'), qr/started/, 'worker-2 started again');
ok(wait_until(40, sub {
       my @a = grep { /Kafka: assigned/ } do {
           open my $fh, '<', $log; seek $fh, $mark, 0; <$fh> };
       @a && !survivor_has_all() }),
   'the group rebalanced again: the partitions are shared');

done_testing();
