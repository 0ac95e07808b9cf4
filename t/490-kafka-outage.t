# Kafka stopped while the worker has a batch in flight, then started
# again: the batch still reaches PostgreSQL, its offset commit fails (and is
# logged), the worker does not exit, librdkafka reconnects, and consumption
# resumes from the committed offsets: the batch comes again and is
# recognised, nothing is lost or doubled.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $N = 20000;
my $prefix = uniq('p490');
my $pid = svc_pid('worker');
my $mark = log_mark();

my $lock = hold_lock('orders');
produce_backlog($prefix, orders => $N);
ok(wait_until(30, \&worker_blocked), 'a batch is in flight');
like(svc('stop', 'kafka'), qr/stopped/, 'Kafka stopped');
close $lock;
ok(wait_until(30, sub { count_orders("$prefix-%") > 0 }),
   'the batch in flight is written without Kafka');
ok(wait_until(30, sub { log_since($mark) =~ /Kafka: committing offsets .* failed: /}),
   'its offset commit fails, and the log says what that means');
ok(wait_until(60, sub { log_since($mark) =~ /Kafka: .*librdkafka keeps retrying/ }),
   'it goes on without Kafka, saying librdkafka keeps retrying');
is(svc_pid('worker'), $pid, 'the worker keeps running without Kafka');
like(svc('start', 'kafka'), qr/started/, 'Kafka started again');

ok(wait_rows(180, "$prefix-%", $N), "all $N orders recorded once Kafka is back")
    or diag(count_orders("$prefix-%") . " rows");

# and new messages flow again
my $x = uniq('p490x');
my (undef, $j) = order_msg(productId => $x, generationStock => 1);
ok(wait_until(60, sub { eval { produce([$x, stock_msg($x, 1)], [$x, $j]); 1 } }),
   'Kafka accepts messages again');
ok(drained(timeout => 120), 'and the worker consumes them: it drained the topic');
is(orders_of($x), 1, 'the new order is recorded');
check_backlog($prefix, $N);
is(svc_pid('worker'), $pid, 'the worker never exited');
like(log_since($mark), qr/Kafka: .*librdkafka keeps retrying/, 'it logged the outage');
like(log_since($mark), qr/batch committed: .* duplicate=[1-9]/,
     'the uncommitted batch came again and was recognised');

done_testing();
