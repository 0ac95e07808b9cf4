# One of two gates killed with -9 (master and workers) under a sale spread
# over both, as a load balancer spreads it: the connections to the dead
# gate fail and move to the survivor, which keeps selling; supervisord
# restarts the dead one.  The requests the dead gate held got no answer;
# their reservations are claims whose Kafka outcome nobody learnt, settled
# against PostgreSQL (recorded -> kept, not -> released).  The books
# balance: no 200 lost, no unit sold twice.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::FleetStack;

fleet_or_skip(gates => 2);

my $Stock = 5000;
my $p = uniq('f755');
my $res = http_post(admin_url() . '/init',
                    json_encode({ productId => $p, quantity => $Stock }));
is($res->{status}, 200, "$p set to $Stock units") or diag($res->{content});

my $program = 'nginx-2';
my $master = svc_pid($program) or BAIL_OUT("no pid for $program");
my @victims = ($master, nginx_workers($master));
my $port = (split /:/, (gates())[1])[-1];

my $r = fleet_sale(product => $p, d => 10, c => 20, inject => sub {
    kill 'KILL', @victims;
    ok(wait_until(10, sub { !grep { kill 0, $_ } @victims }),
       "gate 2 (port $port) killed: master and " . (@victims - 1) . " workers");
});
ok(wait_until(30, sub { my $pid = svc_pid($program);
                        $pid && $pid != $master
                        && http_get((split ' ', $ENV{FLUXGATE_HEALTH_URLS})[1])->{status} == 200 }),
   'supervisord restarted gate 2, and it is healthy');

# on fg-loadgen's time line (the same wall clock): the kill
my $kill = $r->{inject_ms};
my @w = failover_window($r);
diag(@w ? sprintf("failover: unanswered or 503 from %.1f s to %.1f s (%.2f s; the kill at %.1f s)",
                  $w[0] / 1000, $w[1] / 1000, ($w[1] - $w[0]) / 1000, $kill / 1000)
        : 'failover: no request failed');
ok(!@w || $w[0] >= $kill, 'failures only after the kill');
# the survivor kept selling: orders that fell due after the kill, up to the
# sale's end, answered 200
my @after = grep { $_->[0] == 200 && $_->[4] - $_->[3] > $kill } @{ $r->{log} };
cmp_ok(scalar @after, '>', 0, 'the survivor sold after the kill ('
       . scalar(@after) . ' 200s)');
my ($last_due) = sort { $b <=> $a } map { $_->[4] - $_->[3] } grep { $_->[0] } @{ $r->{log} };
my ($last_200) = sort { $b <=> $a } map { $_->[4] - $_->[3] } @after;
ok(defined $last_200 && $last_200 >= $last_due - 1000,
   'and until the end of the sale (the last 200 was due within its last second)');
my @gap = longest_gap($r);
diag(sprintf "longest time without a 200: %.2f s (from %.1f s to %.1f s)",
             ($gap[1] - $gap[0]) / 1000, $gap[0] / 1000, $gap[1] / 1000);
cmp_ok(($r->{statuses}{0} // 0), '<=', 20,
       'no more requests unanswered than the connections the dead gate held');

fleet_books('gate killed', $p, $Stock, $r);

done_testing();
