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
my $g = gate_start(workers => 2, redis => cluster_directive($c));

my $p = uniq('c720');
is(init_stock($g, $p, 100000, key => "init-$p")->{status}, 200, "/init $p");
my $slot = $cr->('CLUSTER', 'KEYSLOT', "fg:{$p}:stock");
my ($from) = cluster_master_of($c, "fg:{$p}:stock") =~ /:(\d+)$/;
my ($to) = grep { $_ != $from } map { $_->{port} } @{ cluster_masters($c) };

# about 8 s of orders, the slot moved in the middle of them
my $sale = sale_start($g, product => $p, c => 10, n => 1600, rate => 200,
                      run => 'c720');
sleep 2;
my $replay;
my $mv = cluster_migrate_slot($c, $slot, $to, during => sub {
    # every key of /init's replay is on the new node now: ASK
    $replay = init_stock($g, $p, 100000, key => "init-$p");
    sleep 1;
});
diag("slot $slot moved from $mv->{from} to $mv->{to} ($mv->{keys} keys)");
is($replay->{status}, 200, '/init replayed during the migration (ASK followed)')
    or diag($replay->{content});
is($replay->{json}{generation}, 1, '... the same generation');

my $r = sale_wait($sale);
my %st = map { $_ => $r->{status}{$_}{count} } keys %{ $r->{status} };
diag('answers: ' . join ' ', map { "$_=$st{$_}" } sort keys %st);
is(join(' ', grep { $_ != 200 && $_ != 503 } sort keys %st), '',
   'no answer but 200 and 503');
cmp_ok($st{200} // 0, '>', 1000, 'most orders accepted');
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
unlike(gate_log($g), qr/\[(alert|emerg|crit)\]|AddressSanitizer/, 'no alert in the gate log');
cluster_stop($c);
done_testing();
