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
    my $sup = supervisor_mark();
    my $lock = hold_lock('orders');
    produce_backlog($prefix, orders => $N);
    ok(wait_until(30, \&worker_blocked), 'the worker is mid-batch (waiting on our lock)');
    my $pid = svc_pid('worker');
    ok(worker_blocked(), 'still waiting on our lock as it is killed');
    ok(kill('KILL', $pid), "kill -9 $pid");
    # our lock is still held: nothing of the backlog can have been committed
    is(count_orders("$prefix-%"), 0, 'killed with its batch uncommitted (0 rows at the kill)');
    close $lock;
    my $new = worker_restarted($pid, 30);
    ok($new && $new != $pid, "supervisord restarted it (pid $pid -> " . ($new // 'none') . ')');
    like(supervisor_since($sup), qr/exited: worker \(terminated by SIGKILL; not expected\)/,
         'supervisord saw it die of SIGKILL');
    ok(drained(timeout => 120), "the restarted worker drained the topic")
        or diag(count_orders("$prefix-%") . " rows");
    check_backlog($prefix, $N);
}

# 2. killed while a larger backlog flows: some batches committed, some not
{
    my $N = 100000;
    my $prefix = uniq('p440b');
    my $mark = log_mark();
    my $sup = supervisor_mark();
    produce_backlog($prefix, orders => $N, products => 50);
    my $pid = svc_pid('worker');
    ok(wait_until(30, sub { count_orders("$prefix-%") > 0 }), 'the backlog is flowing');
    ok(kill('KILL', $pid), "kill -9 $pid");
    # counted after the kill: a commit already on its way may still land,
    # which only makes the count larger, never smaller
    my $at_kill = count_orders("$prefix-%");
    ok($at_kill > 0 && $at_kill < $N,
       "killed mid-backlog: $at_kill of $N rows in at the kill (strictly between)");
    my $new = worker_restarted($pid, 30);
    ok($new && $new != $pid, "supervisord restarted it (pid $pid -> " . ($new // 'none') . ')');
    like(supervisor_since($sup), qr/exited: worker \(terminated by SIGKILL; not expected\)/,
         'supervisord saw it die of SIGKILL');
    ok(drained(timeout => 120), "the restarted worker drained the topic");
    check_backlog($prefix, $N);
    like(log_since($mark), qr/Kafka: assigned/, 'the new worker took the partitions over');
}

done_testing();
