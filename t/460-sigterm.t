# SIGTERM (supervisorctl stop) mid-backlog: the worker finishes the batch
# in hand, commits it to PostgreSQL and Kafka, leaves the group and exits 0;
# started again, it finishes the rest exactly once.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;
use POSIX ();

my $N = 20000;

# 1. the signal lands while a batch is parked in PostgreSQL
{
    my $prefix = uniq('p460a');
    my $mark = log_mark();
    my $sup_mark = supervisor_mark();
    my $lock = hold_lock('orders');
    produce_backlog($prefix, orders => $N);
    ok(wait_until(30, \&worker_blocked), 'a batch is in flight');
    my $pid = svc_pid('worker');
    ok(kill('TERM', $pid), "SIGTERM to $pid");
    # our lock is still held: nothing of the backlog can have been committed
    is(count_orders("$prefix-%"), 0, 'the signal landed before any of the backlog was written');
    # once the signal is delivered (no longer pending for the process: its
    # handler ran), it is still there: waiting for the batch our lock holds
    # rather than dropping it
    ok(wait_until(30, sub {
        my ($pending) = slurp("/proc/$pid/status") =~ /^ShdPnd:\s*([0-9a-f]+)/m;
        defined $pending && !(hex($pending) & (1 << 14));
    }), 'the signal was delivered');
    ok(kill(0, $pid), 'it waits for its batch rather than dropping it');
    ok(worker_blocked(), '... still parked on our lock');
    close $lock;
    ok(wait_until(30, sub { !kill(0, $pid) }), 'and exits once the batch is written');
    # what it wrote before exiting is the batch in hand: some, not all
    my $at_exit = count_orders("$prefix-%");
    ok($at_exit > 0 && $at_exit < $N,
       "it stopped mid-backlog: $at_exit of $N rows in when it exited (strictly between)");
    my $log = log_since($mark);
    like($log, qr/stop requested: finishing the batch in hand/, 'it said it was finishing');
    like($log, qr/batch committed: messages=\d+ accepted=[1-9]/, 'the batch in hand was committed');
    my $accepted = 0;
    $accepted += $_->{accepted} for batches_in_log(join "\n", grep { /\[$pid\]/ } split /\n/, $log);
    is($at_exit, $accepted, 'the rows in are the batches it said it committed');
    like($log, qr/stopped \(exit status 0\)/, 'it stopped with status 0');
    ok(wait_until(10, sub { supervisor_since($sup_mark) =~ /exited: worker \(exit status 0; /}),
       'supervisord saw exit status 0');

    # autorestart brings it back; it finishes the rest
    my $new = worker_restarted($pid, 30);
    ok($new && $new != $pid, "supervisord restarted it (pid $pid -> " . ($new // 'none') . ')');
    ok(drained(timeout => 120), "the restarted worker drained the topic");
    check_backlog($prefix, $N);
}

# 2. supervisorctl stop while a larger backlog flows, then start
{
    my $N = 100000;
    my $prefix = uniq('p460b');
    my $sup_mark = supervisor_mark();
    produce_backlog($prefix, orders => $N, products => 50);
    my $pid = svc_pid('worker');
    ok(wait_until(30, sub { count_orders("$prefix-%") > 0 }), 'the backlog is flowing');
    # the stop lands mid-backlog whatever the machine's pace: our lock
    # parks the worker's next batch, and is let go once the worker has
    # the signal (supervisorctl waits for it to exit meanwhile)
    my $lock = hold_lock('orders');
    my $at_lock = count_orders("$prefix-%");
    ok($at_lock > 0 && $at_lock < $N, "batches committed, more to come: $at_lock of $N when parked");
    my $stop = fork // die "fork: $!";
    if ($stop == 0) {
        # the lock's pipe is the parent's to close: psql must see its end
        POSIX::close(fileno $lock);
        POSIX::_exit(svc('stop', 'worker') =~ /worker: stopped/ ? 0 : 1);
    }
    # supervisord says it waits once it sent the signal; delivered, the
    # signal is no longer pending
    ok(wait_until(30, sub {
        return 0 unless supervisor_since($sup_mark) =~ /waiting for worker to stop/;
        my ($pending) = slurp("/proc/$pid/status") =~ /^ShdPnd:\s*([0-9a-f]+)/m;
        !defined $pending || !(hex($pending) & (1 << 14));
    }), 'supervisorctl stop: the worker has its SIGTERM');
    close $lock;
    waitpid $stop, 0;
    is($?, 0, 'supervisorctl stop worker: stopped');
    ok(!kill(0, $pid), "the worker ($pid) is gone");
    my $at_stop = count_orders("$prefix-%");
    ok($at_stop >= $at_lock && $at_stop < $N,
       "stopped mid-backlog: $at_stop of $N rows in when it stopped (strictly between)");
    like(supervisor_since($sup_mark), qr/stopped: worker \(exit status 0\)/,
         'it exited with status 0');
    # its PostgreSQL session is gone too: nothing of it can still commit
    ok(wait_until(10, sub { psql(q{select count(*) from pg_stat_activity
                                   where application_name = 'fluxgate-worker'}) == 0 }),
       'no session of the worker left in PostgreSQL');
    is(count_orders("$prefix-%"), $at_stop, 'nothing is written after it stopped');
    like(svc('start', 'worker'), qr/worker: started/, 'supervisorctl start worker');
    my $new = svc_pid('worker');
    ok($new && $new != $pid, "a new worker (pid $pid -> " . ($new // 'none') . ')');
    ok(drained(timeout => 120), "the restarted worker drained the topic");
    check_backlog($prefix, $N);
}

done_testing();
