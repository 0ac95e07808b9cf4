# PostgreSQL stopped while a backlog is flowing, then started again: the
# worker keeps its batch, says what it waits for, retries with backoff,
# never exits, and once the database is back writes everything exactly
# once, including what arrived in Kafka during the outage.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $N = 20000;
my $prefix = uniq('p450');
my $pid = svc_pid('worker');
ok($pid, "worker running as $pid");
my $mark = log_mark();

# park a batch inside an open transaction, then take the database away
my $lock = hold_lock('orders');
produce_backlog($prefix, orders => $N);
ok(wait_until(30, \&worker_blocked), 'a batch is in flight');
like(svc('stop', 'postgres'), qr/stopped/, 'PostgreSQL stopped');
close $lock;

# more orders arrive while the database is away
my $more = uniq('p450m');
produce_backlog($more, orders => 5000);
ok(wait_until(20, sub { log_since($mark) =~ /PostgreSQL: .*retrying in \d+ ms/ }),
   'the worker logs that it waits for PostgreSQL');
# three tries at least, the batch kept all along
ok(wait_until(30, sub { my $l = log_since($mark);
                        (() = $l =~ /retrying in \d+ ms/g) >= 3 && $l =~ /keeping \d+ messages/ }),
   'it tried three times');
my $log = log_since($mark);
like($log, qr/warning: PostgreSQL: .*keeping \d+ messages .*nothing committed, retrying in \d+ ms/,
     'it says it keeps the batch and commits nothing');
my @waits = $log =~ /retrying in (\d+) ms/g;
ok(@waits >= 3 && $waits[-1] > $waits[0], "it backs off (@waits[0 .. ($#waits < 5 ? $#waits : 5)] ...)");
is(svc_pid('worker'), $pid, 'the worker is still the same process');

like(svc('start', 'postgres'), qr/started/, 'PostgreSQL started again');
ok(wait_until(30, sub { psql('select 1') == 1 }), 'and answers');
ok(drained(timeout => 180), 'the worker drained the topic: the interrupted backlog and the'
   . ' 5000 that came during the outage');
check_backlog($prefix, $N);
check_backlog($more, 5000);
is(svc_pid('worker'), $pid, 'the worker never exited');
like(log_since($mark), qr/PostgreSQL is back after \d+ ms/, 'and said when PostgreSQL was back');

done_testing();
