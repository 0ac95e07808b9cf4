# The settler against a Kafka that keeps orders it cannot commit: every
# broker but one frozen (SIGSTOP) for longer than the claim deadline, in
# the middle of a sale.  The one left leads every partition of the topic
# and the worker's group, so Kafka still answers: the sale's orders are
# written on its log, but with the controller quorum gone nobody drops the
# frozen followers from the in-sync set, the high watermark stays where it
# was, and the gates time them out ("possibly persisted": their claims stay
# pending).  Once the brokers are back, those orders become visible and
# the worker records them.  A settler that trusted the high watermark
# found them "not in PostgreSQL" after the deadline and released their
# units, which were then recorded as well: sold twice.  It must wait
# instead, and the books must be exact once Kafka is whole again.
#
# The sale comes in two waves, the second one after the freeze: with
# nothing in flight when the brokers stop, the worker has committed all
# that was visible, which is what made the old settler release at once.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet qw(books_balance);
use FluxGate::FleetStack;
use FluxGate::Worker qw(slurp);

fleet_or_skip(brokers => 3);

my $Topic = $ENV{KAFKA_TOPIC} || 'orders';
my $Group = 'fluxgate-inventory';
# the shortest deadline the contract allows (FluxGate::FleetStack says why)
my $Deadline = 16000;

my (@frozen, $settler, %replicas);

# however the test ends: the brokers run, the leaders and the stack's
# settler are as the test found them
END {
    local $?;
    kill 'CONT', @frozen if @frozen;
    if ($settler) {
        kill 'TERM', $settler;
        waitpid $settler, 0;
    }
    if (%replicas) {
        wait_until(120, sub { !grep { partition_isr($_) < @{ $replicas{$_} } } keys %replicas });
        lead(%replicas);
    }
    svc('start', 'settler');
}

# kafka_tool('LeaderElectionCommand', @args): one of Kafka's command line
# tools against the stack's brokers -> its output
sub kafka_tool {
    my ($class, @args) = @_;
    my $cmd = "java -cp '$ENV{FG_KAFKA_LIBS}/*' -Dlog4j.configuration=file:"
            . "$ENV{FG_RUN_DIR}/kafka/tools-log4j.properties"
            . " org.apache.kafka.tools.$class"
            . " --bootstrap-server $ENV{KAFKA_BOOTSTRAP} @args 2>&1";
    return `$cmd`;
}

# the broker that coordinates the worker's group
sub coordinator {
    my $out = kafka_tool('consumer.group.ConsumerGroupCommand', '--describe',
                         '--group', $Group, '--state');
    return $out =~ /^\Q$Group\E\s+\S+\s+\((\d+)\)/m ? $1 : undef;
}

# the group's lag summed over the topic's partitions (undef: no answer);
# a partition never written to has no lag, committed or not
sub group_lag {
    my $out = kafka_tool('consumer.group.ConsumerGroupCommand', '--describe',
                         '--group', $Group);
    my @rows = $out =~ /^\Q$Group\E\s+\Q$Topic\E\s+\d+\s+\S+\s+(\S+)\s+(\S+)/mg;
    return undef unless @rows;
    my $sum = 0;
    while (my ($end, $lag) = splice @rows, 0, 2) {
        $lag = 0 if $lag eq '-' && $end eq '0';
        return undef unless $lag =~ /^\d+$/;
        $sum += $lag;
    }
    return $sum;
}

