# fluxgate-reconcile's verdict on the books of a product's current
# generation: stock set = Redis stock + pending units + recorded units.
# Balanced: exit 0.  A difference with nothing in flight (the worker has
# committed everything written to the topic): exit 1, after re-reading for
# a few seconds, because a live sale moves the numbers between reads.  A
# difference while messages are in flight (worker stopped): not drift.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use FluxGate::Test;
use FluxGate::Worker;

like(svc('stop', 'settler'), qr/stopped|not running/, 'the stack\'s settler is stopped for this file');
END { svc('start', 'worker'); svc('start', 'settler') }

my $p = uniq('p682');
my $g = set_stock($p, 10);
my $stock = "fg:{$p}:stock";

# books with every kind of unit: 2 recorded, 1 pending (young), 7 in Redis
{
    my $c = pending_claim($p, user => 'u1', quantity => 2, age_ms => 60_000);
    produce_claim($p, $c, 10);
    ok(wait_until(30, sub { claim_recorded($c) }), 'an order of 2 recorded by the worker');
    my ($rc) = run_reconcile('--repair', '-p', $p);
    is(claim_state($p, $c), '200', 'and settled as done');
    pending_claim($p, user => 'u2', quantity => 1, age_ms => 1_000);
}

sub verdict {
    my $t0 = time;
    my ($rc, $out, $err) = run_reconcile('--json', '-p', $p);
    my ($line) = grep { /^\{/ } split /\n/, $out;
    return ($rc, eval { json_decode($line) } || {}, $err, time - $t0);
}

{
    my ($rc, $j) = verdict();
    is($rc, 0, 'balanced: exit 0');
    is_deeply([@$j{qw(state generation stockSet stock pendingUnits recordedUnits drift)}],
              ['balanced', $g, 10, 7, 1, 2, 0], '10 set = 7 in Redis + 1 pending + 2 recorded');
}

{
    redis('DECRBY', $stock, 3);
    my ($rc, $j, $err, $took) = verdict();
    is($rc, 1, 'Redis stock tampered down by 3: exit 1');
    is_deeply([@$j{qw(state drift)}], ['drift', 3], 'state drift, drift 3');
    like($err, qr/error: product \Q$p\E, generation $g: drift \+3 with nothing in flight \(stock set 10, Redis stock 4, pending 1, recorded 2\).*nothing changed, exit status 1/,
         'the log names the product, the numbers and what it did');
    ok($took >= 2.5, sprintf('it re-read for ~3 s before calling it drift (%.1f s)', $took));
    is(redis('GET', $stock), 4, 'without --repair nothing is changed');

    redis('INCRBY', $stock, 5);
    ($rc, $j) = verdict();
    is($rc, 1, 'tampered up by 2: exit 1');
    is($j->{drift}, -2, 'drift -2: units that were never set');

    redis('DECRBY', $stock, 2);
    ($rc, $j) = verdict();
    is($rc, 0, 'restored: exit 0 again');
}

# a difference that goes away within the re-reads is a sale in motion
{
    redis('DECRBY', $stock, 1);
    # the difference goes once fluxgate-reconcile has read it: its first
    # reading of the books is its first ZRANGE of the pending claims (the
    # settler is stopped; nothing else asks Redis for one here)
    my $zrange = redis_commandstats()->{zrange} // 0;
    my $pid = fork // die;
    if ($pid == 0) {
        my $ok = wait_until(30, sub { (redis_commandstats()->{zrange} // 0) > $zrange });
        redis('INCRBY', $stock, 1);
        POSIX::_exit($ok ? 0 : 1);
    }
    my ($rc, $j) = verdict();
    waitpid $pid, 0;
    is($?, 0, 'the difference was read before it went');
    is($rc, 0, 'a difference gone between two readings: exit 0');
    is($j->{state}, 'balanced', 'reported balanced from the later reading');
}

# messages in flight: an order Kafka acknowledged (its key done, so no
# longer pending) that the stopped worker has not recorded yet
{
    like(svc('stop', 'worker'), qr/stopped/, 'worker stopped');
    my $c = pending_claim($p, user => 'u3', quantity => 1, age_ms => 0);
    produce_claim($p, $c, 10);
    redis('EVAL', "redis.call('HSET', KEYS[1], 's', 200, 'r', 'success')"
                  . " redis.call('ZREM', KEYS[2], ARGV[1])",
          2, "fg:{$p}:idem:$c->{key}", "fg:{$p}:pending", $c->{key});

    my ($rc, $j, $err) = verdict();
    is($rc, 0, 'the unit in flight is not called drift: exit 0');
    is_deeply([@$j{qw(state drift)}], ['in-flight', 1], 'state in-flight, 1 unit');
    like($err, qr/product \Q$p\E, generation $g: \+1 units not accounted for while messages are in flight/,
         'the log says why it is not drift');

    like(svc('start', 'worker'), qr/started/, 'worker started');
    ok(wait_until(30, sub { claim_recorded($c) }), 'it records the order');
    ($rc, $j) = verdict();
    is($rc, 0, 'exit 0');
    is_deeply([@$j{qw(state recordedUnits drift)}], ['balanced', 3, 0], 'balanced with 3 recorded');
}

done_testing();
