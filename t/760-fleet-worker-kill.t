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

# the gates' releases (an order Kafka did not take), all gates together
sub releases {
    my %n;
    for my $u (split ' ', $ENV{FLUXGATE_ADMIN_URLS}) {
        my $m = prom_samples(http_get("$u/metrics")->{content});
        for my $k (keys %$m) {
            $n{$1} += $m->{$k} if $k =~ /^fluxgate_releases_total\{result="(\w+)"\}$/;
        }
    }
    return %n;
}
sub gate_logs_since {
    my ($marks) = @_;
    my $text = '';
    for my $f (sort keys %$marks) {
        open my $fh, '<', $f or next;
        seek $fh, $marks->{$f}, 0;
        local $/;
        $text .= <$fh> // '';
    }
    return $text;
}
my %rel0 = releases();

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

# the gates never noticed: no order of theirs failed in Kafka (nothing
# released, nothing "possibly persisted"); a 503 of the sale, if any, was
# a Redis deadline a loaded machine missed, which the gate logs
my %rel = releases();
is(join(' ', map { "$_+" . ($rel{$_} - ($rel0{$_} // 0)) } sort keys %rel),
   join(' ', map { "$_+0" } sort keys %rel),
   'the gates released nothing: every delivery to Kafka succeeded');
is(FluxGate::FleetStack::_possibly_persisted($r->{marks}), 0, 'nothing "possibly persisted"');
my $n503 = $r->{statuses}{503} // 0;
ok(!$n503 || gate_logs_since($r->{marks}) =~ /no reply within the deadline/,
   "the sale's 503s ($n503) were Redis deadlines, not the workers");
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
