# kill -9 of the broker leading the product's partition, under a sale
# spread over every gate.  The topic is replicated three times with
# min.insync.replicas 2 and the gates produce with acks=all, so every order
# answered 200 is on two brokers at least when the leader dies: the
# controller fences it (3 s without a heartbeat), a follower of the in-sync
# set leads, the producers and the workers follow it, and supervisord
# restarts the dead broker, which catches up.  Orders in flight meanwhile
# wait in the producer (up to message.timeout.ms) and are answered 200, or
# 503 when the delivery could not be confirmed in time (their claims are
# settled against PostgreSQL).  The books balance.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet qw(init_stock);
use FluxGate::FleetStack;

fleet_or_skip(brokers => 3, gates => 2);

my $Stock = 5000;
my $p = uniq('f750');
my $res = http_post(admin_url() . '/init',
                    json_encode({ productId => $p, quantity => $Stock }));
is($res->{status}, 200, "$p set to $Stock units") or diag($res->{content});

my ($first, $partition) = FluxGate::FleetStack::first_order($p);
my $leader = partition_leader($partition);
ok($leader, "partition $partition of $p is led by broker $leader");
my $program = kafka_program($leader);
my $pid = svc_pid($program);
is(scalar(partition_isr($partition)), 3, 'three replicas in sync before the kill');

my ($killed_at, $new_leader);
my $r = fleet_sale(product => $p, d => 12, inject => sub {
    $killed_at = time;
    like(svc('signal KILL', $program), qr/signalled/, "$program (broker $leader) killed with -9");
    # the controller moves the partition to another replica of the ISR
    wait_until(30, sub {
        my $l = partition_leader($partition);
        $new_leader = $l if defined $l && $l != $leader;
        $new_leader;
    });
});
ok($new_leader, "partition $partition led by broker " . ($new_leader // '?')
   . sprintf(" %.1f s after the kill", time - $killed_at));

my @w = failover_window($r);
diag(@w ? sprintf("failover: 503s from %.1f s to %.1f s (%.1f s; the kill at %.1f s)",
                  $w[0] / 1000, $w[1] / 1000, ($w[1] - $w[0]) / 1000,
                  $r->{inject_ms} / 1000)
        : 'failover: no 503 at all (orders waited in the producer for the new leader)');
my @gap = longest_gap($r);
diag(sprintf "longest time without a 200: %.1f s (from %.1f s to %.1f s)",
             ($gap[1] - $gap[0]) / 1000, $gap[0] / 1000, $gap[1] / 1000);
ok(!@w || $w[0] >= $r->{inject_ms}, '503s only after the kill');
my $slow = grep { $_->[0] == 200 && $_->[4] > $r->{inject_ms} } @{ $r->{log} };
cmp_ok($slow, '>', 0, "200s after the kill ($slow)");

ok(wait_until(90, sub { svc('status', $program) =~ /RUNNING/
                        && partition_isr($partition) == 3 }),
   "broker $leader restarted and back in sync");
fleet_books('leader broker killed', $p, $Stock, $r, extra_ok => [$first]);

done_testing();
