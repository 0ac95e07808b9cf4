# The stack's settler (supervisord program `settler`: fluxgate-reconcile
# --repair --watch 5) settles overdue claims by itself, past the markers it
# writes into the topic, logs each one in logs/settler.log, and stops
# cleanly on SIGTERM.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Worker;

my $log = "$ENV{FG_RUN_DIR}/logs/settler.log";

# The claims below are made 60 s old at once, and the message of one of
# them is produced after that.  A real claim's message is in Kafka before
# its deadline (message.timeout.ms), which the settler relies on: a round
# between the claim and this late message would rightly find it "not in
# PostgreSQL".  So the settler is started only once the message is in
# Kafka (kcat returns after delivery).
svc('stop', 'settler');
my $p = uniq('p683');
set_stock($p, 10);
my $mark = -s $log || 0;
my $sent = pending_claim($p, user => 'u1', quantity => 1, age_ms => 60_000);
my $lost = pending_claim($p, user => 'u2', quantity => 2, age_ms => 60_000);
produce_claim($p, $sent, 10);

svc('start', 'settler');
like(svc('status', 'settler'), qr/RUNNING/, 'the settler runs under supervisord');

ok(wait_until(15, sub { claim_state($p, $sent) eq '200' && claim_state($p, $lost) eq 'gone' }),
   'within 15 s the settler made the recorded claim done and released the other');
is(redis('GET', "fg:{$p}:stock"), 9, 'stock: 10 - 1 recorded');
# the round prints its report once it has checked the books, which may
# take a few seconds of re-reading
my $line = qr/^\Q$p\E\s+\d+\s+10\s+9\s+0\s+0\s+0\s+1\s+\+0\s+balanced\s+1\s+1\s*$/m;
wait_until(15, sub { substr(slurp($log), $mark) =~ $line });
my $since = substr(slurp($log), $mark);
like($since, qr/settled claim \Q$sent->{key}\E of \Q$p\E .*recorded in PostgreSQL, the key replays 200/,
     'its log has the done claim');
like($since, qr/settled claim \Q$lost->{key}\E of \Q$p\E .*not in PostgreSQL, released/,
     'and the released one');
like($since, $line,
     'and the product\'s line for the round that settled them: 9 + 1 recorded, balanced');

# before settling, the settler wrote a marker into every partition for
# the worker to commit past: the worker reads them as such, not as dead
# letters
{
    my %parts = map { $_ => 1 } keys %{ end_offsets(topic()) };
    my @marks = grep { ($_->{key} // '') eq 'fluxgate-reconcile' }
                kafka_consume(topic(), offset => -4, timeout => 10);
    my %marked = map { $_->{partition} => 1 }
                 grep { ($_->{payload} // '') =~ /^\{"type":"marker","by":"fluxgate-reconcile","at":\d+\}$/ } @marks;
    is_deeply([sort keys %marked], [sort keys %parts], 'its markers are in every partition of the topic');
    is(psql("select count(*) from dead_letters where key = 'fluxgate-reconcile'::bytea"), 0,
       'and none is a dead letter');
}

{
    my $sup = "$ENV{FG_RUN_DIR}/logs/supervisord.log";
    my $smark = -s $sup;
    like(svc('stop', 'settler'), qr/stopped/, 'SIGTERM stops it');
    like(substr(slurp($sup), $smark), qr/stopped: settler \(exit status 0\)/, 'with exit status 0');
    like(substr(slurp($log), $mark), qr/stop requested: stopped \(exit status 0\)/, 'and says so');
    like(svc('start', 'settler'), qr/started/, 'started again');
}

done_testing();
