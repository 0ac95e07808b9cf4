# kill -9 at any point loses nothing and doubles nothing: the restarted
# worker (supervisord brings it back) redoes at most the uncommitted batch,
# and the redo is recognised.  Two kills: one while a batch's transaction is
# open in PostgreSQL (a lock parks it there), one while a large backlog is
# flowing.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $N = 20000;

# 1. killed with its batch's transaction open, offsets uncommitted
{
    my $prefix = uniq('p440a');
    my $lock = hold_lock('orders');
    produce_backlog($prefix, orders => $N);
    ok(wait_until(30, \&worker_blocked), 'the worker is mid-batch (waiting on our lock)');
    my $pid = svc_pid('worker');
    ok(kill('KILL', $pid), "kill -9 $pid");
    close $lock;
    my $new = worker_restarted($pid, 30);
    ok($new, 'supervisord restarted it');
    ok(wait_rows(120, "$prefix-%", $N), "all $N orders recorded after the restart")
        or diag(count_orders("$prefix-%") . " rows");
    sleep 1;
    check_backlog($prefix, $N);
}

# 2. killed while a larger backlog flows: some batches committed, some not
{
    my $N = 100000;
    my $prefix = uniq('p440b');
    my $mark = log_mark();
    produce_backlog($prefix, orders => $N, products => 50);
    my $pid = svc_pid('worker');
    ok(wait_until(30, sub { count_orders("$prefix-%") > 0 }), 'the backlog is flowing');
    ok(kill('KILL', $pid), "kill -9 $pid mid-backlog");
    my $at_kill = count_orders("$prefix-%");
    diag("$at_kill of $N rows were in when the worker was killed");
    ok(worker_restarted($pid, 30), 'supervisord restarted it');
    ok(wait_rows(120, "$prefix-%", $N), "all $N orders recorded after the restart");
    sleep 1;
    check_backlog($prefix, $N);
    like(log_since($mark), qr/Kafka: assigned/, 'the new worker took the partitions over');
}

done_testing();
