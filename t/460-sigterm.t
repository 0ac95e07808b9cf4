# SIGTERM (supervisorctl stop) mid-backlog: the worker finishes the batch
# in hand, commits it to PostgreSQL and Kafka, leaves the group and exits 0;
# started again, it finishes the rest exactly once.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $N = 20000;
my $sup_log = "$ENV{FG_RUN_DIR}/logs/supervisord.log";

# 1. the signal lands while a batch is parked in PostgreSQL
{
    my $prefix = uniq('p460a');
    my $mark = log_mark();
    my $sup_mark = -s $sup_log;
    my $lock = hold_lock('orders');
    produce_backlog($prefix, orders => $N);
    ok(wait_until(30, \&worker_blocked), 'a batch is in flight');
    my $pid = svc_pid('worker');
    ok(kill('TERM', $pid), "SIGTERM to $pid");
    sleep 1;
    ok(kill(0, $pid), 'it waits for its batch rather than dropping it');
    close $lock;
    ok(wait_until(30, sub { !kill(0, $pid) }), 'and exits once the batch is written');
    my $log = log_since($mark);
    like($log, qr/stop requested: finishing the batch in hand/, 'it said it was finishing');
    like($log, qr/batch committed: messages=\d+ accepted=[1-9]/, 'the batch in hand was committed');
    like($log, qr/stopped \(exit status 0\)/, 'it stopped with status 0');
    ok(wait_until(10, sub { substr(slurp($sup_log), $sup_mark) =~ /exited: worker \(exit status 0; /}),
       'supervisord saw exit status 0');

    # autorestart brings it back; it finishes the rest
    ok(worker_restarted($pid, 30), 'supervisord restarted it');
    ok(wait_rows(120, "$prefix-%", $N), "all $N orders recorded");
    sleep 1;
    check_backlog($prefix, $N);
}

# 2. supervisorctl stop while a larger backlog flows, then start
{
    my $N = 100000;
    my $prefix = uniq('p460b');
    my $sup_mark = -s $sup_log;
    produce_backlog($prefix, orders => $N, products => 50);
    ok(wait_until(30, sub { count_orders("$prefix-%") > 0 }), 'the backlog is flowing');
    like(svc('stop', 'worker'), qr/worker: stopped/, 'supervisorctl stop worker');
    my $at_stop = count_orders("$prefix-%");
    diag("$at_stop of $N rows were in when the worker stopped");
    like(substr(slurp($sup_log), $sup_mark), qr/stopped: worker \(exit status 0\)/,
         'it exited with status 0');
    sleep 1;
    is(count_orders("$prefix-%"), $at_stop, 'nothing is written after it stopped');
    like(svc('start', 'worker'), qr/worker: started/, 'supervisorctl start worker');
    ok(wait_rows(120, "$prefix-%", $N), "all $N orders recorded after the restart");
    sleep 1;
    check_backlog($prefix, $N);
}

done_testing();
