# fluxgate-reconcile on a Redis Cluster: --redis names one node, the tool
# finds the cluster (CLUSTER SLOTS), lists the products of every master and
# reads and settles each one on its own master.  Products spread over the
# 3 masters are sold through a gate, and one overdue claim that Kafka never
# got is left on a master other than the one named: --repair releases it
# there, and every product balances.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use FluxGate::Test;
use FluxGate::Fleet;
use FluxGate::Cluster;

my $c = cluster_start(masters => 3);
my $cr = sub { cluster_redis($c, @_) };
my $g = gate_start(workers => 1, redis => cluster_directive($c));
my $seed = $c->{ports}[0];

my ($prefix, %on);
for my $try (1 .. 50) {
    $prefix = uniq('c740');
    %on = ();
    $on{ cluster_master_of($c, "fg:{$prefix-$_}:stock") }++ for 0 .. 5;
    last if keys %on == 3;
}
is(scalar keys %on, 3, 'the products live on all 3 masters');
my @products = map { "$prefix-$_" } 0 .. 5;
is(init_stock($g, $_, 10)->{status}, 200, "/init $_") for @products;
my $r = sale_wait(sale_start($g, product => $prefix, products => 6,
                             c => 10, n => 30, run => 'c740'));
is($r->{status}{200}{count}, 30, '30 orders accepted');
ok(wait_until(30, sub { !grep { $cr->('ZCARD', "fg:{$_}:pending") } @products }),
   'their claims ended');

# an overdue claim on a master that is not the one --redis names
my ($far) = grep { cluster_master_of($c, "fg:{$_}:stock") ne "127.0.0.1:$seed" } @products;
my $claim = pending_claim($far, user => 'u-far', quantity => 2, age_ms => 60_000,
                          via => $cr);
is($cr->('GET', "fg:{$far}:stock"), 3, "$far: a claim of 2 pending (3 left)");

my ($rc, $out) = reconcile('--redis', "127.0.0.1:$seed", '--repair',
                           '--claim-deadline', 3000);
like($out, qr/^\Q$_\E\s/m, "$_ is listed") for @products;
like($out, qr/settled claim \Q$claim->{key}\E of \Q$far\E .*released/, 'the claim was released')
    or diag($out);
is($cr->('GET', "fg:{$far}:stock"), 5, '... its 2 units back on its own master');
# the books as fluxgate-reconcile reads them, one JSON object a product:
# every product read on its own master, balanced, drift 0
($rc, $out) = reconcile('--redis', "127.0.0.1:$seed", '--json');
is($rc, 0, 'then every product balances (exit 0)') or diag($out);
my %book = map { $_->{productId} => $_ }
           map { eval { json_decode($_) } || () } grep { /^\{/ } split /\n/, $out;
for my $p (@products) {
    my $b = $book{$p} // {};
    is($b->{state} // 'not listed', 'balanced', "$p: state balanced") or diag($out);
    is($b->{drift}, 0, "$p: drift 0");
    is($b->{stock} + $b->{pendingUnits} + $b->{recordedUnits}, $b->{stockSet},
       "$p: Redis stock $b->{stock} + pending $b->{pendingUnits} + recorded"
       . " $b->{recordedUnits} = set $b->{stockSet}");
}
is($book{$far}{stock}, 5, "$far: its Redis stock read on its own master");
unlike($out, qr/drift [-+]\d+ with nothing in flight/, 'no drift logged');

gate_stop($g);
cluster_stop($c);
done_testing();
