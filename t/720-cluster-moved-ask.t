# A product's slot moved to another master while it sells (by hand, as
# `redis-cli --cluster reshard` does it: SETSLOT IMPORTING/MIGRATING,
# MIGRATE of its keys, SETSLOT NODE).  While the slot is migrating, a
# command whose keys are all on the new node is followed there with ASKING
# (a replayed /init), orders whose keys are split get TRYAGAIN from Redis
# and so 503; once the slot is moved the gate follows MOVED and sells on.
# No answer but 200 and 503, and the books balance.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Cluster;

my $c = cluster_start(masters => 3);
my $cr = sub { cluster_redis($c, @_) };
my $g = gate_start(workers => 2, redis => cluster_directive($c),
                   server => 'location = /metrics { fluxgate_metrics; }');
# the gate's 503s so far (fluxgate_orders_total{outcome="error"})
my $errors = sub {
    prom_samples(http_get(gate_url($g) . '/metrics')->{content})
        ->{'fluxgate_orders_total{outcome="error"}'} // 0 };

my $p = uniq('c720');
is(init_stock($g, $p, 100000, key => "init-$p")->{status}, 200, "/init $p");
my $slot = $cr->('CLUSTER', 'KEYSLOT', "fg:{$p}:stock");
my ($from) = cluster_master_of($c, "fg:{$p}:stock") =~ /:(\d+)$/;
my ($to) = grep { $_ != $from } map { $_->{port} } @{ cluster_masters($c) };

# about 8 s of orders, the slot moved while they sell
my $sale = sale_start($g, product => $p, c => 10, n => 1600, rate => 200,
                      run => 'c720');
ok(wait_selling($p, 200, 30, redis => $cr), 'the sale sells before the slot moves');
my ($replay, $met);
my $mig_from = time;
my $mv = cluster_migrate_slot($c, $slot, $to, during => sub {
    # every key of /init's replay is on the new node now: ASK
    $replay = init_stock($g, $p, 100000, key => "init-$p");
    # the slot stays half moved until orders met it: one answered 503
    # (their keys split between the nodes: TRYAGAIN)
    my $e0 = $errors->();
    $met = wait_until(20, sub { $errors->() > $e0 });
});
my $mig_to = time;
diag("slot $slot moved from $mv->{from} to $mv->{to} ($mv->{keys} keys)");
ok($met, 'orders met the slot while it migrated (a 503)');
is($replay->{status}, 200, '/init replayed during the migration (ASK followed)')
    or diag($replay->{content});
is($replay->{json}{generation}, 1, '... the same generation');

my $r = sale_wait($sale);
my %st = map { $_ => $r->{status}{$_}{count} } keys %{ $r->{status} };
diag('answers: ' . join ' ', map { "$_=$st{$_}" } sort keys %st);
is(join(' ', grep { $_ != 200 && $_ != 503 } sort keys %st), '',
   'no answer but 200 and 503');
# on fg-loadgen's time line: the migration, and each answer's due time
# (answered - latency) and arrival
my ($m0, $m1) = map { $_ * 1000 - $r->{started_at_ms} } $mig_from, $mig_to;
my @outside = grep { $_->[0] == 503 && ($_->[4] < $m0 || $_->[4] - $_->[3] > $m1) }
              @{ $r->{log} };
is(scalar @outside, 0, sprintf('every 503 while the slot migrated (%.0f to %.0f ms)',
                               $m0, $m1))
    or diag(join "\n", map { "@$_" } @outside[0 .. ($#outside < 9 ? $#outside : 9)]);
my @before = grep { $_->[0] == 200 && $_->[4] < $m0 } @{ $r->{log} };
my @after = grep { $_->[0] == 200 && $_->[4] - $_->[3] > $m1 } @{ $r->{log} };
ok(@before && @after, 'orders sold before the move and after it ('
   . scalar(@before) . ' and ' . scalar(@after) . ')');
note("503s during the migration: " . ($st{503} // 0));

is(cluster_master_of($c, "fg:{$p}:stock"), "127.0.0.1:$to", 'the slot is on the new master');
my $after = http_post(gate_url($g) . '/order',
                      json_encode({ productId => $p, userId => 'u-after' }),
                      { 'X-Idempotency-Key' => uniq('k') });
is($after->{status}, 200, 'an order after the move: 200');

my $log = gate_log($g);
like($log, qr/redis cluster: MOVED slot $slot to 127\.0\.0\.1:$to/, 'the gate followed MOVED');
like($log, qr/redis cluster: ASK slot $slot to 127\.0\.0\.1:$to/, 'the gate followed ASK');

ok(wait_until(30, sub { $cr->('ZCARD', "fg:{$p}:pending") == 0 }),
   'no claim left pending');
books_balance('migration', [$p], [ ok_orders($r), $after->{status} == 200
    ? (json_decode($after->{content})->{orderId}) : () ], redis => $cr);

gate_stop($g);
cluster_stop($c);
done_testing();
