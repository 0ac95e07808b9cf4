# kill -9 of an nginx worker process with orders in flight.  Kafka is
# frozen while a crowd orders through a gate with 4 worker processes, so
# every order is reserved in Redis and waits for its delivery report; one
# worker process is killed; Kafka thaws.  The killed process's claims have
# no one left to end them: they stay pending (never expiring into a second
# sale) until fluxgate-reconcile settles them against PostgreSQL.  Then the
# books balance, and a retry of each killed order's key gets either its
# recorded order (200, same orderId) or, released, a fresh decision.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;

my $g = gate_start(workers => 4);
my $kafka = svc_pid('kafka') or BAIL_OUT('no Kafka pid from supervisord');
my $p = uniq('f620');
is(init_stock($g, $p, 200, key => "k-$p")->{status}, 200, 'product set: 200 units');

kill 'STOP', $kafka;
my $sale = sale_start($g, product => $p, c => 120, n => 120, run => "f620");
ok(wait_until(10, sub { redis('GET', "fg:{$p}:stock") <= 200 - 100 }),
   'orders reserved and waiting for Kafka') or diag(redis('GET', "fg:{$p}:stock"));
# the process with most orders waiting (the kernel spreads connections over
# the reuseport sockets; one process may have none)
my ($victim, $conns) = @{ (gate_workers_by_load($g))[0] };
cmp_ok($conns, '>', 0, "worker process $victim holds $conns of the crowd's connections");
kill 'KILL', $victim;
ok(wait_until(5, sub { !kill 0, $victim }), "worker process $victim killed");
my $pending_at_kill = redis('ZCARD', "fg:{$p}:pending");
kill 'CONT', $kafka;

my $r = sale_wait($sale);
my @ok = ok_orders($r);
diag("pending at the kill: $pending_at_kill; answers: "
     . join(' ', map { "$_=$r->{status}{$_}{count}" } sort keys %{ $r->{status} }));
cmp_ok($pending_at_kill, '>', 0, 'claims were pending when the process died');
cmp_ok(scalar @ok, '>', 0, 'the other worker processes answered 200s');

# the gate's surviving processes end their own claims; the dead one's stay
ok(wait_until(30, sub { redis('ZCARD', "fg:{$p}:pending") < $pending_at_kill }),
   'the surviving processes ended their claims');
my $left = redis('ZCARD', "fg:{$p}:pending");
cmp_ok($left, '>', 0, "the killed process's claims are still pending ($left), not expiring");
my @keys = redis('ZRANGE', "fg:{$p}:pending", 0, -1);
is(redis('PTTL', "fg:{$p}:idem:$keys[0]"), -1, 'a pending claim has no TTL');

ok(settle_claims($p, deadline => 3000), 'fluxgate-reconcile settled every claim');

# each of the dead process's keys was settled one way or the other: as
# recorded (a retry replays 200 with its orderId) or released (a retry is
# decided afresh: a new order, not a replay)
my (%how, @wrong);
for my $k (@keys) {
    my ($row, $user) = split /\|/, psql("select id, user_id from orders"
        . " where product_id = '$p' and idempotency_key = '$k'");
    my $res = http_post(gate_url($g) . '/order',
                        json_encode({ productId => $p, userId => $user // "u-retry-$k" }),
                        { 'X-Idempotency-Key' => $k });
    my $b = eval { json_decode($res->{content}) } || {};
    my $replay = ($res->{headers}{'idempotent-replayed'} // '') eq 'true';
    if ($row) {
        $how{recorded}++;
        push @wrong, "$k: recorded as $row, retry $res->{status} $res->{content}"
            unless $res->{status} == 200 && $replay && ($b->{orderId} // '') eq $row;
    } else {
        $how{released}++;
        push @wrong, "$k: released, retry $res->{status} $res->{content}"
            unless $res->{status} == 200 && !$replay && $b->{status} eq 'success';
        push @ok, $b->{orderId} if $res->{status} == 200;
    }
}
diag("the killed process's claims: " . join(' ', map { "$_=$how{$_}" } sort keys %how));
is(($how{recorded} // 0) + ($how{released} // 0), scalar @keys,
   'every one of its ' . scalar(@keys) . ' keys was settled, recorded or released');
is(scalar @wrong, 0, 'and a retry of each got what its settling says') or diag(join "\n", @wrong);

books_balance('after the kill', [$p], \@ok);

# the master says it lost a worker process to SIGKILL: an [alert] this
# test asked for
gate_stop($g, allow => [qr/worker process $victim exited on signal 9/]);
done_testing();