# lead(partition => [replicas, preferred first], ...): each partition gets
# that replica order and its preferred replica as leader
sub lead {
    my (%order) = @_;
    my $plan = "$ENV{FG_RUN_DIR}/t765-plan.json";
    my $elect = "$ENV{FG_RUN_DIR}/t765-elect.json";
    my @parts = sort { $a <=> $b } keys %order;
    my @moves = map { { topic => $Topic, partition => $_ + 0,
                        replicas => [map { $_ + 0 } @{ $order{$_} }] } } @parts;
    write_file($plan, json_encode({ version => 1, partitions => \@moves }));
    write_file($elect, json_encode({ partitions => [
        map { { topic => $Topic, partition => $_ + 0 } } @parts ] }));
    my $out = kafka_tool('reassign.ReassignPartitionsCommand',
                         '--reassignment-json-file', $plan, '--execute')
            . kafka_tool('LeaderElectionCommand', '--election-type', 'PREFERRED',
                         '--path-to-json-file', $elect);
    unlink $plan, $elect;
    my $ok = wait_until(60, sub {
        !grep { (partition_leader($_) // -1) != $order{$_}[0] } @parts;
    });
    diag($out) unless $ok;
    return $ok;
}

sub write_file {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
}

# --- Kafka as the test needs it -------------------------------------------

my $c = coordinator();
ok($c, 'the worker\'s group has a coordinator' . ($c ? ": broker $c" : ''))
    or BAIL_OUT('no coordinator for the worker\'s group');
{
    my $md = FluxGate::FleetStack::_metadata() or BAIL_OUT('no metadata of the topic');
    %replicas = map { $_->{partition} => [map { $_->{id} } @{ $_->{replicas} }] }
                @{ $md->{partitions} };
}
ok(!grep({ !grep { $_ == $c } @{ $replicas{$_} } } keys %replicas),
   "broker $c holds a replica of every partition of $Topic");
ok(lead(map { $_ => [$c, grep { $_ != $c } @{ $replicas{$_} }] } keys %replicas),
   "broker $c leads every partition of $Topic");
my @others = grep { $_ != $c } 1 .. scalar(brokers());

# --- the sale, first wave -------------------------------------------------

like(svc('stop', 'settler'), qr/stopped|not running/, 'the stack\'s settler is stopped for this file');
my $Stock = 1000;
my $p = uniq('f765');
my $res = http_post(admin_url() . '/init', json_encode({ productId => $p, quantity => $Stock }),
                    { 'X-Idempotency-Key' => uniq('k765') });
is($res->{status}, 200, "$p set to $Stock units") or diag($res->{content});
my ($first) = first_order($p);

my $log = "$ENV{FG_RUN_DIR}/logs/t765-settler.log";
$settler = fork // die "fork: $!";
if ($settler == 0) {
    open STDOUT, '>', $log or die "$log: $!";
    open STDERR, '>&', \*STDOUT or die;
    exec $ENV{FG_RECONCILE}, '--redis', "127.0.0.1:$ENV{REDIS_PORT}",
        '--pg', "host=$ENV{FG_RUN_DIR}/pg/sock port=$ENV{PGPORT} dbname=fluxgate user=fluxgate",
        '--brokers', $ENV{KAFKA_BOOTSTRAP}, '--topic', $Topic, '--group', $Group,
        '--repair', '--watch', 1, '--claim-deadline', $Deadline, '--product', $p, '-v'
        or die "exec $ENV{FG_RECONCILE}: $!";
}

my $r1 = loadgen(urls => [gates()], product => $p, c => 4, n => 40, log => 1, run => 'w1');
my @ok = ($first, map { $_->[1] } grep { $_->[0] == 200 } @{ $r1->{log} });
is(scalar @ok, 41, 'the first wave: 40 orders answered 200');
ok(wait_until(90, sub { (group_lag() // -1) == 0 }),
   'the worker has committed all of it: nothing in flight when the brokers stop');

# --- every broker but one frozen ------------------------------------------

my $gate_logs = { map { $_ => (-s $_ || 0) } glob("$ENV{FG_RUN_DIR}/logs/nginx*-error.log") };
my @pids = map { svc_pid(kafka_program($_)) } @others;
is(scalar(grep { defined } @pids), scalar @others, "brokers @others running");
kill 'STOP', @pids;
@frozen = @pids;
my $frozen_at = time;

my $r2 = loadgen(urls => [gates()], product => $p, c => 10, n => 10, log => 1,
                 log_errors => 1, run => 'w2');
my %st;
$st{ $_->[0] }++ for @{ $r2->{log} };
diag('the second wave, with brokers ' . join(',', @others) . ' frozen: '
     . join(' ', map { "$_=$st{$_}" } sort keys %st));
push @ok, map { $_->[1] } grep { $_->[0] == 200 } @{ $r2->{log} };
my %claims = redis('ZRANGE', "fg:{$p}:pending", 0, -1, 'WITHSCORES');
my $possibly = 0;
for my $f (keys %$gate_logs) {
    $possibly += () = substr(slurp($f), $gate_logs->{$f}) =~ /possibly persisted/g;
}
cmp_ok(scalar keys %claims, '>', 0, 'orders written on the leader but never acknowledged: '
       . scalar(keys %claims) . " pending claims, $possibly possibly persisted in the"
       . " gates' logs");

# past the deadline of every claim, the settler's rounds about them
{
    my ($last) = sort { $b <=> $a } values %claims;
    ok(wait_until(60, sub {
        my ($s, $us) = redis('TIME');
        $s * 1000 + int($us / 1000) >= ($last // 0) + $Deadline;
    }), "the claims are past their deadline ($Deadline ms)");
    my $mark = -s $log || 0;
    # a settling attempt, as the settler logs it before and since markers
    my $attempt = join '|', 'settled claim', 'not settling',
                            'snapshot of the high watermarks', 'writing the markers';
    my $n = 0;
    ok(wait_until(90, sub {
        my $since = substr(slurp($log), $mark);
        $n = () = $since =~ /$attempt/g;
        $n >= 3 || $since =~ /settled claim/;
    }), "the settler went at them while the brokers stayed frozen ($n times)");
}
is(redis('ZCARD', "fg:{$p}:pending"), scalar keys %claims,
   'it released nothing: Kafka still holds their orders');

kill 'CONT', @frozen;
@frozen = ();
diag(sprintf 'brokers %s frozen for %.0f s', join(',', @others), time - $frozen_at);

# --- Kafka whole again ----------------------------------------------------

ok(wait_until(180, sub { !grep { partition_isr($_) < @{ $replicas{$_} } } keys %replicas }),
   'every replica back in sync');
ok(wait_until(120, sub { redis('ZCARD', "fg:{$p}:pending") == 0 }),
   'the settler settled every claim once the brokers were back')
    or diag(slurp($log));
my $since = slurp($log);
my @released = $since =~ /order ([0-9a-f-]{36}), [^\n]*not in PostgreSQL, released/g;
my $twice = @released ? psql("select count(*) from orders where id in ('"
                             . join("','", @released) . "')") : 0;
is($twice, 0, 'no claim it released has its order recorded (' . scalar(@released) . ' released)');
books_balance('brokers frozen past the deadline', [$p], \@ok);
my $rows = psql("select count(*) from orders where product_id = '$p'");
my $units = psql("select coalesce(sum(quantity), 0) from orders"
                 . " where product_id = '$p' and status = 'accepted'");
my $left = redis('GET', "fg:{$p}:stock");
is($left + $units, $Stock,
   "Redis stock $left + recorded units $units = $Stock: no unit sold twice");
cmp_ok($rows - @ok, '<=', $possibly, "rows without a 200 (" . ($rows - @ok) . ") are orders"
       . " the gates said were possibly persisted ($possibly)");

done_testing();
